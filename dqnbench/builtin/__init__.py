"""dqnbench's built-in components, each module a plugin like any third-party one.

``BUILTIN_MODULES`` is registered first by :func:`dqnbench.plugin.host.get_plugin_host`,
through the same hooks that installed plugins implement.
"""

BUILTIN_MODULES: tuple[str, ...] = (
    "dqnbench.builtin.networks",
    "dqnbench.builtin.replays",
    "dqnbench.builtin.explorations",
    "dqnbench.builtin.executors",
    "dqnbench.builtin.dueling",
    "dqnbench.builtin.noisy",
    "dqnbench.builtin.conv",
    "dqnbench.builtin.prioritized",
    "dqnbench.builtin.nstep",
    "dqnbench.builtin.schedules",
    "dqnbench.builtin.ray_executor",
    "dqnbench.builtin.envs",
    "dqnbench.builtin.learners",
    "dqnbench.builtin.distributional",
    "dqnbench.builtin.iqn",
    "dqnbench.builtin.optimizers",
)
