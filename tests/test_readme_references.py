"""The promises of README.md and docs/ name the tests that back them: every named test must exist.

The guarantees table (``docs/guarantees.md``) and other pages cite tests as
``tests/file.py::test_name``; a renamed or deleted test would leave a promise
backed by nothing. This reads the names statically (no import, no collection).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`((?:tests|plugins)/[^`:\s]+\.py)::(\w+)(?:\[[^`]*\])?`")
GUARANTEES = REPO / "docs" / "guarantees.md"


def cited_tests(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(text)]


def documentation() -> dict[str, str]:
    """README.md and every page under docs/, by their path relative to the repository."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return {str(page.relative_to(REPO)): page.read_text(encoding="utf-8") for page in pages}


def test_every_test_the_documentation_cites_exists():
    cited = [(page, path, name) for page, text in documentation().items() for path, name in cited_tests(text)]
    assert len(cited_tests(GUARANTEES.read_text(encoding="utf-8"))) >= 40, (
        "the guarantees table should cite its tests as `tests/file.py::test_name`"
    )
    missing = []
    for page, path, name in cited:
        file = REPO / path
        if not file.is_file() or not re.search(rf"^(?:async )?def {name}\(", file.read_text(encoding="utf-8"), re.M):
            missing.append(f"{page} cites {path}::{name}")
    assert not missing, f"cited tests that do not exist: {missing}"


def test_the_guarantees_table_backs_every_row_with_a_test():
    section = GUARANTEES.read_text(encoding="utf-8").split("| promise | test |", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    rows = [row for row in rows if not set(row) <= set("|- ")]
    assert len(rows) >= 30
    unbacked = [row[:80] for row in rows if not cited_tests(row.rsplit(" | ", 1)[-1])]
    assert not unbacked, f"guarantees without a cited test: {unbacked}"


def test_the_documentation_links_nothing_outside_the_repository():
    outside = [page for page, text in documentation().items() if "../shared/" in text]
    assert not outside, f"pages linking outside the repository: {outside}"


def test_citations_are_read_with_parametrize_ids_and_plugin_paths():
    assert cited_tests("see `tests/test_x.py::test_y[a-b]` and `plugins/p/tests/t.py::test_z`") == [
        ("tests/test_x.py", "test_y"),
        ("plugins/p/tests/t.py", "test_z"),
    ]


def test_the_readme_is_a_front_page_whose_links_and_picture_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "the reference belongs in docs/, the README is the front page"
    targets = re.findall(r"\]\(((?!https?://)[^)#\s]+)", readme)
    assert any(target.endswith(".png") for target in targets), "a picture of the default grid's curves"
    missing = [target for target in targets if not (REPO / target).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
