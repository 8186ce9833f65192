"""Where things live: the project root, and per-profile output folders.

Relative paths in configs are read from the current directory; the notebooks move to the project root first
(:mod:`medsg_lib.notebook`: a notebook's kernel starts in ``notebooks/``). The smoke profile writes to git-ignored sub-folders so that running the tests
never overwrites the committed tables and figures.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from medsg_lib.files import check_seed_count

_MARKER = 'name = "medsg"'


def project_root(start: Path | None = None) -> Path:
    """The folder holding medsg's ``pyproject.toml``: ``$MEDSG_ROOT`` if set, else searched upward from ``start``
    (default: the current directory), else the folder above the installed package."""
    env = os.environ.get("MEDSG_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _MARKER in pyproject.read_text(encoding="utf-8"):
            return folder
    return Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class OutputDirs:
    """Where a profile's stages write: small tables/JSON, figures, and git-ignored bulk (runs, images)."""

    results: Path
    figures: Path
    runs: Path
    generated: Path
    cache: Path


def data_tag(layout: str = "", data_root: str | Path = "") -> str:
    """A file-name-safe name for data other than a profile's own: ``""`` when neither is set, else
    ``<layout>-<last folder of data_root>``, e.g. ``folders-cxr-real`` (``default`` for an unset part)."""
    if not layout and not data_root:
        return ""
    name = Path(str(data_root)).resolve().name if data_root else "default"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{layout or 'default'}-{name}")


def output_dirs(profile: str, data: str = "", seeds: int = 1) -> OutputDirs:
    """Output folders for a profile (created). ``smoke`` writes under ``results/smoke`` and ``figures/smoke``
    (git-ignored); the other profiles write the committed ``results/`` and ``figures/``; bulk goes to
    ``runs/<profile>`` and ``generated/<profile>``. With ``data`` (:func:`data_tag`: a data set other than the
    profile's own) everything goes to ``<folder>/<profile>-<data>/`` instead, so that a run on other data
    never overwrites the embedded default's committed outputs (``figures/*/`` are git-ignored: they may show
    real images). ``seeds`` > 1 (a reproduce that trains every model with several seeds) puts tables and
    figures in a ``seeds<N>/`` sub-folder of those, beside the one-seed ones; runs and images are shared (a
    run of seed k > 0 is ``<run>_seed<k>``)."""
    check_seed_count(seeds)
    root = project_root()
    name = f"{profile}-{data}" if data else profile
    sub = name if data or profile == "smoke" else ""
    if seeds > 1:
        sub = f"{sub}/seeds{seeds}" if sub else f"seeds{seeds}"
    dirs = OutputDirs(
        results=root / "results" / sub,
        figures=root / "figures" / sub,
        runs=root / "runs" / name,
        generated=root / "generated" / name,
        cache=root / "cache",
    )
    for d in (dirs.results, dirs.figures, dirs.runs, dirs.generated, dirs.cache):
        d.mkdir(parents=True, exist_ok=True)
    return dirs
