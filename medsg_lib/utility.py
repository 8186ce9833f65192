"""Does synthetic data carry class information? Train the X-ray classifier on real, synthetic, and real plus
synthetic training images and test each on the same real held-out split (beyond the paper)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from medsg_lib.classify import evaluate_classifier, load_classifier, train_classifier
from medsg_lib.config import CLASS_NAMES, ClassifierConfig
from medsg_lib.data import LabelledImages
from medsg_lib.generate.read import generated_images


def generated_dataset(gen_dir: Path, img_size: int, channels: int = 1) -> LabelledImages:
    """The PNGs of ``gen_dir/{class_slug}/*.png`` (one folder per class, e.g. Med-StyleGAN2's output) with the
    folder's class as label, resized to ``img_size``. Raises FileNotFoundError when no class folder has images."""
    return generated_images(gen_dir, img_size, channels, classes=CLASS_NAMES)


def materialise(dataset: Dataset) -> LabelledImages:
    """Every item of ``dataset`` in memory (for concatenation with generated images)."""
    items = [dataset[i] for i in range(len(dataset))]
    return LabelledImages(
        torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])
    )


def concat(parts: Sequence[LabelledImages]) -> LabelledImages:
    """The union of in-memory image sets."""
    return LabelledImages(torch.cat([p.x for p in parts]), torch.cat([p.labels for p in parts]))


def utility_experiment(
    cfg: ClassifierConfig,
    real_train: Dataset,
    synthetic: Mapping[str, LabelledImages],
    test_set: Dataset,
    run_root: Path,
    progress: bool = True,
) -> pd.DataFrame:
    """Train one classifier per training set with ``cfg`` (last epoch, no model selection, so no real data
    reaches a synthetic-only model) and test each on ``test_set``: the real images once, then for each
    generator of ``synthetic`` (display label -> its images of every class) its images alone and real + its
    images. Checkpoints go to ``run_root/<generator slug>/<set>``. Returns one row each: generator,
    training_data, n_train, n_test, accuracy, macro_f1, recall per class."""
    real = materialise(real_train)
    sets: list[tuple[str, str, LabelledImages]] = [("none", "real", real)]
    for label, images in synthetic.items():
        sets += [(label, "synthetic", images), (label, "real+synthetic", concat([real, images]))]
    rows = []
    for generator, name, train_set in sets:
        folder = (
            Path(run_root) / ("" if generator == "none" else _slug(generator)) / name.replace("+", "_plus_")
        )
        ckpt = train_classifier(cfg, train_set, folder, progress=progress)
        model, info = load_classifier(ckpt)
        result = evaluate_classifier(model, test_set)
        rows.append(
            {
                "generator": generator,
                "training_data": name,
                "n_train": len(train_set),
                "n_test": result["n"],
                "accuracy": round(result["accuracy"], 4),
                "macro_f1": round(result["macro_f1"], 4),
                **{f"recall_{c}": round(result["recall"][c], 4) for c in CLASS_NAMES},
                "init": info.get("init"),
                "epochs": cfg.epochs,
            }
        )
    return pd.DataFrame(rows)


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def utility_config(cfg: ClassifierConfig, epochs: int = 0) -> ClassifierConfig:
    """The classifier config of the utility runs (``epochs`` 0: the profile's)."""
    return replace(cfg, epochs=epochs) if epochs else cfg
