"""``dqnbench new-plugin``: names are validated, and the package it writes passes its own tests once installed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import torch

from dqnbench.agent.nets import network_problem
from dqnbench.cli import build_parser, main
from dqnbench.devtools.diagnostics import check_components
from dqnbench.devtools.scaffold import KINDS, next_steps, plugin_names, write_plugin
from dqnbench.errors import DqnbenchError
from dqnbench.plugin.obs import ObsSpec
from dqnbench.plugin.registry import load_registry


def test_names_derive_from_the_distribution_name():
    names = plugin_names("dqnbench-Wide.Net", "network")
    assert (names.distribution, names.module, names.component, names.class_name) == (
        "dqnbench-Wide.Net",
        "dqnbench_wide_net",
        "wide_net",
        "WideNet",
    )
    assert plugin_names("fancy-replay", "replay").component == "fancy_replay"


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("-leading-dash", "network", "not a valid distribution name"),
        ("has space", "network", "not a valid distribution name"),
        ("dqnbench-ünïcode", "network", "not a valid distribution name"),
        ("2fast", "network", "not a Python identifier"),
        ("dqnbench-class", "network", "cannot name a Python function"),
        ("dqnbench-torch", "network", "cannot name a Python function"),
        ("pandas", "replay", "already importable"),
        ("dqnbench-mlp", "network", 'network "mlp" is a built-in'),
        ("dqnbench-auto", "env", 'env "auto" is a built-in'),
        ("dqnbench-dqn", "learner", 'learner "dqn" is a built-in'),
        ("dqnbench-rmsprop", "optimizer", 'optimizer "rmsprop" is a built-in'),
        ("dqnbench-gymnasium", "env", "cannot name a Python function"),  # the env template imports gymnasium
        ("dqnbench-new", "executor", "unknown plugin kind 'executor'"),
    ],
)
def test_bad_names_and_kinds_are_user_errors(tmp_path, name, kind, says):
    with pytest.raises(DqnbenchError, match=says):
        write_plugin(name, kind, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()  # nothing written


def test_a_builtin_name_of_another_kind_is_fine(tmp_path):
    assert plugin_names("dqnbench-mlp", "replay").component == "mlp"
    assert plugin_names("dqnbench-adam", "learner").component == "adam"


def test_there_is_a_template_for_every_kind_a_grid_names():
    assert set(KINDS) == {"network", "replay", "exploration", "env", "learner", "optimizer"}
    registry = load_registry(load_entrypoints=False)
    for kind, builtin in KINDS.items():
        assert builtin in registry.names(kind)  # the generated tiny grid trains next to this built-in


def test_the_templates_are_package_data_read_through_importlib_resources():
    """Every kind's files ship in the package (pyproject's package-data), not as string constants."""
    from dqnbench.devtools.scaffold import TEMPLATES

    for kind in KINDS:
        assert {"plugin.py.tmpl", "tests.py.tmpl", "kind.toml"} <= {f.name for f in TEMPLATES.joinpath(kind).iterdir()}
    package_data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any("templates" in pattern for pattern in package_data["package-data"]["dqnbench"])


def test_an_existing_non_empty_destination_is_refused(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "notes.txt").write_text("mine")
    with pytest.raises(DqnbenchError, match="not an empty directory"):
        write_plugin("dqnbench-fresh", "network", tmp_path / "pkg")
    (tmp_path / "file").write_text("")
    with pytest.raises(DqnbenchError, match="not an empty directory"):
        write_plugin("dqnbench-fresh", "network", tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert write_plugin("dqnbench-fresh", "network", tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_package_declares_its_entry_point_and_ships_readme_and_tests(tmp_path, kind):
    dest = write_plugin(f"dqnbench-fresh-{kind}", kind, tmp_path / "pkg")
    module = f"dqnbench_fresh_{kind}"
    project = tomllib.loads((dest / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"dqnbench-fresh-{kind}" and project["version"] == "0.1.0"
    assert project["entry-points"]["dqnbench"] == {module: f"{module}.plugin"}
    assert any(d.startswith("dqnbench>=") for d in project["dependencies"])
    assert (dest / "README.md").read_text().startswith(f"# dqnbench-fresh-{kind}")
    for path in (dest / "src" / module / "plugin.py", dest / "tests" / f"test_{module}.py"):
        compile(path.read_text(), str(path), "exec")
    readme = (dest / "README.md").read_text()
    assert f'fresh_{kind}"' in readme
    # installed from its folder, never by a name a package index may hold for someone else
    assert "pip install -e ." in readme and f"pip install dqnbench-fresh-{kind}\n" not in readme


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_generated_component_meets_its_contract(tmp_path, kind):
    plugin = generated_module(tmp_path, kind)
    registry = load_registry(load_entrypoints=False, extra_plugins=(plugin,))
    assert f"fresh_{kind}" in registry.names(kind)
    assert check_components(registry, kinds=(kind,)) == []


def generated_module(tmp_path, kind):
    """The plugin module of a freshly generated package, imported from its source."""
    dest = write_plugin(f"dqnbench-fresh-{kind}", kind, tmp_path / "pkg")
    path = dest / "src" / f"dqnbench_fresh_{kind}" / "plugin.py"
    spec = importlib.util.spec_from_file_location(f"dqnbench_fresh_{kind}_plugin", path)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin


def load_generated(tmp_path, kind):
    """The factory of a freshly generated package's component, imported from its source."""
    return getattr(generated_module(tmp_path, kind), f"fresh_{kind}")


def test_the_generated_network_stacks_natively_and_takes_image_observations(tmp_path):
    factory = load_generated(tmp_path, "network")
    for obs in (ObsSpec(4), ObsSpec((2, 6, 6), "uint8")):
        assert network_problem(factory, obs, 3) == (None, True)  # dqnbench.nn layers: lock-step without vmap
    assert factory(ObsSpec(4), 3, outputs=5)(torch.zeros(2, 4)).shape == (2, 3, 5)


@pytest.mark.parametrize("kind", ["exploration", "learner", "optimizer"])
def test_generated_components_declare_lockstep_support(tmp_path, kind):
    assert load_generated(tmp_path, kind).lockstep is True


def test_next_steps_say_how_to_install_and_test(tmp_path):
    text = next_steps(tmp_path / "pkg", "dqnbench-fresh", "replay")
    assert 'replay "fresh"' in text and "pip install -e" in text and "python -m pytest" in text


def test_the_command_offers_every_template_kind():
    parser = build_parser()
    for kind in KINDS:
        assert parser.parse_args(["new-plugin", "dqnbench-x", "--kind", kind]).kind == kind


def test_new_plugin_command_writes_the_package_and_rejects_bad_names(tmp_path, capsys):
    dest = tmp_path / "dqnbench-cli-made"
    assert main(["new-plugin", "dqnbench-cli-made", "--kind", "learner", "--dir", str(dest)]) == 0
    assert (dest / "src" / "dqnbench_cli_made" / "plugin.py").exists()
    assert "pip install -e" in capsys.readouterr().out
    assert main(["new-plugin", "dqnbench-cli-made", "--dir", str(dest)]) == 2  # exists and is not empty
    assert main(["new-plugin", "bad name!", "--dir", str(tmp_path / "other")]) == 2
    assert "not a valid distribution name" in capsys.readouterr().err


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


def test_each_kinds_package_passes_its_own_tests_right_after_pip_install_e(tmp_path):
    """What a plugin author does first: new-plugin, pip install -e, pytest — for every kind at once."""
    tag = uuid.uuid4().hex[:6]  # unique names: concurrent test runs share the environment
    dists = [f"dqnbench-scaffold-{tag}-{kind}" for kind in KINDS]
    dirs = [write_plugin(dist, kind, tmp_path / dist) for dist, kind in zip(dists, KINDS)]
    try:
        # offline and fast with the environment's setuptools; else pip fetches one (Python >= 3.12 venvs lack it)
        isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
        installed = pip("install", "-q", "--no-deps", *isolation, *(f"-e{d}" for d in dirs))
        assert installed.returncode == 0, installed.stderr
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, dirs)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert tests.returncode == 0, tests.stdout + tests.stderr
        passed = re.search(r"(\d+) passed", tests.stdout)
        assert passed and int(passed.group(1)) >= 4 * len(KINDS), tests.stdout  # the generated tests ran
    finally:
        uninstalled = pip("uninstall", "-y", *dists)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert all(importlib.util.find_spec(f"dqnbench_scaffold_{tag}_{kind}") is None for kind in KINDS)
