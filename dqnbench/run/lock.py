"""One writer per experiment directory: an advisory ``flock`` on ``<dir>/.lock``.

The kernel releases a ``flock`` when its process dies, however it dies, so a
lock left by a killed run is never stale: the next run simply takes it over.
The file's text (pid, host, start time) is only there to make the refusal
message useful.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dqnbench.errors import ResultsError

LOCK_FILE = ".lock"


@contextmanager
def experiment_lock(directory: Path) -> Iterator[None]:
    """Hold the directory's lock for the block; refuse at once if another process holds it."""
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ResultsError(f"cannot create the lock file {path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown process"
            raise ResultsError(
                f"{directory} is in use by another dqnbench run ({holder}); wait for it to finish "
                "or write to another --out directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
