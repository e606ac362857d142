"""The example plugins under plugins/, pip-installed like a stranger's packages, used next to the built-ins.

CI installs them with ``pip install ./plugins/<package>`` (no path manipulation);
these tests then see them only through their ``dqnbench`` entry points.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import dqnbench

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
#: distribution → {(kind, component)}
EXAMPLES = {
    "dqnbench-extra-networks": {("network", "layernorm_mlp"), ("network", "residual_mlp")},
    "dqnbench-extra-exploration": {("exploration", "ez_greedy")},
    "dqnbench-extra-replay": {("replay", "combined")},
}


def _installed_versions() -> dict[str, str]:
    found = {}
    for dist in EXAMPLES:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


VERSIONS = _installed_versions()
pytestmark = pytest.mark.skipif(
    len(VERSIONS) < len(EXAMPLES),
    reason="example plugins not installed: run "
    + " ".join(["python -m pip install"] + [f"./plugins/{d}" for d in EXAMPLES if d not in VERSIONS]),
)


def test_dqnbench_plugins_lists_their_components_with_distribution_and_version():
    listing = subprocess.run(
        [sys.executable, "-m", "dqnbench", "plugins"], capture_output=True, text=True, timeout=120, check=True
    )
    rows = {tuple(cell.strip() for cell in line.split("│")[1:5]) for line in listing.stdout.splitlines()}
    for dist, components in EXAMPLES.items():
        for kind, name in components:
            assert (kind, name, dist, VERSIONS[dist]) in rows, listing.stdout
    assert "warning" not in listing.stderr, listing.stderr


def test_a_grid_names_their_components_next_to_the_builtins(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        textwrap.dedent(
            """
            [experiment]
            name = "examples"
            total_steps = 200
            seeds = 1
            eval_every = 0
            eval_episodes = 1

            [agent]
            learning_starts = 50
            batch_size = 16

            [network.mlp]
            hidden = [16]

            [network.layernorm_mlp]
            hidden = [16]

            [network.residual_mlp]
            width = 16
            blocks = 1

            [exploration.ez_greedy]
            max_duration = 20

            [replay.combined]
            latest = 2

            [grid]
            "network.name" = ["mlp", "layernorm_mlp", "residual_mlp"]
            "exploration.name" = ["linear", "ez_greedy"]
            "replay.name" = ["uniform", "combined"]
            """
        ),
        encoding="utf-8",
    )
    results = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", quiet=True, stream=io.StringIO(), plots=False
    )
    runs = results.runs
    assert len(runs) == 12 and set(runs.status) == {"ok"}, runs.error.tolist()
    assert set(runs["network.name"]) == {"mlp", "layernorm_mlp", "residual_mlp"}
    assert set(runs["exploration.name"]) == {"linear", "ez_greedy"}
    assert set(runs["replay.name"]) == {"uniform", "combined"}
    # every run records which distribution (and version) each of its components came from
    record = results.record(runs.run_id[(runs["network.name"] == "residual_mlp").to_numpy()].iloc[0])
    assert record["versions"]["components"]["network"]["distribution"] == "dqnbench-extra-networks"
    assert record["versions"]["components"]["network"]["version"] == VERSIONS["dqnbench-extra-networks"]


def test_they_pass_the_contract_check_and_have_no_clashes():
    from dqnbench.devtools.diagnostics import check_components
    from dqnbench.plugin.registry import load_registry

    registry = load_registry()
    assert check_components(registry, kinds=("network", "replay", "exploration")) == []
    for dist, components in EXAMPLES.items():
        for kind, name in components:
            assert registry.get(kind, name).distribution == dist


@pytest.mark.parametrize("dist", sorted(EXAMPLES))
def test_the_grid_snippets_of_their_readmes_are_valid(dist, tmp_path):
    from dqnbench.config.grid import load_grid
    from dqnbench.plugin.registry import load_registry

    readme = (PLUGINS / dist / "README.md").read_text(encoding="utf-8")
    snippets = re.findall(r"^```toml\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    assert snippets, f"{dist}/README.md shows no grid"
    registry = load_registry()
    for i, snippet in enumerate(snippets):
        path = tmp_path / f"readme-{i}.toml"
        path.write_text(f'[experiment]\nname = "readme"\n\n{snippet}', encoding="utf-8")
        assert load_grid(path, registry).runs
