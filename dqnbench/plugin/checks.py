"""Contract checks of what components return, run once per run, not per step.

A plugin that returns the wrong shape or dtype should fail with a message that
says which contract it broke, not with a broadcasting surprise deep in the loss.
These are the only checks: runs, the pre-flight and ``plugins --check`` call
them, so a component gets the same verdict everywhere. The runner adds which
component and distribution the failure came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.obs import ObsSpec


class ContractError(TypeError):
    """A component returned something its contract (hookspecs.py) does not allow."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(f"{kind} broke its contract: {message}")


def check_obs_space(dtype: np.dtype, env_id: str) -> None:
    """An env's observation space: floats must be float32, the dtype networks compute in.

    The built-in ``gymnasium`` component converts float64 spaces; a plugin env
    component must too (``gymnasium.wrappers.DtypeObservation(env, np.float32)``).
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype != np.float32:
        raise ContractError(
            "env",
            f"environment {env_id} has {dtype.name} observations; dqnbench needs float32 (convert them in the env "
            "component, e.g. gymnasium.wrappers.DtypeObservation(env, np.float32), as the gymnasium component does)",
        )


def check_observations(value: object, obs: ObsSpec, lead: tuple[int, ...], stage: str, env_id: str = "") -> None:
    """Observations an env returned at ``stage``: a NumPy ``(*lead, *obs.shape)`` array of its space's dtype."""
    expected = (*lead, *obs.shape)
    if not isinstance(value, np.ndarray) or value.shape != expected or value.dtype != obs.dtype:
        got = f"{value.dtype.name} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        where = f"environment {env_id}: " if env_id else ""
        raise ContractError(
            "env", f"{where}{stage} gave observations {got}, expected a NumPy {obs.dtype.name} {expected} (its space)"
        )


def probe_reset(env: Any, obs: ObsSpec, env_id: str) -> None:
    """The pre-flight's look at one ``reset(seed=0)`` of a fresh env, as ``plugins --check`` looks.

    A reset that raises is left to the run, which records the failure naming the
    component; one that returns observations off its space is refused here.
    """
    try:
        first = env.reset(seed=0)
    except Exception:
        return
    check_observations(first[0] if isinstance(first, tuple) else first, obs, (), "reset(seed=0)", env_id)


def check_q_values(q_values: object, batch: int, n_actions: int, outputs: int = 1) -> None:
    """A network's outputs: a float tensor ``(batch, n_actions)``, or ``(batch, n_actions, outputs)``."""
    expected = (batch, n_actions) if outputs == 1 else (batch, n_actions, outputs)
    if not isinstance(q_values, torch.Tensor):
        raise ContractError("network", f"forward returned {type(q_values).__name__}, not a Tensor")
    if tuple(q_values.shape) != expected:
        raise ContractError(
            "network",
            f"forward on a batch of {batch} observations returned shape {tuple(q_values.shape)}, expected {expected}",
        )
    if not q_values.is_floating_point():
        raise ContractError("network", f"forward returned dtype {q_values.dtype}, expected a float dtype")


def check_network_outputs(network: torch.nn.Module, probe: torch.Tensor, n_actions: int, outputs: int) -> None:
    """Probe a freshly built network once (no gradients) on ``probe (B, *obs.shape)``."""
    with torch.no_grad():
        check_q_values(network(probe), probe.shape[0], n_actions, outputs)


def check_actions(actions: object, batch: int, n_actions: int) -> None:
    if not isinstance(actions, torch.Tensor):
        raise ContractError("exploration", f"select returned {type(actions).__name__}, not a Tensor")
    if tuple(actions.shape) != (batch,):
        raise ContractError("exploration", f"select returned shape {tuple(actions.shape)}, expected ({batch},)")
    if actions.dtype != torch.int64:
        raise ContractError("exploration", f"select returned dtype {actions.dtype}, expected torch.int64")
    if bool(((actions < 0) | (actions >= n_actions)).any()):
        raise ContractError("exploration", f"select returned actions outside [0, {n_actions})")


def check_learner(learner: object) -> None:
    """A learner has an int ``outputs`` ≥ 1 and callable ``q_values`` and ``loss``."""
    outputs = getattr(learner, "outputs", None)
    if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
        raise ContractError("learner", f"outputs must be an int >= 1, got {outputs!r}")
    for method in ("q_values", "loss"):
        if not callable(getattr(learner, method, None)):
            raise ContractError("learner", f"has no method {method}()")


_BATCH_DTYPES = {
    "actions": (torch.int64,),
    "rewards": (torch.float32,),
    "terminated": (torch.bool, torch.float32),
    "weights": (torch.float32,),
    "indices": (torch.int64, torch.int32),
    "discounts": (torch.float32,),
}


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy dtype (``uint8`` → ``torch.uint8``)."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def check_batch(batch: object, members: int | None, batch_size: int, obs: ObsSpec) -> None:
    """A replay's sample: a :class:`Batch` of ``(B, …)`` fields, or ``(K, B, …)`` for K lock-step members.

    Observations keep their shape and dtype; a v1 replay that stores float32
    copies of other observations is accepted too.
    """
    if not isinstance(batch, Batch):
        raise ContractError("replay", f"sample returned {type(batch).__name__}, not a dqnbench.Batch")
    lead = (batch_size,) if members is None else (members, batch_size)
    obs_dtypes = {torch_dtype(obs.dtype), torch.float32}
    for name in Batch._fields:
        value = getattr(batch, name)
        if not isinstance(value, torch.Tensor):
            raise ContractError("replay", f"Batch.{name} is {type(value).__name__}, not a Tensor")
        if name in ("obs", "next_obs"):
            expected, dtypes = (*lead, *obs.shape), tuple(obs_dtypes)
        else:
            expected, dtypes = lead, _BATCH_DTYPES[name]
        if tuple(value.shape) != expected:
            raise ContractError("replay", f"Batch.{name} has shape {tuple(value.shape)}, expected {expected}")
        if value.dtype not in dtypes:
            allowed = " or ".join(str(d) for d in dtypes)
            raise ContractError("replay", f"Batch.{name} has dtype {value.dtype}, expected {allowed}")
