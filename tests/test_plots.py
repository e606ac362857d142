"""Every plot is written, decodes and is not blank; index.md shows them with the report table."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from dqnbench.analysis import plots
from dqnbench.analysis.compare import compare_results
from dqnbench.errors import ResultsError
from dqnbench.plugin.registry import load_registry
from dqnbench.run.results import RunOutput, load_results, write_run
from tests.test_stats import in_memory_results, make_runs

PNGS = ("learning_curves.png", "training_curves.png", "final_scores.png", "improvement.png", "timing.png")


def write_synthetic_results(path: Path, cells: dict[str, dict], seeds: int = 3, total_steps: int = 400,
                            eval_every: int = 100, weights: bool = True) -> None:  # fmt: skip
    """Runs on disk through the real writer: rising eval curves, per-step timings, untrained weights.

    ``cells`` maps a label to ``network`` (a registered name), ``final`` (mean final return), ``sps``.
    """
    rng = np.random.default_rng(0)
    registry = load_registry(load_entrypoints=False)
    for c, (label, spec) in enumerate(cells.items()):
        name, n = spec.get("network", "mlp"), total_steps
        for seed in range(seeds):
            evals_at = np.arange(eval_every, n + 1, eval_every)
            curve = spec.get("final", 100.0) * evals_at / n + rng.normal(0, 5, len(evals_at))
            net = registry.get("network", name).factory(4, 2, hidden=[8]) if weights else None
            record = {
                "run_id": f"c{c}-s{seed}", "cell": f"c{c}", "label": label, "seed": seed, "status": "ok",
                "error": None, "env": "CartPole-v1", "obs_dim": 4, "n_actions": 2,
                "flat_config": {"experiment.env": "CartPole-v1", "network.name": name, "network.hidden": [8]},
                "config": {"network": {"name": name, "params": {"hidden": [8]}}},
                "wall_s": 1.0, "steps_per_s": spec.get("sps", 1000.0) * rng.uniform(0.95, 1.05),
                "final_return": float(curve[-1]),
            }  # fmt: skip
            steps = {"step": np.arange(n), "episode": np.arange(n) // 20, "reward": np.ones(n),
                     "t_act": rng.uniform(1e-4, 2e-4, n), "t_env": rng.uniform(2e-5, 4e-5, n),
                     "t_learn": rng.uniform(5e-4, 1e-3, n), "loss": rng.uniform(size=n)}  # fmt: skip
            episodes = {"episode": np.arange(n // 20), "step": np.arange(1, n // 20 + 1) * 20,
                        "return": np.full(n // 20, 20.0), "length": np.full(n // 20, 20)}  # fmt: skip
            evals = {"step": evals_at, "mean_return": curve, "std_return": np.zeros(len(evals_at)),
                     "returns": [[float(v)] for v in curve]}  # fmt: skip
            write_run(path, RunOutput(record, steps, episodes, evals, net.state_dict() if net else None))


def assert_image_is_a_plot(path: Path, min_dpi: int = 150) -> None:
    """The file decodes, is not blank (pixel variance), and was saved at ``min_dpi`` or more."""
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        image.load()
        pixels = np.asarray(image.convert("RGB"), dtype=float)
        dpi = image.info.get("dpi", (0, 0))[0]
    assert pixels.std() > 10, f"{path.name} looks blank"
    assert min(pixels.shape[:2]) > 200
    if min_dpi:
        assert round(dpi) >= min_dpi, f"{path.name} saved at {dpi} dpi"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "study"
    write_synthetic_results(path, {
        "network.name=mlp": {"final": 200.0, "sps": 1500.0},
        "network.name=dueling": {"final": 300.0, "sps": 900.0, "network": "dueling"},
        "network.name=noisy": {"final": 100.0, "sps": 700.0, "network": "noisy"},
    })  # fmt: skip
    return load_results(path)


def test_write_plots_writes_every_file_and_an_index(synthetic, tmp_path):
    written = plots.write_plots(synthetic, tmp_path, gif_frames=3)
    names = {p.name for p in written}
    assert set(PNGS) <= names and "index.md" in names
    for png in PNGS:
        assert_image_is_a_plot(tmp_path / png)
    for i in range(3):  # one embedding per network variant
        assert_image_is_a_plot(tmp_path / f"embedding_{i}.png")
        with Image.open(tmp_path / f"embedding_{i}.gif") as gif:
            assert gif.n_frames == 3
            assert np.asarray(gif.convert("RGB"), dtype=float).std() > 10
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert "| cell | env | ok | IQM [95% CI] |" in index
    assert index.count("the seed nearest the median of the variant's best cell") == 3  # which run each one shows
    for name in names - {"index.md"}:
        assert f"]({name})" in index


def test_default_output_is_the_plots_folder_of_the_results(tmp_path):
    write_synthetic_results(tmp_path / "one", {"default": {}}, seeds=2)
    results = load_results(tmp_path / "one")
    for weights in (tmp_path / "one").rglob("weights.pt"):  # gone after loading: the embedding cannot be drawn
        weights.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = plots.write_plots(results)
    assert all(p.parent == tmp_path / "one" / "plots" for p in written)
    # no weights on disk: the embedding is skipped with a warning and a note, the rest is written
    assert any("embedding" in str(w.message) for w in caught)
    index = (tmp_path / "one" / "plots" / "index.md").read_text(encoding="utf-8")
    assert "skipped" in index
    # one cell: nothing to compare, so no 1×1 probability-of-improvement matrix
    assert {p.name for p in written} == {*PNGS, "index.md"} - {"improvement.png"}
    assert "Probability of improvement" not in index


def test_figure_functions_take_dataframes(synthetic):
    runs, evals, steps = synthetic.runs, synthetic.evals, synthetic.steps
    for fig in (plots.learning_curves_figure(runs, evals), plots.final_scores_figure(runs),
                plots.improvement_figure(runs), plots.timing_figure(runs, steps)):  # fmt: skip
        assert isinstance(fig, Figure)
        assert all(ax.get_title() or ax.get_xlabel() for ax in fig.axes if ax.get_label() != "<colorbar>")


def test_one_panel_per_environment():
    runs = make_runs({"a": {"final": [1, 2]}, "b": {"final": [3, 4], "env": "Acrobot-v1"}})
    fig = plots.final_scores_figure(runs)
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_visible())
    assert titles == ["Acrobot-v1: final return by cell", "CartPole-v1: final return by cell"]


def test_nothing_to_plot_is_a_user_error(tmp_path):
    runs = make_runs({"a": {"final": [None, None]}})
    with pytest.raises(ResultsError, match="no successful runs"):
        plots.write_plots(in_memory_results(runs), tmp_path)


def test_end_to_end_tiny_grid_is_plotted_and_compares_equal_to_itself(write_grid, tmp_path):
    import dqnbench

    grid = write_grid('[grid]\n"learner.name" = ["dqn", "iqn"]\n', steps=300, seeds=2, eval_every=150)
    stream = io.StringIO()
    results = dqnbench.run_grid(  # plots by default, as the CLI
        grid, out=tmp_path / "out", executor="serial", quiet=True, load_entrypoints=False, stream=stream
    )
    assert (results.runs["status"] == "ok").all()
    assert (results.path / "plots" / "index.md").is_file() and "plots: " in stream.getvalue()
    assert "note: 2 seeds per cell" in stream.getvalue()  # statistics of fewer than 5 seeds: warned once
    written = plots.write_plots(results, gif_frames=2, episodes=1)
    for path in written:
        if path.suffix == ".png":
            assert_image_is_a_plot(path)
    assert len([p for p in written if p.name.startswith("embedding_") and p.suffix == ".png"]) == 2
    assert not compare_results(results, results).regressed
    # which cells' network took its manual path (hand-derived gradients) is recorded per run, and the timing plot
    # says so: iqn's head on the mlp has none
    paths = dict(zip(results.runs["learner.name"], results.runs["learn_path"]))
    assert paths == {"dqn": "hand-derived", "iqn": "autograd"}
    texts = [t.get_text() for t in plots.timing_figure(results.runs, results.steps).axes[0].texts]
    assert [", hand-derived gradient" in t for t in texts if "steps/s" in t] == [True, False]
    assert any(t.startswith("Bold: the learner took the speed path named") for t in texts)
