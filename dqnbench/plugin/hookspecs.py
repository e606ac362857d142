"""The plugin contract: every hook a dqnbench plugin can implement.

A plugin is a module (or object) with functions of these names marked with
``@dqnbench.hookimpl``. Installed packages announce it under the entry-point
group ``dqnbench``::

    [project.entry-points.dqnbench]
    my_plugin = "my_package.plugin"

Each hook returns a ``dict`` mapping component names (what users write in a grid,
e.g. ``network.name = "mlp"``) to factories. Hooks are called once, when the
registry is built for a run or a command, never per environment step. dqnbench's
own built-in components are registered through these same hooks.

The runner seeds Python's ``random``, NumPy's global RNG and torch before it
calls a run's factories, so components that draw from those RNGs are
reproducible without a seed parameter of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotations only: keep `import dqnbench` for plugin modules free of torch
    from dqnbench.plugin.contracts import ExecutorFactory, ExplorationFactory, NetworkFactory, ReplayFactory

PROJECT = "dqnbench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dqnbench_networks() -> dict[str, NetworkFactory]:
    """Q-networks, by name.

    ``factory(obs_dim: int, n_actions: int, **params) -> torch.nn.Module``.
    ``params`` are the keys of the grid's ``[network]`` table (and of
    ``[network.<name>]``) other than ``name``; give every param a default so a
    bare ``name = "..."`` works. ``forward`` maps float32 ``(B, obs_dim)`` to
    Q-values ``(B, n_actions)``. The loop calls ``.train()`` while acting and
    learning and ``.eval()`` for greedy evaluation. Weights are saved with
    ``state_dict()`` and reloaded with ``torch.load(..., weights_only=True)``,
    so keep state in parameters and buffers.

    Lock-step training (optional) stacks K copies with ``torch.func.vmap``; a
    factory attribute ``factory.lockstep = forward(module, params, x)`` (stacked
    ``state_dict`` tensors ``(K, …)``, ``x (K, B, obs_dim)`` → ``(K, B, n_actions)``)
    replaces vmap by batched matmuls. See ``docs/plugins.md``.
    """


@hookspec
def dqnbench_replays() -> dict[str, ReplayFactory]:
    """Replay buffers, by name.

    ``factory(capacity: int, obs_dim: int, gamma: float, **params) -> buffer``
    where the buffer has:

    - ``add(obs, action, reward, next_obs, terminated)``: one transition, NumPy
      float observations of shape ``(obs_dim,)``, int action, float reward, bool
      ``terminated`` (true termination; a time-limit truncation is ``False``);
    - ``sample(batch_size) -> dqnbench.Batch``: tensors of length ``batch_size``,
      ``discounts`` holding the factor of the bootstrap term (γ, or γᵏ after k
      accumulated steps) and ``weights`` the importance-sampling weights;
    - ``update_priorities(indices, td_errors)``: the TD errors ``(B,)`` of the
      batch just learned from (may do nothing);
    - ``__len__()``: how many transitions can be sampled.

    ``sample`` is only called once ``len(buffer) >= batch_size``.

    Lock-step training (optional): ``factory.lockstep = members_factory`` with
    ``members_factory(members, capacity, obs_dim, gamma, **params)`` whose buffer
    takes rows of K transitions in ``add(obs, actions, rewards, next_obs,
    terminated, truncated)`` and samples ``Batch`` fields of shape ``(K, B, …)``.
    """


@hookspec
def dqnbench_explorations() -> dict[str, ExplorationFactory]:
    """Exploration strategies, by name.

    ``factory(n_actions: int, total_steps: int, **params) -> explorer`` where
    ``explorer.select(q_values, step) -> actions`` maps a float Tensor
    ``(B, n_actions)`` of Q-values at env step ``step`` (0-based, up to
    ``total_steps``) to an int64 Tensor ``(B,)`` of actions. Draw randomness
    from torch's global RNG so runs are reproducible.

    Lock-step training (optional): ``factory.lockstep = True`` declares that
    ``select`` treats each row on its own and keeps no per-row state, so one
    explorer serves K members with ``q_values (K, n_actions)``.
    """


@hookspec
def dqnbench_executors() -> dict[str, ExecutorFactory]:
    """Executors: how independent runs are dispatched, by name.

    ``factory(workers: int | None = None, **params) -> executor`` where the
    executor has ``map_unordered(fn, items)`` yielding ``(item, fn(item) or the
    exception that stopped it)`` in completion order, and ``close()``. ``fn`` is
    a picklable module-level function; the runner writes every result itself,
    so executors need no shared filesystem.
    """
