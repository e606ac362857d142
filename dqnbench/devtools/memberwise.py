"""``plugins --check`` of member-wise declarations: two members with different values, each against itself alone.

A component declaring ``memberwise`` params (:mod:`dqnbench.plugin.members`) is
built as a fused pair (each declared param a :class:`PerMember` of two
different values) and as each member alone; what the pair gives member k must
be what member k gives alone: an explorer's ε (``value(step)``), an
optimizer's update, a learner's losses, a replay's discounts. The check says
what differed, or None.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.legacy_replay import build_replay, supports_lockstep
from dqnbench.plugin.members import MEMBERWISE_KINDS, PerMember, declared
from dqnbench.plugin.obs import ObsSpec
from dqnbench.plugin.registry import Component

#: the lr each member gets when ``lr`` is not member-wise, and member 1's when it is
PROBE_LR, OTHER_LR = 1e-3, 3e-3
PROBE_GAMMA, OTHER_GAMMA = 0.99, 0.5


def other_value(value: Any) -> Any:
    """A second valid-looking value for a param: numbers scaled towards 0, booleans flipped, pairs scaled."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return type(value)(value * 0.5) if value else type(value)(1)
    if isinstance(value, list | tuple) and value and all(isinstance(v, int | float) for v in value):
        return type(value)(v * 0.9 for v in value)
    return None


def _defaults(component: Component, names: tuple[str, ...]) -> dict[str, Any]:
    params = inspect.signature(component.factory).parameters
    return {n: params[n].default for n in names if n in params and params[n].default is not inspect.Parameter.empty}


def _pairs(component: Component, skip: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """Each declared param's two values (its default, another), the positional ones (lr, gamma) left out."""
    names = tuple(n for n in declared(component.factory) if n not in skip)
    pairs = {}
    for name, value in _defaults(component, names).items():
        other = other_value(value)
        if other is not None:
            pairs[name] = (value, other)
    return pairs


def memberwise_problem(component: Component, obs: ObsSpec, n_actions: int) -> str | None:
    """What a fused pair of this component gives differently than each member alone, or None."""
    if not declared(component.factory):
        return None
    if component.kind not in MEMBERWISE_KINDS:
        return f"declares memberwise {declared(component.factory)!r}, but a {component.kind} is never member-wise"
    check = {"exploration": _exploration, "optimizer": _optimizer, "learner": _learner, "replay": _replay}[
        component.kind
    ]
    try:
        return check(component, obs, n_actions)
    except Exception as exc:  # the factory or the object refused its member-wise values
        return f"fails with member-wise values: {type(exc).__name__}: {exc}"


def _fused(pairs: dict[str, tuple[Any, Any]]) -> dict[str, PerMember]:
    return {name: PerMember(values) for name, values in pairs.items()}


def _alone(pairs: dict[str, tuple[Any, Any]], k: int) -> dict[str, Any]:
    return {name: values[k] for name, values in pairs.items()}


def _exploration(component: Component, obs: ObsSpec, n_actions: int) -> str | None:
    pairs, total = _pairs(component, ()), 1_000
    pair = component.factory(n_actions, total, **_fused(pairs))
    alone = [component.factory(n_actions, total, **_alone(pairs, k)) for k in (0, 1)]
    if not callable(getattr(pair, "value", None)):
        return None  # nothing to compare without drawing: the select contract is checked for lock-step already
    for step in (0, total // 4, total // 2, total):
        values = np.broadcast_to(np.asarray(pair.value(step), dtype=float), (2,))
        for k in (0, 1):
            if not np.isclose(values[k], float(alone[k].value(step))):
                return (
                    f"member {k}'s value at step {step} is {values[k]:g} fused, {float(alone[k].value(step)):g} alone"
                )
    return None


def _optimizer(component: Component, obs: ObsSpec, n_actions: int) -> str | None:
    pairs = _pairs(component, ("lr",))
    lrs = (PROBE_LR, OTHER_LR) if "lr" in declared(component.factory) else (PROBE_LR, PROBE_LR)
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 8, 4), (2, 8)]
    start = [torch.randn(s, generator=generator) for s in shapes]
    grads = [[torch.randn(s, generator=generator) for s in shapes] for _ in range(3)]
    pair_params = [torch.nn.Parameter(v.clone()) for v in start]
    pair = component.factory(pair_params, PerMember(lrs) if lrs[0] != lrs[1] else lrs[0], **_fused(pairs))
    alone = []
    for k in (0, 1):
        params = [torch.nn.Parameter(v[k : k + 1].clone()) for v in start]
        alone.append((params, component.factory(params, lrs[k], **_alone(pairs, k))))
    for step_grads in grads:
        set_grads(pair_params, step_grads)
        pair.step()
        for k, (params, optimizer) in enumerate(alone):
            set_grads(params, [g[k : k + 1] for g in step_grads])
            optimizer.step()
    for k, (params, _) in enumerate(alone):
        for fused, own in zip(pair_params, params):
            if not torch.allclose(fused[k : k + 1], own, rtol=1e-5, atol=1e-6):
                return f"member {k} was updated differently than alone with its own values"
    return None


def set_grads(params: list[torch.nn.Parameter], grads: Sequence[torch.Tensor]) -> None:
    """Set each ``.grad`` the way a learner's backward does: in place where a tensor is there already."""
    for p, g in zip(params, grads):
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.copy_(g)


def _learner(component: Component, obs: ObsSpec, n_actions: int) -> str | None:
    from dqnbench.agent.nets import QNetworks
    from dqnbench.builtin.networks import mlp

    if len(obs.shape) != 1:
        return None  # the probe networks are MLPs on vectors
    pairs = _pairs(component, ())
    pair = component.factory(n_actions, **_fused(pairs))
    alone = [component.factory(n_actions, **_alone(pairs, k)) for k in (0, 1)]
    extra = {"outputs": pair.outputs} if pair.outputs != 1 else {}
    torch.manual_seed(0)
    modules = [mlp(obs, n_actions, hidden=[16], **extra) for _ in range(2)]
    batch = probe_batch(obs, n_actions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        fused_losses = pair.loss(QNetworks.of(modules, obs, torch.device("cpu"), stacked=True), batch)[0]
    for k in (0, 1):
        nets = QNetworks.of([modules[k]], obs, torch.device("cpu"), stacked=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            own = alone[k].loss(nets, Batch(*(field[k : k + 1] for field in batch)))[0]
        if not torch.allclose(fused_losses[k : k + 1], own, rtol=1e-4, atol=1e-5):
            return f"member {k}'s losses differ from its losses alone with its own values"
    return None


def probe_batch(obs: ObsSpec, n_actions: int, members: int = 2, size: int = 8, gamma: float = PROBE_GAMMA) -> Batch:
    """A fixed random ``Batch`` of ``members`` × ``size`` transitions on probe observations (discounts ``gamma``)."""
    from dqnbench.agent.nets import probe_observations

    generator = torch.Generator().manual_seed(2)
    return Batch(
        obs=probe_observations(obs, (members, size)),
        actions=torch.randint(n_actions, (members, size), generator=generator),
        rewards=torch.randn(members, size, generator=generator),
        next_obs=probe_observations(obs, (members, size)).roll(1, dims=1),
        terminated=torch.rand(members, size, generator=generator) < 0.1,
        weights=torch.ones(members, size),
        indices=torch.arange(size).expand(members, size),
        discounts=torch.full((members, size), gamma),
    )


def _replay(component: Component, obs: ObsSpec, n_actions: int) -> str | None:
    factory = component.factory
    if not supports_lockstep(factory):
        return None
    problem = _replay_discounts(factory, obs) if "gamma" in declared(factory) else None
    return problem or _replay_draws(factory, obs, _pairs(component, ("gamma",)))


def _replay_discounts(factory: Any, obs: ObsSpec) -> str | None:
    gammas = (PROBE_GAMMA, OTHER_GAMMA)
    pair = build_replay(factory, 64, obs, PerMember(gammas), members=2)
    alone = [build_replay(factory, 64, obs, gammas[k], members=1) for k in (0, 1)]
    discounts = _filled(pair, obs, 2).sample(4).discounts
    for k in (0, 1):
        if not torch.allclose(discounts[k], _filled(alone[k], obs, 1).sample(4).discounts[0]):
            return f"member {k}'s discounts differ from its own γ = {gammas[k]}"
    return None


def _replay_draws(factory: Any, obs: ObsSpec, pairs: dict[str, tuple[Any, Any]]) -> str | None:
    """A replay's other declared params (prioritized's ``alpha``, ``beta``, ``eps``), by what a pair draws with the
    same transitions, TD errors and NumPy seed: each member of a pair with different values must draw the slots
    and weights it draws beside a member with its own values, and a member with values ``v`` what a run draws
    alone with ``v``.

    The second holds only where a pair of equal values draws as a run alone does (its member 0 from the first
    of the pair's draws, as the built-ins do); for a replay that draws its members' randomness otherwise, only
    the first is checked.
    """
    if not pairs:
        return None

    def draws(values: dict[str, Any], members: int) -> Batch:
        replay = _filled(build_replay(factory, 64, obs, PROBE_GAMMA, members=members, **values), obs, members)
        state = np.random.get_state()
        try:
            np.random.seed(3)
            first = replay.sample(4)
            td = torch.linspace(0.05, 3.0, 4 * members).view(members, 4)[:, torch.tensor([3, 0, 2, 1])]
            replay.update_priorities(first.indices, td)
            np.random.seed(4)
            return replay.sample(4)
        finally:
            np.random.set_state(state)

    def same(one: Batch, j: int, other: Batch, k: int) -> bool:
        return torch.equal(one.indices[j], other.indices[k]) and torch.allclose(one.weights[j], other.weights[k])

    mixed = draws(_fused(pairs), 2)
    equal = [draws(_fused({name: (values[k],) * 2 for name, values in pairs.items()}), 2) for k in (0, 1)]
    for k in (0, 1):
        if not same(mixed, k, equal[k], k):
            return f"member {k} draws other slots or weights beside a member with other values"
    if same(equal[0], 0, draws(_alone(pairs, 0), 1), 0) and not same(equal[1], 0, draws(_alone(pairs, 1), 1), 0):
        return "a member draws other slots or weights than a run alone with its values"
    return None


def _filled(replay: Any, obs: ObsSpec, rows: int) -> Any:
    """``replay`` of ``rows`` members after 16 rows of transitions (rewards 0 to 15), the same for every member."""
    zeros = np.zeros((rows, *obs.shape), dtype=obs.dtype)
    for step in range(16):
        flags = np.zeros(rows, bool)
        replay.add(zeros, np.zeros(rows, np.int64), np.full(rows, step, np.float32), zeros, flags, flags)
    return replay
