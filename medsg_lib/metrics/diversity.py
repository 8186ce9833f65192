"""Diversity of an image set, recorded like every metric (:mod:`medsg_lib.metrics.registry`): LPIPS and
MS-SSIM between outputs of one source image (image-to-image sets whose manifest names the sources) or between
random pairs of a seeded subset (noise-to-image sets, real images)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from medsg_lib.data.transforms import normalize_u8
from medsg_lib.manifest import lpips_groups
from medsg_lib.metrics import lpips_div, msssim
from medsg_lib.metrics.options import (
    LPIPS_FEATURE_NET,
    LPIPS_MAX_IMAGES,
    LPIPS_NUM_PAIRS,
    EvalOptions,
    missing_status,
    missing_weights_label,
)
from medsg_lib.metrics.sources import GeneratedSet, Images, RealImages, load_images
from medsg_lib.metrics.weights import MissingWeightsError


def _group_tensors(groups: Iterator[list[Path]], counter: list[int]) -> Iterator[Tensor]:
    for paths in groups:
        counter[0] += len(paths)
        yield load_images(paths)


def lpips_protocol(images: GeneratedSet) -> str:
    """Groups of outputs of one source image when the manifest gives every file a source image, else random
    pairs of samples."""
    return lpips_div.LPIPS_GROUP_PROTOCOL if images.grouped_by_source else lpips_div.LPIPS_PAIRS_PROTOCOL


def _subset(n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of at most :data:`LPIPS_MAX_IMAGES` of ``n`` items: the images the
    diversity metrics draw random pairs among (generated files and real images alike)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, min(n, LPIPS_MAX_IMAGES), replace=False))


def _chosen_files(files: tuple[Path, ...], seed: int) -> list[Path]:
    """A seeded subset of at most :data:`LPIPS_MAX_IMAGES` files, in file order (random pairs are drawn there)."""
    return [files[i] for i in _subset(len(files), seed)]


def _lpips_value(model: lpips_div.LpipsModel, images: GeneratedSet, seed: int) -> dict[str, Any]:
    """LPIPS diversity within source groups (from the manifest) or over random pairs of a seeded subset of at
    most :data:`LPIPS_MAX_IMAGES` images."""
    if images.grouped_by_source:
        counter = [0]
        groups = lpips_groups(images.manifest_dir, images.target_class)
        value, num_groups = lpips_div.lpips_diversity(model, _group_tensors(groups, counter))
        return {
            "protocol": lpips_div.LPIPS_GROUP_PROTOCOL,
            "value": value,
            "num_groups": num_groups,
            "n_fake": counter[0],
        }
    chosen = _chosen_files(images.files, seed)
    value, num_pairs = lpips_div.lpips_pairs(model, load_images(chosen), LPIPS_NUM_PAIRS, seed, batch_size=50)
    return {
        "protocol": lpips_div.LPIPS_PAIRS_PROTOCOL,
        "value": value,
        "num_pairs": num_pairs,
        "n_fake": len(chosen),
    }


def lpips_records(real: RealImages, other: Images, options: EvalOptions, seed: int) -> list[dict[str, Any]]:
    """One ``lpips`` diversity record of the generated set ``other`` (``real`` is not used)."""
    if not isinstance(other, GeneratedSet):
        raise ValueError("metric 'lpips' measures the diversity of a generated set; got real images")
    base = {"metric": "lpips", "n_real": 0}
    try:
        model = lpips_div.build_lpips(
            options.device,
            allow_random_weights=options.metrics_cfg.allow_random_weights,
            download=options.download,
            seed=seed,
        )
    except MissingWeightsError:
        return [
            dict(
                **base,
                protocol=lpips_protocol(other),
                feature_net=LPIPS_FEATURE_NET,
                weights=missing_weights_label("alexnet"),
                n_fake=len(other),
                value=None,
                status=missing_status("alexnet"),
            )
        ]
    fields = _lpips_value(model, other, seed)
    return [dict(**base, feature_net=model.feature_net, weights=model.weights, **fields)]


# ----------------------------------------------------------------------------------------------------------
# MS-SSIM diversity


def _real_tensor(images: RealImages, seed: int) -> Tensor:
    """A seeded subset of at most :data:`LPIPS_MAX_IMAGES` real images as one (K, C, H, W) tensor in [-1, 1]
    (only the chosen images are converted)."""
    keep = torch.from_numpy(_subset(len(images), seed))
    return normalize_u8(images.images_u8[images.indices[keep]])


def msssim_records(real: RealImages, other: Images, options: EvalOptions, seed: int) -> list[dict[str, Any]]:
    """One ``msssim`` record: MS-SSIM between outputs of ``other`` on LPIPS's pairs (within source groups for
    an image-to-image set, else random pairs); for real images ``other`` (the floor: how alike real images of
    a class are), random pairs. Lower = more diverse. The number of scales follows ``other``'s image size
    (recorded as ``img_size``, ``levels``, ``scale_weights``); ``real`` is only the comparison's reference."""
    size = other.img_size if isinstance(other, RealImages) else Image.open(other.files[0]).size[0]
    scales = msssim.msssim_protocol_fields(size)
    base = {
        "metric": "msssim",
        "feature_net": "none (pixels)",
        "weights": "none",
        "n_real": 0,
        "img_size": size,
        "levels": scales["levels"],
        "scale_weights": scales["weights"],
        "win_size": scales["win_size"],
    }
    if isinstance(other, GeneratedSet) and other.grouped_by_source:
        paths = list(lpips_groups(other.manifest_dir, other.target_class))
        fields = {"protocol": msssim.MSSSIM_GROUP_PROTOCOL, "num_groups": len(paths)}
        if not paths:
            status = "no source image has two outputs (generate with num_latents_per_source >= 2)"
            return [dict(**base, **fields, n_fake=len(other), value=None, status=status)]
        counter = [0]
        value, _ = msssim.msssim_diversity(_group_tensors(iter(paths), counter))
        fields["n_fake"] = counter[0]
    else:
        if isinstance(other, GeneratedSet):
            x = load_images(_chosen_files(other.files, seed))
        else:
            x = _real_tensor(other, seed)
        value, num_pairs = msssim.msssim_pairs(x, LPIPS_NUM_PAIRS, seed)
        fields = {"protocol": msssim.MSSSIM_PAIRS_PROTOCOL, "num_pairs": num_pairs, "n_fake": len(x)}
    return [dict(**base, **fields, value=value)]
