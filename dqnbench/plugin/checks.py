"""Contract checks of what components return, run once per run, not per step.

A plugin that returns the wrong shape or dtype should fail with a message that
says which contract it broke, not with a broadcasting surprise deep in the loss.
The runner adds which component and distribution the failure came from.
"""

from __future__ import annotations

import torch

from dqnbench.plugin.batch import Batch


class ContractError(TypeError):
    """A component returned something its contract (hookspecs.py) does not allow."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(f"{kind} broke its contract: {message}")


def check_q_values(q_values: object, batch: int, n_actions: int) -> None:
    if not isinstance(q_values, torch.Tensor):
        raise ContractError("network", f"forward returned {type(q_values).__name__}, not a Tensor")
    if tuple(q_values.shape) != (batch, n_actions):
        raise ContractError(
            "network",
            f"forward on ({batch}, obs_dim) returned shape {tuple(q_values.shape)}, expected ({batch}, {n_actions})",
        )
    if not q_values.is_floating_point():
        raise ContractError("network", f"forward returned dtype {q_values.dtype}, expected a float dtype")


def check_actions(actions: object, batch: int, n_actions: int) -> None:
    if not isinstance(actions, torch.Tensor):
        raise ContractError("exploration", f"select returned {type(actions).__name__}, not a Tensor")
    if tuple(actions.shape) != (batch,):
        raise ContractError("exploration", f"select returned shape {tuple(actions.shape)}, expected ({batch},)")
    if actions.dtype != torch.int64:
        raise ContractError("exploration", f"select returned dtype {actions.dtype}, expected torch.int64")
    if bool(((actions < 0) | (actions >= n_actions)).any()):
        raise ContractError("exploration", f"select returned actions outside [0, {n_actions})")


_BATCH_DTYPES = {
    "obs": (torch.float32,),
    "actions": (torch.int64,),
    "rewards": (torch.float32,),
    "next_obs": (torch.float32,),
    "terminated": (torch.bool, torch.float32),
    "weights": (torch.float32,),
    "indices": (torch.int64, torch.int32),
    "discounts": (torch.float32,),
}


def check_batch(batch: object, batch_size: int, obs_dim: int) -> None:
    if not isinstance(batch, Batch):
        raise ContractError("replay", f"sample returned {type(batch).__name__}, not a dqnbench.Batch")
    for name, dtypes in _BATCH_DTYPES.items():
        value = getattr(batch, name)
        if not isinstance(value, torch.Tensor):
            raise ContractError("replay", f"Batch.{name} is {type(value).__name__}, not a Tensor")
        expected = (batch_size, obs_dim) if name in ("obs", "next_obs") else (batch_size,)
        if tuple(value.shape) != expected:
            raise ContractError("replay", f"Batch.{name} has shape {tuple(value.shape)}, expected {expected}")
        if value.dtype not in dtypes:
            allowed = " or ".join(str(d) for d in dtypes)
            raise ContractError("replay", f"Batch.{name} has dtype {value.dtype}, expected {allowed}")
