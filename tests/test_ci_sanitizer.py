"""The nbval sanitizer that `./run.sh test` applies on a CPU of another family than the committed outputs'."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from medsg_lib.devices import cpu_family
from medsg_lib.reproduce import NOTEBOOKS_CPU_FILE, prepare_notebook_checks

SANITIZER = Path(__file__).parent.parent / ".ci" / "nbval-other-cpu.cfg"


def _sanitize(text: str) -> str:
    """The file's sections applied in order, as nbval applies them."""
    parser = configparser.ConfigParser()
    parser.read(SANITIZER)
    for section in parser.sections():
        text = re.sub(parser[section]["regex"], parser[section]["replace"], text)
    return text


def test_numbers_and_column_widths_are_masked_but_names_are_not() -> None:
    a = "medsg    normal         8 110.63 77.17\n 24  0.0496           0.625  5.09e+06 ± 1.33e+06"
    b = "medsg    normal         8 110.64 77.18\n 24  0.0497           0.583   5.12e+06 ± 1.34e+06"
    assert _sanitize(a) == _sanitize(b)
    assert _sanitize("medsg normal 0.5") != _sanitize("dcgan normal 0.5")  # a changed row name still fails
    assert _sanitize("ok: 3 of 4") != _sanitize("missing weights: 3 of 4")
    assert ".ci/nbval-other-cpu.cfg" in (Path(__file__).parent.parent / "run.sh").read_text()


def test_run_sh_masks_by_the_family_recorded_for_the_committed_notebooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).parent.parent
    recorded = (root / ".ci" / "notebooks-cpu").read_text()
    assert recorded.endswith("\n") and recorded.strip() in {"x86-amx", "x86-avx512-bf16", "x86-avx512", "x86"}
    assert "prepare_notebook_checks()" in (root / "run.sh").read_text()
    assert str(NOTEBOOKS_CPU_FILE) == ".ci/notebooks-cpu"  # the file refresh-notebooks writes
    # the decision, on a copy of the project's layout: exact on the recorded family, masked on any other
    (tmp_path / ".ci").mkdir()
    (tmp_path / "runs" / "smoke-seed1").mkdir(parents=True)
    (tmp_path / "runs" / "cpu").mkdir()
    (tmp_path / NOTEBOOKS_CPU_FILE).write_text(cpu_family() + "\n")
    assert prepare_notebook_checks(tmp_path) == ""
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["cpu"]  # the stale smoke run removed
    # run.sh reads the reason from stdout: the removal is reported on stderr only
    captured = capsys.readouterr()
    assert captured.out == "" and "removing runs/smoke-seed1" in captured.err
    (tmp_path / NOTEBOOKS_CPU_FILE).write_text("x86-some-other\n")
    why = prepare_notebook_checks(tmp_path)
    assert why.startswith(f"this CPU ({cpu_family()}) is not of the family") and "(x86-some-other)" in why
    assert ".ci/nbval-other-cpu.cfg" in why
