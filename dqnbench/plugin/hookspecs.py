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

Why it is built this way, with measurements: ``docs/internals.md`` (``plugin.hookspecs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotations only: keep `import dqnbench` for plugin modules free of torch
    from dqnbench.plugin.contracts import (
        EnvFactory,
        ExecutorFactory,
        ExplorationFactory,
        LearnerFactory,
        NetworkFactory,
        OptimizerFactory,
        ReplayFactory,
    )

PROJECT = "dqnbench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dqnbench_networks() -> dict[str, NetworkFactory]:
    """Q-networks, by name.

    ``factory(obs_dim: ObsSpec, n_actions: int, **params) -> torch.nn.Module``.
    ``params`` are the keys of the grid's ``[network]`` table (and of
    ``[network.<name>]``) other than ``name``; give every param a default so a
    bare ``name = "..."`` works.

    ``obs_dim`` is a :class:`dqnbench.ObsSpec`: an ``int`` equal to the flat
    observation size (all a v1 network needs) with ``.shape`` and ``.dtype``.
    ``forward`` receives observations ``(B, *obs_dim.shape)`` in their own dtype
    (float32 vectors for classic control, uint8 frames stay uint8: scale them in
    the network) and returns Q-values ``(B, n_actions)``.

    A learner with several outputs per action (C51's atoms, QR-DQN's quantiles)
    needs a factory with a keyword param ``outputs: int = 1``; with ``outputs =
    N > 1`` the forward returns ``(B, n_actions, N)``. The loop passes
    ``outputs`` only when the learner needs more than one, and a network that
    cannot take it is refused before anything runs. ``outputs`` is not a grid
    param.

    The loop calls ``.train()`` while acting and learning and ``.eval()`` for
    greedy evaluation. Weights are saved with ``state_dict()`` and reloaded with
    ``torch.load(..., weights_only=True)``, so keep state in parameters and
    buffers. Lock-step training stacks K copies' parameters; a module built from
    shape-generic layers (:mod:`dqnbench.nn`) runs them natively, any other
    through ``torch.func.vmap`` (see ``docs/plugins.md``).

    Optionally a network offers a manual path, a speed path for tiny networks
    whose autograd graph costs more than their arithmetic:
    ``manual_forward(obs) -> (outputs, tape)`` (``forward``'s outputs, computed
    without gradients, and what the backward needs) and
    ``manual_backward(tape, grad)`` (every parameter's ``.grad`` from ``grad``,
    the loss's gradient in the outputs). See :mod:`dqnbench.agent.learning`.
    """


@hookspec
def dqnbench_replays() -> dict[str, ReplayFactory]:
    """Replay buffers, by name.

    ``factory(capacity: int, obs_dim: ObsSpec, gamma: float, members: int | None = None, **params) -> buffer``
    with ``factory.supports_members = True``, where the buffer has:

    - ``add(obs, actions, rewards, next_obs, terminated, truncated)``: one row
      per env step, NumPy arrays with a leading dimension of K lock-step
      ``members``, or of 1 for a single run (``members=None``): observations
      ``(K, *obs_dim.shape)`` of dtype ``obs_dim.dtype`` (store them in that
      dtype: uint8 frames stay one byte), actions, rewards, and bool
      ``terminated`` (true termination) and ``truncated`` (a time limit) ``(K,)``;
      either flag ends the member's episode, and the next row starts a new one;
    - ``sample(batch_size) -> dqnbench.Batch``: fields ``(K, B, …)`` for K
      members (each member sampling its own transitions), ``(B, …)`` for a single
      run; observations in their own dtype, ``discounts`` holding the factor of
      the bootstrap term (γ, or γᵏ after k accumulated steps) and ``weights`` the
      importance-sampling weights;
    - ``update_priorities(indices, priorities)``: the learner's per-sample
      priorities of the batch just learned from, shaped like its ``indices``
      (TD errors for DQN, the cross-entropy for C51; may be signed: take ``abs``;
      may do nothing; a diverged member's row may be non-finite: skip it);
    - ``__len__()``: how many transitions can be sampled (per member).

    ``sample`` is only called once ``len(buffer) >= batch_size``. ``members`` is
    not a grid param: the loop passes it. The flag is what lets a cell's seeds
    train in lock-step.

    Legacy forms still run unchanged. Without the flag the factory is
    ``factory(capacity, obs_dim, gamma, **params)`` and a single run's buffer
    gets the v1 ``add(obs, action, reward, next_obs, terminated)``: one
    transition, int action, float reward, bool ``terminated`` (a time-limit
    truncation is ``False``), and samples ``(B, …)``; a v1 buffer that allocates
    float32 ``(capacity, obs_dim)`` arrays keeps working on vector observations,
    since ``obs_dim`` is that int. Such a factory takes part in lock-step with
    ``factory.lockstep = members_factory``, ``members_factory(members, capacity,
    obs_dim, gamma, **params)`` building the K-member buffer described above.

    Memory check (optional): ``factory.memory_bytes(capacity, obs_dim, members=None,
    **params) -> int``, the bytes the buffer (of all K members) will hold. The
    pre-flight refuses a replay that cannot fit in the memory available before
    anything runs, naming ``replay.capacity``; without it nothing is checked.

    Learning lag (optional): ``factory.learning_lag(**params) -> int``, how many
    of the latest stored transitions the buffer cannot sample yet (an n-step
    window's ``n - 1``), so the pre-flight counts a run's learn steps as the
    loop will take them; without it, 0.
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

    Acting lazily (optional): ``explorer.select_lazily(q_values, rows, step, device)``
    where ``q_values`` is a callable returning what ``select`` would get: the same
    draws and actions as ``select``, calling ``q_values()`` only when a row needs
    them, so a step where every row explores skips the forward pass.
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


@hookspec
def dqnbench_envs() -> dict[str, EnvFactory]:
    """Environments: how ``experiment.env`` is made and preprocessed, by name (grid section ``[env]``).

    ``factory(env_id: str, **params) -> gymnasium.Env`` with Discrete actions and
    Box observations in the shape and dtype the networks should see. ``env_id``
    is ``experiment.env``; ``params`` come from ``[env]`` and ``[env.<name>]``.
    The factory runs in every worker (local processes, Ray nodes), so it must
    make the environment from installed packages alone: import the package that
    registers ``env_id`` inside the factory, and raise
    :class:`dqnbench.DqnbenchError` naming what to install when it is missing.

    Lock-step training steps K copies as one vector env with same-step autoreset
    (``gymnasium.vector.AutoresetMode.SAME_STEP``): by default a
    ``SyncVectorEnv`` over the factory; a factory attribute
    ``factory.vector(env_id, num_envs, **params) -> VectorEnv`` with that
    autoreset mode can supply a faster native one.
    """


@hookspec
def dqnbench_learners() -> dict[str, LearnerFactory]:
    """Learning rules, by name (grid section ``[learner]``): targets, loss, priorities, reading Q-values.

    ``factory(n_actions: int, **params) -> learner`` where the learner has:

    - ``outputs: int``: outputs per action it needs from the network (1 for DQN,
      the number of atoms for C51);
    - ``q_values(outputs) -> Tensor``: expected Q-values ``(…, n_actions)`` from
      the network's outputs, for acting, evaluation and embeddings;
    - ``loss(nets, batch) -> dqnbench.LearnerLoss``: per-sample losses ``(…, B)``,
      differentiable in the online network's parameters and not yet weighted,
      and per-sample ``priorities (…, B)`` for the replay. ``nets.online(x)`` and
      ``nets.target(x)`` give the raw outputs of the online and target networks
      (the target without gradients).
    - optionally ``backward(nets, batch) -> LearnerLoss``: set the online
      parameters' ``.grad`` to the gradient of the importance-weighted mean loss
      (overwriting what is there: the loop does not zero gradients) and return
      the per-run mean losses ``(…,)`` (detached) and priorities.
      Without it the loop calls :func:`dqnbench.autograd_backward` on ``loss``.
      A learner whose ``loss`` reads the networks only through their outputs
      sets ``loss_on_outputs = True`` instead: networks that offer a manual
      path (``manual_forward``, ``manual_backward``; the built-in ``mlp``,
      ``dueling`` and ``noisy``) then learn by it, under any such learner.
    - optionally, with ``loss_on_outputs``, ``loss_gradient(q_values, nets,
      batch, scale) -> (losses, priorities, grad)``: ``loss`` on the online
      outputs ``q_values = nets.online(batch.obs)`` (its only online reading with
      gradients) and ``grad = d(Σ scale · losses)/d q_values`` written out, a
      speed path that skips autograd on the manual path (the built-in ``dqn``
      and ``munchausen`` have it; a subclass with its own ``loss`` does not
      inherit it).

    ``…`` is empty for a single run and ``K`` for K lock-step members: write the
    math over the last dimensions (``dim=-1``) and declare ``factory.lockstep =
    True``. Subclassing :class:`dqnbench.LearnerBase` gives the defaults.
    """


@hookspec
def dqnbench_optimizers() -> dict[str, OptimizerFactory]:
    """Optimizers of the online network, by name (grid section ``[optimizer]``).

    ``factory(parameters: list[torch.nn.Parameter], lr: float, **params) -> optimizer``
    with ``step()`` applying the gradients in the parameters' ``.grad`` (any
    ``torch.optim.Optimizer`` fits; the learner sets the gradients, so the loop
    never calls ``zero_grad``).
    ``lr`` is ``agent.lr``. In lock-step training ``parameters`` hold K members'
    parameters stacked on a leading dimension; an optimizer whose update is
    elementwise (Adam, RMSProp) treats members independently: declare it with
    ``factory.lockstep = True``.
    """
