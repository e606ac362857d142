"""What a trained Q-network "sees": its hidden-layer embedding of visited states, in 3D.

The DQN counterpart of the tutorial's 3D plot (an autoencoder's code of MNIST
digits, coloured by digit): roll out greedy episodes with a trained Q-network,
capture the penultimate-layer activation of every visited state with a forward
hook, project the activations to 3D with PCA, and scatter them coloured by the
greedy action and shaded by ``max_a Q(s, a)``. A network that has learned
arranges states so that a linear head can read off values and actions: the
colours separate and the shading runs smoothly along the manifold.

Q-values are read from the network's outputs by the run's learner
(``learner.q_values``): the expected Q-values of a distributional learner such
as ``c51``, whose network gives ``(B, n_actions, atoms)``.

Hooks make it work for any network a plugin registers, with no cooperation from
it. The layer is found as follows (see :func:`find_layer`):

1. ``layer="name"``: the *output* of that submodule (a name from
   ``net.named_modules()``);
2. a submodule called ``body`` (the shallowest, e.g. ``head.body``): its
   output. dqnbench's built-in networks (mlp, dueling, noisy) end ``body`` at
   the representation their heads share; the conv networks (nature_cnn,
   minatar_cnn) put one of those as ``head`` on their convolutions, so
   ``head.body`` is their penultimate layer;
3. otherwise the *input* of the last linear layer in ``net.modules()`` order:
   an ``nn.Linear`` or any module with ``in_features`` / ``out_features``
   (NoisyNet layers), preferring the last one whose ``out_features`` is the
   number of actions (the Q head).

States are visited with the run's own environment component (its ``[env]``
section, see :func:`load_trained_env`), so image observations reach the
network in the shape and dtype it was trained on (MinAtar's channels-first
bools, Atari's uint8 frame stacks).

Matplotlib is imported inside the figure functions only.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dqnbench.agent.heads import learner_network
from dqnbench.errors import DqnbenchError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dqnbench.plugin.registry import Registry
    from dqnbench.run.results import Results

#: Okabe & Ito (2008) colour-blind-safe palette, black dropped: one colour per action.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

#: Readable names of the actions of common environments (gymnasium has no generic API for this).
ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "CartPole": ("push left", "push right"),
    "MountainCar": ("accelerate left", "don't accelerate", "accelerate right"),
    "Acrobot": ("torque −1", "torque 0", "torque +1"),
    "LunarLander": ("do nothing", "fire left engine", "fire main engine", "fire right engine"),
}


class EmbeddingError(DqnbenchError):
    """A network whose penultimate layer cannot be found or hooked."""


@dataclass
class Embedding:
    """The states visited by greedy rollouts and what the network made of them.

    ``features (N, F)``: the hooked activations; ``q_values (N, n_actions)``;
    ``actions (N,)``: the greedy actions; ``episode (N,)``, ``t (N,)``: where
    each state was visited; ``returns``: the return of each episode.
    """

    features: np.ndarray
    q_values: np.ndarray
    actions: np.ndarray
    episode: np.ndarray
    t: np.ndarray
    env_id: str
    layer: str
    returns: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- finding and hooking the layer


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(getattr(module, "in_features", None), int) and isinstance(getattr(module, "out_features", None), int)
    )


def find_layer(net: nn.Module, n_actions: int | None = None, layer: str | None = None) -> tuple[str, nn.Module, str]:
    """``(name, module, "output" | "input")``: where the penultimate activation can be captured.

    See the module docstring for the order of preference. Raises
    :class:`EmbeddingError` naming the network when nothing fits.
    """
    modules = dict(net.named_modules())
    kind = type(net).__name__
    if layer is not None:
        if layer not in modules:
            raise EmbeddingError(
                f"network {kind} has no submodule {layer!r} (has: {', '.join(n for n in modules if n) or 'none'})"
            )
        return layer, modules[layer], "output"
    bodies = [n for n in modules if n == "body" or n.endswith(".body")]
    if bodies:
        name = min(bodies, key=lambda n: n.count("."))  # the shallowest: a head's body inside a conv network
        return name, modules[name], "output"
    linears = [(n, m) for n, m in modules.items() if _is_linear(m)]
    if not linears:
        raise EmbeddingError(
            f"cannot find the penultimate layer of network {kind}: it has no submodule named 'body' and no "
            "linear layer (nn.Linear or a module with in_features/out_features); pass layer=NAME"
        )
    heads = [(n, m) for n, m in linears if n_actions is not None and m.out_features == n_actions]
    name, module = (heads or linears)[-1]
    return name, module, "input"


class _Capture:
    """A forward (pre-)hook that keeps the last tensor seen at the chosen layer."""

    def __init__(self, module: nn.Module, where: str) -> None:
        self.value: torch.Tensor | None = None
        if where == "input":
            self.handle = module.register_forward_pre_hook(self._pre)
        else:
            self.handle = module.register_forward_hook(self._post)

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.value = args[0] if args else None

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.value = output

    def remove(self) -> None:
        self.handle.remove()


#: reads Q-values ``(B, n_actions)`` from a network's raw outputs (a learner's ``q_values``)
QValues = Callable[[torch.Tensor], torch.Tensor]


class FeatureExtractor:
    """Calls a Q-network and returns its penultimate features too: ``(features (B, F), q (B, A))``.

    ``q_values`` turns the network's raw outputs into Q-values (the run's
    learner's ``q_values``; by default the outputs are the Q-values). The hook
    is attached once, at construction; call :meth:`close` (or use it as a
    context manager) to remove it and leave the network as it was.
    """

    def __init__(
        self,
        net: nn.Module,
        n_actions: int | None = None,
        layer: str | None = None,
        q_values: QValues | None = None,
    ) -> None:
        self.net = net
        self.q_values = q_values
        name, module, where = find_layer(net, n_actions, layer)
        self.layer = f"{name} ({where})"
        self._capture = _Capture(module, where)

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._capture.value = None
        with torch.no_grad():
            q = self.net(obs)
            if self.q_values is not None:
                q = self.q_values(q)
        feats = self._capture.value
        if not isinstance(feats, torch.Tensor):
            raise EmbeddingError(
                f"layer {self.layer} of network {type(self.net).__name__} did not see a tensor in forward(); "
                "pass layer=NAME naming the module whose output is the state representation"
            )
        if feats.ndim == 0 or feats.shape[0] != obs.shape[0]:
            raise EmbeddingError(
                f"layer {self.layer} of network {type(self.net).__name__} gave shape {tuple(feats.shape)} "
                f"for a batch of {obs.shape[0]} states; pass layer=NAME"
            )
        return feats.detach().reshape(obs.shape[0], -1).float(), q.detach().float()

    def close(self) -> None:
        self._capture.remove()

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- rollouts


def action_names(env_id: str, n_actions: int) -> list[str]:
    """``["0: push left", "1: push right"]`` where dqnbench knows the env, else ``["action 0", …]``."""
    known = ACTION_NAMES.get(env_id.split("-")[0].split("/")[-1])
    if known and len(known) == n_actions:
        return [f"{i}: {n}" for i, n in enumerate(known)]
    return [f"action {i}" for i in range(n_actions)]


def embed_states(
    net: nn.Module,
    env_id: str,
    *,
    episodes: int = 5,
    seed: int = 0,
    max_states: int = 5000,
    layer: str | None = None,
    q_values: QValues | None = None,
    make_env: Callable[[str], Any] | None = None,
) -> Embedding:
    """Roll out ``episodes`` greedy episodes of ``net`` on ``env_id`` and embed every visited state.

    The network is put in ``eval()`` mode (noisy layers use their mean
    weights, as in greedy evaluation). ``q_values`` reads Q-values from its
    outputs (a learner's ``q_values``, see :func:`load_trained_learner`); by
    default the outputs are the Q-values. ``make_env`` makes the env from its
    id as the run did (:func:`load_trained_env`); by default the ``auto`` env
    component. Observations reach the network in their own shape and dtype.
    Rollouts stop early after ``max_states`` states so a long-lived agent
    stays cheap to plot.
    """
    if make_env is None:
        from dqnbench.plugin.registry import load_registry

        make_env = load_registry(load_entrypoints=False).get("env", "auto").factory  # a built-in
    env = make_env(env_id)
    n_actions = int(env.action_space.n)
    net.eval()
    rows: dict[str, list[Any]] = {"features": [], "q": [], "episode": [], "t": []}
    returns: list[float] = []
    try:
        with FeatureExtractor(net, n_actions, layer, q_values) as extract:
            for ep in range(episodes):
                if len(rows["q"]) >= max_states:
                    break
                returns.append(_rollout(env, extract, seed + ep, max_states - len(rows["q"]), ep, rows))
    finally:
        env.close()
    if not rows["q"]:
        raise EmbeddingError(f"no states visited on {env_id} (episodes={episodes}, max_states={max_states})")
    q_values = np.stack(rows["q"])
    return Embedding(
        features=np.stack(rows["features"]),
        q_values=q_values,
        actions=q_values.argmax(axis=1),
        episode=np.asarray(rows["episode"]),
        t=np.asarray(rows["t"]),
        env_id=env_id,
        layer=extract.layer,
        returns=returns,
    )


def _rollout(env: Any, extract: FeatureExtractor, seed: int, budget: int, ep: int, rows: dict[str, list[Any]]) -> float:
    """One greedy episode (at most ``budget`` states), appending to ``rows``; returns its return."""
    obs, _ = env.reset(seed=seed)
    total, t, done = 0.0, 0, False
    while not done and t < budget:
        feats, q = extract(torch.as_tensor(np.asarray(obs)).unsqueeze(0))
        rows["features"].append(feats[0].numpy())
        rows["q"].append(q[0].numpy())
        rows["episode"].append(ep)
        rows["t"].append(t)
        obs, reward, terminated, truncated, _ = env.step(int(q[0].argmax()))
        total, t, done = total + float(reward), t + 1, bool(terminated or truncated)
    return total


# --------------------------------------------------------------------------- projection


def pca_3d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coordinates (N, 3), explained variance ratio (3,))`` of a PCA by SVD of the centred features.

    Fewer than 3 feature dimensions (or states) are padded with zero
    components, so every network can be drawn in 3D.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(3, vt.shape[0])
    coords = np.zeros((x.shape[0], 3))
    coords[:, :k] = x @ vt[:k].T
    variance = s**2
    explained = np.zeros(3)
    if variance.sum() > 0:
        explained[:k] = variance[:k] / variance.sum()
    return coords, explained


def embedding_frame(embedding: Embedding) -> pd.DataFrame:
    """Long table of an :class:`Embedding`: ``pc1, pc2, pc3, action, max_q, episode, t``.

    ``frame.attrs`` keeps ``explained`` (variance ratio of each PC), ``env``,
    ``layer``, ``n_actions`` and ``returns`` for the figure; set
    ``frame.attrs["source"]`` (e.g. ``"run abc123"``) to have it shown too.
    """
    coords, explained = pca_3d(embedding.features)
    frame = pd.DataFrame(
        {
            "pc1": coords[:, 0],
            "pc2": coords[:, 1],
            "pc3": coords[:, 2],
            "action": embedding.actions.astype(int),
            "max_q": embedding.q_values.max(axis=1),
            "episode": embedding.episode,
            "t": embedding.t,
        }
    )
    frame.attrs.update(
        explained=[float(v) for v in explained],
        env=embedding.env_id,
        layer=embedding.layer,
        n_actions=int(embedding.q_values.shape[1]),
        returns=list(embedding.returns),
    )
    return frame


# --------------------------------------------------------------------------- figures


def use_agg() -> None:
    """Select matplotlib's non-interactive Agg backend, unless pyplot is already in use.

    Headless runs (CI, workers, ``dqnbench plot``) need no display; a notebook
    that imported pyplot keeps its own backend, and the Figure objects returned
    here still display there.
    """
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


def _shaded_colours(frame: pd.DataFrame) -> np.ndarray:
    """RGBA per state: its greedy action's colour, pale for low max Q and full for high max Q."""
    from matplotlib.colors import to_rgb

    q = frame["max_q"].to_numpy(dtype=float)
    span = q.max() - q.min() if len(q) else 0.0
    level = (q - q.min()) / span if span > 0 else np.ones_like(q)
    strength = 0.25 + 0.75 * level  # never fully white: every point stays visible
    base = np.array([to_rgb(OKABE_ITO[a % len(OKABE_ITO)]) for a in frame["action"]]).reshape(-1, 3)
    rgb = 1.0 - strength[:, None] * (1.0 - base)
    return np.concatenate([rgb, np.full((len(q), 1), 0.85)], axis=1)


def embedding_figure(
    frame: pd.DataFrame,
    *,
    title: str | None = None,
    elev: float = 22.0,
    azim: float = -60.0,
    figsize: tuple[float, float] = (7.5, 6.0),
) -> Figure:
    """3D scatter of :func:`embedding_frame`: colour = greedy action, shade = max Q (darker = higher)."""
    use_agg()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot(projection="3d")
    ax.scatter(frame["pc1"], frame["pc2"], frame["pc3"], c=_shaded_colours(frame), s=9, depthshade=False, linewidths=0)
    explained = frame.attrs.get("explained", [math.nan] * 3)
    for setter, i in ((ax.set_xlabel, 0), (ax.set_ylabel, 1), (ax.set_zlabel, 2)):
        setter(f"PC{i + 1} ({explained[i]:.0%} of variance)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.view_init(elev=elev, azim=azim)
    env = frame.attrs.get("env", "")
    n_actions = int(frame.attrs.get("n_actions", frame["action"].max() + 1))
    names = action_names(env, n_actions)
    handles = [
        Line2D([], [], ls="", marker="o", color=OKABE_ITO[a % len(OKABE_ITO)], label=names[a]) for a in range(n_actions)
    ]
    ax.legend(handles=handles, title="greedy action", loc="upper left", fontsize=8, title_fontsize=8)
    grey = LinearSegmentedColormap.from_list("shade", ["#d9d9d9", "#252525"])
    bar = ScalarMappable(Normalize(frame["max_q"].min(), frame["max_q"].max()), grey)
    bar = fig.colorbar(bar, ax=ax, shrink=0.55, pad=0.1)
    bar.set_label("max Q(s, a): darker = higher", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    returns = frame.attrs.get("returns") or []
    parts = [f"{env}: {len(frame)} states from {frame['episode'].nunique()} greedy episode(s)"]
    if returns:
        parts[0] += f", mean return {np.mean(returns):.1f}"
    if frame.attrs.get("source"):
        parts.append(str(frame.attrs["source"]))
    parts.append(f"layer {frame.attrs.get('layer', '?')}, PCA to 3D")
    fig.suptitle(textwrap.fill(title or "Q-network embedding", 60), fontsize=11)
    ax.set_title(textwrap.fill("; ".join(parts), 90), fontsize=8)
    return fig


def embedding_gif(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    frames: int = 30,
    fps: int = 10,
    dpi: int = 100,
    figsize: tuple[float, float] = (6.4, 5.4),
) -> Path:
    """A rotating animated GIF of :func:`embedding_figure`, like the tutorial's, written to ``path``.

    One full turn of the azimuth in ``frames`` frames, looping forever. Frames
    are rendered straight from the Agg canvas with the layout computed once,
    which is about twice as fast as ``matplotlib.animation`` (that draws each
    frame twice), and without tick numbers, which halves a frame's cost again.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig = embedding_figure(frame, title=title, figsize=figsize)
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    fig.set_layout_engine("none")  # keep the first frame's layout: no jitter, no re-layout cost
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):  # tick numbers cannot be read on a turning plot (the PNG has them)
        axis.set_ticklabels([])  # and drawing their glyphs was half of each frame's cost
    start = ax.azim
    images = []
    for i in range(max(frames, 1)):
        ax.view_init(elev=ax.elev, azim=start + 360.0 * i / max(frames, 1))
        canvas.draw()
        rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        images.append(rgba.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE))
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


# --------------------------------------------------------------------------- trained networks from results


def load_trained_learner(results: Results, run_id: str, registry: Registry | None = None) -> Any:
    """The learner of a run, rebuilt from its record's ``config["learner"]`` (``dqn`` for records without one).

    Its ``outputs`` say how the network was built and its ``q_values`` read
    expected Q-values from the network's outputs.
    """
    registry = _registry(registry)
    record = results.record(run_id)
    spec = record["config"].get("learner") or {"name": "dqn"}
    factory = registry.get("learner", spec["name"]).factory
    return factory(int(record["n_actions"]), **dict(spec.get("params") or {}))


def load_trained_env(results: Results, run_id: str, registry: Registry | None = None) -> Callable[[str], Any]:
    """The env factory of a run: its record's ``config["env"]`` component bound to its params (``auto`` if none)."""
    registry = _registry(registry)
    spec = results.record(run_id)["config"].get("env") or {"name": "auto"}
    factory = registry.get("env", spec["name"]).factory
    params = dict(spec.get("params") or {})
    return lambda env_id: factory(env_id, **params)


def load_trained_network(results: Results, run_id: str, registry: Registry | None = None) -> nn.Module:
    """The trained Q-network of a run, in eval mode.

    Rebuilds the network with the registry's factory from the run record's
    ``config["network"]`` (with ``outputs`` per action when the run's learner
    asked for several, and wrapped in the learner's head where it brings one,
    as the loop built it) and loads the saved weights (``weights_only=True``). Read its Q-values with the run's learner
    (:func:`load_trained_learner`).
    """
    registry = _registry(registry)
    record = results.record(run_id)
    spec = record["config"]["network"]
    factory = registry.get("network", spec["name"]).factory
    params = dict(spec.get("params") or {})
    learner = load_trained_learner(results, run_id, registry)
    if learner.outputs != 1:
        params["outputs"] = learner.outputs
    net = learner_network(learner, factory(recorded_obs(record), int(record["n_actions"]), **params))
    net.load_state_dict(results.weights(run_id))
    net.eval()
    return net


def recorded_obs(record: dict[str, Any]) -> int:
    """The :class:`dqnbench.ObsSpec` a run's network was built for, from its record (a flat size for old records)."""
    from dqnbench.plugin.obs import ObsSpec

    if record.get("obs_shape") is None:
        return int(record["obs_dim"])
    return ObsSpec(tuple(record["obs_shape"]), record.get("obs_dtype") or "float32")


def _registry(registry: Registry | None) -> Registry:
    if registry is None:
        from dqnbench.plugin.registry import load_registry

        registry = load_registry()
    return registry


def representative_runs(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """One ``(run_id, description)`` per (environment, network variant) to draw.

    A network variant is a distinct combination of the ``network.*`` columns,
    and of ``learner.name`` where the runs use several learning rules (a
    distributional learner shapes the representation too).
    Among its cells the best by IQM final return is taken, and in that cell the
    run whose final return is closest to the cell's median: a typical seed of
    the variant's best configuration, not a lucky one.

    The description names the network and only the params that tell the drawn
    variants apart: values that differ among the variants that have the param.
    One they all share (``sigma0`` of conv networks that all have ``noisy =
    false``) says nothing about the picture; one a component lacks (NaN in
    ``runs``) is left out.
    """
    from dqnbench.analysis.cells import ENV_COLUMN, ok_runs
    from dqnbench.analysis.stats import iqm

    good = ok_runs(runs)
    if good.empty:
        return []
    keys = [c for c in good.columns if c.startswith("network.")]
    if "learner.name" in good.columns and good["learner.name"].nunique(dropna=False) > 1:
        keys.append("learner.name")
    if ENV_COLUMN in good.columns and good[ENV_COLUMN].nunique(dropna=False) > 1:
        keys = [ENV_COLUMN, *keys]
    groups = good.groupby(keys, dropna=False, sort=False) if keys else [((), good)]
    picked = []
    for key, variant in groups:
        best_cell = max(variant["cell"].unique(), key=lambda c: iqm(variant.loc[variant["cell"] == c, "final_return"]))
        cell = variant[variant["cell"] == best_cell]
        distance = (cell["final_return"] - cell["final_return"].median()).abs()
        picked.append((str(cell.loc[distance.idxmin(), "run_id"]), key if isinstance(key, tuple) else (key,)))
    telling = [i for i, k in enumerate(keys)
               if k == "network.name" or len({_fmt(v[i]) for _, v in picked if not _missing(v[i])}) > 1]  # fmt: skip
    return [(run_id, _describe([keys[i] for i in telling], [values[i] for i in telling])) for run_id, values in picked]


def _describe(keys: list[str], values: list[Any]) -> str:
    """``"env=MinAtar/Breakout-v1, network=minatar_cnn, noisy=True"``; params a variant lacks left out."""
    return ", ".join(f"{_short_key(k)}={_fmt(v)}" for k, v in zip(keys, values) if not _missing(v)) or "network"


def _short_key(key: str) -> str:
    """``network.name`` → ``network``, ``network.hidden`` → ``hidden``, ``experiment.env`` → ``env``."""
    section, _, leaf = key.rpartition(".")
    return section if leaf == "name" and section else leaf


def _missing(value: Any) -> bool:
    """A param this network variant does not have (NaN in the ``runs`` column)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(map(_fmt, value)) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
