"""Which cells fuse: cells equal except for member-wise params train their runs as one pool of lock-step members.

A key is member-wise when every component that reads it declares so
(:mod:`dqnbench.plugin.members`): the loop's own ``agent.target_update`` and
``agent.max_grad_norm`` always; ``agent.lr`` when the optimizer declares
``lr``, ``agent.learning_starts`` when it declares anything (it can then hold
a member back), ``agent.gamma`` when the replay declares ``gamma``; and each
component's own declared params. Cells whose configs agree on every other key
(execution keys included) form a pool; :func:`fuse_problem` keeps
compute-bound networks out of pools (``docs/sweeps.md`` has the measurements).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dqnbench.config.grid import Plan
from dqnbench.config.schema import RunConfig
from dqnbench.plugin.members import MEMBERWISE_KINDS, PerMember, declared
from dqnbench.plugin.registry import Component

#: ``[agent]`` keys the loop itself takes per member
LOOP_MEMBERWISE = ("agent.target_update", "agent.max_grad_norm")
#: component params that are ``[agent]`` keys: (kind, param) → dotted key
AGENT_PARAMS = {("optimizer", "lr"): "agent.lr", ("replay", "gamma"): "agent.gamma"}

#: a network whose learn step does more than this many multiply-adds per member (batch × one sample's forward)
#: is compute-bound: K members cost K times one, so it trains its cells apart (measured in docs/sweeps.md)
FUSE_MAX_MACS = 4_000_000
#: a fused pool is split into groups for free workers only while each group's learn step still does this many
#: multiply-adds (members × batch × one sample's forward). Measured on 2 cores (docs/sweeps.md): the tutorial
#: agent's fused sweep ran 1.15-1.3× faster as two groups than as one, from groups of 4 members (7,680
#: multiply-adds) to groups of 32; below that, groups too small to be measured stay whole
SPLIT_MIN_MACS = 6_000


@dataclass(frozen=True)
class Fusion:
    """The lock-step cells in pools (grid order; a cell that fuses with none is alone), and per fused pool (by its
    first cell) the fewest members a group split off for a free worker may have (:func:`split_floor`)."""

    pools: list[list[str]]
    floors: dict[str, int] = field(default_factory=dict)


def split_floor(learn_macs: int) -> int:
    """The fewest members of a fused group split off for a free worker, for members whose learn step does
    ``learn_macs`` multiply-adds each: enough that the group does :data:`SPLIT_MIN_MACS`."""
    return max(2, math.ceil(SPLIT_MIN_MACS / max(1, learn_macs)))


def memberwise_keys(chosen: Mapping[str, Component]) -> frozenset[str]:
    """The dotted keys whose values may differ between the members of a fused group of these components."""
    keys = set(LOOP_MEMBERWISE)
    if declared(chosen["optimizer"].factory):
        keys.add("agent.learning_starts")
    for kind in MEMBERWISE_KINDS:
        for name in declared(chosen[kind].factory):
            keys.add(AGENT_PARAMS.get((kind, name), f"{kind}.{name}"))
    return frozenset(keys)


def pool_key(config: RunConfig, keys: frozenset[str]) -> str:
    """What cells of one pool share: the whole config (execution keys too) less the member-wise keys."""
    data = config.to_dict()
    data.pop("scores", None)
    for key in keys:
        section, _, name = key.partition(".")
        table = data.get(section, {})
        table.pop(name, None)
        table.get("params", {}).pop(name, None)
    return json.dumps(data, sort_keys=True, default=list)


def pools(
    plan: Plan, cells: set[str], choose: Callable[[RunConfig], Mapping[str, Component]],
    fits: Callable[[str, RunConfig], bool],
) -> list[list[str]]:  # fmt: skip
    """The lock-step ``cells`` in pools (grid order), each a list of cell ids; a cell that fuses with none is alone.

    ``fits(cell, config)``: may this cell fuse at all (``experiment.fuse``, and :func:`fuse_problem`)?
    """
    by_key: dict[str, list[str]] = {}
    alone: list[list[str]] = []
    order = []
    for cell, _, config in plan.cells:
        if cell not in cells:
            continue
        if not config.experiment.fuse or not fits(cell, config):
            alone.append([cell])
            order.append(alone[-1])
            continue
        key = pool_key(config, memberwise_keys(choose(config)))
        if key not in by_key:
            by_key[key] = []
            order.append(by_key[key])
        by_key[key].append(cell)
    return order


def member_values(configs: list[RunConfig], chosen: Mapping[str, Component]) -> dict[str, dict[str, Any]]:
    """Each kind's member-wise params for a fused group: ``{kind: {param: PerMember}}`` (``agent`` for the loop's)."""
    values: dict[str, dict[str, Any]] = {"agent": {}}
    for kind in MEMBERWISE_KINDS:
        values[kind] = {}
        for name in declared(chosen[kind].factory):
            key = AGENT_PARAMS.get((kind, name))
            if key is not None:
                values[kind][name] = PerMember(getattr(c.agent, key.split(".")[1]) for c in configs)
            elif name in getattr(configs[0], kind).params:
                values[kind][name] = PerMember(getattr(c, kind).params[name] for c in configs)
    for key in LOOP_MEMBERWISE + ("agent.learning_starts",):
        name = key.split(".")[1]
        values["agent"][name] = tuple(getattr(c.agent, name) for c in configs)
    return values


def forward_macs(network: Any, probe: Any) -> int:
    """Multiply-adds of one forward of ``network`` on ``probe`` (one sample).

    A torch function mode counts the products (linear, matmul and its kin,
    convolutions) from their shapes as the forward calls them, however it calls
    them (modules, ``dqnbench.nn``, ``@``). A forward that calls anything else
    that multiplies (``einsum``, say) is counted by torch's FLOP counter
    instead, which sees every kernel but imports TorchDynamo on first use.
    """
    import torch

    counter = _product_counter()
    with counter, torch.no_grad():
        network(probe)
    return _counted_macs(network, probe) if counter.unknown else counter.macs


def _product_macs(name: str, args: tuple, out: Any) -> int | None:
    """Multiply-adds of one call of a product function from its shapes; None for a function it does not know."""
    if name == "linear":
        return out.numel() * args[1].shape[-1]
    if name in ("matmul", "__matmul__", "mm", "bmm"):
        return out.numel() * args[0].shape[-1]
    if name in ("addmm", "baddbmm", "addbmm"):
        return out.numel() * args[1].shape[-1]
    if name in ("conv1d", "conv2d", "conv3d"):
        weight = args[1]
        return out.numel() * math.prod(weight.shape[1:])
    return None


def _product_counter() -> Any:
    """A torch function mode counting products (torch is imported here: planning without fusion needs none)."""
    from torch.overrides import TorchFunctionMode

    class ProductCounter(TorchFunctionMode):
        """Counts the multiply-adds of the products a forward calls; notes any other multiplying call."""

        def __init__(self) -> None:
            super().__init__()
            self.macs, self.unknown = 0, False

        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            name = getattr(func, "__name__", "")
            macs = _product_macs(name, args, out) if len(args) > 1 else None
            if macs is not None:
                self.macs += macs
            elif name in _OTHER_PRODUCTS:
                self.unknown = True
            return out

    return ProductCounter()


#: products the shape count does not know: a forward calling one is counted by torch's FLOP counter
_OTHER_PRODUCTS = frozenset(
    {"einsum", "tensordot", "bilinear", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "inner",
     "outer", "kron", "chain_matmul", "multi_dot", "scaled_dot_product_attention", "multi_head_attention_forward",
     "_convolution", "convolution", "dot", "vdot", "mv", "addmv", "addr", "baddbmm_", "addmm_", "lstm", "gru",
     "rnn_tanh", "rnn_relu"}
)  # fmt: skip


def _counted_macs(network: Any, probe: Any) -> int:
    """Multiply-adds as torch's FLOP counter sees them (every matmul and convolution, wherever it is)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(probe)
    return counter.get_total_flops() // 2


def fuse_problem(macs_per_sample: int, batch_size: int) -> str | None:
    """Why a cell should not fuse (its network is compute-bound), or None; a rule on the shape, never a clock."""
    work = macs_per_sample * batch_size
    if work > FUSE_MAX_MACS:
        return (
            f"its learn step does {work:,} multiply-adds per member (over {FUSE_MAX_MACS:,}): compute-bound, "
            "so fusing gains nothing over separate groups"
        )
    return None
