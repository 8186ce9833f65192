"""Datasets of preprocessed chest X-rays and their on-disk cache.

Every image is decoded and resized once into a uint8 tensor ``(N, C, H, W)`` saved with ``torch.save`` under
``DataConfig.cache_dir`` as ``{layout}-{split}-{size}px-{channels}ch-{key}.pt``. The key hashes the sorted
image and mask paths with their sizes and modification times, the labels, the image size, the channel count
and :data:`READER_VERSION`: changing, adding, touching or removing a file, or changing the size, gives a new
file (old cache files are left in place; delete ``cache_dir`` to reclaim space). The file is written
atomically (:func:`medsg_lib.files.write_atomic`) and loaded with ``weights_only=True``.

Validation happens while building the cache: each image is fully decoded (which catches truncated files) and
each mask's header is compared with its image's size. The readers only check folders, suffixes and that masks
exist, so reading the records of a large set stays fast. Bad files found while decoding follow the same
``on_bad`` policy; the cache remembers them, so a later run with ``on_bad="error"`` raises without decoding
again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medsg_lib.config import CLASS_NAMES, DataConfig, PhantomConfig
from medsg_lib.data.covidqu import read_covidqu
from medsg_lib.data.folders import read_class_folders
from medsg_lib.data.phantoms import write_phantoms
from medsg_lib.data.records import (
    BadFileError,
    DataError,
    OnBad,
    ReadReport,
    XrayRecord,
    apply_on_bad,
    check_splits,
    make_report,
)
from medsg_lib.data.transforms import check_radiograph, faithful_augment, load_image, normalize_u8, preprocess
from medsg_lib.files import read_torch_cache, write_torch_atomic

# Bump when decoding or preprocessing changes: every cache file is then rebuilt.
READER_VERSION = 2
DECODE_THREADS = min(4, os.cpu_count() or 1)  # Pillow releases the GIL while decoding and resizing


def read_records(
    cfg: DataConfig,
    splits: Sequence[str],
    phantoms: PhantomConfig | None = None,
    progress: bool = True,
) -> tuple[list[XrayRecord], ReadReport]:
    """Records of ``splits`` of the set described by ``cfg`` (no decoding), and the reader's report.

    ``layout="phantoms"`` first writes the phantoms (``write_phantoms(phantoms or PhantomConfig())``, cheap
    when they exist; ``cfg.root``, when set, replaces ``PhantomConfig.root``) and reads them as COVID-QU-Ex.
    ``"covidqu"`` reads :func:`read_covidqu` at ``cfg.root``; ``"folders"`` reads :func:`read_class_folders`
    with ``cfg.class_map``. ``cfg.on_bad`` applies.
    """
    splits = check_splits(splits)
    if cfg.layout == "phantoms":
        phantom_cfg = phantoms or PhantomConfig()
        if cfg.root is not None:
            phantom_cfg = dataclasses.replace(phantom_cfg, root=cfg.root)
        root = write_phantoms(phantom_cfg, progress=progress)
        return read_covidqu(root, cfg.subset, splits, cfg.on_bad)
    if cfg.root is None:  # DataConfig forbids it; kept for configs built with object.__setattr__
        raise DataError(f"DataConfig.root must be set for layout={cfg.layout!r}")
    if cfg.layout == "covidqu":
        return read_covidqu(cfg.root, cfg.subset, splits, cfg.on_bad)
    return read_class_folders(cfg.root, dict(cfg.class_map), splits, cfg.on_bad)


def _stat(path: Path) -> list[int]:
    """``[size in bytes, mtime in ns]`` of ``path``; a vanished file raises :class:`BadFileError`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadFileError(path, "file disappeared after the folders were read; read them again") from None
    return [st.st_size, st.st_mtime_ns]


def cache_key(records: Sequence[XrayRecord], img_size: int, channels: int) -> str:
    """20 hex digits of sha256 over sorted (path, label, size, mtime) of images and masks, size, channels."""
    entries = []
    for rec in records:
        masks = [p for p in (rec.lung_mask_path, rec.infection_mask_path) if p is not None]
        entry = [str(rec.image_path), rec.label, *_stat(rec.image_path)]
        for mask in masks:
            entry += [str(mask), *_stat(mask)]
        entries.append(entry)
    entries.sort(key=lambda e: e[0])
    blob = json.dumps(
        {"version": READER_VERSION, "img_size": img_size, "channels": channels, "files": entries},
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _check_mask(mask: Path | None, image_hw: tuple[int, int], image_path: Path) -> None:
    """Raise :class:`BadFileError` for ``image_path`` if ``mask`` cannot be opened or differs in size."""
    if mask is None:
        return
    try:
        with Image.open(mask) as m:
            width, height = m.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadFileError(image_path, f"its mask {mask} cannot be read ({exc}); replace it") from exc
    if (height, width) != image_hw:
        raise BadFileError(
            image_path,
            f"its mask {mask} is {width}x{height} px but the image is {image_hw[1]}x{image_hw[0]} px; "
            "masks must match their image",
        )


def decode_record(rec: XrayRecord, img_size: int, channels: int) -> np.ndarray:
    """Decode, validate and resize one record -> uint8 ``(channels, img_size, img_size)``.

    Raises :class:`BadFileError` for an undecodable image, a degenerate one (:func:`check_radiograph`: extreme
    aspect ratio, too small, blank) or a mask that is unreadable or of another size.
    """
    img = load_image(rec.image_path, channels)
    check_radiograph(img, img_size, rec.image_path)
    for mask in (rec.lung_mask_path, rec.infection_mask_path):
        _check_mask(mask, img.shape[:2], rec.image_path)
    out = preprocess(img, img_size)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def _decode_or_reason(rec: XrayRecord, img_size: int, channels: int) -> np.ndarray | str:
    """:func:`decode_record`, returning the reason as a string instead of raising (for the worker threads)."""
    try:
        return decode_record(rec, img_size, channels)
    except BadFileError as exc:
        return exc.reason


def _decode_all(
    records: Sequence[XrayRecord], img_size: int, channels: int, progress: bool, desc: str
) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Decode ``records`` -> (uint8 ``(K, C, S, S)`` of K good ones, their paths, bad ``[path, reason]``)."""
    images = torch.empty((len(records), channels, img_size, img_size), dtype=torch.uint8)
    good: list[int] = []
    bad: list[list[str]] = []
    decode = partial(_decode_or_reason, img_size=img_size, channels=channels)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        results = tqdm(
            pool.map(decode, records), total=len(records), desc=desc, disable=not progress, unit="img"
        )
        for i, result in enumerate(results):
            if isinstance(result, str):
                bad.append([str(records[i].image_path), result])
            else:
                images[i].numpy()[...] = result
                good.append(i)
    if len(good) < len(records):
        images = images[good].clone()
    return images, [str(records[i].image_path) for i in good], bad


def cached_images(
    records: Sequence[XrayRecord],
    img_size: int,
    channels: int,
    cache_dir: Path,
    name: str,
    on_bad: OnBad = "error",
    progress: bool = True,
) -> tuple[torch.Tensor, list[XrayRecord], tuple[tuple[Path, str], ...]]:
    """Preprocessed images of ``records``, decoded once and cached in ``cache_dir/{name}-{key}.pt``.

    Returns ``(images, kept, skipped)``: uint8 ``(len(kept), channels, img_size, img_size)`` in 0..255 in the
    order of ``records``, the records that decoded, and ``(path, reason)`` of those that did not. With
    ``on_bad="error"`` any bad file raises :class:`DataError` listing them all (after the cache, which
    remembers them, is written). Writes the cache file when it is missing or stale.
    """
    key = cache_key(records, img_size, channels)
    path = Path(cache_dir) / f"{name}-{img_size}px-{channels}ch-{key}.pt"
    payload = read_torch_cache(path, key=key, version=READER_VERSION)
    if payload is None:
        desc = f"decoding {name} ({len(records)} images -> {img_size}px)"
        images, files, bad = _decode_all(records, img_size, channels, progress, desc)
        payload = {"version": READER_VERSION, "key": key, "images": images, "files": files, "skipped": bad}
        write_torch_atomic(path, payload)
    skipped = tuple((Path(p), reason) for p, reason in payload["skipped"])
    if skipped:  # named by the folder that holds them all
        apply_on_bad(skipped, Path(os.path.commonpath([p.parent for p, _ in skipped])), on_bad)
    index = {p: i for i, p in enumerate(payload["files"])}
    kept = [rec for rec in records if str(rec.image_path) in index]
    order = [index[str(rec.image_path)] for rec in kept]
    images = payload["images"]
    if order != list(range(len(order))) or len(order) != images.shape[0]:
        images = images[order]
    return images, kept, skipped


class XrayDataset(Dataset):
    """Preprocessed chest X-rays in memory: ``dataset[i] -> (x, y)``.

    ``x``: float32 ``(C, H, W)`` in [-1, 1] (after ``transform`` on the uint8 image, if any); ``y``: int64
    scalar tensor, the label (0 COVID-19, 1 Non-COVID, 2 Normal). ``images`` is uint8 ``(N, C, H, W)``,
    ``labels`` int64 ``(N,)``, ``records`` the files in the same order and ``report`` what was read and
    skipped.
    """

    def __init__(
        self,
        images: torch.Tensor,
        records: Sequence[XrayRecord],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        report: ReadReport | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if images.shape[0] != len(records):
            raise ValueError(f"{images.shape[0]} images but {len(records)} records")
        self.images = images  # (N, C, H, W) uint8 in 0..255
        self.records = list(records)
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.int64)  # (N,)
        self.transform = transform
        self.report = report

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_u8 = self.images[index]  # (C, H, W) uint8
        if self.transform is not None:
            x_u8 = self.transform(x_u8)
        return normalize_u8(x_u8), self.labels[index]

    def class_counts(self) -> torch.Tensor:
        """Images per class, int64 ``(len(CLASS_NAMES),)``."""
        return torch.bincount(self.labels, minlength=len(CLASS_NAMES))


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The int64 ``(N,)`` labels of ``dataset`` (its ``labels`` attribute; no image is read).

    Raises:
        TypeError: ``dataset`` has no ``labels`` attribute.
    """
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} has no `labels` attribute (int64 (N,) class of each item)")
    return torch.as_tensor(labels, dtype=torch.int64)


def build_dataset(
    cfg: DataConfig,
    split: str,
    phantoms: PhantomConfig | None = None,
    train: bool = True,
    progress: bool = True,
) -> XrayDataset:
    """Read ``split`` of the set in ``cfg``, decode it through the cache, wrap it in an :class:`XrayDataset`.

    Images are ``cfg.channels x cfg.img_size x cfg.img_size``; no augmentation unless ``cfg.faithful_augment``
    and ``train`` (then :func:`faithful_augment`). ``dataset.report`` merges the reader's skipped inputs with
    the files that failed to decode. Writes the cache file under ``cfg.cache_dir`` (see the module docstring).
    """
    (split,) = check_splits((split,))
    records, read_report = read_records(cfg, (split,), phantoms, progress)
    name = f"{cfg.layout}-{split}"
    images, kept, bad = cached_images(
        records, cfg.img_size, cfg.channels, cfg.cache_dir, name, cfg.on_bad, progress
    )
    skipped = read_report.skipped + bad
    report = make_report(read_report.root, kept, (split,), skipped, read_report.ignored)
    if not kept:
        raise DataError(
            f"no images left in split {split!r} of {read_report.root} after skipping {len(skipped)} bad "
            "input(s); see dataset.report / the list above, and fix the data"
        )
    transform = faithful_augment(cfg.img_size) if cfg.faithful_augment and train else None
    return XrayDataset(images, kept, transform, report)
