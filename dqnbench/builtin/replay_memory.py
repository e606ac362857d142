"""What a built-in replay holds per transition, and whether it fits in memory before training starts.

NumPy allocates a buffer's arrays lazily (``np.zeros`` maps pages on first
write), so a replay too big for the machine would not fail when built: it
would be killed by the OS hours into training, once the ring had filled. So
every built-in storage computes what it will hold (:func:`replay_bytes`, which
mirrors the allocations exactly) and refuses, with a :class:`DqnbenchError`
giving the figure, a replay larger than the memory available
(:func:`available_memory_bytes`) when it is constructed, before the first env
step. Each built-in factory gives the runner's pre-flight the same figure as its
``memory_bytes`` attribute, as a plugin replay's factory may.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.replay_memory``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from dqnbench.builtin.sumtree import sum_tree_bytes
from dqnbench.errors import DqnbenchError
from dqnbench.plugin.obs import ObsSpec

#: stored actions: a discrete action index never needs 64 bits, and at CartPole's 45-byte transitions the
#: 4 bytes saved pay for prioritised replay's priority; ``Batch.actions`` is widened to int64 when sampled
ACTION_DTYPE = np.int32
#: per-slot episode number of the frame storage (which reset observation a transition's stack starts from)
EPISODE_DTYPE = np.int32
#: per-slot start count of each side-store entry (the add count of the episode's first transition)
START_DTYPE = np.int64
#: the frame storage's side store starts with a reset observation per this many transitions (a power of two at
#: least 8); shorter episodes on average make it grow by doubling, one frame per episode
TRANSITIONS_PER_RESET = 128


def as_obs_spec(obs_dim: int) -> ObsSpec:
    """``obs_dim`` as an :class:`ObsSpec`; a plain int ``n`` (v1 callers, tests) is a float32 vector of n."""
    return obs_dim if isinstance(obs_dim, ObsSpec) else ObsSpec(int(obs_dim), np.float32)


def stores_frames(obs_dim: int) -> bool:
    """Whether a built-in replay keeps one frame per transition (images, stacks) rather than obs and next_obs rows.

    Vector observations stay in plain rows: at a few floats, rebuilding them
    would cost more time than the bytes it saves.
    """
    spec = as_obs_spec(obs_dim)
    return len(spec.shape) >= 2 or spec.frames > 1


def offset_dtype(frames: int) -> np.dtype:
    """Dtype of the frame storage's per-slot offset into the episode, capped at its max (≥ frames)."""
    return np.dtype(np.uint8 if frames < 255 else np.uint16)


def initial_reset_slots(capacity: int, frames: int) -> int:
    """Entries the frame storage's side store starts with: one per :data:`TRANSITIONS_PER_RESET`, a power of two."""
    return max(8, 1 << math.ceil(math.log2(max(1, (capacity + frames) / TRANSITIONS_PER_RESET))))


def scalar_bytes(done: bool) -> int:
    """Bytes per slot of the scalar fields: action, reward, terminated (and done)."""
    return np.dtype(ACTION_DTYPE).itemsize + 4 + 1 + int(done)


def storage_bytes(capacity: int, obs_dim: int, members: int | None = None, done: bool = False) -> int:
    """Bytes the built-in storage for these observations allocates (``nbytes`` of every array) when built."""
    spec = as_obs_spec(obs_dim)
    rows = members or 1
    scalars = capacity * rows * scalar_bytes(done)
    if not stores_frames(spec):
        return scalars + capacity * rows * 2 * spec.nbytes
    frame = math.prod(spec.frame_shape) * spec.dtype.itemsize
    per_slot = offset_dtype(spec.frames).itemsize + np.dtype(EPISODE_DTYPE).itemsize
    resets = initial_reset_slots(capacity, spec.frames)
    side = resets * rows * (frame + 1 + np.dtype(START_DTYPE).itemsize)
    last_next = rows * spec.nbytes  # the previous next_obs, to find episode starts
    return scalars + capacity * rows * per_slot + (capacity + spec.frames) * rows * frame + side + last_next


def replay_bytes(
    capacity: int, obs_dim: int, members: int | None = None, *, prioritized: bool = False, nstep: bool = False
) -> int:
    """Bytes a built-in replay allocates when built: storage, priorities, n-step bookkeeping.

    :param obs_dim: the :class:`ObsSpec` the replay is built with (an int: a float32 vector).
    :param members: K lock-step members (None: a single run); the figure covers all K.
    :param prioritized: a proportional sampler's sum tree (``prioritized``, ``nstep`` with ``prioritized``).
    :param nstep: the ``nstep`` buffer (a done flag per transition).

    The frame storage's side store (one frame per episode) is counted at its
    initial size; episodes shorter than :data:`TRANSITIONS_PER_RESET` steps on
    average make it grow past this figure by about one frame per episode.
    """
    total = storage_bytes(capacity, obs_dim, members, done=nstep)
    if prioritized:
        total += sum_tree_bytes(capacity, members)
    return total


def uniform_bytes(capacity: int, obs_dim: int, members: int | None = None, **params: Any) -> int:
    """``uniform.memory_bytes``: what the uniform replay allocates."""
    return replay_bytes(capacity, obs_dim, members)


def prioritized_bytes(capacity: int, obs_dim: int, members: int | None = None, **params: Any) -> int:
    """``prioritized.memory_bytes``: storage and sum tree."""
    return replay_bytes(capacity, obs_dim, members, prioritized=True)


def nstep_bytes(capacity: int, obs_dim: int, members: int | None = None, **params: Any) -> int:
    """``nstep.memory_bytes``: storage, n-step bookkeeping and, with ``prioritized``, a sum tree."""
    return replay_bytes(capacity, obs_dim, members, prioritized=bool(params.get("prioritized")), nstep=True)


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """Room left under a container's memory limit (cgroup v2, then v1), where one is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # v1 writes "no limit" as ~2^63
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory_bytes() -> int | None:
    """Memory a new allocation can use without swapping: MemAvailable, bounded by a cgroup limit; None if unknown.

    Linux's ``/proc/meminfo`` ``MemAvailable`` (free memory plus reclaimable
    caches); elsewhere ``sysconf`` available pages, then ``psutil`` if
    installed. A container's cgroup limit lowers it where set.
    """
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            try:
                import psutil  # type: ignore[import-untyped]

                available = int(psutil.virtual_memory().available)
            except ImportError:
                available = None
    container = _cgroup_available()
    if container is not None:
        available = container if available is None else min(available, container)
    return available


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1 (``7.1 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_replay_fits(needed: int, capacity: int, obs_dim: int, members: int | None = None) -> None:
    """Refuse a replay needing more than the memory available: a :class:`DqnbenchError` giving the figures.

    The message ends by advising a lower ``replay.capacity`` and how many
    transitions would fit (a pre-flight wraps it in a ``GridError`` on that key).

    Does nothing when the available memory cannot be read.
    """
    available = available_memory_bytes()
    if available is None or needed <= available:
        return
    rows = members or 1
    per_transition = needed / (capacity * rows)
    fits = int(available // per_transition) // rows
    who = f"{rows} lock-step members × " if members is not None else ""
    each = " per member" if members is not None else ""
    raise DqnbenchError(
        f"a replay of {who}{capacity:,} transitions of {as_obs_spec(obs_dim)} needs "
        f"{format_bytes(needed)} ({per_transition:,.0f} bytes a transition) but only {format_bytes(available)} "
        f"of memory is available; lower replay.capacity (about {fits:,}{each} would fit)"
    )
