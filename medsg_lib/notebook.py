"""What every notebook does first: one call, so that notebooks stay thin."""

from __future__ import annotations

import os
import re
import warnings

import torch

from medsg_lib.data.records import layout_splits
from medsg_lib.files import project_relative, read_json, write_json_atomic
from medsg_lib.paths import OutputDirs, data_tag, output_dirs, project_root
from medsg_lib.profiles import Profile, get_profile


def data_source_tag(prof: Profile, layout: str = "", data_root: str = "") -> str:
    """The output-folder tag of the data a run reads: ``""`` for the profile's own phantoms (the embedded
    default, whose outputs are committed), else :func:`medsg_lib.paths.data_tag` of the effective layout and
    root, e.g. ``folders-cxr-real``, or ``covidqu-COVID-QU-Ex`` for the paper profiles."""
    data = overrides(prof.data, layout=layout, root=data_root)
    if data == prof.data and data.layout == "phantoms":
        return ""
    return data_tag(data.layout, data.root or "default")


def claim_output_dirs(dirs: OutputDirs, layout: str, root: str) -> None:
    """Record which data ``dirs`` belong to (``dirs.runs/data_source.json``) and refuse another data set whose
    folder has the same name: its runs, classifier and tables would silently mix with these."""
    source = {"layout": layout, "root": project_relative(root) if root else ""}
    path = dirs.runs / "data_source.json"
    if path.is_file():
        saved = read_json(path)
        if saved != source:
            raise ValueError(
                f"{dirs.runs} holds runs on {saved['layout']} data at {saved['root']!r}, not {source['root']!r}: "
                "two data folders of the same name share output folders; rename one, or move the old outputs"
            )
        return
    write_json_atomic(path, source)


def setup_notebook(
    profile: str, layout: str = "", data_root: str = "", seed: int = 0, seeds: int = 1
) -> tuple[Profile, OutputDirs]:
    """Move to the project root (relative paths in configs are relative to it), seed torch, quiet known-noise
    warnings, and return the profile and its output folders: the committed ones for the profile's own
    phantoms, else ``results/<profile>-<data>/`` etc. (:func:`data_source_tag`), claimed for that data;
    ``seeds`` > 1: their ``seeds<N>/`` sub-folders (:func:`medsg_lib.paths.output_dirs`)."""
    os.chdir(project_root())
    torch.manual_seed(seed)
    warnings.filterwarnings("ignore", message="IProgress not found")
    prof = get_profile(profile)
    dirs = output_dirs(profile, data_source_tag(prof, layout, data_root), seeds)
    data = overrides(prof.data, layout=layout, root=data_root)
    claim_output_dirs(dirs, data.layout, str(data.root or ""))
    return prof, dirs


def overrides(cfg, **changes):
    """``dataclasses.replace(cfg, ...)`` for notebook parameters, ignoring the "use the profile's" sentinels
    ``""``, ``0`` and ``None`` (:func:`is_unset`; papermill parameters are literals, so "unset" is spelled
    that way)."""
    from dataclasses import replace

    return replace(cfg, **{k: v for k, v in changes.items() if not is_unset(v)})


def is_unset(value: object) -> bool:
    """Whether a notebook parameter means "the profile's": ``None``, ``""`` or the number 0 (not ``False``:
    ``False == 0`` in Python, but a flag set to False is set)."""
    if value is None or isinstance(value, bool):
        return value is None
    return value == "" if isinstance(value, str) else isinstance(value, (int, float)) and value == 0


def splits_for(layout: str) -> tuple[str, ...]:
    """The splits a layout has (:func:`medsg_lib.data.layout_splits`, the one place)."""
    return layout_splits(layout)


_DECIMAL = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


def rounded(text: str, digits: int = 3) -> str:
    """``text`` with every decimal number rounded to ``digits`` significant digits, for the printed regression
    values of ``# NBVAL_CHECK_OUTPUT`` cells: a changed metric fails the notebook test, while the last bits of
    floating point (which may differ between machines) do not."""
    return _DECIMAL.sub(lambda m: f"{float(m.group()):.{digits}g}", text)
