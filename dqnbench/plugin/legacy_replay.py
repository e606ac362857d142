"""Every replay behind the one row ``add``: the ``supports_members`` flag, and the adapter for legacy replays.

The loop gives every replay rows, ``add(obs, actions, rewards, next_obs,
terminated, truncated)`` with a leading dimension of K lock-step members, or
of one for a single run (see the ``dqnbench_replays`` hookspec). A factory
declaring ``factory.supports_members = True`` builds that buffer itself, with
``members=K`` or ``members=None`` (a single run). Replays written before the
flag run unchanged: a v1 buffer's ``add`` takes one transition, which
:class:`LegacyReplay` hands it from the row of one, and a v2 factory's
``factory.lockstep = members_factory`` builds its K-member buffer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

#: the factory attribute declaring that ``factory(..., members=K or None)`` builds a buffer taking rows
MEMBERS_FLAG = "supports_members"


def takes_members(factory: Any) -> bool:
    """Does the replay factory declare :data:`MEMBERS_FLAG` (its buffers take rows, one or K)?"""
    return getattr(factory, MEMBERS_FLAG, False) is True


def supports_lockstep(factory: Any) -> bool:
    """Can the replay factory build a buffer of K lock-step members (the flag, or a legacy ``lockstep`` factory)?"""
    return takes_members(factory) or callable(getattr(factory, "lockstep", None))


def bind_replay(factory: Any, params: Mapping[str, Any]) -> Callable[..., Any]:
    """``factory`` with its grid params bound, keeping how it takes part in lock-step (the flag, or ``lockstep``)."""
    bound = functools.partial(factory, **params)
    if takes_members(factory):
        setattr(bound, MEMBERS_FLAG, True)
    elif callable(getattr(factory, "lockstep", None)):
        bound.lockstep = functools.partial(factory.lockstep, **params)
    return bound


def build_replay(
    factory: Any, capacity: int, obs_dim: Any, gamma: Any, members: int | None = None, **params: Any
) -> Any:
    """The buffer of K ``members`` (None: a single run) the loop feeds rows, whatever generation ``factory`` is."""
    if takes_members(factory):
        return factory(capacity, obs_dim, gamma, members=members, **params)
    if members is None:
        return LegacyReplay(factory(capacity, obs_dim, gamma, **params))
    return factory.lockstep(members, capacity, obs_dim, gamma, **params)


class LegacyReplay:
    """A single run's legacy replay (no flag) behind the row interface: the row of one becomes the v1 ``add``."""

    def __init__(self, replay: Any) -> None:
        self.replay = replay

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        self.replay.add(obs[0], int(actions[0]), float(rewards[0]), next_obs[0], bool(terminated[0]))

    def sample(self, batch_size: int) -> Any:
        return self.replay.sample(batch_size)

    def update_priorities(self, indices: Any, priorities: Any) -> None:
        self.replay.update_priorities(indices, priorities)

    def __len__(self) -> int:
        return len(self.replay)

    def state_dict(self) -> Any:
        """The replay's own ``state_dict()``, or None when it has none (a checkpoint then skips the replay)."""
        state_dict = getattr(self.replay, "state_dict", None)
        return state_dict() if callable(state_dict) else None

    def load_state_dict(self, state: Any) -> None:
        self.replay.load_state_dict(state)
