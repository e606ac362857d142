"""The online and target Q-networks of a run, or of K lock-step members stacked as one.

A single run holds the network the factory built and a copy as its target.
Lock-step members hold one module whose parameters are the K members'
parameters stacked on a leading dimension, and observations flow through it as
``(K, B, …)``: natively when the network is shape-generic (built from
:mod:`dqnbench.nn`; checked here once against the members' own outputs), else
through ``torch.func.vmap`` (:class:`VmapStack`), which runs any module but pays
a few hundred µs of Python per call. Either way the loop, the learner and the
optimizer see one ``nn.Module`` and one parameter list: only shapes differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dqnbench.agent.learning import offers_manual_path
from dqnbench.plugin.obs import ObsSpec


class QNetworks:
    """``online`` and ``target`` modules; ``members`` is None for a single run, K for stacked members."""

    def __init__(self, online: nn.Module, members: int | None = None) -> None:
        self.online = online.train()
        self.target = copy.deepcopy(online).requires_grad_(False)
        self.members = members
        self.params = [p for p in online.parameters() if p.requires_grad]
        self._copies: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        #: acting runs the network's manual path where it offers one (:func:`~dqnbench.agent.learning.
        #: offers_manual_path`): its own forward written without module calls, the same operations and numbers,
        #: about 20 µs less a step for a small MLP (``tests/test_acting_forward.py``, ``docs/internals.md``)
        self._manual = offers_manual_path(self.online)

    @classmethod
    def of(cls, modules: list[nn.Module], obs: ObsSpec, device: torch.device, stacked: bool) -> QNetworks:
        """One run's network (``stacked=False``, one module) or K members' modules stacked as one."""
        if not stacked:
            (module,) = modules
            return cls(module.to(device))
        return cls(stack_modules(modules, obs).to(device), len(modules))

    def rows(self, obs: torch.Tensor) -> torch.Tensor:
        """Online outputs for one observation per run: ``obs (R, *shape)`` → ``(R, n_actions[, outputs])``."""
        if self.members is not None:
            obs = obs.unsqueeze(1)
        outputs = self.online.manual_forward(obs)[0] if self._manual else self.online(obs)
        return outputs if self.members is None else outputs.squeeze(1)

    def sync_target(self, rows: torch.Tensor | None = None) -> None:
        """The hard target copy (Mnih et al. 2015): target ← online, every parameter and buffer.

        One in-place copy over the pairs of tensors, found once (``load_state_dict``
        costs far more Python). ``rows``: stacked members to copy (a ``(K,)``
        bool mask; None: all), for fused members on their own schedules.
        Modules whose state holds anything but tensors take ``load_state_dict``.
        """
        if rows is not None:
            with torch.no_grad():
                target, online = self.target.state_dict(keep_vars=True), self.online.state_dict(keep_vars=True)
                for name, value in online.items():
                    mask = rows.to(value.device).view(-1, *([1] * (value.dim() - 1)))
                    torch.where(mask, value, target[name], out=target[name].data)
            return
        if self._copies is None:
            online, target = self.online.state_dict(keep_vars=True), self.target.state_dict(keep_vars=True)
            tensors = all(isinstance(v, torch.Tensor) for v in (*online.values(), *target.values()))
            if not tensors or online.keys() != target.keys():
                self.target.load_state_dict(self.online.state_dict())
                return
            self._copies = ([target[k] for k in online], [online[k] for k in online])
        with torch.no_grad():
            torch._foreach_copy_(*self._copies)

    def clip_grad_norm(self, max_norm: float | torch.Tensor) -> None:
        """Clip the gradient's global norm to ``max_norm``: each member's own norm when stacked.

        A ``(K,)`` tensor gives each fused member its own bound (0: that member is not clipped).
        """
        if self.members is None:
            nn.utils.clip_grad_norm_(self.params, max_norm)
            return
        if isinstance(max_norm, torch.Tensor) and not bool((max_norm > 0).any()):
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        if isinstance(max_norm, torch.Tensor):
            scale = torch.where(max_norm.to(scale.device) > 0, scale, torch.ones_like(scale))
        if bool((scale < 1.0).any()):  # a scale of exactly 1 changes nothing: skip rewriting every gradient
            for g in grads:
                g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Each run's online ``state_dict`` on the CPU, as an independent run saves it."""
        if self.members is None:
            return [{k: v.detach().cpu().clone() for k, v in self.online.state_dict().items()}]
        state = self.online.member_state() if isinstance(self.online, VmapStack) else self.online.state_dict()
        return [{k: v[i].detach().cpu().clone() for k, v in state.items()} for i in range(self.members)]


def stack_modules(modules: list[nn.Module], obs: ObsSpec) -> nn.Module:
    """K modules of one architecture as one module over ``(K, B, …)`` inputs.

    Native when the first module, its parameters and buffers swapped for the
    stacked ones, reproduces every member's own output (a shape-generic
    network); otherwise :class:`VmapStack`.
    """
    stacked = copy.deepcopy(modules[0])
    params, buffers = stack_module_state(modules)
    for name, value in {**params, **buffers}.items():
        owner_name, _, attr = name.rpartition(".")
        owner = stacked.get_submodule(owner_name)
        if attr in owner._parameters:
            setattr(owner, attr, nn.Parameter(value.detach().clone()))
        else:
            owner._buffers[attr] = value.clone()
    return stacked if _reproduces_members(stacked, modules, obs) else VmapStack(modules)


def _reproduces_members(stacked: nn.Module, modules: list[nn.Module], obs: ObsSpec) -> bool:
    """Does ``stacked`` on ``(K, 3, …)`` give each member's own outputs? (eval mode, no RNG drawn)."""
    probe = probe_observations(obs, (len(modules), 3))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        modes = [m.training for m in modules]
        try:
            stacked.eval()
            for m in modules:
                m.eval()
            together = stacked(probe)
            alone = torch.stack([m(x) for m, x in zip(modules, probe)])
        except Exception:  # any shape the module cannot take: not shape-generic
            return False
        finally:
            stacked.train(modes[0])
            for m, mode in zip(modules, modes):
                m.train(mode)
    return together.shape == alone.shape and torch.allclose(together, alone, rtol=1e-4, atol=1e-5)


def probe_observations(obs: ObsSpec, batch: tuple[int, ...]) -> torch.Tensor:
    """Random observations ``(*batch, *obs.shape)`` in the observation dtype, from a fixed generator."""
    generator = torch.Generator().manual_seed(0)
    dtype = torch.from_numpy(np.zeros(0, dtype=obs.dtype)).dtype
    if dtype.is_floating_point:
        return torch.randn(*batch, *obs.shape, generator=generator).to(dtype)
    high = 2 if dtype == torch.bool else 256
    return torch.randint(0, high, (*batch, *obs.shape), generator=generator).to(dtype)


class VmapStack(nn.Module):
    """K members of any vmappable module, evaluated with ``torch.func.vmap`` over ``functional_call``."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(modules)
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[name].clone())
        self.base = [copy.deepcopy(modules[0]).to("meta")]  # a list: not a submodule, no state of its own

    def train(self, mode: bool = True) -> VmapStack:
        super().train(mode)
        self.base[0].train(mode)
        return self

    def member_state(self) -> dict[str, torch.Tensor]:
        """The stacked tensors under the members' own ``state_dict`` names."""
        state = dict(zip(self.names, self.stacked))
        state.update({n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)})
        return state

    def _call(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], *inputs: torch.Tensor) -> Any:
        return functional_call(self.base[0], (params, buffers), inputs)

    def forward(self, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
        """The members' ``forward(x, *more)``; ``more`` (e.g. iqn's levels) is stacked by member like ``x``."""
        buffers = {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)}
        return vmap(self._call, randomness="different")(dict(zip(self.names, self.stacked)), buffers, x, *more)


def network_problem(factory: Callable[..., nn.Module], obs: ObsSpec, n_actions: int) -> tuple[str | None, bool]:
    """``(why this network cannot be stacked or None, whether it stacks natively)``: a probe of forward + backward."""
    try:
        stacked = stack_modules([factory(obs, n_actions) for _ in range(2)], obs)
        outputs = stacked(probe_observations(obs, (2, 3)))
        if outputs.shape[:3] != (2, 3, n_actions):
            raise ValueError(f"stacked outputs have shape {tuple(outputs.shape)}, expected (2, 3, {n_actions}, …)")
        outputs.sum().backward()
        stacked.eval()(probe_observations(obs, (2, 1)))
    except Exception as exc:  # whatever vmap or the module objects to
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", False
    return None, not isinstance(stacked, VmapStack)


#: vmap lock-step pays from this many members: below it, its fixed Python cost per call outweighs the gain
#: (measurements: docs/benchmarks.md, "Figures behind constants")
VMAP_MIN_MEMBERS = 8
#: ...and only while no layer gives more than this many values per sample: wider activations, stacked K times,
#: leave the caches and make vmap slower than separate networks
VMAP_MAX_WIDTH = 2048


def widest_activation(factory: Callable[[ObsSpec, int], nn.Module], obs: ObsSpec, n_actions: int) -> int:
    """The most values per sample any submodule of the network outputs, from one forward of a probe observation."""
    with torch.random.fork_rng(devices=[]):  # a probe: the caller's random streams stay where they were
        net = factory(obs, n_actions)
        return _widest_output(net, probe_observations(obs, (1,)))


def _widest_output(net: nn.Module, x: torch.Tensor) -> int:
    widest = 0

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal widest
        if isinstance(output, torch.Tensor) and output.dim() > 0:
            widest = max(widest, output.numel() // output.shape[0])

    hooks = [module.register_forward_hook(record) for module in net.modules()]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return widest


def vmap_problem(
    factory: Callable[[ObsSpec, int], nn.Module], obs: ObsSpec, n_actions: int, members: int
) -> str | None:
    """Why ``members`` copies of a network that stacks only through vmap should train as separate runs, or None.

    The rule reads the network's shape, never a clock: a timing probe flips near
    its threshold with the machine's load, and lock-step and separate runs give
    different (equally valid) numbers, so a grid's results would change from one
    invocation to the next. vmap is used from :data:`VMAP_MIN_MEMBERS` members
    while no layer is wider than :data:`VMAP_MAX_WIDTH` values per sample.
    """
    if members < VMAP_MIN_MEMBERS:
        return f"stacking through vmap pays from {VMAP_MIN_MEMBERS} seeds; this cell has {members}"
    width = widest_activation(factory, obs, n_actions)
    if width > VMAP_MAX_WIDTH:
        return f"a layer gives {width:,} values per sample: stacked through vmap, it runs slower than separate networks"
    return None
