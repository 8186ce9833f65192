"""The docs name tests as evidence: every one they name exists."""

from __future__ import annotations

import ast
import re

from medsg_lib.paths import project_root

NAMED_TEST = re.compile(r"`(test_\w+\.py)::(test_\w+)")
FOLLOW_ON = re.compile(r"`::(test_\w+)")


def named_tests(text: str) -> list[tuple[str, str]]:
    """``(file, test)`` for every ``file.py::test_x`` in ``text``, and for ``::test_y`` after it in the same
    table cell (the file written once)."""
    found = []
    for cell in text.split("|"):
        files = NAMED_TEST.findall(cell)
        found += files
        if files:
            found += [(files[-1][0], name) for name in FOLLOW_ON.findall(cell)]
    return found


def test_every_test_the_reliability_doc_names_exists() -> None:
    root = project_root()
    named = named_tests((root / "docs" / "reliability.md").read_text(encoding="utf-8"))
    assert len(named) >= 12
    defined = {}
    for file in {f for f, _ in named}:
        tree = ast.parse((root / "tests" / file).read_text(encoding="utf-8"))
        defined[file] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = [f"{file}::{name}" for file, name in named if name not in defined[file]]
    assert missing == []


def test_named_tests_reads_cells() -> None:
    text = "| a | `t_x.py` | `test_a.py::test_one` and `::test_two` | `::test_three` |"
    assert named_tests(text) == [("test_a.py", "test_one"), ("test_a.py", "test_two")]
