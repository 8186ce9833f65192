"""Fréchet Radiomic Distance (FRD v1; Konz, Osuala et al. 2024, arXiv 2412.01496) through ``frd-score``.

FRD compares two image sets in the space of ~464 PyRadiomics features (first-order, GLCM, GLRLM, GLSZM and
NGTDM texture of the original image, four Laplacian-of-Gaussian images and eight wavelet bands): no pretrained
network, so it works offline, and each feature has a meaning a radiologist can read. The radiomics are
extracted by ``frd-score``'s own functions (:func:`frd_score.frd.get_feature_extractor` with its v1 2-D
configuration and :func:`frd_score.frd.compute_features`, which runs PyRadiomics on image files); nothing of
the radiomics is re-implemented here.

What this module adds is the split that a cache needs: :func:`radiomic_features` extracts one set's raw
features, and :func:`frd_from_features` turns two raw feature arrays into the FRD exactly as
``frd_score.compute_frd(..., frd_version="v1")`` does (v1 defaults: rows with NaN dropped, float32, z-scores
against the REFERENCE set (``norm_ref="d1"``), columns with NaN/Inf in either set dropped, Fréchet distance,
``log(d_F^2)``), with frd-score's ``z_score_normalize`` and ``calculate_frechet_distance``. A test checks the
equality with ``compute_frd`` on the same files. So the real side's features are extracted once per data set
and cached, like the FID statistics, while every generated set is extracted afresh.

Images reach PyRadiomics as 8-bit grayscale PNG files: generated PNGs as they are (converted to grayscale in a
temporary folder when they are RGB), real images written from the evaluation's uint8 tensors (lossless), so
both sides are compared at the evaluation size. Lower FRD is better; it is a log, so differences are ratios of
squared Fréchet distances (a difference of 0.69 is a factor 2).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medsg_lib.data.covidqu import sibling_lung_mask
from medsg_lib.data.transforms import load_mask
from medsg_lib.devices import cpu_cores
from medsg_lib.files import ALL_CLASSES, write_atomic
from medsg_lib.metrics.records import library_versions
from medsg_lib.metrics.sources import Images, RealImages

FRD_VERSION = "v1"
FRD_PROTOCOL = "frd-v1 (frd-score 1.0.1): z-scores against the real set, log(d_F^2)"
FRD_MASKED_SUFFIX = ", within lung masks"  # MetricsConfig.frd_masks: a protocol of its own, beside Table 1's
RADIOMICS_PACKAGES: tuple[str, ...] = ("frd-score", "pyradiomics-bhklab", "SimpleITK", "PyWavelets")


def radiomics_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a radiomic feature ("not installed" when absent)."""
    return library_versions(RADIOMICS_PACKAGES)


def feature_net_label() -> str:
    """What extracted the features, with versions, for the records' ``feature_net``."""
    v = radiomics_versions()
    return (
        f"PyRadiomics (pyradiomics-bhklab {v['pyradiomics-bhklab']}) via frd-score {v['frd-score']}, "
        "FRD v1 2-D configuration: Original + LoG (sigma 2-5) + Wavelet"
    )


def _workers(num_workers: int) -> int:
    return num_workers if num_workers > 0 else cpu_cores()


@contextmanager
def _one_itk_thread() -> Iterator[None]:
    """SimpleITK's filters on one thread inside the ``with`` (the worker processes are forked, so they inherit
    it): frd-score already runs one process per core, and each process's filters spreading over every core as
    well oversubscribes them. The same features bit for bit (tested), 16% faster on two cores."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def radiomic_features(
    files: Sequence[Path], masks: Sequence[Path] | None = None, num_workers: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Raw FRD-v1 radiomic features of 2-D grayscale image files: ``(features (n, F) float64, names)``.

    ``masks``: one binary mask file per image (0/255 or 0/1), or None for the whole image (frd-score's
    default: everything except one corner pixel). ``num_workers``: processes (0: every core). An image whose
    mask has at most one pixel is skipped by frd-score, so ``n`` can be smaller than ``len(files)``.
    """
    from frd_score import frd as frd_lib

    if not files:
        raise ValueError("radiomic_features got no image files")
    frd_lib._ensure_radiomics()
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    frd_lib.setVerbosity(60)
    extractor = frd_lib.get_feature_extractor(frd_version=FRD_VERSION, image_dim=2)
    with redirect_stdout(StringIO()), _one_itk_thread():
        feats, dicts, _ = frd_lib.compute_features(
            [str(f) for f in files],
            extractor,
            masks=None if masks is None else [str(m) for m in masks],
            num_workers=_workers(num_workers),
            frd_version=FRD_VERSION,
        )
    return np.asarray(feats, dtype=np.float64), list(dicts[0].keys())


def frd_from_features(reference: np.ndarray, other: np.ndarray) -> tuple[float, dict[str, int]]:
    """FRD v1 of ``other`` against ``reference`` (raw features (n, F) of :func:`radiomic_features`), as
    ``frd_score.compute_frd(..., frd_version="v1")`` computes it, and what was kept:
    ``{"n_real", "n_fake", "num_features"}`` after dropping NaN rows and NaN/Inf columns."""
    from frd_score import frd as frd_lib

    if reference.ndim != 2 or other.ndim != 2 or reference.shape[1] != other.shape[1]:
        raise ValueError(
            f"feature arrays must be (n, F) with the same F, got {reference.shape} and {other.shape}"
        )
    sets = [f[~np.isnan(f).any(axis=1)].astype(np.float32) for f in (reference, other)]
    if min(len(s) for s in sets) < 2:
        raise ValueError(
            f"FRD needs at least 2 images per set without NaN features, got {[len(s) for s in sets]}"
        )
    normalised = [
        frd_lib.z_score_normalize(
            s, 0.0, 1.0, base_distribution=sets[0], replace_nan=False, handle_std_zero=False
        )
        for s in sets
    ]
    keep = ~np.zeros(normalised[0].shape[1], dtype=bool)
    for n in normalised:
        keep &= ~(np.isnan(n).any(axis=0) | np.isinf(n).any(axis=0))
    normalised = [n[:, keep] for n in normalised]
    mu = [n.mean(axis=0) for n in normalised]
    sigma = [np.cov(n, rowvar=False) for n in normalised]
    d2 = frd_lib.calculate_frechet_distance(mu[0], sigma[0], mu[1], sigma[1])
    value = float(np.log(d2)) if d2 > 0 else float("-inf")
    return value, {"n_real": len(sets[0]), "n_fake": len(sets[1]), "num_features": int(keep.sum())}


# ----------------------------------------------------------------------------------------------------------
# Image sets -> files -> features (the real side cached)


def lung_mask_files(images: Images) -> tuple[Path, ...] | None:
    """The lung mask of each image of a set, or None: real images carry theirs (COVID-QU-Ex, phantoms); a
    generated image borrows its SOURCE image's mask (an image-to-image model keeps the anatomy); noise-to-image
    samples have none."""
    if isinstance(images, RealImages):
        return images.lung_masks
    if images.source_images is None:
        return None
    masks = [sibling_lung_mask(Path(s)) for s in images.source_images]
    return None if any(m is None for m in masks) else tuple(masks)


@contextmanager
def image_files(
    images: Images, with_masks: bool = False, size: int | None = None
) -> Iterator[tuple[list[Path], list[Path] | None]]:
    """(grayscale PNG files, lung mask files or None) of a set, valid inside the ``with``: a generated set's
    own files when they are grayscale and of ``size`` px (None: any), else copies in a temporary folder (real
    images from their uint8 tensors; RGB converted with PIL's ITU-R 601-2 luma; other sizes resized with
    Lanczos, as the data pipeline does, because radiomic texture depends on scale). Masks (``with_masks``;
    :func:`lung_mask_files` must give them) are written at the images' size, 0/255, nearest-neighbour."""
    masks = lung_mask_files(images) if with_masks else None
    if with_masks and masks is None:
        raise ValueError("this image set has no lung masks (see lung_mask_files)")
    with tempfile.TemporaryDirectory(prefix="medsg-frd-") as tmp:
        tmp_dir = Path(tmp)
        if isinstance(images, RealImages):
            files = []
            for k, idx in enumerate(images.indices.tolist()):
                x = images.images_u8[idx].numpy()  # (C, H, W) uint8
                gray = (
                    x[0]
                    if x.shape[0] == 1
                    else np.asarray(Image.fromarray(x.transpose(1, 2, 0)).convert("L"))
                )
                files.append(tmp_dir / f"{k:06d}.png")
                Image.fromarray(gray).save(files[-1])
        else:
            first = Image.open(images.files[0])
            if first.mode == "L" and size in (None, first.size[0]):
                files = list(images.files)
            else:
                files = []
                for k, f in enumerate(images.files):
                    img = Image.open(f).convert("L")
                    if size is not None and img.size != (size, size):
                        img = img.resize((size, size), Image.Resampling.LANCZOS)
                    files.append(tmp_dir / f"{k:06d}.png")
                    img.save(files[-1])
        mask_files = None
        if masks is not None:
            size = Image.open(files[0]).size[0]
            mask_files = []
            for k, m in enumerate(masks):
                mask_files.append(tmp_dir / f"mask-{k:06d}.png")
                Image.fromarray(load_mask(m, size).astype(np.uint8) * 255).save(mask_files[-1])
        yield files, mask_files


def radiomics_cache_path(real: RealImages, cache_dir: Path, with_masks: bool = False) -> tuple[Path, str]:
    """``cache_dir/radiomics-<hash>.npz`` and the key (JSON) of a real set's raw features: the data set's
    identity, split, class, size, channels, masks, FRD version and the radiomics packages' versions."""
    key = {
        "dataset": real.identity,
        "split": real.split,
        "class": real.target_class,
        "img_size": real.img_size,
        "channels": real.channels,
        "masks": "lung" if with_masks else "none",
        "frd_version": FRD_VERSION,
        "versions": radiomics_versions(),
    }
    if real.subset:
        key["subset"] = real.subset
    key_json = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(key_json.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"radiomics-{digest}.npz", key_json


def whole_split(real: RealImages) -> RealImages:
    """Every image of ``real``'s split (class "all"), as :func:`medsg_lib.metrics.sources.real_images` gives
    it."""
    n = real.images_u8.shape[0]
    return RealImages(
        real.images_u8, torch.arange(n), real.split, ALL_CLASSES, real.identity, real.batch_size
    )


def set_features(
    images: Images,
    cache_dir: Path | None,
    num_workers: int = 0,
    with_masks: bool = False,
    size: int | None = None,
) -> np.ndarray:
    """Raw radiomic features (n, F) of either kind of set (inside its lung masks when ``with_masks``); a real
    set's from ``cache_dir`` when there, else extracted and saved there (``None``: no cache). A cache file of
    another key raises, naming it.

    A real class set without masks is cut from the features of its whole split (:func:`whole_split`, cached
    under class "all"), so each real image is extracted once per split, however many of its class and "all"
    sets are compared (radiomic features are per image: the rows are the same values)."""
    path = key_json = None
    if isinstance(images, RealImages) and cache_dir is not None and not with_masks:
        if images.target_class != ALL_CLASSES:
            split_feats = set_features(whole_split(images), cache_dir, num_workers)
            if len(split_feats) == images.images_u8.shape[0]:  # else frd-score skipped an image
                return split_feats[images.indices.numpy()]
    if isinstance(images, RealImages) and cache_dir is not None:
        path, key_json = radiomics_cache_path(images, cache_dir, with_masks)
        if path.is_file():
            with np.load(path) as data:
                if str(data["key"]) != key_json:
                    raise ValueError(f"radiomics cache {path} holds another key; delete it")
                return data["feats"]
    with image_files(images, with_masks, size) as (files, masks):
        feats, _ = radiomic_features(files, masks, num_workers=num_workers)
    if path is not None:
        write_atomic(path, lambda f: np.savez(f, feats=feats, key=key_json))
    return feats


def frd_fields(
    real: RealImages, other: Images, cache_dir: Path | None, num_workers: int = 0, with_masks: bool = False
) -> dict[str, Any]:
    """The fields of one ``frd`` record: value (None with a status when ``with_masks`` and a set has no lung
    masks), protocol, feature net, n_real, n_fake, num_features, masks, radiomics versions."""
    fields: dict[str, Any] = {
        "metric": "frd",
        "protocol": FRD_PROTOCOL + (FRD_MASKED_SUFFIX if with_masks else ""),
        "feature_net": feature_net_label(),
        "weights": "none (hand-crafted radiomic features)",
        "masks": "lung" if with_masks else "none",
        "radiomics_versions": radiomics_versions(),
    }
    if with_masks and (lung_mask_files(real) is None or lung_mask_files(other) is None):
        status = missing_masks_status(real, other)
        return {**fields, "value": None, "n_real": len(real), "n_fake": len(other), "status": status}
    value, kept = frd_from_features(
        set_features(real, cache_dir, num_workers, with_masks),
        set_features(other, None, num_workers, with_masks, size=real.img_size),  # compared at one size
    )
    return {**fields, "value": value, "img_size": real.img_size, **kept}


def missing_masks_status(real: RealImages, other: Images) -> str:
    """Why FRD inside lung masks cannot be computed for this pair of sets."""
    if lung_mask_files(real) is None:
        return "no lung masks for the real images (the data set has none, e.g. a class-folder set)"
    if isinstance(other, RealImages):
        return "no lung masks for the held-out real images"
    if other.source_images is None:
        return "no lung masks for the generated images: noise-to-image samples have no source image"
    missing = next(s for s in other.source_images if sibling_lung_mask(Path(s)) is None)
    return (
        f"no lung mask beside the source image {missing} (expected in a 'lung masks' folder next to 'images')"
    )
