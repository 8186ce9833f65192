"""Class activation maps (Figure 1): Grad-CAM from the ``grad-cam`` package, and how well the maps localise.

:func:`compute_cams` wraps ``pytorch_grad_cam.GradCAM`` and returns maps normalised per image to [0, 1] at the
image's size. The localisation metrics are pure numpy on one map ``(H, W)`` and one boolean mask ``(H, W)``:

- :func:`energy_inside`: the share of the map's sum inside the mask (a uniform map scores the mask's area
  fraction, which :func:`localisation_table` reports as the chance level);
- :func:`pointing_hit`: the pointing game (is the map's maximum inside the mask);
- :func:`cam_iou`: IoU of the thresholded map with the mask.

:func:`gaussian_baseline` is a centred Gaussian that looks at every image the same way: a map that
"concentrates around the lungs" only says something if it beats this baseline.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from medsg_lib.config import CLASS_NAMES, PhantomConfig
from medsg_lib.data import load_image, load_mask, preprocess, to_tensor
from medsg_lib.data.covidqu import SPLIT_FOLDERS, sibling_lung_mask
from medsg_lib.data.phantoms import render_split
from medsg_lib.data.summary import pick_examples
from medsg_lib.files import MANIFEST_NAME
from medsg_lib.manifest import read_manifest
from medsg_lib.models.classifier import as_model_input, stage_map_size, target_layer
from medsg_lib.translation import predicted_classes

_FLAT = 1e-12  # a map whose range is below this carries no location: it becomes all zeros


def normalise_cams(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of ``maps`` ``(B, H, W)`` to [0, 1] (float32).

    A flat map (range < 1e-12, e.g. all zeros when ReLU removed every positive contribution) or a non-finite
    one becomes all zeros rather than NaN; every other map has minimum exactly 0 and maximum exactly 1.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W); got shape {maps.shape}")
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    ok = np.isfinite(span) & (span >= _FLAT)
    out = np.where(ok, (maps - low) / np.where(ok, span, 1.0), 0.0)
    return out.astype(np.float32)


@contextmanager
def _grads_from(model: nn.Module, layer: nn.Module) -> Iterator[bool]:
    """Inside the ``with``, only ``layer``'s parameters require grad, so the backward pass of Grad-CAM stops
    at ``layer`` (the gradient it needs) instead of running on to every earlier weight and the input: the same
    maps, a fraction of the work (the fine stem's early stages are the costly ones). Yields whether the input
    must require grad instead (a ``layer`` without parameters). Every flag is restored on exit."""
    flags = {p: p.requires_grad for p in model.parameters()}
    own = list(layer.parameters())
    try:
        for p in flags:
            p.requires_grad_(False)
        for p in own:
            p.requires_grad_(True)
        yield not own
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 32,
    versus: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` float32 in [0, 1] of ``x`` ``(B, C, H, W)`` in [-1, 1].

    Args:
        targets: the class explained for each image (``B`` ints); None explains the predicted class.
        layer: the layer whose activations are weighted; default ``target_layer(model)`` (``layer4[-1]``,
            a H/32 x W/32 map, i.e. 2x2 at 64 px: coarse; ``target_layer(model, "layer3")`` is H/16).
        versus: explain each target's logit minus class ``versus``'s (:class:`ContrastTarget`, a diagnostic:
            evidence that raises both logits alike cancels) instead of the target's logit (the paper's maps).

    The maps are upsampled to ``H x W`` by grad-cam (bilinear) and normalised per image by
    :func:`normalise_cams` (flat maps are all zeros; a ``UserWarning`` when every map is flat). ``model`` is
    left in its previous train/eval mode with no stored gradients.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W); got shape {tuple(x.shape)}")
    if targets is not None and len(targets) != x.shape[0]:
        raise ValueError(f"targets has {len(targets)} entries for {x.shape[0]} images")
    layer = target_layer(model) if layer is None else layer
    was_training = model.training
    device = next(model.parameters()).device
    maps = []
    try:
        with (
            GradCAM(model=model, target_layers=[layer]) as cam,
            torch.enable_grad(),
            _grads_from(model, layer) as via_input,
        ):
            for start in range(0, x.shape[0], batch_size):
                x_batch = as_model_input(x[start : start + batch_size].detach().to(device).float(), model)
                x_batch.requires_grad_(via_input)
                batch_targets = None
                if targets is not None:
                    batch_targets = [
                        ClassifierOutputTarget(int(t)) if versus is None else ContrastTarget(int(t), versus)
                        for t in targets[start : start + batch_size]
                    ]
                maps.append(cam(input_tensor=x_batch, targets=batch_targets))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    cams = normalise_cams(np.concatenate(maps, axis=0))
    if not cams.any():
        warnings.warn(
            "every Grad-CAM map is flat (all zeros): the layer's activation may be 1x1 at this image size "
            f"({x.shape[-2]}x{x.shape[-1]}; ResNet-18's layer4 is H/32 with the ImageNet stem, H/8 with the fine "
            "one), or no class evidence is positive; try target_layer(model, 'layer3'), stem='fine' or larger images",
            stacklevel=2,
        )
    return cams


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


def pointing_hit(cam: np.ndarray, mask: np.ndarray) -> bool:
    """Pointing game: is the map's maximum inside ``mask`` (ties: the first maximum in row-major order)."""
    cam, mask = _check_pair(cam, mask)
    return bool(mask.flat[int(np.argmax(cam))])


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


def _nanmean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def localisation_table(
    cams: np.ndarray,
    lung_masks: np.ndarray | None,
    infection_masks: np.ndarray | None,
    labels: np.ndarray,
    source: str,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Per-class (and "all") localisation of ``cams`` ``(N, H, W)`` in [0, 1].

    Args:
        lung_masks, infection_masks: boolean ``(N, H, W)`` or None (metrics then NaN). Images whose infection
            mask is empty (normal lungs, or no annotation) are left out of the infection metrics.
        labels: ``(N,)`` class indices into ``CLASS_NAMES``.
        source: what the maps come from, copied into every row (e.g. "real", "generated",
            "baseline: centred Gaussian").

    Returns one row per class present plus "all": ``source, class, n, n_flat`` (all-zero maps, which score 0
    everywhere: see :func:`compute_cams`), ``lung_area_fraction`` (the chance level
    of the energy share: a uniform map's score), ``lung_energy_share``, ``lung_pointing_hit_rate`` (means over
    the images), ``n_infection`` (images with a non-empty infection mask), ``lesion_area_fraction`` (the chance
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
        if lungs is None:
            row.update(lung_area_fraction=np.nan, lung_energy_share=np.nan, lung_pointing_hit_rate=np.nan)
        else:
            row.update(
                lung_area_fraction=float(lungs[idx].mean()),
                lung_energy_share=_nanmean([energy_inside(cams[i], lungs[i]) for i in idx]),
                lung_pointing_hit_rate=_nanmean([float(pointing_hit(cams[i], lungs[i])) for i in idx]),
            )
        with_lesion = [] if lesions is None else [i for i in idx if lesions[i].any()]
        row.update(
            n_infection=len(with_lesion),
            lesion_area_fraction=_nanmean([float(lesions[i].mean()) for i in with_lesion]),
            pointing_game_hit_rate=_nanmean([float(pointing_hit(cams[i], lesions[i])) for i in with_lesion]),
            **{f"iou@{threshold}": _nanmean([cam_iou(cams[i], lesions[i], threshold) for i in with_lesion])},
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _as_gray(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` in [0, 1] from ``(N, H, W)`` or ``(N, C, H, W)`` in [-1, 1] (channels averaged)."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 4:
        arr = arr.mean(axis=1)
    if arr.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W); got shape {arr.shape}")
    return np.clip((arr.astype(np.float32) + 1) / 2, 0, 1)


# --- The Figure 1 study: real and generated images, measured against a map that cannot localise ----------------


class CamInputs:
    """Images with their labels and masks for a CAM study: ``x`` ``(N, 1, H, W)`` in [-1, 1], ``labels``
    ``(N,)``, ``lung`` and ``infection`` boolean ``(N, H, W)`` (infection all False where unknown)."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray, lung: np.ndarray, infection: np.ndarray) -> None:
        self.x, self.labels, self.lung, self.infection = x, np.asarray(labels), lung, infection

    def __len__(self) -> int:
        return len(self.labels)


def real_cam_inputs(records: Sequence, img_size: int, per_class: int, seed: int = 0) -> CamInputs:
    """Up to ``per_class`` real images per class (reproducible pick) with their lung and infection masks."""
    chosen = pick_examples(records, per_class, seed)
    empty = np.zeros((img_size, img_size), bool)
    x = torch.stack([to_tensor(preprocess(load_image(r.image_path, 1), img_size)) for r in chosen])
    lung = np.stack([load_mask(r.lung_mask_path, img_size) if r.lung_mask_path else empty for r in chosen])
    lesion = np.stack(
        [load_mask(r.infection_mask_path, img_size) if r.infection_mask_path else empty for r in chosen]
    )
    return CamInputs(x, np.array([r.label for r in chosen]), lung, lesion)


def generated_cam_inputs(gen_dir: Path, img_size: int, per_class: int) -> CamInputs:
    """Up to ``per_class`` Med-StyleGAN2 images per class (lowest seeds) from ``gen_dir`` (a folder written by
    :func:`medsg_lib.generate.generate`). A translation keeps the anatomy of its source image, so the source's
    lung mask stands in for the generated image's; generated lesions have no mask (infection metrics NaN)."""
    manifest = read_manifest(gen_dir)
    rows = [
        row
        for name in CLASS_NAMES
        for row in manifest[manifest["class"] == name].sort_values("seed").head(per_class).to_dict("records")
    ]
    if not rows:
        raise FileNotFoundError(
            f"no generated images listed in {gen_dir}/{MANIFEST_NAME}: run notebook 03 first"
        )
    x = torch.stack([to_tensor(preprocess(load_image(Path(gen_dir) / r["file"], 1), img_size)) for r in rows])
    lung = np.stack([_source_lung_mask(r["source_image"], img_size) for r in rows])
    labels = np.array([CLASS_NAMES.index(r["class"]) for r in rows])
    return CamInputs(x, labels, lung, np.zeros_like(lung))


def _source_lung_mask(source_image: object, img_size: int) -> np.ndarray:
    """The lung mask beside a COVID-QU-Ex-layout source image (``.../images/NAME`` -> ``.../lung masks/NAME``),
    or an all-False mask when there is none (then the lung metrics of that image are 0)."""
    if not isinstance(source_image, str) or not source_image:
        return np.zeros((img_size, img_size), bool)
    mask = sibling_lung_mask(Path(source_image))
    return load_mask(mask, img_size) if mask is not None else np.zeros((img_size, img_size), bool)


def cam_study(
    model: nn.Module,
    inputs: dict[str, CamInputs],
    layers: Sequence[str] = ("layer3", "layer4"),
    threshold: float = 0.5,
) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """Grad-CAM (explaining each image's own class) of every input set at every ``layer``, measured with
    :func:`localisation_table`, plus the centred-Gaussian baseline on the same images and masks.

    Returns the table (columns ``layer``, ``map_size`` (the layer's map before upsampling, e.g. ``16x16``;
    the image size for the baseline), ``source``, ``class``, ...) and the maps per ``(layer, source)``.
    """
    tables, maps = [], {}
    for layer in layers:
        for source, inp in inputs.items():
            cams = compute_cams(model, inp.x, targets=inp.labels.tolist(), layer=target_layer(model, layer))
            maps[(layer, source)] = cams
            side = stage_map_size(model, layer, inp.x.shape[-1])
            table = localisation_table(cams, inp.lung, inp.infection, inp.labels, source, threshold)
            tables.append(table.assign(layer=layer, map_size=f"{side}x{side}"))
    for source, inp in inputs.items():
        h, w = inp.x.shape[-2:]
        gauss = np.broadcast_to(gaussian_baseline(h, w), (len(inp), h, w))
        table = localisation_table(
            gauss, inp.lung, inp.infection, inp.labels, f"baseline: centred Gaussian ({source})"
        )
        tables.append(table.assign(layer="-", map_size=f"{h}x{w}"))
    table = pd.concat(tables, ignore_index=True)
    return table[["layer", "map_size", *[c for c in table.columns if c not in ("layer", "map_size")]]], maps


# a row of the CAM study is one (layer, source, class); the numbers compared across classifier seeds
LOCALISATION_KEYS: tuple[str, ...] = ("layer", "map_size", "source", "class")
LOCALISATION_VALUES: tuple[str, ...] = (
    "lung_energy_share",
    "lung_pointing_hit_rate",
    "pointing_game_hit_rate",
    "iou@0.5",
)


def cam_study_over_seeds(
    classifiers: Sequence[tuple[nn.Module, dict]],
    inputs: dict[str, CamInputs],
    layers: Sequence[str] = ("layer3", "layer4"),
) -> pd.DataFrame:
    """:func:`cam_study` of each classifier (seed ``k`` at position ``k``) on the same inputs: the tables one
    after the other, with a ``classifier_seed`` column."""
    return pd.concat(
        [
            cam_study(model, inputs, layers)[0].assign(classifier_seed=k)
            for k, (model, _) in enumerate(classifiers)
        ],
        ignore_index=True,
    )


def lesion_removal_table(
    model: nn.Module, phantoms: PhantomConfig, split: str, img_size: int
) -> pd.DataFrame:
    """Does ``model`` need the lesions? It classifies every phantom of ``split`` (e.g. ``"test"``) and its
    lesion-free twin (same patient and acquisition, lesions left out: :func:`render_split`), both resized to
    ``img_size``. One row per class: ``class``, ``n``, then the share of the images and of their twins it calls
    each class. A classifier that reads the lesions calls the COVID-19 and Non-COVID twins Normal; the Normal
    twins are the Normal images themselves."""
    folder = SPLIT_FOLDERS[split]  # "test" -> "Test", the COVID-QU-Ex (and phantom) folder name
    images, labels = render_split(phantoms, folder)
    twins, _ = render_split(phantoms, folder, lesions=False)
    called = {
        kind: np.array(predicted_classes(model, [preprocess(im, img_size) for im in arrays]))
        for kind, arrays in (("images", images), ("twins", twins))
    }
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        chosen = labels == label
        row: dict[str, object] = {"class": name, "n": int(chosen.sum())}
        for kind, names in called.items():
            row.update({f"{kind} called {c}": float(np.mean(names[chosen] == c)) for c in CLASS_NAMES})
        rows.append(row)
    return pd.DataFrame(rows)


class ContrastTarget:
    """A Grad-CAM target: class ``label``'s logit minus class ``versus``'s (e.g. COVID-19 against Normal), so
    evidence that raises both logits alike cancels. A diagnostic beside the paper's class-score maps."""

    def __init__(self, label: int, versus: int) -> None:
        self.label, self.versus = label, versus

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., self.label] - logits[..., self.versus]


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
        "pointing_game_hit_rate": _nanmean([float(pointing_hit(cams[i], lesion[i])) for i in idx]),
        "max_in_lung_rate": _nanmean([float(pointing_hit(cams[i], lung[i])) for i in idx]),
        "n_outside_lungs": len(outside),
        "outside_row_mean": float(mean[0]),
        "outside_col_mean": float(mean[1]),
        "outside_row_std": float(std[0]),
        "outside_col_std": float(std[1]),
    }


def describe(classifier_result: dict, table: pd.DataFrame, layer: str) -> str:
    """One line on the classifier behind a CAM study (from :func:`~medsg_lib.classify.ensure_classifier`'s
    result) and the map size at ``layer`` (from :func:`cam_study`'s table), for Figure 1's subtitle."""
    sizes = sorted(set(table.loc[table["layer"] == layer, "map_size"]))
    stem = classifier_result.get("stem", "imagenet")
    return (
        f"ResNet-18, {stem} stem, init {classifier_result.get('init')}, {classifier_result['split']} accuracy "
        f"{classifier_result['accuracy']:.2f}; {layer} map {', '.join(sizes)} upsampled to "
        f"{classifier_result['img_size']} px"
    )


def panel_caption(cam_map: np.ndarray, lung: np.ndarray, lesion: np.ndarray) -> str:
    """What Figure 1 writes under a panel: the map's share inside the lungs and, with a lesion mask, whether
    its maximum is on the lesion; a flat map says that it shows no positive evidence."""
    if cam_map.max() <= 0:
        return "flat map: no positive evidence"
    caption = f"lung share {energy_inside(cam_map, lung):.2f}" if lung.any() else "no lung mask"
    if lesion.any():
        caption += " · max in lesion" if pointing_hit(cam_map, lesion) else " · max off lesion"
    return caption


def _fig1_rows(
    inputs: dict[str, CamInputs], classes: Sequence[str], per_row: int
) -> list[tuple[str, str, np.ndarray]]:
    """(source, class, indices of its first ``per_row`` images) for each row of Figure 1 that has images."""
    rows = []
    for source, inp in inputs.items():
        for name in classes:
            idx = np.flatnonzero(inp.labels == CLASS_NAMES.index(name))[:per_row]
            if idx.size:
                rows.append((source, name, idx))
    return rows


def save_fig1(
    inputs: dict[str, CamInputs],
    maps: dict[tuple[str, str], np.ndarray],
    layer: str,
    path: Path,
    classes: Sequence[str] = ("COVID-19", "Non-COVID"),
    per_row: int = 4,
    description: str = "",
    panel_inches: float = 1.9,
    dpi: int = 110,
) -> Path:
    """Figure 1: Grad-CAM overlays at ``layer``, one row per (source, class) of ``classes`` (the first
    ``per_row`` images of each), written as a PNG at ``path``; returns it.

    Each row is labelled in full at its left. Each panel: the image in gray, the map (jet, the colour bar at the
    right), the lung mask's outline (cyan; for a translation its source's) and the infection mask's (magenta,
    where one exists), and under it the share of the map inside the lungs and, with an infection mask, whether
    the map's maximum lies in it (the pointing game). A flat map (no positive evidence) is not drawn and the
    panel says so. ``description`` (e.g. the classifier and map size) goes under the title.
    """
    rows = _fig1_rows(inputs, classes, per_row)
    if not rows:
        raise ValueError(f"no images of {list(classes)} in any source: nothing to draw")
    label_inches = 1.7
    width = label_inches + per_row * panel_inches + 0.9
    height = 1.1 + len(rows) * (panel_inches + 0.25)
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(
        len(rows),
        per_row,
        left=label_inches / width,
        right=1 - 0.9 / width,
        top=1 - 0.75 / height,
        bottom=0.3 / height,
        wspace=0.04,
        hspace=0.28,
    )
    artist = None
    for r, (source, name, idx) in enumerate(rows):
        inp, cams = inputs[source], maps[(layer, source)]
        gray = _as_gray(inp.x[idx])
        for c in range(per_row):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                label = f"{source}\n{name}".replace(" (", "\n(")  # "generated\n(Med-StyleGAN2)\n..."
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9, labelpad=8)
            if c >= idx.size:
                ax.axis("off")
                continue
            i, cam_map = idx[c], cams[idx[c]]
            ax.imshow(gray[c], cmap="gray", vmin=0, vmax=1)
            lung, lesion = inp.lung[i], inp.infection[i]
            if cam_map.max() > 0:
                artist = ax.imshow(cam_map, cmap="jet", vmin=0, vmax=1, alpha=0.45)
            else:
                ax.text(0.5, 0.5, "flat", transform=ax.transAxes, ha="center", va="center", color="yellow")
            caption = panel_caption(cam_map, lung, lesion)
            if lung.any():
                ax.contour(lung.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
            if lesion.any():
                ax.contour(lesion.astype(float), levels=[0.5], colors="magenta", linewidths=0.9)
            ax.set_xlabel(caption, fontsize=7, labelpad=2)
    if artist is not None:
        bar_ax = fig.add_axes((1 - 0.75 / width, 0.15, 0.15 / width, 0.6))
        fig.colorbar(artist, cax=bar_ax).set_label("Grad-CAM (each map scaled to [0, 1])", fontsize=8)
    title = f"Figure 1 · Grad-CAM at {layer}; outlines: lungs (cyan; a translation's are its source's), infection (magenta)"
    fig.suptitle(
        f"{title}\n{description}" if description else title, fontsize=9, y=1 - 0.08 / height, va="top"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
