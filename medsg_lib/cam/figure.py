"""Figure 1: real and generated images beside their Grad-CAM maps, each panel captioned with what was measured
(:func:`save_fig1`, :func:`panel_caption`, :func:`describe`), and the same panels for the CAM methods compared
(:func:`save_methods_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from medsg_lib.cam.localisation import energy_inside, pointing_hit
from medsg_lib.cam.study import CamInputs, method_label, method_maps, per_class_subset
from medsg_lib.config import CLASS_NAMES


def _as_gray(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` in [0, 1] from ``(N, H, W)`` or ``(N, C, H, W)`` in [-1, 1] (channels averaged)."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 4:
        arr = arr.mean(axis=1)
    if arr.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W); got shape {arr.shape}")
    return np.clip((arr.astype(np.float32) + 1) / 2, 0, 1)


def describe(classifier_result: dict, table: pd.DataFrame, layer: str) -> str:
    """One line on the classifier behind a CAM study (from :func:`~medsg_lib.classify.ensure_classifier`'s
    result) and the map size at ``layer`` (from :func:`cam_study`'s table), for Figure 1's subtitle."""
    sizes = sorted(set(table.loc[table["layer"] == layer, "map_size"]))
    stem = classifier_result.get("stem", "torchvision")
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
    title: str | None = None,
    colorbar_label: str = "map (each scaled to [0, 1])",
) -> Path:
    """Figure 1: the maps ``maps[(layer, source)]`` (``layer``: the key of one kind of map, e.g.
    :func:`~medsg_lib.cam.study.method_label`'s ``"gradcam, layer3 (class - Normal)"``) as overlays, one row per
    (source, class) of ``classes`` (the first
    ``per_row`` images of each), written as a PNG at ``path``; returns it.

    Each row is labelled in full at its left. Each panel: the image in gray, the map (jet, the colour bar at the
    right), the lung mask's outline (cyan; for a translation its source's) and the infection mask's (magenta,
    where one exists), and under it the share of the map inside the lungs and, with an infection mask, whether
    the map's maximum lies in it (the pointing game). A flat map (no positive evidence) is not drawn and the
    panel says so. ``description`` (e.g. the classifier and map size) goes under the title; ``title`` replaces
    Figure 1's own (e.g. for a figure of other methods' maps, keyed ``(layer, source)`` in ``maps`` as well).
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
        fig.colorbar(artist, cax=bar_ax).set_label(colorbar_label, fontsize=8)
    if title is None:
        title = f"Figure 1 · {layer}; outlines: lungs (cyan; a translation's are its source's), infection (magenta)"
    fig.suptitle(
        f"{title}\n{description}" if description else title, fontsize=9, y=1 - 0.08 / height, va="top"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_methods_figure(
    model: torch.nn.Module,
    inp: CamInputs,
    choices: Sequence[tuple[str, str, str]],
    path: Path,
    per_row: int = 4,
    description: str = "",
) -> Path:
    """The first ``per_row`` COVID-19 and Non-COVID images of ``inp`` under each ``(method, layer, target)``
    of ``choices`` (e.g. the paper's Grad-CAM and the best method of the comparison), one row per choice and
    class, drawn like Figure 1 (:func:`save_fig1`); returns ``path``."""
    few = per_class_subset(inp, per_row)
    inputs, maps = {}, {}
    for method, layer, target in choices:
        label = method_label(method, layer, target)
        inputs[label] = few
        maps[("", label)] = method_maps(model, few, method, layer, target)
    title = "CAM methods side by side (same images); outlines: lungs (cyan), lesion (magenta)"
    return save_fig1(
        inputs,
        maps,
        "",
        path,
        per_row=per_row,
        description=description,
        title=title,
    )
