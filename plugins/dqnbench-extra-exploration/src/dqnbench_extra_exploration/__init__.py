"""Temporally-extended ε-greedy exploration for dqnbench: ``ez_greedy``.

The explorer is a plain class in :mod:`.ez_greedy`; :mod:`.plugin` hands its
factory to dqnbench through the ``dqnbench`` entry point in ``pyproject.toml``.
"""

from importlib.metadata import PackageNotFoundError, version

from dqnbench_extra_exploration.ez_greedy import EzGreedy, ez_greedy, zeta_probabilities

try:
    __version__ = version("dqnbench-extra-exploration")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["EzGreedy", "__version__", "ez_greedy", "zeta_probabilities"]
