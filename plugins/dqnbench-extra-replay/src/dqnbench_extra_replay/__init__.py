"""Combined experience replay for dqnbench: ``combined``.

The buffer is a plain class in :mod:`.combined`; :mod:`.plugin` hands its
factory to dqnbench through the ``dqnbench`` entry point in ``pyproject.toml``.
"""

from importlib.metadata import PackageNotFoundError, version

from dqnbench_extra_replay.combined import CombinedReplay, combined

try:
    __version__ = version("dqnbench-extra-replay")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["CombinedReplay", "__version__", "combined"]
