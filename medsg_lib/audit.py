"""Memorisation and privacy audit of generated sets (notebook 08), on top of :mod:`medsg_lib.memorisation`.

The question: does a generator hand back (near-)copies of the real images it learnt from? Every generated
image is compared with every real TRAINING image (all classes) in two spaces, pixels (the shift- and
brightness-robust distance of :func:`medsg_lib.memorisation.pixel_nn`, at the evaluation size) and the
domain features (the project's X-ray classifier); real HELD-OUT images are compared the same way and are the
baseline of "new but similar". Per generated set:

- the nearest-training distances of the set against the held-out ones (a figure);
- the data-copying statistic C_T (Meehan et al. 2020): << 0 copying, ~0 fine, > 0 underfitting;
- authenticity (Alaa et al. 2022): the share of outputs farther from their nearest training image than that
  image is from its own nearest training neighbour;
- near copies: outputs closer to the training set than ``AuditConfig.percentile`` % of held-out images are
  (the threshold is calibrated on the held-out images; its false-alarm rate is measured by two-fold
  cross-validation on them);
- for image-to-image models (Med-StyleGAN2 translates real images): the share of outputs closer to their own
  source image than to any other real image (training images and the other source images), i.e. outputs that
  point back at one patient.

A planted control (exact, noisy, shifted and brightened copies of training images) goes through the same
audit: it is the proof that the audit can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from medsg_lib import memorisation as mem
from medsg_lib.config import DataConfig, PhantomConfig
from medsg_lib.data import build_dataset
from medsg_lib.data.transforms import normalize_u8
from medsg_lib.evaluate import plan_targets
from medsg_lib.files import write_text_atomic
from medsg_lib.heartbeat import Heartbeat
from medsg_lib.metrics.sources import generated_set, load_images
from medsg_lib.report import write_json, write_table

FeatureFn = Callable[[Tensor], Tensor]
CONTROL_MODEL = "planted copies (control)"
KEEP_CLOSEST = 8  # images kept per set for the figure of closest pairs (the rest are only distances)


@dataclass(frozen=True)
class AuditConfig:
    """How the audit measures.

    ``percentile``: the near-copy threshold is this percentile of the held-out images' nearest-training pixel
    distances. ``max_shift``: pixels of translation the pixel distance ignores. ``num_cells``,
    ``min_gen_per_cell``: C_T's k-means cells and the fewest generated points a cell needs to count.
    ``num_planted``: size of the planted control (0: none).
    """

    percentile: float = 1.0
    max_shift: int = 2
    num_cells: int = 10
    min_gen_per_cell: int = 20
    num_planted: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 50:
            raise ValueError(f"AuditConfig.percentile={self.percentile} must be in (0, 50)")
        if self.max_shift < 0 or self.num_cells < 1 or self.min_gen_per_cell < 2 or self.num_planted < 0:
            raise ValueError(
                "AuditConfig needs max_shift >= 0, num_cells >= 1, min_gen_per_cell >= 2, num_planted >= 0"
            )


@dataclass
class RealSide:
    """The real images of one split at the evaluation size, their features and their resolved paths."""

    images: Tensor  # (N, C, H, W) in [-1, 1]
    feats: np.ndarray  # (N, D)
    paths: list[str]


@dataclass
class Reference:
    """Everything computed once on the real side: training and held-out images, their distances."""

    train: RealSide
    heldout: RealSide
    train_loo_pixel: np.ndarray  # (Nt,) each training image to its nearest other training image
    train_loo_feat: np.ndarray
    heldout_pixel: np.ndarray  # (Nh,) each held-out image to its nearest training image
    heldout_feat: np.ndarray
    threshold: float  # near-copy threshold in the pixel distance
    false_alarm: float  # share of held-out images flagged when calibrated on the other half (2-fold)
    train_flat: np.ndarray  # (Nt, C*H*W) float32 standardised pixels, for C_T (computed once)
    heldout_flat: np.ndarray
    sources: RealSide | None = None  # the split image-to-image models translate (for re-identification)
    reid_pool: Tensor | None = None  # training images, then the sources: every candidate "other patient"


def features_of(images: Tensor, feature_fn: FeatureFn, batch_size: int = 64) -> np.ndarray:
    """(N, D) float64 features of images (N, C, H, W) in [-1, 1], in batches, without gradients."""
    with torch.no_grad():
        parts = [
            feature_fn(images[i : i + batch_size]).double().cpu() for i in range(0, len(images), batch_size)
        ]
    return torch.cat(parts).numpy()


def real_side(
    data_cfg: DataConfig, split: str, phantoms: PhantomConfig | None, feature_fn: FeatureFn
) -> RealSide:
    """All images of ``split`` (every class) at ``data_cfg.img_size``, with features and resolved paths."""
    dataset = build_dataset(data_cfg, split, phantoms, train=False, progress=False)
    images = normalize_u8(dataset.images)
    paths = [str(Path(r.image_path).resolve()) for r in dataset.records]
    return RealSide(images, features_of(images, feature_fn), paths)


def two_fold_false_alarm(heldout_dist: np.ndarray, percentile: float, seed: int) -> float:
    """Share of held-out images flagged by a threshold calibrated on the OTHER half (two folds, averaged): an
    honest false-alarm rate, where calibrating and testing on the same images would return ~percentile."""
    order = np.random.default_rng(seed).permutation(len(heldout_dist))
    halves = np.array_split(order, 2)
    rates = []
    for calib, test in (halves, halves[::-1]):
        threshold = mem.copy_threshold(heldout_dist[calib], percentile)
        rates.append(float(mem.flag_copies(heldout_dist[test], threshold).mean()))
    return float(np.mean(rates))


def build_reference(
    train: RealSide, heldout: RealSide, cfg: AuditConfig, sources: RealSide | None = None
) -> Reference:
    """Distances on the real side and the near-copy threshold (see :class:`Reference`)."""
    heldout_pixel, _ = mem.pixel_nn(heldout.images, train.images, cfg.max_shift)
    return Reference(
        train=train,
        heldout=heldout,
        train_loo_pixel=mem.pixel_nn(train.images, train.images, cfg.max_shift, exclude_self=True)[0],
        train_loo_feat=mem.feature_nn(train.feats, train.feats, exclude_self=True)[0],
        heldout_pixel=heldout_pixel,
        heldout_feat=mem.feature_nn(heldout.feats, train.feats)[0],
        threshold=mem.copy_threshold(heldout_pixel, cfg.percentile),
        false_alarm=two_fold_false_alarm(heldout_pixel, cfg.percentile, cfg.seed),
        train_flat=_flat(train.images),
        heldout_flat=_flat(heldout.images),
        sources=sources,
        reid_pool=None if sources is None else torch.cat([train.images, sources.images]),
    )


# ----------------------------------------------------------------------------------------------------------
# One generated set


@dataclass
class SetAudit:
    """The audit of one generated set: a table row and the per-image distances behind it."""

    row: dict[str, Any]
    closest: np.ndarray  # (k,) indices of the set's images closest to the training set, closest first
    closest_images: Tensor  # (k, C, H, W) in [-1, 1]: those images (the figure of closest pairs)
    pixel_dist: np.ndarray  # (n,) to the nearest training image
    pixel_index: np.ndarray  # (n,) which training image
    feat_dist: np.ndarray
    flagged: np.ndarray  # (n,) bool: near copies
    reid_ratio: np.ndarray | None = field(default=None)  # own source / nearest other real image
    kinds: list[str] | None = field(default=None)  # planted control: the kind of alteration of each copy


def data_copying_or_nan(gen: np.ndarray, train: np.ndarray, test: np.ndarray, cfg: AuditConfig) -> float:
    """C_T with as many cells as the set's size allows (``len(gen) // min_gen_per_cell``, at most
    ``num_cells``); NaN when the set is smaller than ``min_gen_per_cell``."""
    cells = min(cfg.num_cells, len(gen) // cfg.min_gen_per_cell)
    if cells < 1:
        return float("nan")
    try:
        return mem.data_copying(train, test, gen, cells, cfg.seed, cfg.min_gen_per_cell).c_t
    except ValueError:  # no cell holds enough generated points
        return float("nan")


def _flat(images: Tensor) -> np.ndarray:
    """(N, C*H*W) float32 standardised pixels (the space of C_T in pixels)."""
    return mem.standardise(images).reshape(len(images), -1).float().numpy()


def source_indices(source_images: tuple[str, ...] | None, sources: RealSide | None) -> np.ndarray | None:
    """Index of each output's source image among ``sources.paths``, or None when unknown (noise models,
    sources outside that split)."""
    if source_images is None or sources is None:
        return None
    where = {p: i for i, p in enumerate(sources.paths)}
    index = [where.get(str(Path(s).resolve())) for s in source_images]
    return None if any(i is None for i in index) else np.asarray(index, dtype=np.int64)


def audit_set(
    model: str,
    target_class: str,
    images: Tensor,
    ref: Reference,
    feature_fn: FeatureFn,
    cfg: AuditConfig,
    source_index: np.ndarray | None = None,
) -> SetAudit:
    """Audit generated ``images`` (n, C, H, W) in [-1, 1] against ``ref``; ``source_index``: each output's
    source among ``ref.sources`` (image-to-image models), for re-identification."""
    pixel_dist, pixel_index = mem.pixel_nn(images, ref.train.images, cfg.max_shift)
    feats = features_of(images, feature_fn)
    feat_dist, feat_index = mem.feature_nn(feats, ref.train.feats)
    flagged = mem.flag_copies(pixel_dist, ref.threshold)
    row: dict[str, Any] = {
        "model": model,
        "class": target_class,
        "n_generated": len(images),
        "median_nn_pixel": float(np.median(pixel_dist)),
        "median_nn_pixel_heldout": float(np.median(ref.heldout_pixel)),
        "ct_pixel": data_copying_or_nan(_flat(images), ref.train_flat, ref.heldout_flat, cfg),
        "ct_features": data_copying_or_nan(feats, ref.train.feats, ref.heldout.feats, cfg),
        "authenticity_pixel": mem.authenticity_from_distances(pixel_dist, pixel_index, ref.train_loo_pixel),
        "authenticity_features": mem.authenticity_from_distances(feat_dist, feat_index, ref.train_loo_feat),
        "near_copies": int(flagged.sum()),
        "near_copy_share": float(flagged.mean()),
        "reidentified_share": float("nan"),
        "median_own_over_other": float("nan"),
    }
    reid_ratio = None
    if source_index is not None and ref.sources is not None:
        own, other = mem.pixel_source_distances(
            images, ref.reid_pool, source_index + len(ref.train.images), cfg.max_shift
        )
        reid = mem.reidentification(own, other)
        row["reidentified_share"], reid_ratio = reid.share, reid.ratio
        row["median_own_over_other"] = float(np.median(reid.ratio))
    closest = np.argsort(pixel_dist, kind="stable")[:KEEP_CLOSEST]
    return SetAudit(
        row, closest, images[closest].clone(), pixel_dist, pixel_index, feat_dist, flagged, reid_ratio
    )


def _resized(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def audit_generated(
    generated_root: Path, ref: Reference, feature_fn: FeatureFn, cfg: AuditConfig, img_size: int
) -> list[SetAudit]:
    """:func:`audit_set` for every generated set of training seed 0 under ``generated_root`` (as notebook 04
    evaluates them), then the planted control (``cfg.num_planted`` copies of training images, if > 0)."""
    from tqdm.auto import tqdm

    audits = []
    heartbeat = Heartbeat("audit")
    targets = [t for t in plan_targets(generated_root) if t.train_seed == 0]
    for target in tqdm(targets, desc="audit", unit="set"):
        heartbeat.beat(f"{target.model} {target.target_class}", force=True)
        fakes = generated_set(target.fake_dir, target.target_class)
        images = _resized(load_images(fakes.files), img_size)
        index = source_indices(fakes.source_images, ref.sources)
        audits.append(audit_set(target.model, target.target_class, images, ref, feature_fn, cfg, index))
    if cfg.num_planted > 0:
        planted, kinds, _ = mem.plant_copies(ref.train.images, cfg.num_planted, cfg.seed)
        control = audit_set(CONTROL_MODEL, "all", planted, ref, feature_fn, cfg)
        control.kinds = list(kinds)
        audits.append(control)
    return audits


# ----------------------------------------------------------------------------------------------------------
# Tables


def audit_table(audits: list[SetAudit]) -> pd.DataFrame:
    """One row per audited set (the planted control last)."""
    return pd.DataFrame([a.row for a in audits])


def audit_summary(ref: Reference, audits: list[SetAudit], cfg: AuditConfig) -> dict[str, Any]:
    """The real side's numbers and the control's detection rate: what the table's rows are judged against."""
    control = [a for a in audits if a.row["model"] == CONTROL_MODEL]
    return {
        "n_train": len(ref.train.images),
        "n_heldout": len(ref.heldout.images),
        "percentile": cfg.percentile,
        "max_shift": cfg.max_shift,
        "threshold_pixel": ref.threshold,
        "heldout_false_alarm_2fold": ref.false_alarm,
        "median_nn_pixel_heldout": float(np.median(ref.heldout_pixel)),
        "median_nn_feature_heldout": float(np.median(ref.heldout_feat)),
        "control_detection": control[0].row["near_copy_share"] if control else None,
        "control_detection_by_kind": detection_by_kind(control[0]) if control else None,
    }


def detection_by_kind(control: SetAudit) -> dict[str, float]:
    """Share of the planted copies flagged, per kind of alteration (exact, noise, shift, brightness)."""
    kinds = np.asarray(control.kinds if control.kinds is not None else ["all"] * len(control.flagged))
    return {str(k): float(control.flagged[kinds == k].mean()) for k in dict.fromkeys(kinds.tolist())}


AUDIT_NOTES = """\
Columns. Distances to the nearest real TRAINING image (all classes): pixels = RMS difference of per-image
standardised images, minimised over shifts of up to max_shift px (so brightness/contrast changes and small
translations are free); features = Euclidean in the X-ray classifier's penultimate features. ct_*: data-copying
statistic C_T (Meehan et al. 2020; << 0 copying, ~0 fine, > 0 farther than held-out images; NaN: fewer generated
images than one cell needs). authenticity_*: share of outputs farther from their nearest training image than
that image is from its own nearest training neighbour (Alaa et al. 2022; 1 = none too close). near_copies:
outputs closer than the threshold (a low percentile of the held-out images' nearest-training distances).
reidentified_share: image-to-image models only: share of outputs closer to their own source image (a real
patient's image) than to any other real image (training or source); median_own_over_other < 1 means outputs
stay next to their source. The planted control (exact, noisy, shifted and brightened copies of training
images) must be flagged; it shows that the audit can fail.
"""


def write_audit(table: pd.DataFrame, summary: dict[str, Any], results_dir: Path) -> list[Path]:
    """``results_dir/memorisation.csv``, ``memorisation.md`` (table, the real side's numbers, notes) and
    ``memorisation.json`` (the summary)."""
    paths = write_table(table, Path(results_dir) / "memorisation", formats=("csv", "md"))
    md = next(p for p in paths if p.suffix == ".md")
    lines = "\n".join(f"- {k}: {_fmt(v)}" for k, v in summary.items())
    write_text_atomic(
        md, md.read_text(encoding="utf-8") + "\nReal side and calibration:\n\n" + lines + "\n\n" + AUDIT_NOTES
    )
    return [*paths, write_json(Path(results_dir) / "memorisation.json", summary)]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------------------
# Figure inputs


def distances_by_model(audits: list[SetAudit], labels: dict[str, str]) -> dict[str, np.ndarray]:
    """Nearest-training pixel distances of every generated image, pooled per model (display label)."""
    pooled: dict[str, list[np.ndarray]] = {}
    for a in audits:
        pooled.setdefault(labels.get(a.row["model"], a.row["model"]), []).append(a.pixel_dist)
    return {label: np.concatenate(d) for label, d in pooled.items()}


def closest_pairs(
    audits: list[SetAudit], ref: Reference, labels: dict[str, str], per_model: int = 6
) -> dict[str, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Per model (display label), its ``per_model`` generated images closest to the training set (at most
    :data:`KEEP_CLOSEST` per set are kept), each with its nearest training image and the distance."""
    pooled: dict[str, list[tuple[float, int, int]]] = {}
    for k, a in enumerate(audits):
        label = labels.get(a.row["model"], a.row["model"])
        pooled.setdefault(label, []).extend((float(a.pixel_dist[i]), k, j) for j, i in enumerate(a.closest))
    pairs = {}
    for label, entries in pooled.items():
        pairs[label] = [
            (
                audits[k].closest_images[j].numpy(),
                ref.train.images[audits[k].pixel_index[audits[k].closest[j]]].numpy(),
                d,
            )
            for d, k, j in sorted(entries)[:per_model]
        ]
    return pairs
