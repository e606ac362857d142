"""README's promises name the tests that back them: every named test must exist.

The "What dqnbench guarantees" table and other README text cite tests as
``tests/file.py::test_name``; a renamed or deleted test would leave a promise
backed by nothing. This reads the names statically (no import, no collection).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`((?:tests|plugins)/[^`:\s]+\.py)::(\w+)(?:\[[^`]*\])?`")


def cited_tests(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(text)]


def test_every_test_the_readme_cites_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    cited = cited_tests(readme)
    assert len(cited) >= 40, "the guarantees table should cite its tests as `tests/file.py::test_name`"
    missing = []
    for path, name in cited:
        file = REPO / path
        if not file.is_file() or not re.search(rf"^(?:async )?def {name}\(", file.read_text(encoding="utf-8"), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"README cites tests that do not exist: {missing}"


def test_the_guarantees_table_backs_every_row_with_a_test():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What dqnbench guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| promise")]
    rows = [row for row in rows if not set(row) <= set("|- ")]
    assert rows
    unbacked = [row[:80] for row in rows if not cited_tests(row.rsplit(" | ", 1)[-1])]
    assert not unbacked, f"guarantees without a cited test: {unbacked}"


def test_citations_are_read_with_parametrize_ids_and_plugin_paths():
    assert cited_tests("see `tests/test_x.py::test_y[a-b]` and `plugins/p/tests/t.py::test_z`") == [
        ("tests/test_x.py", "test_y"),
        ("plugins/p/tests/t.py", "test_z"),
    ]
