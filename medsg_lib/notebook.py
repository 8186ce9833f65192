"""What every notebook does first: one call, so that notebooks stay thin."""

from __future__ import annotations

import os
import re
import warnings

import torch

from medsg_lib.data.records import layout_splits
from medsg_lib.paths import OutputDirs, data_tag, output_dirs, project_root
from medsg_lib.profiles import Profile, get_profile


def setup_notebook(
    profile: str, layout: str = "", data_root: str = "", seed: int = 0
) -> tuple[Profile, OutputDirs]:
    """Move to the project root (relative paths in configs are relative to it), seed torch, quiet known-noise
    warnings, and return the profile and its output folders: the profile's own, or, when ``layout`` or
    ``data_root`` names other data, ``results/<profile>-<data>/`` etc. (:func:`medsg_lib.paths.data_tag`)."""
    os.chdir(project_root())
    torch.manual_seed(seed)
    warnings.filterwarnings("ignore", message="IProgress not found")
    return get_profile(profile), output_dirs(profile, data_tag(layout, data_root))


def overrides(cfg, **changes):
    """``dataclasses.replace(cfg, ...)`` for notebook parameters, ignoring the "use the profile's" sentinels
    ``""``, ``0`` and ``None`` (papermill parameters are literals, so "unset" is spelled that way)."""
    from dataclasses import replace

    return replace(cfg, **{k: v for k, v in changes.items() if v not in ("", 0, None)})


def splits_for(layout: str) -> tuple[str, ...]:
    """The splits a layout has (:func:`medsg_lib.data.layout_splits`, the one place)."""
    return layout_splits(layout)


_DECIMAL = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


def rounded(text: str, digits: int = 3) -> str:
    """``text`` with every decimal number rounded to ``digits`` significant digits, for the printed regression
    values of ``# NBVAL_CHECK_OUTPUT`` cells: a changed metric fails the notebook test, while the last bits of
    floating point (which may differ between machines) do not."""
    return _DECIMAL.sub(lambda m: f"{float(m.group()):.{digits}g}", text)
