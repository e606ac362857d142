"""Mid-run checkpoints: everything a run needs to go on from env step N as if it had never stopped.

A long run (Atari: days) that is killed, preempted or times out should lose
minutes, not the run. Every ``experiment.checkpoint_every`` env steps the loop
(:func:`dqnbench.agent.loop.train_runs`) hands :meth:`Checkpoint.save` a nested
state: networks, optimizer, explorer, replay, environments, RNG states,
counters and the logs so far; a rerun's :func:`~dqnbench.agent.loop.train_runs`
finds it with :meth:`Checkpoint.load` and goes on from there.

Safe to load. A checkpoint is three files and nothing in them is unpickled:

Why it is built this way, with measurements: ``docs/internals.md`` (``agent.checkpoint``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dqnbench.agent.envs import env_state, load_env_state

if TYPE_CHECKING:  # the loop imports this module: its types only, for annotations
    from dqnbench.agent.loop import Agent
    from dqnbench.agent.records import StepRecords, TrainLog

#: bumped when what a checkpoint holds changes; a checkpoint of another format is ignored (the run starts afresh)
FORMAT = 1
#: the prefix of a complete checkpoint's directory; the suffix is its env step, zero-padded so names sort by step
STEP_PREFIX = "step-"
TMP_PREFIX = ".tmp-"
#: arrays larger than this are read memory-mapped (read-only) instead of into memory
MAPPED_BYTES = 1 << 24


@dataclass(frozen=True)
class Checkpoint:
    """Where a run (or a lock-step cell, trained as one) keeps its latest checkpoint, and how often it saves."""

    #: the task's checkpoint directory (``<out>/<name>/checkpoints/<task key>/``)
    directory: Path
    #: env steps between checkpoints
    every: int

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        if not self.directory.is_dir():
            return None
        steps = sorted(p for p in self.directory.iterdir() if p.name.startswith(STEP_PREFIX) and p.is_dir())
        return steps[-1] if steps else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` as the checkpoint at env ``step``, atomically, and remove the older ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.directory))
        try:
            arrays: dict[str, np.ndarray] = {}
            tensors: dict[str, torch.Tensor] = {}
            tree = encode({"format": FORMAT, "step": step, "state": state}, arrays, tensors)
            (tmp / "arrays").mkdir()
            for key, array in arrays.items():
                with open(tmp / "arrays" / f"{key}.npy", "wb") as f:
                    np.save(f, array, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            with open(tmp / "tensors.pt", "wb") as f:
                torch.save(tensors, f)
                f.flush()
                os.fsync(f.fileno())
            with open(tmp / "state.json", "w") as f:  # last: a directory with state.json has the other two
                json.dump(tree, f)
                f.flush()
                os.fsync(f.fileno())
            final = self.directory / f"{STEP_PREFIX}{step:012d}"
            if final.exists():  # the same step saved again (a resumed run saves at the next multiple, not this one)
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.directory.iterdir():
            if old != final and (old.name.startswith(STEP_PREFIX) or old.name.startswith(TMP_PREFIX)):
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self) -> tuple[int, dict[str, Any]] | None:
        """``(env step, state)`` of the latest checkpoint; None when there is none or it cannot be read (a warning)."""
        path = self.latest()
        if path is None:
            return None
        try:
            return read(path)
        except Exception as exc:  # a checkpoint that cannot be read costs the time since the start, not the run
            warnings.warn(f"ignoring checkpoint {path} ({type(exc).__name__}: {exc}); the run starts afresh",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
            return None

    def clear(self) -> None:
        """Remove the task's checkpoints (once its results are written)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def read(path: Path) -> tuple[int, dict[str, Any]]:
    """``(env step, state)`` of the checkpoint in ``path``, loaded without unpickling anything."""
    with open(path / "state.json") as f:
        tree = json.load(f)
    arrays = {}
    for file in (path / "arrays").iterdir():
        # small arrays in memory (writable, whoever takes them); big ones (a replay's) stay mapped, read-only,
        # and are copied into the buffer that holds them, so restoring never holds a replay twice in memory
        mapped = "r" if file.stat().st_size > MAPPED_BYTES else None
        arrays[file.stem] = np.load(file, mmap_mode=mapped, allow_pickle=False)
    tensors = torch.load(path / "tensors.pt", map_location="cpu", weights_only=True)
    checkpoint = decode(tree, arrays, tensors)
    if checkpoint.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {checkpoint.get('format')!r}, this dqnbench reads {FORMAT}")
    return int(checkpoint["step"]), checkpoint["state"]


# --- the codec: nested values ↔ JSON + arrays + tensors ----------------------------------------------------------


def encode(value: Any, arrays: dict[str, np.ndarray], tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``value`` as JSON-able data, its arrays and tensors moved into ``arrays`` / ``tensors`` by reference.

    Takes ``None``, bools, ints, floats, strings, lists, tuples, dicts, NumPy
    arrays (not of objects) and scalars, torch tensors, and NumPy's
    ``Generator`` / ``RandomState`` (by their state). Every dict becomes a
    one-key tagged object, so a key of the state can never be read as a tag.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode(v, arrays, tensors, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, arrays, tensors, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: encode(v, arrays, tensors, f"{path}.{k}") for k, v in value.items()}}
        return {
            "__items__": [
                [encode(k, arrays, tensors, path), encode(v, arrays, tensors, f"{path}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"cannot checkpoint {path or 'the state'}: a NumPy array of Python objects")
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        if value.dtype.hasobject or value.dtype.kind == "c":
            raise TypeError(f"cannot checkpoint {path or 'the state'}: a NumPy {value.dtype} scalar")
        return {"__scalar__": [value.dtype.str, value.item()]}
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu()
        return {"__tensor__": key}
    if isinstance(value, np.random.Generator):
        return {"__generator__": encode(value.bit_generator.state, arrays, tensors, path)}
    if isinstance(value, np.random.RandomState):
        return {"__random_state__": encode(value.get_state(legacy=False), arrays, tensors, path)}
    raise TypeError(f"cannot checkpoint {path or 'the state'}: a {type(value).__module__}.{type(value).__qualname__}")


def decode(tree: Any, arrays: dict[str, np.ndarray], tensors: dict[str, torch.Tensor]) -> Any:
    """The values :func:`encode` took, rebuilt (RNGs as new objects in the saved state)."""
    if isinstance(tree, list):
        return [decode(v, arrays, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    ((tag, body),) = tree.items()
    if tag == "__dict__":
        return {k: decode(v, arrays, tensors) for k, v in body.items()}
    if tag == "__items__":
        return {_hashable(decode(k, arrays, tensors)): decode(v, arrays, tensors) for k, v in body}
    if tag == "__tuple__":
        return tuple(decode(v, arrays, tensors) for v in body)
    if tag == "__array__":
        return arrays[body]
    if tag == "__tensor__":
        return tensors[body]
    if tag == "__scalar__":
        dtype, item = body
        return np.array(item, dtype=np.dtype(dtype))[()]
    if tag == "__generator__":
        state = decode(body, arrays, tensors)
        generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
        generator.bit_generator.state = state
        return generator
    if tag == "__random_state__":
        random_state = np.random.RandomState()
        random_state.set_state(decode(body, arrays, tensors))
        return random_state
    raise ValueError(f"unknown tag {tag!r} in a checkpoint")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


# --- component state: state_dict() where a component has one ----------------------------------------------------


def component_state(component: Any) -> Any:
    """``component.state_dict()``, or None for a component without one (a stateless one, or a third party's)."""
    state_dict = getattr(component, "state_dict", None)
    return state_dict() if callable(state_dict) else None


def optimizer_state(optimizer: Any) -> dict[str, Any]:
    """An optimizer's state: its ``state_dict()``, else its tensors and numbers (attributes), recursively.

    ``torch.optim`` optimizers have a ``state_dict``; an optimizer without one
    (the built-in lean Adam, many third-party ones) keeps its moments as
    tensor attributes or lists of them, which are saved and restored in place.
    """
    if callable(getattr(optimizer, "state_dict", None)):
        return {"state_dict": optimizer.state_dict()}
    attributes = {}
    for name, value in vars(optimizer).items():
        if _tensors_or_numbers(value):
            attributes[name] = value
        elif hasattr(value, "step") and (callable(getattr(value, "state_dict", None)) or hasattr(value, "__dict__")):
            attributes[name] = optimizer_state(value)  # a wrapped optimizer (``TorchAdam.optimizer``)
    return {"attributes": attributes}


def load_optimizer_state(optimizer: Any, state: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_state` saved (tensors copied in place, so parameters stay shared)."""
    if "state_dict" in state:
        if not _copy_optimizer_state(optimizer, state["state_dict"]):
            optimizer.load_state_dict(state["state_dict"])
        return
    for name, saved in state["attributes"].items():
        current = getattr(optimizer, name)
        if isinstance(saved, dict) and ("state_dict" in saved or "attributes" in saved):
            load_optimizer_state(current, saved)
        elif isinstance(current, torch.Tensor):
            with torch.no_grad():
                current.copy_(saved)
        elif isinstance(current, list | tuple) and current and isinstance(current[0], torch.Tensor):
            with torch.no_grad():
                for tensor, value in zip(current, saved, strict=True):
                    tensor.copy_(value)
        else:
            setattr(optimizer, name, saved)


def _copy_optimizer_state(optimizer: Any, saved: dict[str, Any]) -> bool:
    """Copy a saved ``state_dict`` into the optimizer's own state tensors in place; False if their layout differs.

    In place rather than ``load_state_dict``, which replaces the state tensors:
    an optimizer that keeps them in lists for a faster ``step`` (the built-in
    lean RMSProp) would go on updating the old ones.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        return False
    for index, values in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            return False
        current = optimizer.state.get(params[index], {})
        for key, value in values.items():
            now = current.get(key)
            if isinstance(value, torch.Tensor) != isinstance(now, torch.Tensor):
                return False
            if isinstance(value, torch.Tensor) and value.shape != now.shape:
                return False
    with torch.no_grad():
        for index, values in saved["state"].items():
            current = optimizer.state[params[index]]
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    current[key].copy_(value)
                else:
                    current[key] = value
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        group.update({key: value for key, value in saved_group.items() if key != "params"})
    return True


def _tensors_or_numbers(value: Any) -> bool:
    if isinstance(value, torch.Tensor | bool | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(isinstance(v, torch.Tensor | bool | int | float) for v in value)
    return False


# --- RNG states -----------------------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python ``random``, NumPy's global RNG, torch's CPU RNG and, on CUDA, the device's."""
    import random

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    import random

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --- what the training loop saves and restores ----------------------------------------------------


@dataclass
class TrainState:
    """What the training loop holds between env steps: what a checkpoint saves and a resume restores into.

    The arrays, dict and logs are the loop's own, restored in place; ``obs``
    and the seconds are the values at the checkpoint (a resume sets them).
    """

    agent: Agent
    envs: Any
    eval_envs: Any
    logs: list[TrainLog]
    records: StepRecords
    seeds: Sequence[int]
    stacked: bool
    #: per row: the episode number, its return so far and the env step it started at
    episode: np.ndarray
    episode_return: np.ndarray
    episode_start: np.ndarray
    #: lock-step member → the env step its loss turned non-finite
    diverged: dict[int, int]
    #: the observations acted on next
    obs: np.ndarray | None = None
    #: seconds spent training and evaluating so far
    trained_s: float = 0.0
    eval_s: float = 0.0


def checkpoint_state(train_state: TrainState) -> dict[str, Any]:
    """Everything the loop holds before an env step, as plain data, arrays and tensors (see :mod:`~.checkpoint`).

    Networks, optimizer, learn steps, explorer and learner (their ``state_dict``
    if they have one: the built-ins keep no state), the replay (its
    ``state_dict``; None for a replay without one, which a resumed run refills),
    the envs where they can be restored exactly (None elsewhere), the
    observation acted on next, episode counters, the logs so far, the seconds
    spent, and the RNG states, taken last.
    """
    agent = train_state.agent
    replay = component_state(agent.replay)
    if replay is None:
        warnings.warn(f"the replay {type(getattr(agent.replay, 'replay', agent.replay)).__name__} has no state_dict(): "
                      "checkpoints skip it, and a resumed run refills it", RuntimeWarning, stacklevel=2)  # fmt: skip
    return {
        "run": {"seeds": list(train_state.seeds), "stacked": train_state.stacked, "n_actions": agent.n_actions},
        "nets": {"online": agent.nets.online.state_dict(), "target": agent.nets.target.state_dict()},
        "optimizer": optimizer_state(agent.optimizer),
        "learn_steps": agent.learn_steps,
        "member_learn_steps": getattr(agent, "member_learn_steps", None),  # a fused group's own target counts
        "explorer": component_state(agent.explorer.explorer),
        "learner": component_state(agent.learner),
        "replay": replay,
        "envs": env_state(train_state.envs),
        "eval_envs": env_state(train_state.eval_envs),
        "obs": train_state.obs,
        "counters": {
            "episode": train_state.episode,
            "return": train_state.episode_return,
            "start": train_state.episode_start,
            "diverged": train_state.diverged,
        },
        "logs": [{"episodes": log.episodes, "evals": log.evals} for log in train_state.logs],
        "records": train_state.records.state_dict(),
        "seconds": {"trained": train_state.trained_s, "eval": train_state.eval_s},
        "rng": rng_state(agent.device),
    }


def resume(saved: tuple[int, dict[str, Any]], train_state: TrainState, eval_seed_offset: int) -> int:
    """Restore a checkpoint into freshly built components (``train_state``, its ``obs`` and seconds set); the env step.

    Where the envs' state was not saved, the episode in progress is dropped
    (not recorded) and a new one starts, reset with a seed derived from the
    step, so the rerun stays reproducible. Raises ValueError (or KeyError)
    when the checkpoint is another run's.
    """
    step, state = saved
    agent, envs, eval_envs = train_state.agent, train_state.envs, train_state.eval_envs
    seeds, stacked = train_state.seeds, train_state.stacked
    run = state["run"]
    if list(run["seeds"]) != list(seeds) or run["stacked"] != stacked or run["n_actions"] != agent.n_actions:
        raise ValueError(f"it is of seeds {run['seeds']} (lock-step {run['stacked']}), not {list(seeds)} ({stacked})")
    train_state.records.load_state_dict(state["records"])  # first: it checks the run's length and layout
    agent.nets.online.load_state_dict(state["nets"]["online"])
    agent.nets.target.load_state_dict(state["nets"]["target"])
    load_optimizer_state(agent.optimizer, state["optimizer"])
    agent.learn_steps = int(state["learn_steps"])
    if state.get("member_learn_steps") is not None:
        agent.member_learn_steps = np.asarray(state["member_learn_steps"], dtype=np.int64).copy()
    for component, component_saved in ((agent.explorer.explorer, state["explorer"]), (agent.learner, state["learner"])):
        if component_saved is not None:
            component.load_state_dict(component_saved)
    if state["replay"] is not None:
        agent.replay.load_state_dict(state["replay"])
    else:
        warnings.warn("this checkpoint holds no replay (the replay has no state_dict()): the resumed run refills it",
                      RuntimeWarning, stacklevel=2)  # fmt: skip
    saved_counters = state["counters"]
    np.copyto(train_state.episode, saved_counters["episode"])
    np.copyto(train_state.episode_return, saved_counters["return"])
    np.copyto(train_state.episode_start, saved_counters["start"])
    train_state.diverged.update(saved_counters["diverged"])
    if state["envs"] is not None:
        load_env_state(envs, state["envs"])
        train_state.obs = np.array(state["obs"])
    else:  # the episode in progress cannot be restored: a new one starts here
        train_state.obs, _ = envs.reset(seed=seeds[0] + step)
        train_state.episode_return[:] = 0.0
        train_state.episode_start[:] = step
    if state["eval_envs"] is not None:
        load_env_state(eval_envs, state["eval_envs"])
    else:
        eval_envs.reset(seed=seeds[0] + eval_seed_offset + step)
    for log, saved_log in zip(train_state.logs, state["logs"], strict=True):
        log.episodes, log.evals = saved_log["episodes"], saved_log["evals"]
    set_rng_state(state["rng"], agent.device)
    train_state.trained_s, train_state.eval_s = float(state["seconds"]["trained"]), float(state["seconds"]["eval"])
    return step
