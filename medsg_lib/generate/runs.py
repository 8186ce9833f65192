"""Generation over every training run of a profile, and which generated sets the notebooks use.

:func:`generate_runs` calls :func:`medsg_lib.generate.core.generate` for the latest checkpoint of each run;
:func:`generated_models` and :func:`deterministic_runs` tell the notebooks which sets exist and how to read them,
by the families' capabilities, never by a model's name.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd

from medsg_lib.config import DataConfig, GenerateConfig, PhantomConfig
from medsg_lib.families import get_family, with_capability
from medsg_lib.files import CONFIG_NAME, MANIFEST_NAME, class_slug, read_json
from medsg_lib.generate.core import generate, resolve_targets
from medsg_lib.training.rundir import run_train_config


def generate_runs(
    runs_dir: Path,
    out_root: Path,
    gen_cfg: GenerateConfig,
    data_cfg: DataConfig,
    *,
    phantoms: PhantomConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
    seeds: int | None = None,
) -> pd.DataFrame:
    """Generate from the latest checkpoint of every run under ``runs_dir`` into ``out_root/<run name>/``
    (``seeds``: only runs of training seeds ``0 .. seeds - 1``; None: every run).

    ``data_cfg`` is adapted to each run's image size and channels (Med-StyleGAN2 translates validation images).
    Returns one row per run and class: run, model, class, n_images, seconds (of the whole run's call), checkpoint.
    """
    from medsg_lib.checkpoint import latest_checkpoint

    rows = []
    for run_dir in sorted(p for p in Path(runs_dir).iterdir() if (p / CONFIG_NAME).is_file()):
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            continue
        train_cfg = run_train_config(run_dir)
        if seeds is not None and train_cfg.seed >= seeds:
            continue
        run_data = dataclasses.replace(data_cfg, img_size=train_cfg.img_size, channels=train_cfg.channels)
        t0 = time.perf_counter()
        out_dir = generate(
            ckpt,
            out_root / run_dir.name,
            gen_cfg,
            run_data,
            phantoms=phantoms,
            device=device,
            progress=progress,
        )
        seconds = time.perf_counter() - t0
        for target in resolve_targets(train_cfg, None):
            n = len(list((out_dir / class_slug(target)).glob("*.png")))
            rows.append(
                {
                    "run": run_dir.name,
                    "model": train_cfg.model,
                    "class": target,
                    "n_images": n,
                    "seconds": round(seconds, 1),
                    "checkpoint": ckpt.name,
                }
            )
    return pd.DataFrame(rows)


def generated_models(
    generated_root: Path, *, translates: bool | None = None, class_conditional: bool | None = None
) -> dict[str, Path]:
    """Display label -> ``generated_root/<model>`` of every registered family with the given capabilities
    (:func:`medsg_lib.families.with_capability`) whose folder has a manifest (it was generated), in registry
    order. Notebooks pick models this way, never by name."""
    found = {}
    for family in with_capability(translates=translates, class_conditional=class_conditional):
        folder = Path(generated_root) / family.name
        if (folder / MANIFEST_NAME).is_file():
            found[family.label] = folder
    return found


def deterministic_runs(runs_root: Path) -> list[str]:
    """Names of the training runs under ``runs_root`` whose family is a deterministic translator (one image per
    source, so possibly fewer than ``num_per_class``). Other folders with a ``config.json`` (the classifiers'
    runs, which have no ``"train"`` entry) are not training runs and are skipped."""
    names = []
    for d in sorted(Path(runs_root).iterdir()):
        info = read_json(d / CONFIG_NAME) if (d / CONFIG_NAME).is_file() else {}
        if "train" in info and get_family(info["train"]["model"]).deterministic:
            names.append(d.name)
    return names
