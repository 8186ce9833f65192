"""Data exploration numbers: counts per split and class, intensity statistics per class (notebook 01)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medsg_lib.config import CLASS_NAMES, to_jsonable
from medsg_lib.data.records import ReadReport, XrayRecord
from medsg_lib.data.transforms import load_image, load_mask, preprocess
from medsg_lib.files import project_relative


def count_table(report: ReadReport) -> pd.DataFrame:
    """Counts as a table: one row per split, one column per class, plus a total column."""
    splits = sorted({s for s, _ in report.counts}, key=["train", "val", "test"].index)
    rows = []
    for split in splits:
        row = {"split": split, **{c: report.counts.get((split, c), 0) for c in CLASS_NAMES}}
        row["total"] = sum(row[c] for c in CLASS_NAMES)
        rows.append(row)
    return pd.DataFrame(rows)


def pick_examples(records: Sequence[XrayRecord], per_class: int, seed: int = 0) -> list[XrayRecord]:
    """``per_class`` records of each class (in class order), chosen reproducibly with ``seed``."""
    rng = np.random.default_rng(seed)
    picked: list[XrayRecord] = []
    for label in range(len(CLASS_NAMES)):
        pool = [r for r in records if r.label == label]
        idx = rng.choice(len(pool), size=min(per_class, len(pool)), replace=False) if pool else []
        picked.extend(pool[i] for i in sorted(idx))
    return picked


def intensity_stats(
    records: Sequence[XrayRecord], img_size: int, per_class: int = 64, seed: int = 0
) -> pd.DataFrame:
    """Per-class statistics on up to ``per_class`` images at ``img_size`` (grayscale, 0-255 scale).

    Columns: class, n, mean (whole image), lung_mean (inside the lung mask, when masks exist),
    lesion_fraction (infection-mask area / lung-mask area, when infection masks exist).
    """
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        chosen = pick_examples([r for r in records if r.label == label], per_class, seed)
        means, lung_means, lesion = [], [], []
        for rec in chosen:
            img = preprocess(load_image(rec.image_path, channels=1), img_size).astype(np.float64)
            means.append(img.mean())
            if rec.lung_mask_path is not None:
                lung = load_mask(rec.lung_mask_path, img_size)
                if lung.any():
                    lung_means.append(img[lung].mean())
                    if rec.infection_mask_path is not None:
                        lesion.append(load_mask(rec.infection_mask_path, img_size).sum() / lung.sum())
        rows.append(
            {
                "class": name,
                "n": len(chosen),
                "mean": float(np.mean(means)) if means else float("nan"),
                "lung_mean": float(np.mean(lung_means)) if lung_means else float("nan"),
                "lesion_fraction": float(np.mean(lesion)) if lesion else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def class_histograms(
    records: Sequence[XrayRecord], img_size: int, per_class: int = 64, bins: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """Normalised grayscale histograms (``bins`` bins over 0-255) per class name, from up to ``per_class`` images."""
    edges = np.linspace(0, 256, bins + 1)
    out: dict[str, np.ndarray] = {}
    for label, name in enumerate(CLASS_NAMES):
        chosen = pick_examples([r for r in records if r.label == label], per_class, seed)
        counts = np.zeros(bins)
        for rec in chosen:
            img = preprocess(load_image(rec.image_path, channels=1), img_size)
            counts += np.histogram(img, bins=edges)[0]
        out[name] = counts / max(counts.sum(), 1)
    return out


def data_summary(report: ReadReport, stats: pd.DataFrame, data_cfg: object) -> dict:
    """The JSON-able record of notebook 01: config, counts per split and class, skipped files, class statistics."""
    return {
        "data": to_jsonable(data_cfg),
        "root": project_relative(report.root),
        "counts": count_table(report).to_dict(orient="records"),
        "skipped": [{"file": project_relative(p), "reason": r} for p, r in report.skipped],
        "class_stats": stats.round(4).to_dict(orient="records"),
    }
