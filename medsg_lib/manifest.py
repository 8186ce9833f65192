"""A generated set's files: the planned items and ``manifest.csv``, one row per image.

A generated set (an output folder of :func:`medsg_lib.generate.generate`) holds ``config.json``,
``manifest.csv`` and ``{class_slug}/{seed:06d}.png``. The manifest says for every image its seed, class, file,
model, checkpoint (path and sha256 prefix) and, for image-to-image models, the source image it translates, the
source's class, the mode (``latent`` / ``reference`` / ``noise``), the latent index and the reference image.
The evaluation reads it to group outputs by source image (LPIPS diversity) and by source class (the paper's FID
protocol), so these decisions follow the data, not the model's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from medsg_lib.config import CLASS_NAMES
from medsg_lib.files import ALL_CLASSES, MANIFEST_NAME, class_slug, project_relative, write_text_atomic

MANIFEST_COLUMNS: tuple[str, ...] = (
    "seed",
    "class",
    "file",
    "model",
    "checkpoint",
    "checkpoint_sha256",
    "source_image",
    "source_class",
    "mode",
    "latent_index",
    "reference_image",
)
SEED_RUN_STRIDE = 10**6  # seed = gen_cfg.seed * SEED_RUN_STRIDE + class_index * SEED_CLASS_STRIDE + item
SEED_CLASS_STRIDE = 10**5  # hence at most 10**5 items per class
_TEXT_COLUMNS = tuple(c for c in MANIFEST_COLUMNS if c not in ("seed", "latent_index"))


@dataclass(frozen=True)
class GeneratedItem:
    """One planned image.

    ``mode``: ``"latent"`` or ``"reference"`` (image-to-image models such as Med-StyleGAN2), ``"noise"`` (baselines). ``source_image`` /
    ``source_class``: the translated validation image and its class (None for noise-to-image models). ``latent_index``:
    which of the source's draws this is (0 .. ``num_latents_per_source - 1`` in the first pass; None for
    baselines). ``reference_image``: the reference of class ``target_class`` (``mode="reference"`` only).
    """

    seed: int
    target_class: str
    source_image: str | None
    source_class: str | None
    mode: str
    latent_index: int | None
    reference_image: str | None = None


def class_index(target_class: str) -> int:
    """Index of ``target_class`` in ``CLASS_NAMES``, or ``len(CLASS_NAMES)`` (3) for ``"all"``."""
    if target_class == ALL_CLASSES:
        return len(CLASS_NAMES)
    if target_class not in CLASS_NAMES:
        raise ValueError(f"unknown class {target_class!r}; choose one of {', '.join(map(repr, CLASS_NAMES))}")
    return CLASS_NAMES.index(target_class)


def item_file(item: GeneratedItem) -> str:
    """Path of an item's PNG relative to the output folder: ``{class_slug}/{seed:06d}.png``."""
    return f"{class_slug(item.target_class)}/{item.seed:06d}.png"


def item_seed(gen_seed: int, target_class: str, item_index: int) -> int:
    """``gen_seed * 10**6 + class_index * 10**5 + item_index`` (unique while ``item_index < 10**5``).

    An item's randomness (its latent, its reference image) comes only from
    ``torch.Generator().manual_seed(seed)``, so the same seed gives the same image whatever the batch size or
    the order of generation.
    """
    if gen_seed < 0:
        raise ValueError(f"GenerateConfig.seed={gen_seed!r} must be >= 0")
    if not 0 <= item_index < SEED_CLASS_STRIDE:
        raise ValueError(
            f"item index {item_index} is outside 0..{SEED_CLASS_STRIDE - 1}: seeds leave room for at most "
            f"{SEED_CLASS_STRIDE} images per class; lower GenerateConfig.num_per_class"
        )
    return gen_seed * SEED_RUN_STRIDE + class_index(target_class) * SEED_CLASS_STRIDE + item_index


def item_latent(seed: int, dim: int) -> Tensor:
    """The item's latent ``(dim,)`` ~ N(0, I), drawn from ``torch.Generator().manual_seed(seed)`` on CPU."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def manifest_rows(items: Sequence[GeneratedItem], run: Mapping[str, str]) -> pd.DataFrame:
    """Manifest rows of ``items``; ``run`` gives ``model``, ``checkpoint`` and ``checkpoint_sha256``."""
    rows = [
        {
            "seed": it.seed,
            "class": it.target_class,
            "file": item_file(it),
            **run,
            "source_image": it.source_image,
            "source_class": it.source_class,
            "mode": it.mode,
            "latent_index": it.latent_index,
            "reference_image": it.reference_image,
        }
        for it in items
    ]
    return _typed(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Manifest dtypes: ``seed`` int64, ``latent_index`` nullable Int64, the others pandas strings."""
    frame = frame.astype({"seed": "int64", "latent_index": "Int64"})
    return frame.astype(dict.fromkeys(_TEXT_COLUMNS, "string"))


def write_manifest(out_dir: Path, rows: pd.DataFrame) -> Path:
    """Write ``rows`` to ``out_dir/manifest.csv`` atomically, sorted by class (canonical order) and seed."""
    order = rows["class"].map(lambda c: class_index(c)).astype("int64")
    rows = rows.assign(_order=order).sort_values(["_order", "seed"]).drop(columns="_order")
    path = Path(out_dir) / MANIFEST_NAME
    write_text_atomic(path, rows.to_csv(index=False))
    return path


def read_manifest(out_dir: Path) -> pd.DataFrame:
    """``out_dir/manifest.csv`` as a DataFrame with :data:`MANIFEST_COLUMNS` (``seed`` int64,
    ``latent_index`` Int64, the others strings; empty cells are ``<NA>``).

    Raises:
        FileNotFoundError: no manifest (names the file and the fix). ValueError: columns missing.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: generate images into {out_dir} first (medsg_lib.generate.generate)"
        )
    # only empty cells are missing values (a file could be called "NA")
    dtypes = {"seed": "int64", "latent_index": "Int64"}
    frame = pd.read_csv(
        path, dtype=dtypes, keep_default_na=False, na_values=dict.fromkeys(MANIFEST_COLUMNS, [""])
    )
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; regenerate it with this version")
    return _typed(frame[list(MANIFEST_COLUMNS)])


def manifest_preview(out_dir: Path, rows: int = 5) -> pd.DataFrame:
    """The first ``rows`` of a manifest for display, with image paths relative to the project root (or as
    recorded when outside it), so that a shown or committed preview names no machine's folders."""
    frame = read_manifest(out_dir).head(rows).copy()
    for column in ("source_image", "reference_image", "checkpoint"):
        frame[column] = frame[column].map(lambda v: v if pd.isna(v) else project_relative(v))
    return frame


def lpips_groups(out_dir: Path, target_class: str) -> Iterator[list[Path]]:
    """Files of ``target_class`` grouped by source image (Med-StyleGAN2), for LPIPS diversity.

    Yields one list of absolute paths per source image with at least two outputs (a pair is needed), in the
    manifest's order of seeds.

    Raises:
        ValueError: the class is not in the manifest, or its images have no source (unconditional baselines:
        use random pairs, :func:`medsg_lib.metrics.lpips_div.lpips_pairs`).
    """
    out_dir = Path(out_dir)
    frame = read_manifest(out_dir)
    rows = frame[frame["class"] == target_class]
    if rows.empty:
        present = ", ".join(map(repr, frame["class"].unique()))
        raise ValueError(f"no images of class {target_class!r} in {out_dir / MANIFEST_NAME} (has {present})")
    if rows["source_image"].isna().any():
        raise ValueError(
            f"images of class {target_class!r} in {out_dir} have no source image (an unconditional model); "
            "measure their diversity over random pairs instead"
        )
    for _, group in rows.groupby("source_image", sort=False):
        if len(group) >= 2:
            yield [out_dir / f for f in group.sort_values("seed")["file"]]


def image_stats(out_root: Path) -> pd.DataFrame:
    """Mean and standard deviation of the 8-bit pixel values of every generated set under ``out_root`` (one row
    per run and class folder, sorted): a fingerprint of the images that survives the last bit of floating
    point, for the regression cell of the generation notebook."""
    rows = []
    for folder in sorted(p for p in Path(out_root).glob("*/*") if p.is_dir() and any(p.glob("*.png"))):
        files = sorted(folder.glob("*.png"))
        pixels = np.concatenate([np.asarray(Image.open(f)).ravel() for f in files])
        row = {"run": folder.parent.name, "folder": folder.name, "n_images": len(files)}
        rows.append({**row, "mean": float(pixels.mean()), "std": float(pixels.std())})
    return pd.DataFrame(rows)
