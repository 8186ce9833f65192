"""Deterministic synthetic chest radiographs ("phantoms"): the embedded offline default data set.

Every phantom is drawn analytically in normalised patient coordinates (``x`` from image left to image
right, ``y`` from top to bottom, both in ``[-1, 1]``), so the image, the lung mask and the infection mask come
from the same geometry and match pixel for pixel (shapes: :mod:`medsg_lib.data.phantom_anatomy`; composed by
:func:`medsg_lib.data.phantom_render.render_phantom`). The view is postero-anterior: the patient's right lung is on
the image left; the heart, the aortic knob and the gastric bubble are on the image right.

Anatomy: body outline with neck and shoulders, two lung fields of random shape, mediastinum, trachea,
spine with vertebral bodies, posterior and anterior ribs, clavicles, heart, hila with vessel markings,
diaphragm domes (the right one higher) and a gastric bubble. Acquisition: slight rotation, scale and shift,
exposure, contrast and gamma, blur and film-like noise. Classes (``CLASS_NAMES``):

- 0 COVID-19: bilateral, peripheral, lower-zone patchy ground-glass opacities (hazy, semi-transparent);
- 1 Non-COVID: mostly unilateral dense lobar consolidation with air bronchograms, sometimes a pleural effusion
  (a dense meniscus blunting the costophrenic angle);
- 2 Normal: clear lungs.

:func:`write_phantoms` writes them in the COVID-QU-Ex folder layout (see ``docs/paper.md``) with a manifest,
``phantoms.json``, that makes a second call with the same config a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from medsg_lib.config import CLASS_NAMES, CLASS_SLUGS, PhantomConfig, to_jsonable
from medsg_lib.data.memory import LabelledImages
from medsg_lib.data.phantom_render import render_phantom
from medsg_lib.data.transforms import normalize_u8, preprocess
from medsg_lib.devices import cpu_cores
from medsg_lib.files import (
    read_json,
    read_torch_cache,
    write_bytes_atomic,
    write_json_atomic,
    write_torch_atomic,
)

PHANTOM_VERSION = "1"  # bump whenever the rendering changes: the manifest then no longer matches

PHANTOMS_MANIFEST = "phantoms.json"
SPLITS: tuple[str, ...] = ("Train", "Val", "Test")
LUNG_SUBSET = Path("Lung Segmentation Data", "Lung Segmentation Data")
INFECTION_SUBSET = Path("Infection Segmentation Data", "Infection Segmentation Data")
IMAGES_DIR = "images"
LUNG_MASKS_DIR = "lung masks"
INFECTION_MASKS_DIR = "infection masks"


@dataclass(frozen=True)
class PhantomEntry:
    """Where one phantom of a config lives and the numbers that regenerate it alone."""

    split: str  # one of SPLITS
    label: int  # index into CLASS_NAMES
    index: int  # position within (split, label); part of the seed
    name: str  # file name, unique within a class across splits


def image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """The generator of one phantom, from (config seed, split, label, index within split and label)."""
    if split not in SPLITS:
        raise ValueError(f"image_rng: split={split!r} must be one of {SPLITS}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), label, index]))


def phantom_entries(cfg: PhantomConfig) -> Iterator[PhantomEntry]:
    """Every phantom of ``cfg`` in writing order; names number each class through Train, Val then Test."""
    counts = {"Train": cfg.num_train, "Val": cfg.num_val, "Test": cfg.num_test}
    for label, slug in enumerate(CLASS_SLUGS):
        number = 0
        for split in SPLITS:
            for index in range(counts[split]):
                yield PhantomEntry(split, label, index, f"phantom_{slug}_{number:06d}.png")
                number += 1


def render_split(
    cfg: PhantomConfig, split: str, lesions: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The phantoms of ``cfg``'s ``split`` in memory, without writing files: images ``(N, size, size)`` uint8
    and labels ``(N,)`` int64, in writing order. ``lesions=False`` gives their lesion-free twins (same
    patients and acquisitions, clear lungs; :func:`~medsg_lib.data.phantom_render.render_phantom`)."""
    entries = [e for e in phantom_entries(cfg) if e.split == split]
    if not entries:
        raise ValueError(f"render_split: split={split!r} has no phantoms; choose one of {SPLITS}")
    images = [
        render_phantom(image_rng(cfg.seed, e.split, e.label, e.index), e.label, cfg.img_size, lesions).image
        for e in tqdm(entries, desc=f"phantoms {split}", disable=not progress, unit="img")
    ]
    return np.stack(images), np.array([e.label for e in entries], dtype=np.int64)


# below this many phantoms, starting worker processes costs more than it saves
PARALLEL_MIN_PHANTOMS = 256


def _render_train_image(draw: tuple[int, int, int, int, int]) -> np.ndarray:
    """Training phantom ``k`` of class ``label`` (``draw = (seed, label, k, render size, img_size)``), resized
    as a file of the split is read."""
    seed, label, k, size, img_size = draw
    return preprocess(render_phantom(image_rng(seed, "Train", label, k), label, size).image, img_size)


def render_in_processes(
    draws: Sequence[tuple[int, int, int, int, int]], desc: str, progress: bool = True, workers: int = 0
) -> list[np.ndarray]:
    """:func:`_render_train_image` of every draw, in order, spread over ``workers`` processes (0: one per core,
    :func:`~medsg_lib.devices.cpu_cores`). Each phantom comes from its own seed (numpy, SciPy and Pillow on one
    thread), so the images are the same bits however many processes render them (tested). Fewer than
    :data:`PARALLEL_MIN_PHANTOMS`, or one worker: in this process."""
    workers = workers if workers > 0 else cpu_cores()

    def shown(images: Iterable[np.ndarray]) -> list[np.ndarray]:
        return list(tqdm(images, total=len(draws), desc=desc, disable=not progress, unit="img"))

    if workers == 1 or len(draws) < PARALLEL_MIN_PHANTOMS:
        return shown(map(_render_train_image, draws))
    # fork on Linux (the workers need nothing from torch); spawn elsewhere (macOS's fork is unsafe)
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        return shown(pool.imap(_render_train_image, draws, chunksize=32))


def rendered_training_set(
    cfg: PhantomConfig, per_class: int, img_size: int, cache_dir: Path, progress: bool = True
) -> LabelledImages:
    """``per_class`` training phantoms of each class, rendered in memory: as many as a classifier needs, beyond
    the ``cfg.num_train`` the written Train split holds.

    Phantom ``k`` of a class is drawn from the Train split's seed stream (:func:`image_rng` with ``"Train"``),
    so the first ``cfg.num_train`` of each class are the written Train split's images and the rest are new
    patients; no Val or Test phantom can appear (their streams differ by split). Each is rendered at
    ``cfg.img_size`` and resized to ``img_size`` as a file of the split is read (:func:`preprocess`), so the
    images match the written ones bit for bit. Order: class by class, ``k`` ascending.

    Rendering costs 5-15 ms per phantom at 128 px (1-3 minutes for 12,000 on one core, by CPU), so the phantoms
    are rendered in one process per core (:func:`render_in_processes`; the same bits as in one) and the uint8 images are cached in
    ``cache_dir/phantoms-train-<per_class>pc-<img_size>px-<key>.pt`` (key: the config without its root, the
    rendering version, ``per_class``) and reused by every classifier seed.
    """
    if per_class < 1:
        raise ValueError(f"rendered_training_set: per_class={per_class!r} must be >= 1")
    key = hashlib.sha256(
        json.dumps([_manifest(cfg), per_class, img_size], sort_keys=True).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"phantoms-train-{per_class}pc-{img_size}px-{key}.pt"
    payload = read_torch_cache(path, key=key)
    if payload is None:
        draws = [
            (cfg.seed, label, k, cfg.img_size, img_size)
            for label in range(len(CLASS_NAMES))
            for k in range(per_class)
        ]
        images = np.stack(render_in_processes(draws, f"rendering {len(draws)} training phantoms", progress))
        labels = [label for _, label, _, _, _ in draws]
        payload = {"key": key, "images": torch.from_numpy(images), "labels": torch.tensor(labels)}
        write_torch_atomic(path, payload)
    return LabelledImages(normalize_u8(payload["images"][:, None]), payload["labels"])


def _png_bytes(array: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a (H, W) uint8 array, no metadata, fixed options: equal arrays, equal bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _manifest(cfg: PhantomConfig) -> dict[str, object]:
    config = to_jsonable(cfg)
    config.pop("root")  # the manifest lives in root: a moved folder stays valid
    return {"phantom_version": PHANTOM_VERSION, "config": config}


def _manifest_matches(path: Path, expected: dict[str, object]) -> bool:
    """True when ``path`` exists and holds exactly ``expected`` (unreadable or corrupt: False, rewrite)."""
    try:
        return read_json(path) == expected
    except (OSError, ValueError):
        return False


def _remove_stale(root: Path, keep: set[Path]) -> None:
    """Delete ``phantom_*.png`` files of an earlier config (only those: never anything a user put there)."""
    for subset in (LUNG_SUBSET, INFECTION_SUBSET):
        for path in (root / subset).glob("*/*/*/phantom_*.png"):
            if path not in keep:
                path.unlink()


def write_phantoms(cfg: PhantomConfig, progress: bool = True) -> Path:
    """Write the phantoms of ``cfg`` in the COVID-QU-Ex layout under ``cfg.root`` and return ``cfg.root``.

    Files (8-bit grayscale PNGs of ``cfg.img_size``; masks are 0/255 with the image's file name)::

        Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/{class}/{images,lung masks}/NAME.png
        Infection Segmentation Data/Infection Segmentation Data/{Train,Val,Test}/{class}/
            {images,lung masks,infection masks}/NAME.png
        phantoms.json   (config without root + PHANTOM_VERSION, written last and atomically)

    Returns at once when ``phantoms.json`` already matches; otherwise rewrites everything and deletes phantoms
    of an earlier config. The same config gives byte-identical files.
    """
    root = Path(cfg.root)
    manifest_path = root / PHANTOMS_MANIFEST
    expected = _manifest(cfg)
    if _manifest_matches(manifest_path, expected):
        return root
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # a crash from here on means a rewrite next time
    entries = list(phantom_entries(cfg))
    written: set[Path] = set()
    for entry in tqdm(entries, desc=f"phantoms -> {root}", disable=not progress, unit="img"):
        rng = image_rng(cfg.seed, entry.split, entry.label, entry.index)
        phantom = render_phantom(rng, entry.label, cfg.img_size)
        files = {
            IMAGES_DIR: _png_bytes(phantom.image),
            LUNG_MASKS_DIR: _png_bytes(phantom.lung_mask.astype(np.uint8) * 255),
            INFECTION_MASKS_DIR: _png_bytes(phantom.infection_mask.astype(np.uint8) * 255),
        }
        class_name = CLASS_NAMES[entry.label]
        for subset, kinds in (
            (LUNG_SUBSET, (IMAGES_DIR, LUNG_MASKS_DIR)),
            (INFECTION_SUBSET, (IMAGES_DIR, LUNG_MASKS_DIR, INFECTION_MASKS_DIR)),
        ):
            for kind in kinds:
                path = root / subset / entry.split / class_name / kind / entry.name
                write_bytes_atomic(path, files[kind])
                written.add(path)
    _remove_stale(root, written)
    write_json_atomic(manifest_path, expected, sort_keys=True)
    return root
