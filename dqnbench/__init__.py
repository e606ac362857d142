"""dqnbench: benchmark Deep Q-Network variants across seeds, with plugins.

Public API::

    import dqnbench
    res = dqnbench.run_grid("grid.toml", out="results")
    res = dqnbench.load_results("results/replay-study")

Plugin authors need :data:`hookimpl` and :class:`Batch`; see ``hookspecs.py``.
"""

from dqnbench.batch import Batch
from dqnbench.errors import DqnbenchError, GridError
from dqnbench.hookspecs import hookimpl
from dqnbench.results import Results, load_results
from dqnbench.runner import run_grid
from dqnbench.version import __version__

__all__ = ["Batch", "DqnbenchError", "GridError", "Results", "hookimpl", "load_results", "run_grid", "__version__"]
