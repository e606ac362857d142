"""dqnbench: benchmark Deep Q-Network variants across seeds, with plugins.

Public API::

    import dqnbench
    res = dqnbench.run_grid("grid.toml", out="results")
    res = dqnbench.load_results("results/replay-study")
    print(dqnbench.report("results/replay-study"))   # what ``dqnbench report`` prints
    dqnbench.plot("results/replay-study")             # what ``dqnbench plot`` writes

Plugin authors need :data:`hookimpl` and :class:`Batch`; see ``hookspecs.py``.
Everything but ``hookimpl`` is imported on first use, so that importing
dqnbench (as pytest does for its ``pytest11`` plugin) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.version import __version__

_LAZY = {
    "Batch": "dqnbench.plugin.batch",
    "LearnerBase": "dqnbench.agent.learning",
    "LearnerLoss": "dqnbench.plugin.contracts",
    "ObsSpec": "dqnbench.plugin.obs",
    "PerMember": "dqnbench.plugin.members",
    "ParamError": "dqnbench.plugin.validation",
    "autograd_backward": "dqnbench.agent.learning",
    "DqnbenchError": "dqnbench.errors",
    "GridError": "dqnbench.errors",
    "Results": "dqnbench.run.results",
    "load_results": "dqnbench.run.results",
    "plot": "dqnbench.analysis.api",
    "report": "dqnbench.analysis.api",
    "run_grid": "dqnbench.run.runner",
}

if TYPE_CHECKING:
    from dqnbench.agent.learning import LearnerBase, autograd_backward
    from dqnbench.analysis.api import plot, report
    from dqnbench.errors import DqnbenchError, GridError
    from dqnbench.plugin.batch import Batch
    from dqnbench.plugin.contracts import LearnerLoss
    from dqnbench.plugin.members import PerMember
    from dqnbench.plugin.obs import ObsSpec
    from dqnbench.plugin.validation import ParamError
    from dqnbench.run.results import Results, load_results
    from dqnbench.run.runner import run_grid


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dqnbench' has no attribute {name!r}")


__all__ = [
    "Batch",
    "DqnbenchError",
    "GridError",
    "LearnerBase",
    "LearnerLoss",
    "ObsSpec",
    "PerMember",
    "ParamError",
    "Results",
    "__version__",
    "autograd_backward",
    "hookimpl",
    "load_results",
    "plot",
    "report",
    "run_grid",
]
