"""Why a map misses the lesion, measured on the phantoms: each diseased held-out phantom beside its lesion-free
twin (same patient and acquisition, clear lungs; :func:`phantom_pairs`), and for each the map's maximum on the
image and on the twin, whether it lies on the lesion or on the lesion's signal (every pixel the lesion changed,
blur included), and how much the classifier's evidence drops when the lesion is removed or when the maximum's
patch is occluded (:func:`twin_study`, :func:`twin_summary`).

A maximum that stays where it is when the lesion is removed shows a place the map points at whatever the lungs
hold; an occluded maximum that costs the class little evidence, while removing the lesion costs much, shows that
the map's maximum is not where the classifier's evidence is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from medsg_lib.cam.study import CamInputs, method_maps
from medsg_lib.config import CLASS_NAMES, PhantomConfig
from medsg_lib.data.covidqu import SPLIT_FOLDERS
from medsg_lib.data.phantom_render import render_phantom
from medsg_lib.data.phantoms import SPLITS, image_rng, phantom_entries
from medsg_lib.data.transforms import mask_at_size, preprocess, to_tensor
from medsg_lib.models.classifier import as_model_input

NORMAL = CLASS_NAMES.index("Normal")
SIGNAL_LEVELS = 2  # a pixel is part of the lesion's signal where image and twin differ by more (0-255 scale)


def phantom_pairs(
    phantoms: PhantomConfig, split: str, img_size: int, classes: tuple[str, ...] = ("COVID-19", "Non-COVID")
) -> tuple[CamInputs, torch.Tensor, np.ndarray]:
    """The phantoms of ``split`` (e.g. ``"Test"``) of ``classes`` with their masks, at ``img_size`` as the
    files are read (:class:`CamInputs`), their lesion-free twins ``(N, 1, S, S)`` in [-1, 1], and the lesion's
    signal ``(N, S, S)`` bool: where image and twin differ by more than :data:`SIGNAL_LEVELS` gray levels."""
    if split not in SPLITS:
        raise ValueError(f"phantom_pairs: split={split!r} must be one of {SPLITS}")
    wanted = {CLASS_NAMES.index(c) for c in classes}
    entries = [e for e in phantom_entries(phantoms) if e.split == split and e.label in wanted]
    x, twins, labels, lungs, lesions, signal = [], [], [], [], [], []
    for e in entries:
        drawn = render_phantom(
            image_rng(phantoms.seed, e.split, e.label, e.index), e.label, phantoms.img_size
        )
        twin = render_phantom(
            image_rng(phantoms.seed, e.split, e.label, e.index), e.label, phantoms.img_size, lesions=False
        )
        image, clear = preprocess(drawn.image, img_size), preprocess(twin.image, img_size)
        x.append(to_tensor(image))
        twins.append(to_tensor(clear))
        labels.append(e.label)
        lungs.append(mask_at_size(drawn.lung_mask.astype(np.uint8) * 255, img_size))
        lesions.append(mask_at_size(drawn.infection_mask.astype(np.uint8) * 255, img_size))
        signal.append(np.abs(image.astype(np.int16) - clear.astype(np.int16)) > SIGNAL_LEVELS)
    inputs = CamInputs(torch.stack(x), np.array(labels), np.stack(lungs), np.stack(lesions))
    return inputs, torch.stack(twins), np.stack(signal)


@torch.no_grad()
def _margins(model: nn.Module, x: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Each image's class logit minus its Normal logit (the evidence for its class against Normal)."""
    was_training = model.training
    model.eval()
    try:
        logits = model(as_model_input(x.float(), model))
    finally:
        model.train(was_training)
    rows = torch.arange(len(labels))
    return (logits[rows, torch.as_tensor(labels)] - logits[:, NORMAL]).numpy()


def _occlude(x: torch.Tensor, peaks: list[tuple[int, int]], patch: int) -> torch.Tensor:
    """``x`` with a ``patch`` x ``patch`` square around each image's peak set to the square's own mean: the
    structure there is removed, its brightness kept (a square of the whole image's mean gray would add an
    opacity to a dark lung, itself evidence for a disease)."""
    out = x.clone()
    half = patch // 2
    for k, (r, c) in enumerate(peaks):
        top, left = max(r - half, 0), max(c - half, 0)
        square = out[k, :, top : top + patch, left : left + patch]
        square[...] = square.mean()
    return out


def _side(lesion: np.ndarray) -> str:
    """Which half of the image the lesion mask occupies: ``"image left"``, ``"image right"`` or ``"both"``."""
    half = lesion.shape[1] // 2
    left, right = lesion[:, :half].sum(), lesion[:, half:].sum()
    if min(left, right) > 0.2 * max(left, right):
        return "both"
    return "image left" if left > right else "image right"


def twin_study(
    model: nn.Module,
    pairs: tuple[CamInputs, torch.Tensor, np.ndarray],
    method: str = "gradcam",
    layer: str = "layer3",
    target: str = "class",
    patch: int | None = None,
) -> pd.DataFrame:
    """One row per image of :func:`phantom_pairs`: ``class``, ``lesion_side``; the map's maximum on the image
    (``peak_row``, ``peak_col``) and whether it lies ``on_lesion`` (the mask: the pointing game), ``on_signal``
    (every pixel the lesion changed) and ``in_lung``; the twin's map's maximum (the same method explaining the
    same class) and its distance from the image's (``twin_peak_distance``, pixels; NaN where the twin's map is
    flat); the evidence for the class
    against Normal (class logit minus Normal logit) on the image (``margin``), on the twin (``margin_twin``: the
    lesion removed) and with the image's maximum occluded (``margin_peak_occluded``: a ``patch`` square, default
    H / 8, set to its own mean: :func:`_occlude`)."""
    inputs, twins, signal = pairs
    side = inputs.x.shape[-1]
    patch = patch or max(1, side // 8)
    cams = method_maps(model, inputs, method, layer, target)
    twin_cams = method_maps(
        model, CamInputs(twins, inputs.labels, inputs.lung, inputs.infection), method, layer, target
    )
    peaks = [np.unravel_index(int(np.argmax(m)), m.shape) for m in cams]
    # a flat map has no maximum: its place is NaN
    twin_peaks = [
        np.unravel_index(int(np.argmax(m)), m.shape) if m.max() > 0 else (np.nan, np.nan) for m in twin_cams
    ]
    margin = _margins(model, inputs.x, inputs.labels)
    margin_twin = _margins(model, twins, inputs.labels)
    margin_occluded = _margins(
        model, _occlude(inputs.x, [(int(r), int(c)) for r, c in peaks], patch), inputs.labels
    )
    rows = []
    for k, ((r, c), (tr, tc)) in enumerate(zip(peaks, twin_peaks, strict=True)):
        rows.append(
            {
                "class": CLASS_NAMES[int(inputs.labels[k])],
                "lesion_side": _side(inputs.infection[k]),
                "peak_row": int(r),
                "peak_col": int(c),
                "on_lesion": bool(inputs.infection[k][r, c]),
                "on_signal": bool(signal[k][r, c]),
                "in_lung": bool(inputs.lung[k][r, c]),
                "twin_peak_row": float(tr),
                "twin_peak_col": float(tc),
                "twin_peak_distance": float(np.hypot(r - tr, c - tc)),
                "margin": float(margin[k]),
                "margin_twin": float(margin_twin[k]),
                "margin_peak_occluded": float(margin_occluded[k]),
            }
        )
    return pd.DataFrame(rows)


def twin_studies(
    classifiers: Sequence[nn.Module],
    layout: str,
    phantoms: PhantomConfig,
    split: str,
    img_size: int,
    choices: Sequence[tuple[str, str, str]],
) -> pd.DataFrame | None:
    """:func:`twin_study` of every classifier (seed ``k`` at position ``k``: column ``classifier_seed``) for
    each ``(method, layer, target)`` of ``choices`` (columns ``method``, ``layer``, ``target``) on the held-out
    ``split`` (e.g. ``"test"``) rendered at ``img_size``, where the data ``layout`` has lesion-free twins (the
    phantoms); None for every other layout."""
    if layout != "phantoms":
        return None
    pairs = phantom_pairs(phantoms, SPLIT_FOLDERS[split], img_size)
    tables = [
        twin_study(model, pairs, method, layer, target).assign(
            classifier_seed=k, method=method, layer=layer, target=target
        )
        for k, model in enumerate(classifiers)
        for method, layer, target in choices
    ]
    return pd.concat(tables, ignore_index=True)


TWIN_GROUPS: tuple[str, ...] = ("method", "layer", "target", "class")


def twin_summary(rows: pd.DataFrame, by: Sequence[str] = TWIN_GROUPS) -> pd.DataFrame:
    """:func:`twin_study`'s rows (pooled over classifier seeds) summarised per ``by`` group and, within it, for
    all maxima and for those on and off the lesion: ``n``, the share on the lesion, on its signal and in the
    lungs, the share of flat twin maps (no evidence for the class left: no maximum), the median distance
    between image and twin maxima (pixels) and the share of twin maxima within 4 px of the image's (the map's
    maximum did not move when the lesion went; both over the twins with a maximum), and the mean evidence lost by
    removing the lesion (``margin - margin_twin``) and by occluding the maximum
    (``margin - margin_peak_occluded``)."""
    out = []
    for key, group in rows.groupby(list(by), sort=False):
        parts = (
            ("all", group),
            ("on lesion", group[group["on_lesion"]]),
            ("off lesion", group[~group["on_lesion"]]),
        )
        for part, chosen in parts:
            if chosen.empty:
                continue
            out.append(
                {
                    **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                    "maxima": part,
                    "n": len(chosen),
                    "on_lesion": float(chosen["on_lesion"].mean()),
                    "on_signal": float(chosen["on_signal"].mean()),
                    "in_lung": float(chosen["in_lung"].mean()),
                    "twin_flat": float(chosen["twin_peak_distance"].isna().mean()),
                    "twin_peak_distance_median": float(chosen["twin_peak_distance"].median()),
                    "twin_peak_within_4px": float((chosen["twin_peak_distance"].dropna() <= 4).mean()),
                    "evidence_lost_lesion_removed": float((chosen["margin"] - chosen["margin_twin"]).mean()),
                    "evidence_lost_peak_occluded": float(
                        (chosen["margin"] - chosen["margin_peak_occluded"]).mean()
                    ),
                }
            )
    return pd.DataFrame(out)
