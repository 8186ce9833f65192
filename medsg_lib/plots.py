"""Figures: each function reads arrays or files the library already wrote and saves one PNG under ``figures/``.

All image panels use the same gray scale (0-255, ``vmin``/``vmax`` fixed) so that panels compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data import load_image, load_mask, preprocess
from medsg_lib.data.summary import pick_examples
from medsg_lib.families import FAMILIES
from medsg_lib.files import ALL_CLASSES, class_slug, run_name

_DPI = 110


def _save(fig: plt.Figure, path: Path, dpi: int = _DPI, bbox_inches: str | None = "tight") -> Path:
    """Save ``fig`` as ``path`` (folders created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
    return path


def save_data_samples(
    records: Sequence, img_size: int, path: Path, per_class: int = 4, seed: int = 0
) -> plt.Figure:
    """Grid of real images, one row per class, with the lung-mask outline (cyan) and the infection mask
    (red, translucent) overlaid where masks exist. Writes ``path``; returns the figure."""
    chosen = pick_examples(records, per_class, seed)
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(2.2 * per_class, 2.3 * len(CLASS_NAMES)))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for label, name in enumerate(CLASS_NAMES):
        row = [r for r in chosen if r.label == label]
        axes[label, 0].set_title(name, loc="left", fontsize=10, fontweight="bold")
        for col, rec in enumerate(row):
            ax = axes[label, col]
            ax.imshow(preprocess(load_image(rec.image_path, 1), img_size), cmap="gray", vmin=0, vmax=255)
            if rec.lung_mask_path is not None:
                ax.contour(
                    load_mask(rec.lung_mask_path, img_size), levels=[0.5], colors="cyan", linewidths=0.8
                )
            if rec.infection_mask_path is not None:
                lesion = load_mask(rec.infection_mask_path, img_size)
                overlay = np.zeros((*lesion.shape, 4))
                overlay[lesion] = (1.0, 0.1, 0.1, 0.35)
                ax.imshow(overlay)
    fig.suptitle("Samples per class: lung mask (cyan outline), infection mask (red)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


def save_histograms(hists: Mapping[str, np.ndarray], path: Path) -> plt.Figure:
    """Per-class grayscale histograms (as from ``data.summary.class_histograms``) on one axis. Writes ``path``."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, h in hists.items():
        centres = (np.arange(len(h)) + 0.5) * 256 / len(h)
        ax.plot(centres, h, label=name)
    ax.set_xlabel("gray level (0-255)")
    ax.set_ylabel("fraction of pixels")
    ax.set_title("Intensity histograms per class")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    return fig


ADA_P = "ada_p"  # the log key of the adaptive augmentation probability (medsg_lib.families.stylegan2)


def _plot_terms(ax: plt.Axes, log: Sequence[Mapping[str, float]], prefix: str, title: str) -> None:
    steps = [r["step"] for r in log]
    keys = sorted({k for r in log for k in r if k.startswith(prefix)})
    for key in keys:
        ax.plot(steps, [r.get(key, np.nan) for r in log], label=key[len(prefix) :], lw=1)
    ax.set_xlabel("iteration")
    ax.set_title(title)
    if keys:
        ax.legend(fontsize=7, ncol=2)


def save_training_figure(
    log: Sequence[Mapping[str, float]],
    sample_png: Path | None,
    path: Path,
    title: str,
    sample_scale: int = 2,
    dpi: int = 100,
) -> plt.Figure:
    """The run's latest fixed-input sample grid above, at ``sample_scale`` screen pixels per image pixel when the
    PNG is opened at its natural size, and below it the discriminator and generator loss terms from the run's
    ``log.jsonl`` records (keys ``d_*`` and ``g_*``), with the augmentation probability ``ada_p`` of a StyleGAN2-ADA
    run dashed on the discriminator panel's right axis. Writes ``path``; returns the figure."""
    grid = None
    if sample_png is not None and Path(sample_png).exists():
        grid = np.asarray(Image.open(sample_png).convert("L"))
    loss_inches, width = 3.4, 12.0
    sample_inches = 0.0 if grid is None else sample_scale * grid.shape[0] / dpi
    left, right = 0.7, 0.3  # inches of margin: the sample row spans the rest, at least the grid's width
    width = max(width, 0.0 if grid is None else sample_scale * grid.shape[1] / dpi + left + right)
    gap, top, bottom = 0.7, 0.7, 0.55  # inches: between the rows (titles), above (suptitle), below (x label)
    height = top + sample_inches + gap + loss_inches + bottom
    fig = plt.figure(figsize=(width, height))
    rows = fig.add_gridspec(
        2,
        2,
        height_ratios=[max(sample_inches, 1e-3), loss_inches],
        hspace=gap / ((sample_inches + loss_inches) / 2),
        top=1 - top / height,
        bottom=bottom / height,
        left=left / width,
        right=1 - right / width,
    )
    if grid is not None:
        ax_img = fig.add_subplot(rows[0, :])
        ax_img.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax_img.set_title(f"fixed-input samples ({Path(sample_png).stem})", fontsize=10)
        ax_img.axis("off")
    ax_d = fig.add_subplot(rows[1, 0])
    _plot_terms(ax_d, log, "d_", "discriminator loss terms")
    _plot_terms(fig.add_subplot(rows[1, 1]), log, "g_", "generator loss terms")
    if any(ADA_P in r for r in log):  # adaptive augmentation: its probability, on the right axis (0..1)
        ax_p = ax_d.twinx()
        ax_p.plot([r["step"] for r in log], [r.get(ADA_P, np.nan) for r in log], "k--", lw=1)
        ax_p.set_ylim(0, 1)
        ax_p.set_ylabel("ADA p (dashed)")
    fig.suptitle(title)
    _save(fig, path, dpi=dpi)
    return fig


def save_generated_preview(out_root: Path, path: Path, per_row: int = 8) -> plt.Figure:
    """The first ``per_row`` images (by seed) of every ``out_root/<run>/<class>/`` folder, one row each, on the
    same gray scale. Writes ``path``; returns the figure."""
    folders = sorted(
        d for run in Path(out_root).iterdir() if run.is_dir() for d in run.iterdir() if d.is_dir()
    )
    fig, axes = plt.subplots(
        len(folders), per_row, figsize=(1.3 * per_row, 1.4 * len(folders)), squeeze=False
    )
    for row, folder in zip(axes, folders, strict=True):
        files = sorted(folder.glob("*.png"))[:per_row]
        for ax in row:
            ax.axis("off")
        for ax, f in zip(row, files, strict=False):
            ax.imshow(np.asarray(Image.open(f).convert("L")), cmap="gray", vmin=0, vmax=255)
        row[0].set_title(f"{folder.parent.name} / {folder.name}", loc="left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def fig2_columns() -> tuple[tuple[str, str], ...]:
    """Figure 2's columns, left to right: (label, model) of every registered family, in registry order; the
    "original" column follows."""
    return tuple((f.label, name) for name, f in FAMILIES.items())


def panel_folders(generated_root: Path, model: str, class_name: str) -> tuple[Path, ...]:
    """Where the generated images of ``model`` for ``class_name`` may be, in order of preference: the run
    trained on that class (``<run_name>/<slug>``, e.g. ``dcgan_covid/covid``), then the class folder of the run
    trained on every class (``<model>/<slug>``, e.g. ``medsg/covid``), then that run's mixed images
    (``<model>/all``)."""
    root, slug = Path(generated_root), class_slug(class_name)
    return (root / run_name(model, class_name) / slug, root / model / slug, root / model / ALL_CLASSES)


def fig2_panels(generated_root: Path, real_records: Sequence) -> dict[tuple[str, str], Path | None]:
    """The file shown in each Figure 2 panel, keyed by (class, column title): for each model of
    :func:`fig2_columns` the lowest-seed image of the first of its :func:`panel_folders` that holds one (from a
    whole-set run's mixed images, ``<model>/all``, the k-th lowest seed in the k-th class's row, so that the
    rows show different samples of a model that has no classes), for "original" the first training image of
    the class by file name. None where nothing was generated."""
    panels: dict[tuple[str, str], Path | None] = {}
    for row, name in enumerate(CLASS_NAMES):
        for column, model in fig2_columns():
            panels[(name, column)] = None
            for folder in panel_folders(generated_root, model, name):
                files = sorted(folder.glob("*.png"))
                if files:
                    k = min(row, len(files) - 1) if folder.name == ALL_CLASSES else 0
                    panels[(name, column)] = files[k]
                    break
        originals = sorted(
            (r for r in real_records if r.class_name == name), key=lambda r: Path(r.image_path).name
        )
        panels[(name, "original")] = Path(originals[0].image_path) if originals else None
    return panels


def save_fig2(panels: Mapping[tuple[str, str], Path | None], img_size: int, path: Path) -> plt.Figure:
    """Figure 2: a column per registered model with images in ``panels`` (:func:`fig2_columns`; a model with
    none is left out), then the original; one row per class; every panel resized to ``img_size`` and drawn on
    the same gray scale (0-255); a panel from a whole-set run's mixed images is marked "whole-set model". Writes
    ``path``; returns the figure."""
    generated = [c for c, _ in fig2_columns() if any(panels.get((name, c)) for name in CLASS_NAMES)]
    columns = generated + ["original"]
    fig, axes = plt.subplots(
        len(CLASS_NAMES), len(columns), figsize=(2.4 * len(columns), 2.5 * len(CLASS_NAMES))
    )
    for i, name in enumerate(CLASS_NAMES):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            file = panels.get((name, column))
            if file is None:
                ax.text(
                    0.5, 0.5, "not generated", ha="center", va="center", fontsize=8, transform=ax.transAxes
                )
            else:
                ax.imshow(preprocess(load_image(file, 1), img_size), cmap="gray", vmin=0, vmax=255)
                if file.parent.name == ALL_CLASSES:  # a whole-set run: a sample, not of this class
                    ax.text(0.03, 0.03, "whole-set model", color="yellow", fontsize=7, transform=ax.transAxes)
            if i == 0:
                ax.set_title(column, fontsize=10)
            if j == 0:
                ax.set_ylabel(name, fontsize=10)
    fig.suptitle("Figure 2: generated samples and an original image per class (same gray scale)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


def save_confusion_figure(
    result: Mapping[str, Any],
    path: Path,
    title: str | None = None,
    figsize: tuple[float, float] = (4.8, 4.0),
    dpi: int = 100,
) -> Path:
    """Confusion matrix of :func:`medsg_lib.classify.classification_metrics` as a PNG of ``figsize * dpi``
    pixels at ``path``; returns ``path`` (the figure is closed).

    Cells: the count and the row-normalised share (% of the true class), coloured by that share; true class on
    the y axis, predicted on the x axis.
    """
    cm = np.asarray(result["confusion"], dtype=np.int64)
    names = list(result.get("class_names", CLASS_NAMES))
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=figsize)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(cm.shape):
        color = "white" if share[i, j] > 0.6 else "black"
        ax.text(
            j, i, f"{cm[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center", color=color, fontsize=9
        )
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=dpi, bbox_inches=None)  # exactly figsize * dpi pixels
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# Memorisation audit (notebook 08)


def save_memorisation_distances(
    generated: Mapping[str, np.ndarray], heldout: np.ndarray, threshold: float, path: Path
) -> plt.Figure:
    """One panel per model: histograms of the nearest-training pixel distances of its generated images and of
    the real held-out images (the baseline of "new but similar"), with the near-copy threshold. Writes
    ``path``; returns the figure."""
    fig, axes = plt.subplots(
        1, len(generated), figsize=(3.2 * len(generated), 2.8), sharex=True, squeeze=False
    )
    top = max([heldout.max(), *(d.max() for d in generated.values())]) * 1.05
    bins = np.linspace(0, top, 40)
    for ax, (label, dist) in zip(axes[0], generated.items(), strict=True):
        ax.hist(
            heldout,
            bins=bins,
            density=True,
            color="0.6",
            alpha=0.7,
            label=f"held-out real (n={len(heldout)})",
        )
        ax.hist(dist, bins=bins, density=True, color="C3", alpha=0.6, label=f"generated (n={len(dist)})")
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"near-copy threshold {threshold:.3f}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("distance to nearest training image (pixels)", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    axes[0][0].set_ylabel("density")
    fig.suptitle(
        "Memorisation: how close generated and held-out real images come to the training set", fontsize=10
    )
    fig.tight_layout()
    _save(fig, path)
    return fig


def _gray_u8(x: np.ndarray) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) in 0..255 (first channel)."""
    return np.clip((x[0] + 1.0) * 127.5, 0, 255)


def save_memorisation_pairs(
    pairs: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray, float]]], threshold: float, path: Path
) -> plt.Figure:
    """The closest generated/training pairs: per model two rows (generated above, its nearest training image
    below), one column per pair, the distance in the title (red: below the near-copy threshold). Images are
    (C, H, W) in [-1, 1], drawn on one gray scale. Writes ``path``; returns the figure."""
    cols = max(len(p) for p in pairs.values())
    fig, axes = plt.subplots(
        2 * len(pairs), cols, figsize=(1.7 * cols + 1.2, 3.6 * len(pairs)), squeeze=False
    )
    for r, (label, model_pairs) in enumerate(pairs.items()):
        for c in range(cols):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if c >= len(model_pairs):
                top.axis("off")
                bottom.axis("off")
                continue
            gen, train, dist = model_pairs[c]
            top.imshow(_gray_u8(gen), cmap="gray", vmin=0, vmax=255)
            bottom.imshow(_gray_u8(train), cmap="gray", vmin=0, vmax=255)
            top.set_title(f"d = {dist:.3f}", fontsize=8, color="C3" if dist < threshold else "k")
        axes[2 * r, 0].set_ylabel(f"{label}\ngenerated", fontsize=8)
        axes[2 * r + 1, 0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.suptitle(
        f"Closest generated/training pairs per model (pixel distance; near-copy threshold {threshold:.3f})",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path)
    return fig


CURVE_TITLES = {
    "frd": "FRD (radiomics, log; lower = closer)",
    "fd_classifier": "FD in the classifier's features (lower = closer)",
    "msssim": "MS-SSIM between outputs (lower = more diverse)",
}


def save_learning_curves(
    frame: Any,
    marks: Mapping[str, int],
    path: Path,
    spreads: Mapping[str, float] | None = None,
    spread_metric: str = "frd",
) -> plt.Figure:
    """One panel per metric of ``frame`` (:func:`medsg_lib.curves.curve_frame`): each model's value against
    training iterations (log scale), the mean over the classes its checkpoints generate; a marker on each curve
    at ``marks[label]`` (the profile's own iteration count). ``spreads[model]`` (a seed-to-seed sd of
    ``spread_metric``, :func:`medsg_lib.curves.seed_spreads`) draws a +-1 sd bar at that marker: later points
    inside it are within seed noise. Writes ``path``; returns the figure."""
    spreads = spreads or {}
    metrics = [m for m in CURVE_TITLES if m in set(frame["metric"])]
    fig, axes = plt.subplots(
        1, max(1, len(metrics)), figsize=(4.3 * max(1, len(metrics)), 3.3), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=False):
        part = frame[frame["metric"] == metric]
        for i, (label, curve) in enumerate(part.groupby("label", sort=False)):
            curve = curve.sort_values("step")
            ax.plot(curve["step"], curve["value"], marker="o", ms=3, color=f"C{i}", label=label)
            at = curve[curve["step"] == marks.get(label, -1)]
            if not at.empty:
                ax.plot(at["step"], at["value"], marker="s", ms=8, mfc="none", color=f"C{i}")
                sd = spreads.get(curve["model"].iloc[0]) if metric == spread_metric else None
                if sd is not None:
                    ax.errorbar(at["step"], at["value"], yerr=sd, color=f"C{i}", capsize=4, lw=1.2)
        ax.set_xscale("log")
        ax.set_title(CURVE_TITLES[metric], fontsize=9)
        ax.set_xlabel("training iterations", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    bars = f"; bars: +-1 seed sd of {spread_metric.upper()}" if spreads else ""
    fig.suptitle(f"Learning curves (squares: the profile's iteration count{bars})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig
