"""MS-SSIM diversity (Wang et al. 2003) with pytorch-msssim 1.0.0, beside LPIPS and with its pair protocols.

Lower MS-SSIM between outputs means more diverse outputs (1 = identical images). The pairs are those of
:mod:`medsg_lib.metrics.lpips_div`: :func:`msssim_diversity` averages over all unordered pairs within each
group, then over groups; :func:`msssim_pairs` over seeded random pairs of distinct samples.

Images in [-1, 1] are mapped to [0, 1] (clamped) and compared with ``data_range=1``, an 11-px Gaussian window
(sigma 1.5), K = (0.01, 0.03), per channel then averaged over channels. ``pytorch_msssim.ms_ssim`` always runs
``len(weights)`` scales but asserts ``min(H, W) > (win_size - 1) * 2**4`` (> 160 px) whatever the weights, so
it rejects the project's 64-px images even with 3 weights. We therefore run its loop here over the library's
own single-scale ``_ssim`` (same ops, same order: equal to ``ms_ssim`` wherever ``ms_ssim`` runs, see the
tests), with the number of scales chosen by :func:`msssim_levels` from the image size: 3 at 64 px, 5 from
161 px. Weights are the standard five at 5 levels (summing to 1.0001, as published and as ``ms_ssim``'s
default), truncated and renormalised to sum 1 below that. Values are comparable only at equal levels.

Constant images: with X == Y every variance and covariance term is bit-identical, so each contrast term is
C2 / C2 = 1 and MS-SSIM is exactly 1.0, constant images included. The library clamps negative contrast terms
(anti-correlated structure) to 0 with ``relu``, so values lie in [0, 1] and are never negative or NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

from medsg_lib.metrics.lpips_div import group_mean, random_pairs_mean

STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
MSSSIM_GROUP_PROTOCOL = (
    "ms-ssim pytorch-msssim 1.0.0, gaussian window 11 sigma 1.5, levels by image size: "
    "mean over all unordered pairs within each group, then over groups"
)
MSSSIM_PAIRS_PROTOCOL = (
    "ms-ssim pytorch-msssim 1.0.0, gaussian window 11 sigma 1.5, levels by image size: "
    "mean over random pairs of distinct samples"
)


def msssim_levels(size: int, win_size: int = 11, max_levels: int = 5) -> int:
    """Most scales L <= max_levels with size > (win_size - 1) * 2**(L - 1): 64 px -> 3, 256 px -> 5.

    At that bound the coarsest scale (halved L - 1 times, rounding up) is still >= win_size pixels.
    """
    if size <= win_size - 1:
        raise ValueError(
            f"MS-SSIM needs images larger than win_size - 1 = {win_size - 1} px, got size {size}"
        )
    levels = 1
    while levels < max_levels and size > (win_size - 1) * 2**levels:
        levels += 1
    return levels


def msssim_weights(levels: int) -> tuple[float, ...]:
    """Scale weights: the standard five at levels = 5, else the first ``levels`` renormalised to sum 1."""
    if not 1 <= levels <= len(STANDARD_WEIGHTS):
        raise ValueError(f"levels must be 1 to {len(STANDARD_WEIGHTS)}, got {levels}")
    if levels == len(STANDARD_WEIGHTS):
        return STANDARD_WEIGHTS
    total = sum(STANDARD_WEIGHTS[:levels])
    return tuple(w / total for w in STANDARD_WEIGHTS[:levels])


def msssim_protocol_fields(size: int, win_size: int = 11) -> dict[str, Any]:
    """Record fields for images of ``size`` px: {"levels": L, "weights": [...], "win_size": win_size}."""
    levels = msssim_levels(size, win_size)
    return {"levels": levels, "weights": list(msssim_weights(levels)), "win_size": win_size}


def _ms_ssim(x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...], win_size: int) -> torch.Tensor:
    """``pytorch_msssim.ms_ssim(x, y, data_range=1, size_average=False, weights=weights)`` without its
    5-scale size assert; x, y (P, C, H, W) in [0, 1] -> (P,)."""
    win = _fspecial_gauss_1d(win_size, 1.5).repeat([x.shape[1], 1, 1, 1])
    mcs = []
    for level in range(len(weights)):
        ssim_per_channel, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False, K=(0.01, 0.03))
        if level < len(weights) - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    stacked = torch.stack([*mcs, torch.relu(ssim_per_channel)], dim=0)  # (level, P, C)
    return torch.prod(stacked ** x.new_tensor(weights).view(-1, 1, 1), dim=0).mean(1)


@torch.no_grad()
def msssim_distance(x0: torch.Tensor, x1: torch.Tensor, win_size: int = 11) -> torch.Tensor:
    """MS-SSIM (P,) in [0, 1] between image pairs x0, x1 (P, C, H, W) in [-1, 1], C = 1 or 3.

    A similarity, not a distance: 1 for identical images, lower = more different. Scales and weights follow
    from min(H, W) (:func:`msssim_protocol_fields`); computed in float32 on the inputs' device.
    """
    if x0.ndim != 4 or x0.shape[1] not in (1, 3) or x0.shape != x1.shape:
        raise ValueError(
            f"images must be two (P, C, H, W) tensors of one shape with C = 1 or 3, "
            f"got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    if win_size % 2 != 1:
        raise ValueError(f"win_size must be odd, got {win_size}")
    weights = msssim_weights(msssim_levels(min(x0.shape[-2:]), win_size))
    to_unit = lambda x: ((x.float() + 1) / 2).clamp(0, 1)  # noqa: E731
    return _ms_ssim(to_unit(x0), to_unit(x1), weights, win_size)


def msssim_diversity(groups: Iterable[torch.Tensor]) -> tuple[float, int]:
    """(mean MS-SSIM, number of groups): mean over all unordered pairs within each group, then over groups
    (:func:`~medsg_lib.metrics.lpips_div.group_mean`, LPIPS's protocol). Lower = more diverse."""
    return group_mean(msssim_distance, groups, "msssim_diversity")


def msssim_pairs(
    x: torch.Tensor, num_pairs: int = 1000, seed: int = 0, batch_size: int = 50
) -> tuple[float, int]:
    """(mean MS-SSIM, num_pairs) over ``num_pairs`` random pairs of distinct samples of x (N, C, H, W) in
    [-1, 1]; lower = more diverse. The pairs are :func:`~medsg_lib.metrics.lpips_div.lpips_pairs`' for the
    same N and seed (:func:`~medsg_lib.metrics.lpips_div.random_pairs_mean`)."""
    return random_pairs_mean(msssim_distance, x, num_pairs, seed, batch_size)
