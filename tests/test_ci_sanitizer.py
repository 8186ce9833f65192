"""The nbval sanitizer that `./run.sh test` applies on a CPU of another family than the committed outputs'."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

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
