"""One writer per experiment directory: an advisory ``flock`` on ``<dir>/.lock``.

The kernel releases a ``flock`` when its process dies, however it dies, so a
lock left by a killed run is never stale: the next run simply takes it over.
The file's text (pid, host, start time) is only there to make the refusal
message useful. A run that ends (finished, Ctrl-C, SIGTERM) removes the file
while still holding its lock; a process that opened the old file just before
checks, once it holds the lock, that the path still names the file it locked,
and starts over with the new one if not, so two writers never hold one directory.
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
    fd = _locked(path, directory)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)  # still locked: nobody can take the file over between these two lines
        except OSError:
            pass
        os.close(fd)  # closing releases the flock


def _locked(path: Path, directory: Path) -> int:
    """Open and ``flock`` the lock file, retrying when it was removed and recreated meanwhile; the fd."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsError(f"cannot create the lock file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise ResultsError(
                f"{directory} is in use by another dqnbench run ({holder}); wait for it to finish "
                "or write to another --out directory"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file as we locked it: lock the new one
