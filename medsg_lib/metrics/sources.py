"""The two kinds of image sets an evaluation compares: real images of one split and class, and a generated set.

- :class:`RealImages` (:func:`real_images`): the images of a data set split, held as uint8 in memory, yielded as
  float32 batches (B, C, H, W) in [-1, 1]; identified for the feature cache by the exact files they come from.
- :class:`GeneratedSet` (:func:`generated_set`): the PNGs of a folder and, from the generation manifest in the
  folder's parent (``manifest.csv``, :mod:`medsg_lib.manifest`), the source image and source class of each
  file. Whether a set comes from an image-to-image model is read from that manifest (every file has a source
  image), never from a model's name: it decides how LPIPS diversity is measured and whether the paper's FID is
  the mean over source classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from medsg_lib.config import CLASS_NAMES, DataConfig, PhantomConfig
from medsg_lib.data import build_dataset, cache_key
from medsg_lib.data.transforms import normalize_u8
from medsg_lib.files import ALL_CLASSES
from medsg_lib.manifest import read_manifest
from medsg_lib.metrics.features import list_image_files, load_pil_image


def check_class(target_class: str, what: str) -> None:
    """Raise ValueError naming ``what`` unless ``target_class`` is one of ``CLASS_NAMES`` or ``"all"``."""
    allowed = (*CLASS_NAMES, ALL_CLASSES)
    if target_class not in allowed:
        raise ValueError(
            f"{what}={target_class!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )


class RealImages:
    """The real images of one split and class, iterable (again and again) as float32 batches (B, C, H, W) in
    [-1, 1].

    Holds a reference to the data set's uint8 images (the data module keeps a split in memory) and the indices
    of the class; each batch is converted when it is yielded. ``lung_masks``: the mask file of each image
    (COVID-QU-Ex and the phantoms), or None. ``identity`` names the exact files (paths,
    sizes, modification times, image size, channels; :func:`medsg_lib.data.cache_key`) for caches.
    """

    def __init__(
        self,
        images_u8: Tensor,
        indices: Tensor,
        split: str,
        target_class: str,
        identity: str,
        batch_size: int,
        lung_masks: tuple[Path, ...] | None = None,
        subset: str = "",
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be > 0")
        if indices.numel() == 0:
            raise ValueError(f"no real images of class {target_class!r} in split {split!r}")
        self.images_u8 = images_u8  # (N, C, H, W) uint8 in 0..255, the whole split
        self.indices = indices  # (n,) int64, the images of the class
        self.split = split
        self.target_class = target_class
        self.identity = identity
        self.batch_size = batch_size
        self.lung_masks = lung_masks  # one per image of the class, or None when some image has none
        self.subset = subset  # "" (every image of the class) or the name of a subset (:func:`subsample`)

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def img_size(self) -> int:
        return int(self.images_u8.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images_u8.shape[1])

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, len(self), self.batch_size):
            yield normalize_u8(self.images_u8[self.indices[start : start + self.batch_size]])


def real_images(
    data_cfg: DataConfig,
    split: str,
    target_class: str,
    phantoms: PhantomConfig | None = None,
    batch_size: int = 50,
) -> RealImages:
    """Real images of ``target_class`` (``"all"``: every class) in ``split`` of the set of ``data_cfg``.

    Read through ``build_dataset(..., train=False)`` (no augmentation; decoded once into the data cache), at
    ``data_cfg.img_size`` and ``data_cfg.channels``. Iterating the result yields (B, C, H, W) in [-1, 1].
    """
    check_class(target_class, "target_class")
    dataset = build_dataset(data_cfg, split, phantoms, train=False, progress=False)
    if target_class == ALL_CLASSES:
        indices = torch.arange(len(dataset))
    else:
        indices = torch.nonzero(dataset.labels == CLASS_NAMES.index(target_class)).flatten()
    root = data_cfg.root if data_cfg.layout != "phantoms" or phantoms is None else phantoms.root
    files_key = cache_key(dataset.records, data_cfg.img_size, data_cfg.channels)
    identity = f"{data_cfg.layout}:{root}:{data_cfg.subset}:{files_key}"
    masks = [dataset.records[i].lung_mask_path for i in indices.tolist()]
    lung_masks = None if any(m is None for m in masks) else tuple(Path(m) for m in masks)
    return RealImages(dataset.images, indices, split, target_class, identity, batch_size, lung_masks)


def subsample(real: RealImages, fraction: float, draw: int) -> RealImages:
    """``ceil(fraction * n)`` of ``real``'s images, drawn without replacement with seed ``draw`` (kept in their
    order), named ``subset = "draw <draw> of <fraction>"`` so that feature caches keep them apart from the
    whole class. Draws of one set overlap: their spread understates that of independent samples."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    n = len(real)
    k = max(2, math.ceil(fraction * n))
    if k > n:
        raise ValueError(f"a subset of {k} images needs at least {k} images; {real.target_class!r} has {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(draw)))
    keep = order[:k].sort().values
    masks = None if real.lung_masks is None else tuple(real.lung_masks[i] for i in keep.tolist())
    return RealImages(
        real.images_u8,
        real.indices[keep],
        real.split,
        real.target_class,
        real.identity,
        real.batch_size,
        masks,
        subset=f"draw {int(draw)} of {fraction:g}",
    )


def load_images(paths: Sequence[Path]) -> Tensor:
    """Image files (all of one size) -> (K, C, H, W) float32 in [-1, 1], C = 1 (gray) or 3 (RGB)."""
    tensors = []
    for path in paths:
        img = load_pil_image(Path(path))
        tensors.append(TF.to_tensor(img.convert("L" if img.mode == "L" else "RGB")) * 2 - 1)
    return torch.stack(tensors)


@dataclass(frozen=True)
class GeneratedSet:
    """The image files of one generated class and what the generation manifest says about each.

    ``files``: sorted (:func:`medsg_lib.metrics.list_image_files`). ``source_images`` / ``source_classes``:
    per file, the source image it translates and that image's class; None when there is no manifest in
    ``fake_dir.parent`` or some file has no row or no value there (noise-to-image models).
    """

    fake_dir: Path
    target_class: str
    files: tuple[Path, ...]
    source_images: tuple[str, ...] | None = None
    source_classes: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def manifest_dir(self) -> Path:
        """The generated set's folder, holding ``manifest.csv`` and one folder of PNGs per class."""
        return self.fake_dir.parent

    @property
    def image_to_image(self) -> bool:
        """True when every file translates a source image (outputs can be grouped by source image)."""
        return self.source_images is not None

    @property
    def grouped_by_source(self) -> bool:
        """True when every file translates a source image and some source has several outputs (a stochastic
        translator such as Med-StyleGAN2): diversity is then measured within each source's outputs. A
        deterministic translator (StarGAN, CycleGAN: one output per source) is measured over random pairs."""
        return self.source_images is not None and len(set(self.source_images)) < len(self.source_images)


def _per_file(
    frame: pd.DataFrame, out_dir: Path, files: Sequence[Path], column: str
) -> tuple[str, ...] | None:
    """``column`` of the manifest row of each file, or None when a file has no row or an empty cell."""
    by_file = {str((out_dir / f).resolve()): v for f, v in zip(frame["file"], frame[column], strict=True)}
    values = [by_file.get(str(Path(p).resolve())) for p in files]
    if any(v is None or pd.isna(v) for v in values):
        return None
    return tuple(values)


def generated_set(fake_dir: Path, target_class: str) -> GeneratedSet:
    """The generated images under ``fake_dir`` (recursively) with their sources from the manifest in
    ``fake_dir.parent`` (none when it has no manifest: e.g. a folder of images from elsewhere)."""
    fake_dir = Path(fake_dir)
    files = tuple(list_image_files(fake_dir))
    try:
        frame = read_manifest(fake_dir.parent)
    except FileNotFoundError:
        return GeneratedSet(fake_dir, target_class, files)
    return GeneratedSet(
        fake_dir,
        target_class,
        files,
        _per_file(frame, fake_dir.parent, files, "source_image"),
        _per_file(frame, fake_dir.parent, files, "source_class"),
    )


Images = RealImages | GeneratedSet  # what a metric compares with the real reference


def source_class_array(images: Images) -> np.ndarray | None:
    """(n,) object array of the source class of each generated file, or None (real images translate nothing;
    a generated set without sources)."""
    if isinstance(images, RealImages) or images.source_classes is None:
        return None
    return np.asarray(images.source_classes, dtype=object)
