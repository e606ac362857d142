"""What a task shows while it trains: its :class:`~dqnbench.agent.watch.Watch`, with live files and TensorBoard.

:class:`TensorBoardTracker` is the built-in :class:`~dqnbench.agent.watch.Tracker`:
one event file per run (lock-step members each get theirs) under
``<tensorboard dir>/<experiment>/<run_id>/``, with the run's config as hparams.
It needs the ``tensorboard`` extra; :func:`require_tensorboard` says so before
any run starts.
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dqnbench.agent.watch import Tracker, Watch
from dqnbench.errors import DqnbenchError
from dqnbench.run.live import LIVE_SUFFIX, LiveFile

#: ``experiment.tensorboard = true`` writes events here, under the grid's results directory
TENSORBOARD_DIR = "tensorboard"
#: the extra that installs TensorBoard
EXTRA = "dqnbench[tensorboard]"
#: seconds between flushes of a TensorBoard event file
FLUSH_S = 5


def require_tensorboard(asked_by: str) -> None:
    """A user error naming ``asked_by`` (the flag or key) and the extra when TensorBoard is not installed."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError as exc:
        raise DqnbenchError(
            f'{asked_by} needs TensorBoard, which is not installed ({exc}): pip install "{EXTRA}"'
        ) from None


def tensorboard_root(experiment_dir: Path, flag: str | None, enabled: bool) -> Path | None:
    """Where a grid's event files go: ``--tensorboard DIR``/<name>, else ``<results>/tensorboard`` when
    ``experiment.tensorboard`` is true, else None (checking that TensorBoard is installed)."""
    if flag is None and not enabled:
        return None
    require_tensorboard("--tensorboard" if flag is not None else "experiment.tensorboard = true")
    return Path(flag) / experiment_dir.name if flag is not None else experiment_dir / TENSORBOARD_DIR


class TensorBoardTracker:
    """One run's TensorBoard event file: scalars by env step, the config as hparams and as text.

    The writer starts on the first scalar, in a directory emptied first, so a
    retried run's file holds one history (a resumed run replays its restored one).
    """

    def __init__(self, directory: str | Path, hparams: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        self.directory, self.hparams, self.config = Path(directory), dict(hparams), dict(config)
        self._writer: Any = None

    def writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            shutil.rmtree(self.directory, ignore_errors=True)
            self._writer = SummaryWriter(log_dir=str(self.directory), flush_secs=FLUSH_S)
            for summary in hparams(
                {key: _hparam(value) for key, value in self.hparams.items()}, {"eval/mean_return": 0.0}
            ):
                self._writer.file_writer.add_summary(summary)
            self._writer.add_text("config", f"```\n{json.dumps(self.config, indent=1, default=str)}\n```")
        return self._writer

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        writer = self.writer()
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _hparam(value: Any) -> Any:
    """TensorBoard's hparams take numbers, strings and booleans: anything else as its JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


def task_watch(
    specs: Sequence[Any], records: Sequence[Mapping[str, Any]], live_dir: str | None, tensorboard_dir: str | None
) -> Watch:
    """The watch of one task (a run, or a lock-step group): each run's live file and TensorBoard tracker."""
    exp = specs[0].config.experiment
    members = len(specs) if len(specs) > 1 else 1
    sinks = (
        [[LiveFile(Path(live_dir) / f"{r['run_id']}{LIVE_SUFFIX}", r, members)] for r in records] if live_dir else []
    )
    trackers: list[list[Tracker]] = []
    if tensorboard_dir:
        trackers = [
            [
                TensorBoardTracker(
                    Path(tensorboard_dir) / spec.run_id,
                    {"run_id": spec.run_id, "label": spec.label, "seed": spec.seed, **spec.config.flat()},
                    spec.config.to_dict(),
                )
            ]  # fmt: skip
            for spec in specs
        ]
    return Watch(exp.total_steps, exp.eval_every, sinks, trackers)
