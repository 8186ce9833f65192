"""What every notebook does first: one call, so that notebooks stay thin."""

from __future__ import annotations

import os
import warnings

import torch

from medsg_lib.config import Profile, get_profile
from medsg_lib.paths import OutputDirs, output_dirs, project_root


def setup_notebook(profile: str, seed: int = 0) -> tuple[Profile, OutputDirs]:
    """Move to the project root (relative paths in configs are relative to it), seed torch, quiet known-noise
    warnings, and return the profile and its output folders."""
    os.chdir(project_root())
    torch.manual_seed(seed)
    warnings.filterwarnings("ignore", message="IProgress not found")
    return get_profile(profile), output_dirs(profile)


def overrides(cfg, **changes):
    """``dataclasses.replace(cfg, ...)`` for notebook parameters, ignoring the "use the profile's" sentinels
    ``""``, ``0`` and ``None`` (papermill parameters are literals, so "unset" is spelled that way)."""
    from dataclasses import replace

    return replace(cfg, **{k: v for k, v in changes.items() if v not in ("", 0, None)})


def splits_for(layout: str) -> tuple[str, ...]:
    """The splits a layout has: COVID-QU-Ex and the phantoms have train/val/test, class-folder sets train/val."""
    return ("train", "val") if layout == "folders" else ("train", "val", "test")


def run_name(model: str, target_class: str) -> str:
    """Folder / figure suffix of a training run: ``medsg``, ``dcgan``, ``dcgan_covid`` (class slug)."""
    from medsg_lib.config import CLASS_NAMES, CLASS_SLUGS

    if target_class == "all":
        return model
    return f"{model}_{CLASS_SLUGS[CLASS_NAMES.index(target_class)]}"
