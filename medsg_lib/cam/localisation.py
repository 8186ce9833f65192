"""How well maps localise: pure numpy on one map ``(H, W)`` and one boolean mask ``(H, W)``
(:func:`energy_inside`, :func:`pointing_hit`, :func:`cam_iou`), a map that cannot localise
(:func:`gaussian_baseline`), and the per-class table of a set of maps (:func:`localisation_table`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medsg_lib.config import CLASS_NAMES


def _check_pair(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask)
    if cam.ndim != 2 or cam.shape != mask.shape:
        raise ValueError(f"cam and mask must be (H, W) of the same shape; got {cam.shape} and {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean; got dtype {mask.dtype}")
    if np.any(cam < 0):
        raise ValueError("cam must be non-negative (normalise it to [0, 1] first)")
    return cam, mask


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share in [0, 1] of the map's energy (sum of values) inside ``mask``; 0 when the map sums to 0."""
    cam, mask = _check_pair(cam, mask)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else 0.0


def pointing_hit(cam: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """Pointing game: is the map's maximum inside ``mask`` (ties: the first maximum in row-major order), or
    within ``tolerance`` pixels of it (Chebyshev distance: e.g. one cell of a coarse map upsampled to the
    image, whose maximum can only be placed to within a cell)."""
    cam, mask = _check_pair(cam, mask)
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    if tolerance <= 0:
        return bool(mask[row, col])
    window = mask[
        max(row - tolerance, 0) : row + tolerance + 1, max(col - tolerance, 0) : col + tolerance + 1
    ]
    return bool(window.any())


def cam_iou(cam: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """IoU in [0, 1] of ``cam >= threshold`` with ``mask``; 0 when both are empty (0/0 is defined as 0)."""
    cam, mask = _check_pair(cam, mask)
    hot = cam >= threshold
    union = np.logical_or(hot, mask).sum()
    return float(np.logical_and(hot, mask).sum() / union) if union > 0 else 0.0


def gaussian_baseline(h: int, w: int, sigma_frac: float = 0.25) -> np.ndarray:
    """A centred isotropic Gaussian ``(h, w)`` float32 with maximum 1 (values in (0, 1]).

    Centre ``((h - 1) / 2, (w - 1) / 2)``, standard deviation ``sigma_frac * min(h, w)`` pixels. The same map
    for every image: the "cannot localise" reference for the localisation metrics.
    """
    if h <= 0 or w <= 0 or sigma_frac <= 0:
        raise ValueError(f"h, w and sigma_frac must be > 0; got {h}, {w}, {sigma_frac}")
    sigma = sigma_frac * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)


def _stack_masks(masks: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if masks is None:
        return None
    masks = np.asarray(masks)
    if masks.shape != shape or masks.dtype != bool:
        raise ValueError(f"{name} must be a boolean array of shape {shape}; got {masks.dtype} {masks.shape}")
    return masks


def nanmean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def localisation_table(
    cams: np.ndarray,
    lung_masks: np.ndarray | None,
    infection_masks: np.ndarray | None,
    labels: np.ndarray,
    source: str,
    threshold: float = 0.5,
    cell: int | None = None,
) -> pd.DataFrame:
    """Per-class (and "all") localisation of ``cams`` ``(N, H, W)`` in [0, 1].

    Args:
        lung_masks, infection_masks: boolean ``(N, H, W)`` or None (metrics then NaN). Images whose lung mask
            is empty (a set without lung masks) are left out of the lung metrics, and images whose infection
            mask is empty (normal lungs, or no annotation) out of the infection metrics: where nothing was
            measured the table says NaN, never 0.
        labels: ``(N,)`` class indices into ``CLASS_NAMES``.
        source: what the maps come from, copied into every row (e.g. "real", "generated",
            "baseline: centred Gaussian").
        cell: the side in pixels of one cell of the map before upsampling (e.g. 4 for a 16x16 map of 64 px
            images); given, two columns are added: ``pointing_game_within_cell`` (a hit within one cell of the
            lesion, :func:`pointing_hit`'s ``tolerance``) and ``lesion_energy_share`` (the map's energy inside
            the lesion mask; chance: ``lesion_area_fraction``).

    Returns one row per class present plus "all": ``source, class, n, n_flat`` (all-zero maps, which score 0
    everywhere: see :func:`compute_cams`), ``n_lung`` (images with a lung mask), ``lung_area_fraction`` (the
    chance level of the energy share: a uniform map's score), ``lung_energy_share``, ``lung_pointing_hit_rate``
    (means over those images; NaN when there is none), ``n_infection`` (images with a non-empty infection mask), ``lesion_area_fraction`` (the chance
    level of the pointing game: a uniformly random point's hit rate), ``pointing_game_hit_rate`` and
    ``iou@{threshold}`` (means over those images; NaN when there is none).
    """
    cams = np.asarray(cams)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if cams.ndim != 3 or labels.shape != (cams.shape[0],):
        raise ValueError(f"cams must be (N, H, W) with N labels; got {cams.shape} and {labels.shape}")
    lungs = _stack_masks(lung_masks, cams.shape, "lung_masks")
    lesions = _stack_masks(infection_masks, cams.shape, "infection_masks")
    groups = [(CLASS_NAMES[k], labels == k) for k in np.unique(labels)] + [
        ("all", np.ones(len(labels), bool))
    ]
    rows = []
    for name, chosen in groups:
        idx = np.flatnonzero(chosen)
        row = {
            "source": source,
            "class": name,
            "n": int(idx.size),
            "n_flat": int((cams[idx].max(axis=(1, 2)) <= 0).sum()),
        }
        with_lung = [] if lungs is None else [i for i in idx if lungs[i].any()]
        row.update(
            n_lung=len(with_lung),
            lung_area_fraction=nanmean([float(lungs[i].mean()) for i in with_lung]),
            lung_energy_share=nanmean([energy_inside(cams[i], lungs[i]) for i in with_lung]),
            lung_pointing_hit_rate=nanmean([float(pointing_hit(cams[i], lungs[i])) for i in with_lung]),
        )
        with_lesion = [] if lesions is None else [i for i in idx if lesions[i].any()]
        row.update(
            n_infection=len(with_lesion),
            lesion_area_fraction=nanmean([float(lesions[i].mean()) for i in with_lesion]),
            pointing_game_hit_rate=nanmean([float(pointing_hit(cams[i], lesions[i])) for i in with_lesion]),
            **{f"iou@{threshold}": nanmean([cam_iou(cams[i], lesions[i], threshold) for i in with_lesion])},
        )
        if cell is not None:
            row.update(
                pointing_game_within_cell=nanmean(
                    [float(pointing_hit(cams[i], lesions[i], tolerance=cell)) for i in with_lesion]
                ),
                lesion_energy_share=nanmean([energy_inside(cams[i], lesions[i]) for i in with_lesion]),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def miss_locations(cams: np.ndarray, lung: np.ndarray, lesion: np.ndarray) -> dict[str, float]:
    """Where the pointing game misses: over the images with a lesion whose map is not flat, the hit rate, the
    share of maxima inside the lungs, and the number, mean and standard deviation (row, column in pixels) of the
    maxima outside the lungs. A tight cluster of misses is one fixed anatomical place, not the patients'
    lesions. Flat maps (no maximum) are counted in ``n_flat`` and left out."""
    with_lesion = [i for i in range(len(cams)) if lesion[i].any()]
    idx = [i for i in with_lesion if cams[i].max() > 0]
    peaks = [np.unravel_index(int(np.argmax(cams[i])), cams[i].shape) for i in idx]
    outside = np.array([p for i, p in zip(idx, peaks, strict=True) if not lung[i][p]], dtype=float)
    outside = outside.reshape(-1, 2)
    mean, std = (outside.mean(axis=0), outside.std(axis=0)) if len(outside) else (np.full(2, np.nan),) * 2
    return {
        "n": len(idx),
        "n_flat": len(with_lesion) - len(idx),
        "pointing_game_hit_rate": nanmean([float(pointing_hit(cams[i], lesion[i])) for i in idx]),
        "max_in_lung_rate": nanmean([float(pointing_hit(cams[i], lung[i])) for i in idx]),
        "n_outside_lungs": len(outside),
        "outside_row_mean": float(mean[0]),
        "outside_col_mean": float(mean[1]),
        "outside_row_std": float(std[0]),
        "outside_col_std": float(std[1]),
    }
