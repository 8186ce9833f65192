"""Evaluate one set of generated images against real images; every number becomes a JSON-lines record.

``evaluate_target(target, data_cfg, metrics_cfg, records_path)`` compares the PNGs of ``target.fake_dir``
with the real images of ``target.target_class`` (the TRAINING split, the paper's protocol; ``"all"``: every
class, the paper's GAN/DCGAN rows) and appends to ``records_path`` (via ``metrics.append_record``):

- for each protocol of ``MetricsConfig.fid_protocols`` ("pytorch-fid", "paper"): ``fid`` (with a bootstrap
  interval, see :func:`bootstrap_skip_reason`) and ``kid`` (mean, std over subsets); when the pretrained file
  is absent, one record per metric with ``value: None`` and ``status: "missing weights: <file name>"``, and the
  evaluation goes on;
- with ``feature_fn`` (e.g. the project's X-ray classifier, no download needed): ``fd_<feature_name>``,
  ``kid_<feature_name>`` and PRDC (``precision``, ``recall``, ``density``, ``coverage``) in its feature space;
- ``lpips`` diversity: within groups of outputs of one source image (Med-StyleGAN2, from the generation
  manifest, StarGAN v2's protocol) or over random pairs (unconditional baselines).

``real_vs_real_baseline`` records the same distances between the real TRAIN and TEST images of a class, under
``model = "real (train vs test)"``: what a perfect generator would score at these sample sizes.

Paper protocol for Med-StyleGAN2: the authors' FID of class t is the mean over the two source classes s of
FID(s -> t outputs, training images of t). When the generation manifest names the source classes, the
``fid`` record of protocol "paper" holds that mean (``aggregation: "mean over source classes"``, the pooled
value in ``value_pooled``); every other Fréchet value is pooled over all outputs of the class.

Every record carries ``metric, protocol, feature_net, weights, class, model, checkpoint, n_real, n_fake,
seed, value, status`` and, where they exist, ``std``, ``ci_low``, ``ci_high``.

Caching and memory: images are streamed in batches; features are kept as (n, D) arrays (KID, PRDC and the
bootstrap need them). The real side's features are cached in ``cache_dir`` per (data set identity, split,
class, image size, channels, protocol, weights): moments through ``metrics.cached_stats``
(``stats-<hash>.npz``) and the features themselves, as float32, in ``features-<hash>.npz`` beside them. A
domain feature network is identified by ``feature_weights`` or, for an ``nn.Module``, by a hash of its
state dict; a plain callable without ``feature_weights`` is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from torch import Tensor, nn

from medsg_lib.config import CLASS_NAMES, DataConfig, MetricsConfig, PhantomConfig
from medsg_lib.data import build_dataset, cache_key
from medsg_lib.data.transforms import normalize_u8
from medsg_lib.generate import ALL_CLASSES, read_manifest
from medsg_lib.generate import lpips_groups as manifest_lpips_groups
from medsg_lib.metrics import (
    LPIPS_GROUP_PROTOCOL,
    LPIPS_PAIRS_PROTOCOL,
    WEIGHTS,
    FeatureExtractor,
    LpipsModel,
    MissingWeightsError,
    RunningStats,
    append_record,
    build_extractor,
    build_lpips,
    cached_stats,
    extract_stats,
    fid_bootstrap_ci,
    fid_from_stats,
    list_image_files,
    lpips_diversity,
    lpips_pairs,
    prdc,
)
from medsg_lib.metrics.features import load_image
from medsg_lib.metrics.fid import stats_cache_path
from medsg_lib.metrics.kid import kid, kid_subset_size

MODELS: tuple[str, ...] = ("medsg", "dcgan", "gan")
REAL_BASELINE_MODEL = "real (train vs test)"
FID_PROTOCOLS: tuple[str, ...] = ("pytorch-fid", "paper")
# protocol -> key of metrics.WEIGHTS (the file a missing-weights record names)
FID_WEIGHTS: dict[str, str] = {"pytorch-fid": "pt_inception", "paper": "inception_v3_tv"}
FID_FEATURE_NETS: dict[str, str] = {
    "pytorch-fid": "pytorch-fid InceptionV3 (TF-Inception port), 2048-d",
    "paper": "torchvision inception_v3 ImageNet, avgpool 2048-d (StarGAN v2)",
}
LPIPS_FEATURE_NET = "lpips LPIPS(net='alex', version='0.1')"
PRDC_NEAREST_K = 5  # Naeem et al. 2020; clipped for tiny sets (prdc_nearest_k)
PRDC_MAX_SAMPLES = 5000  # per set: PRDC holds (n, n) distance matrices; larger sets are subsampled (seeded)
LPIPS_MAX_IMAGES = 500  # baselines: random pairs are drawn among a seeded subset of at most this many images
LPIPS_NUM_PAIRS = 1000
BOOTSTRAP_BUDGET_S = 600.0  # default time budget of one bootstrap interval (see bootstrap_skip_reason)
STATUS_OK = "ok"


@dataclass(frozen=True)
class EvalTarget:
    """One set of generated images to evaluate.

    ``target_class``: one of ``CLASS_NAMES``, or ``"all"`` (the whole generated set against the whole real set,
    the paper's GAN/DCGAN rows). ``fake_dir``: the folder of PNGs (e.g. ``generated/cpu/medsg/covid``; for
    Med-StyleGAN2 its parent holds the generation ``manifest.csv``). ``checkpoint``: path or hash, provenance.
    """

    model: str  # "medsg" | "dcgan" | "gan"
    target_class: str
    fake_dir: Path
    checkpoint: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "fake_dir", Path(self.fake_dir))
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if self.model not in MODELS:
            raise ValueError(
                f"EvalTarget.model={self.model!r} is not allowed; choose one of {', '.join(MODELS)}"
            )
        _check_class(self.target_class, "EvalTarget.target_class")
        if self.model == "medsg" and self.target_class == ALL_CLASSES:
            raise ValueError(
                "EvalTarget.target_class='all' is for the baselines; Med-StyleGAN2 is evaluated per class"
            )


def _check_class(target_class: str, what: str) -> None:
    allowed = (*CLASS_NAMES, ALL_CLASSES)
    if target_class not in allowed:
        raise ValueError(
            f"{what}={target_class!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )


# ----------------------------------------------------------------------------------------------------------
# Image sources


class RealImages:
    """The real images of one split and class, iterable (again and again) as float32 batches (B, C, H, W) in
    [-1, 1].

    Holds a reference to the data set's uint8 images (the data module keeps a split in memory) and the indices
    of the class; each batch is converted when it is yielded. ``identity`` names the exact files (paths,
    sizes, modification times, image size, channels; :func:`medsg_lib.data.cache_key`) for caches.
    """

    def __init__(
        self,
        images_u8: Tensor,
        indices: Tensor,
        split: str,
        target_class: str,
        identity: str,
        batch_size: int,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be > 0")
        if indices.numel() == 0:
            raise ValueError(f"no real images of class {target_class!r} in split {split!r}")
        self.images_u8 = images_u8  # (N, C, H, W) uint8 in 0..255, the whole split
        self.indices = indices  # (n,) int64, the images of the class
        self.split = split
        self.target_class = target_class
        self.identity = identity
        self.batch_size = batch_size

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def img_size(self) -> int:
        return int(self.images_u8.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images_u8.shape[1])

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, len(self), self.batch_size):
            yield normalize_u8(self.images_u8[self.indices[start : start + self.batch_size]])


def real_images(
    data_cfg: DataConfig,
    split: str,
    target_class: str,
    phantoms: PhantomConfig | None = None,
    batch_size: int = 50,
) -> RealImages:
    """Real images of ``target_class`` (``"all"``: every class) in ``split`` of the set of ``data_cfg``.

    Read through ``build_dataset(..., train=False)`` (no augmentation; decoded once into the data cache), at
    ``data_cfg.img_size`` and ``data_cfg.channels``. Iterating the result yields (B, C, H, W) in [-1, 1].
    """
    _check_class(target_class, "target_class")
    dataset = build_dataset(data_cfg, split, phantoms, train=False, progress=False)
    if target_class == ALL_CLASSES:
        indices = torch.arange(len(dataset))
    else:
        indices = torch.nonzero(dataset.labels == CLASS_NAMES.index(target_class)).flatten()
    root = data_cfg.root if data_cfg.layout != "phantoms" or phantoms is None else phantoms.root
    files_key = cache_key(dataset.records, data_cfg.img_size, data_cfg.channels)
    identity = f"{data_cfg.layout}:{root}:{data_cfg.subset}:{files_key}"
    return RealImages(dataset.images, indices, split, target_class, identity, batch_size)


def load_images(paths: Sequence[Path]) -> Tensor:
    """Image files (all of one size) -> (K, C, H, W) float32 in [-1, 1], C = 1 (gray) or 3 (RGB)."""
    tensors = []
    for path in paths:
        img = load_image(Path(path))
        tensors.append(TF.to_tensor(img.convert("L" if img.mode == "L" else "RGB")) * 2 - 1)
    return torch.stack(tensors)


# ----------------------------------------------------------------------------------------------------------
# Features, with the real side cached


@dataclass
class FeatureSet:
    """Features of one image set under one extractor: moments over all n images and the features (n, D)."""

    stats: RunningStats
    feats: np.ndarray  # (n, D) float64

    @property
    def n(self) -> int:
        return self.stats.n


class _CallableModule(nn.Module):
    """Wraps a plain callable (B, C, H, W) -> (B, D) as a module (it must already live on the right device)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def module_fingerprint(module: nn.Module) -> str:
    """16 hex digits of sha256 over a module's state dict (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: 0-d buffers too
    return digest.hexdigest()[:16]


def feature_label(
    feature_fn: Callable[[Tensor], Tensor], feature_name: str, feature_weights: str | None
) -> str | None:
    """Provenance label of a domain feature network, or None when it cannot be identified (then not cached).

    ``feature_weights`` (e.g. the classifier checkpoint's sha256) wins; an ``nn.Module`` is identified by
    :func:`module_fingerprint`; any other callable is unidentified.
    """
    if feature_weights:
        return f"{feature_name} {feature_weights}"
    if isinstance(feature_fn, nn.Module):
        return f"{feature_name} state_dict sha256:{module_fingerprint(feature_fn)}"
    return None


def _features_path(key: dict, cache_dir: Path) -> Path:
    stats_path = stats_cache_path(key, cache_dir)
    return stats_path.with_name(stats_path.name.replace("stats-", "features-", 1))


def _load_features(path: Path, key_json: str) -> np.ndarray | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        if str(data["key"]) != key_json:
            raise ValueError(f"features cache {path} holds key {data['key']}, expected {key_json}; delete it")
        return data["feats"]


def _save_features(path: Path, key_json: str, feats: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, feats=feats, key=key_json)
    os.replace(tmp, path)


def real_stats_key(real: RealImages, extractor: FeatureExtractor) -> dict[str, Any]:
    """The cache key of the real features: every field of ``fid.STATS_KEY_FIELDS`` plus the channel count."""
    return {
        "dataset": real.identity,
        "split": real.split,
        "class": real.target_class,
        "img_size": real.img_size,
        "channels": real.channels,
        "protocol": extractor.protocol,
        "weights": extractor.weights,
    }


def real_features(
    extractor: FeatureExtractor, real: RealImages, cache_dir: Path | None, batch_size: int
) -> FeatureSet:
    """Features of ``real``, from ``cache_dir`` when there (no feature extraction), else extracted and cached.

    Writes ``cache_dir/stats-<hash>.npz`` (``cached_stats``) and ``cache_dir/features-<hash>.npz`` (float32
    features (n, D)); ``cache_dir=None`` caches nothing.
    """
    if cache_dir is None:
        stats = extract_stats(extractor, real, batch_size, keep=None)
        return FeatureSet(stats, stats.features.astype(np.float32).astype(np.float64))
    key = real_stats_key(real, extractor)
    key_json = json.dumps(key, sort_keys=True, default=str)
    path = _features_path(key, cache_dir)
    feats = _load_features(path, key_json)
    if feats is None:
        fresh = extract_stats(extractor, real, batch_size, keep=None)
        feats = fresh.features.astype(np.float32)
        _save_features(path, key_json, feats)
        stats = cached_stats(key, lambda: fresh, cache_dir)
    else:
        stats = cached_stats(key, lambda: RunningStats.from_features(feats.astype(np.float64)), cache_dir)
    if stats.n != len(feats):
        raise ValueError(
            f"stats cache has n={stats.n} but features cache {path} has {len(feats)}; delete both"
        )
    return FeatureSet(stats, feats.astype(np.float64))


def fake_features(extractor: FeatureExtractor, files: Sequence[Path], batch_size: int) -> FeatureSet:
    """Features of image files (never cached: generated sets change); rows follow ``files``."""
    stats = extract_stats(extractor, list(files), batch_size, keep=None)
    return FeatureSet(stats, stats.features)


# ----------------------------------------------------------------------------------------------------------
# Metric values (pure functions of features)


def bootstrap_skip_reason(
    n_real: int, n_fake: int, dim: int, num_resamples: int, seconds_per_fd: float, budget_s: float
) -> str | None:
    """Why no bootstrap interval is computed, or None to compute it.

    Rule: skip when ``num_resamples < 1``; when ``dim > min(n_real, n_fake)`` (singular covariances: the
    Fréchet distance is then dominated by its bias and its resamples by ``sqrtm`` noise); or when
    ``num_resamples * seconds_per_fd`` (the measured time of the full Fréchet distance, a lower bound of one
    resample's cost) exceeds ``budget_s``. On a 2-core CPU a 2048-d Inception FID takes 20 to 80 s, so its
    interval is skipped at 200 resamples; 512-d classifier features take well under a second.
    """
    if num_resamples < 1:
        return "no CI: MetricsConfig.bootstrap is 0"
    if dim > min(n_real, n_fake):
        return f"no CI: feature dim {dim} > min(n_real, n_fake) = {min(n_real, n_fake)}"
    estimate = num_resamples * seconds_per_fd
    if estimate > budget_s:
        return (
            f"no CI: {num_resamples} resamples would take >= {estimate:.0f} s ({seconds_per_fd:.2f} s each), "
            f"over the budget of {budget_s:.0f} s"
        )
    return None


def frechet_values(
    real: FeatureSet, fake: FeatureSet, num_resamples: int, seed: int, budget_s: float
) -> dict[str, Any]:
    """``{"value", "ci_low", "ci_high", "ci_note"}``: Fréchet distance of the full sets and, unless
    :func:`bootstrap_skip_reason` says otherwise, its 95% percentile bootstrap interval."""
    start = time.perf_counter()
    value = fid_from_stats(real.stats, fake.stats)
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {"value": value, "ci_low": None, "ci_high": None}
    reason = bootstrap_skip_reason(real.n, fake.n, real.feats.shape[1], num_resamples, elapsed, budget_s)
    if reason is None:
        try:
            with warnings.catch_warnings():  # resamples with repeated rows: singular covariances, eps added
                warnings.simplefilter("ignore")
                _, low, high = fid_bootstrap_ci(real.feats, fake.feats, num_resamples, seed)
            out.update(ci_low=low, ci_high=high, num_resamples=num_resamples)
        except ValueError as err:  # sqrtm with an imaginary part on a degenerate resample
            reason = f"no CI: bootstrap failed ({err})"
    out["ci_note"] = reason or f"95% percentile bootstrap, {num_resamples} resamples of both sets"
    return out


def kid_values(real: np.ndarray, fake: np.ndarray, metrics_cfg: MetricsConfig, seed: int) -> dict[str, Any]:
    """``{"value", "std", "kid_subsets", "kid_subset_size", "status"}``; the subset size is clipped to the
    smaller set, and KID needs at least 2 images per set."""
    m = kid_subset_size(len(real), len(fake), metrics_cfg.kid_subset_size)
    out: dict[str, Any] = {"kid_subsets": metrics_cfg.kid_subsets, "kid_subset_size": m}
    if m < 2:
        return {
            **out,
            "value": None,
            "std": None,
            "status": f"skipped: KID needs >= 2 images per set, got {m}",
        }
    mean, std = kid(real, fake, metrics_cfg.kid_subsets, m, seed)
    return {**out, "value": mean, "std": std, "status": STATUS_OK}


def _subsample(feats: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if len(feats) <= max_rows:
        return feats
    return feats[np.sort(rng.choice(len(feats), max_rows, replace=False))]


def prdc_nearest_k(n_real: int, n_fake: int) -> int:
    """``nearest_k`` actually used: :data:`PRDC_NEAREST_K`, clipped to ``min(n_real, n_fake) - 2`` (the prdc
    package's k-th neighbour search needs ``n >= k + 2`` points; record the value next to the metrics)."""
    return min(PRDC_NEAREST_K, min(n_real, n_fake) - 2)


def prdc_values(
    real: np.ndarray, fake: np.ndarray, seed: int
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """(``{"precision", "recall", "density", "coverage"}``, fields for the records: ``n_real``, ``n_fake``,
    ``nearest_k``, ``status``).

    At most :data:`PRDC_MAX_SAMPLES` per set (seeded subsample); ``nearest_k`` from :func:`prdc_nearest_k`;
    with fewer than 3 samples in a set the values are None and the status says why.
    """
    rng = np.random.default_rng(seed)
    real, fake = _subsample(real, PRDC_MAX_SAMPLES, rng), _subsample(fake, PRDC_MAX_SAMPLES, rng)
    k = prdc_nearest_k(len(real), len(fake))
    fields: dict[str, Any] = {"n_real": len(real), "n_fake": len(fake), "nearest_k": k, "status": STATUS_OK}
    names = ("precision", "recall", "density", "coverage")
    if k < 1:
        fields["status"] = f"skipped: PRDC needs >= 3 images per set, got {len(real)} and {len(fake)}"
        return dict.fromkeys(names), fields
    return prdc(real, fake, k), fields


def missing_status(weights_name: str) -> str:
    """``"missing weights: <file name>"`` for a key of ``metrics.WEIGHTS``."""
    return f"missing weights: {WEIGHTS[weights_name].file_name}"


# ----------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class _Comparison:
    """What is compared: the provenance fields every record of one evaluation shares."""

    model: str
    target_class: str
    checkpoint: str
    seed: int
    records_path: Path
    extra: tuple[tuple[str, Any], ...] = ()

    def append(self, **fields: Any) -> dict[str, Any]:
        record = {
            "class": self.target_class,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "seed": self.seed,
            "status": STATUS_OK,
            **dict(self.extra),
            **fields,
        }
        return append_record(self.records_path, record)


def _source_classes(fake_dir: Path, files: Sequence[Path]) -> np.ndarray | None:
    """Source class of each file from the generation manifest in ``fake_dir.parent``, or None."""
    out_dir = fake_dir.parent
    try:
        frame = read_manifest(out_dir)
    except FileNotFoundError:
        return None
    by_file = {
        str((out_dir / f).resolve()): s for f, s in zip(frame["file"], frame["source_class"], strict=True)
    }
    sources = [by_file.get(str(Path(p).resolve())) for p in files]
    if any(s is None or pd.isna(s) for s in sources):  # a file not in the manifest, or no source (baseline)
        return None
    return np.asarray(sources, dtype=object)


def _usable_sources(sources: np.ndarray | None) -> bool:
    """True when there are several source classes, each with at least 2 outputs (a covariance needs 2)."""
    if sources is None:
        return False
    _, counts = np.unique(sources.astype(str), return_counts=True)
    return len(counts) > 1 and int(counts.min()) >= 2


def _mean_over_sources(
    real: FeatureSet, fake: FeatureSet, sources: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The paper's per-class FID: the mean over source classes of FID(outputs from that source, real)."""
    per_source = {}
    for source in sorted(set(sources.tolist())):
        rows = fake.feats[sources == source]
        per_source[source] = fid_from_stats(real.stats, RunningStats.from_features(rows))
    return float(np.mean(list(per_source.values()))), per_source


def _distance_records(
    comparison: _Comparison,
    extractor: FeatureExtractor,
    real: FeatureSet,
    fake: FeatureSet,
    metrics_cfg: MetricsConfig,
    kid_metric: str,
    budget_s: float,
    sources: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Fréchet distance (+ CI) and KID records of one extractor; ``sources`` (paper protocol, Med-StyleGAN2)
    turns the Fréchet value into the mean over source classes."""
    common = {
        "protocol": extractor.protocol,
        "feature_net": extractor.feature_net,
        "weights": extractor.weights,
        "n_real": real.n,
        "n_fake": fake.n,
        "feature_dim": int(real.feats.shape[1]),
    }
    if _usable_sources(sources):
        mean, per_source = _mean_over_sources(real, fake, sources)
        fd = {
            "value": mean,
            "value_pooled": fid_from_stats(real.stats, fake.stats),
            "per_source": per_source,
            "aggregation": "mean over source classes",
            "ci_low": None,
            "ci_high": None,
            "ci_note": "no CI for the mean over source classes",
        }
    else:
        fd = frechet_values(real, fake, metrics_cfg.bootstrap, comparison.seed, budget_s)
        fd["aggregation"] = "pooled"
    kid_fields = kid_values(real.feats, fake.feats, metrics_cfg, comparison.seed)
    return [
        comparison.append(metric=extractor.metric, **common, **fd),
        comparison.append(metric=kid_metric, **common, **kid_fields),
    ]


def _missing_records(
    comparison: _Comparison, protocol: str, n_real: int, n_fake: int
) -> list[dict[str, Any]]:
    weights_name = FID_WEIGHTS[protocol]
    status = missing_status(weights_name)
    return [
        comparison.append(
            metric=metric,
            protocol=protocol,
            feature_net=FID_FEATURE_NETS[protocol],
            weights=f"missing: {WEIGHTS[weights_name].file_name}",
            n_real=n_real,
            n_fake=n_fake,
            value=None,
            status=status,
        )
        for metric in ("fid", "kid")
    ]


def _check_protocols(protocols: Sequence[str]) -> None:
    unknown = [p for p in protocols if p not in FID_PROTOCOLS]
    if unknown:
        raise ValueError(
            f"MetricsConfig.fid_protocols has {unknown}; choose from {', '.join(FID_PROTOCOLS)} "
            "(domain features are passed as feature_fn)"
        )


def _inception_records(
    comparison: _Comparison,
    protocol: str,
    real: RealImages,
    other: RealImages | Sequence[Path],
    metrics_cfg: MetricsConfig,
    options: dict[str, Any],
    sources: np.ndarray | None,
) -> list[dict[str, Any]]:
    """fid + kid records of one Inception protocol, or missing-weights records when its file is absent."""
    try:
        extractor = build_extractor(
            protocol,
            device=options["device"],
            allow_random_weights=metrics_cfg.allow_random_weights,
            img_size=real.img_size if protocol == "paper" else None,  # StarGAN v2 resizes to img_size first
            download=options["download"],
            seed=comparison.seed,
        )
    except MissingWeightsError:
        return _missing_records(comparison, protocol, len(real), len(other))
    real_set = real_features(extractor, real, options["cache_dir"], metrics_cfg.batch_size)
    other_set = _other_features(extractor, other, options["cache_dir"], metrics_cfg.batch_size)
    return _distance_records(
        comparison,
        extractor,
        real_set,
        other_set,
        metrics_cfg,
        "kid",
        options["budget_s"],
        sources if protocol == "paper" else None,
    )


def _other_features(
    extractor: FeatureExtractor, other: RealImages | Sequence[Path], cache_dir: Path | None, batch_size: int
) -> FeatureSet:
    if isinstance(other, RealImages):
        return real_features(extractor, other, cache_dir, batch_size)
    return fake_features(extractor, other, batch_size)


def _domain_records(
    comparison: _Comparison,
    real: RealImages,
    other: RealImages | Sequence[Path],
    metrics_cfg: MetricsConfig,
    options: dict[str, Any],
) -> list[dict[str, Any]]:
    """fd_<name>, kid_<name> and PRDC records in the feature space of ``options["feature_fn"]``."""
    feature_fn, name = options["feature_fn"], options["feature_name"]
    module = feature_fn if isinstance(feature_fn, nn.Module) else _CallableModule(feature_fn)
    label = feature_label(feature_fn, name, options["feature_weights"])
    extractor = build_extractor(
        "domain",
        device=options["device"],
        feature_fn=module,
        name=name,
        channels=real.channels,
        img_size=real.img_size,
    )
    extractor = replace(extractor, weights=label or f"{name} (unidentified callable, not cached)")
    cache_dir = options["cache_dir"] if label is not None else None
    real_set = real_features(extractor, real, cache_dir, metrics_cfg.batch_size)
    other_set = _other_features(extractor, other, cache_dir, metrics_cfg.batch_size)
    records = _distance_records(
        comparison, extractor, real_set, other_set, metrics_cfg, f"kid_{name}", options["budget_s"]
    )
    values, fields = prdc_values(real_set.feats, other_set.feats, comparison.seed)
    for metric, value in values.items():
        records.append(
            comparison.append(
                metric=metric,
                protocol=extractor.protocol,
                feature_net=extractor.feature_net,
                weights=extractor.weights,
                value=value,
                **fields,
            )
        )
    return records


def _group_tensors(groups: Iterator[list[Path]], counter: list[int]) -> Iterator[Tensor]:
    for paths in groups:
        counter[0] += len(paths)
        yield load_images(paths)


def _lpips_value(model: LpipsModel, target: EvalTarget, files: Sequence[Path], seed: int) -> dict[str, Any]:
    """LPIPS diversity: within source groups (Med-StyleGAN2, manifest in ``fake_dir.parent``) or over random
    pairs of a seeded subset of at most :data:`LPIPS_MAX_IMAGES` images (baselines)."""
    if target.model == "medsg":
        counter = [0]
        groups = manifest_lpips_groups(target.fake_dir.parent, target.target_class)
        value, num_groups = lpips_diversity(model, _group_tensors(groups, counter))
        return {
            "protocol": LPIPS_GROUP_PROTOCOL,
            "value": value,
            "num_groups": num_groups,
            "n_fake": counter[0],
        }
    rng = np.random.default_rng(seed)
    chosen = [
        files[i] for i in np.sort(rng.choice(len(files), min(len(files), LPIPS_MAX_IMAGES), replace=False))
    ]
    value, num_pairs = lpips_pairs(model, load_images(chosen), LPIPS_NUM_PAIRS, seed, batch_size=50)
    return {"protocol": LPIPS_PAIRS_PROTOCOL, "value": value, "num_pairs": num_pairs, "n_fake": len(chosen)}


def _lpips_records(
    comparison: _Comparison,
    target: EvalTarget,
    files: Sequence[Path],
    metrics_cfg: MetricsConfig,
    options: dict,
) -> list[dict[str, Any]]:
    base = {"metric": "lpips", "n_real": 0}
    protocol = LPIPS_GROUP_PROTOCOL if target.model == "medsg" else LPIPS_PAIRS_PROTOCOL
    try:
        model = build_lpips(
            options["device"],
            allow_random_weights=metrics_cfg.allow_random_weights,
            download=options["download"],
            seed=comparison.seed,
        )
    except MissingWeightsError:
        return [
            comparison.append(
                **base,
                protocol=protocol,
                feature_net=LPIPS_FEATURE_NET,
                weights=f"missing: {WEIGHTS['alexnet'].file_name}",
                n_fake=len(files),
                value=None,
                status=missing_status("alexnet"),
            )
        ]
    fields = _lpips_value(model, target, files, comparison.seed)
    return [comparison.append(**base, feature_net=model.feature_net, weights=model.weights, **fields)]


def _options(
    feature_fn: Callable[[Tensor], Tensor] | None,
    feature_name: str,
    feature_weights: str | None,
    cache_dir: Path | None,
    device: str | torch.device,
    download: bool | None,
    budget_s: float,
) -> dict[str, Any]:
    if feature_fn is not None and not feature_name.isidentifier():
        raise ValueError(f"feature_name={feature_name!r} must be an identifier (it names metrics fd_<name>)")
    return {
        "feature_fn": feature_fn,
        "feature_name": feature_name,
        "feature_weights": feature_weights,
        "cache_dir": None if cache_dir is None else Path(cache_dir),
        "device": device,
        "download": download,
        "budget_s": budget_s,
    }


def evaluate_target(
    target: EvalTarget,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    records_path: Path,
    *,
    phantoms: PhantomConfig | None = None,
    feature_fn: Callable[[Tensor], Tensor] | None = None,
    feature_name: str = "classifier",
    feature_weights: str | None = None,
    cache_dir: Path | None = Path("cache/stats"),
    device: str | torch.device = "cpu",
    seed: int = 0,
    real_split: str = "train",
    download: bool | None = None,
    bootstrap_budget_s: float = BOOTSTRAP_BUDGET_S,
) -> list[dict[str, Any]]:
    """Evaluate ``target.fake_dir`` against the ``real_split`` images of ``target.target_class``; append each
    record to ``records_path`` as soon as it is computed and return them all (see the module docstring).

    Args:
        target: the generated set.
        data_cfg, phantoms: the real data set (read at ``data_cfg.img_size``, ``data_cfg.channels``).
        metrics_cfg: ``fid_protocols``, ``batch_size``, ``kid_subsets``, ``kid_subset_size``, ``bootstrap``,
            ``allow_random_weights`` (tests only; records say UNVERIFIED).
        records_path: the JSON-lines file appended to (created with its folder).
        feature_fn: optional domain feature network (B, C, H, W) in [-1, 1] -> (B, D), e.g.
            ``functools.partial(classifier_features, model)``; a plain callable must already be on ``device``
            (an ``nn.Module`` is moved there and put in eval mode, in place).
        feature_name: names the domain metrics ``fd_<name>``, ``kid_<name>`` and protocol ``domain:<name>``.
        feature_weights: provenance of the feature network (e.g. the checkpoint's sha256), in records and the
            cache key.
        cache_dir: real-feature cache (``None``: no cache).
        download: passed to ``resolve_weights`` (None: try, offline failure means missing; False: never).
        bootstrap_budget_s: time budget of one bootstrap interval (:func:`bootstrap_skip_reason`).

    Returns:
        The records appended, in order.
    """
    _check_protocols(metrics_cfg.fid_protocols)
    options = _options(
        feature_fn, feature_name, feature_weights, cache_dir, device, download, bootstrap_budget_s
    )
    files = list_image_files(target.fake_dir)
    real = real_images(data_cfg, real_split, target.target_class, phantoms, metrics_cfg.batch_size)
    comparison = _Comparison(
        target.model,
        target.target_class,
        target.checkpoint,
        seed,
        Path(records_path),
        (("fake_dir", str(target.fake_dir)), ("real_split", real_split)),
    )
    sources = _source_classes(target.fake_dir, files) if target.model == "medsg" else None
    records = []
    for protocol in metrics_cfg.fid_protocols:
        records += _inception_records(comparison, protocol, real, files, metrics_cfg, options, sources)
    if feature_fn is not None:
        records += _domain_records(comparison, real, files, metrics_cfg, options)
    records += _lpips_records(comparison, target, files, metrics_cfg, options)
    return records


def real_vs_real_baseline(
    target_class: str,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    records_path: Path,
    *,
    phantoms: PhantomConfig | None = None,
    feature_fn: Callable[[Tensor], Tensor] | None = None,
    feature_name: str = "classifier",
    feature_weights: str | None = None,
    cache_dir: Path | None = Path("cache/stats"),
    device: str | torch.device = "cpu",
    seed: int = 0,
    download: bool | None = None,
    bootstrap_budget_s: float = BOOTSTRAP_BUDGET_S,
) -> list[dict[str, Any]]:
    """The floor of the distances: real TRAIN (as "real") against real TEST (as "fake") images of
    ``target_class``, recorded with ``model = "real (train vs test)"``, ``checkpoint = "-"``.

    Computes what :func:`evaluate_target` computes except LPIPS: the Inception protocols of
    ``metrics_cfg.fid_protocols`` (missing-weights records when absent) and, with ``feature_fn``, the domain
    FD, KID and PRDC. Both sides are cached. Note the sample sizes (``n_real``, ``n_fake`` in the records):
    Fréchet distances are biased upwards at small n, so compare a generator with the floor at similar sizes.
    """
    _check_protocols(metrics_cfg.fid_protocols)
    options = _options(
        feature_fn, feature_name, feature_weights, cache_dir, device, download, bootstrap_budget_s
    )
    train = real_images(data_cfg, "train", target_class, phantoms, metrics_cfg.batch_size)
    test = real_images(data_cfg, "test", target_class, phantoms, metrics_cfg.batch_size)
    comparison = _Comparison(
        REAL_BASELINE_MODEL,
        target_class,
        "-",
        seed,
        Path(records_path),
        (("real_split", "train"), ("fake_split", "test")),
    )
    records = []
    for protocol in metrics_cfg.fid_protocols:
        records += _inception_records(comparison, protocol, train, test, metrics_cfg, options, None)
    if feature_fn is not None:
        records += _domain_records(comparison, train, test, metrics_cfg, options)
    return records


# ----------------------------------------------------------------------------------------------------------
# Every generated set of a profile (notebook 04)


def plan_targets(generated_root: Path) -> list[EvalTarget]:
    """One :class:`EvalTarget` per generated set under ``generated_root`` (folders written by
    :func:`medsg_lib.generate.generate`, each with a ``config.json``): Med-StyleGAN2 per class, baselines
    trained on one class (``<model>_<slug>/<slug>``) and baselines trained on the whole set (``<model>/all``,
    compared with the whole real set, as the paper's GAN and DCGAN rows). Sorted by run name, then class."""
    from medsg_lib.config import CLASS_SLUGS

    targets = []
    for run in sorted(p for p in Path(generated_root).iterdir() if (p / "config.json").is_file()):
        info = json.loads((run / "config.json").read_text(encoding="utf-8"))
        model, trained_on = info["train"]["model"], info["train"]["target_class"]
        classes = CLASS_NAMES if model == "medsg" else (trained_on,)
        for name in classes:
            slug = "all" if name == "all" else CLASS_SLUGS[CLASS_NAMES.index(name)]
            if any((run / slug).glob("*.png")):
                targets.append(
                    EvalTarget(model, name, run / slug, info.get("checkpoint_sha256", info["checkpoint"]))
                )
    return targets


def domain_feature_fn(model: nn.Module, img_size: int) -> Callable[[Tensor], Tensor]:
    """Penultimate features of the project's classifier, every input resized (bilinear, anti-aliased) to the
    classifier's ``img_size`` first, so that sets of different sizes meet in one feature space."""
    from medsg_lib.models.classifier import classifier_features

    def features(x: Tensor) -> Tensor:  # (B, C, H, W) in [-1, 1] -> (B, 512)
        if x.shape[-1] != img_size or x.shape[-2] != img_size:
            x = torch.nn.functional.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True)
        return classifier_features(model, x)

    return features


def evaluate_generated(
    generated_root: Path,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    records_path: Path,
    *,
    phantoms: PhantomConfig | None = None,
    feature_fn: Callable[[Tensor], Tensor] | None = None,
    feature_weights: str | None = None,
    device: str = "cpu",
    fresh: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every set of :func:`plan_targets` and the real train-vs-test floor of each class; append all
    records to ``records_path`` (emptied first when ``fresh``) and return them."""
    from tqdm.auto import tqdm

    records_path = Path(records_path)
    if fresh:
        records_path.unlink(missing_ok=True)
    targets = plan_targets(generated_root)
    if not targets:
        raise FileNotFoundError(
            f"no generated images under {generated_root}: run notebook 03 (generation) first"
        )
    kwargs = dict(phantoms=phantoms, feature_fn=feature_fn, feature_weights=feature_weights, device=device)
    records: list[dict[str, Any]] = []
    for target in tqdm(targets, desc="evaluate", unit="set", disable=not progress):
        records += evaluate_target(target, data_cfg, metrics_cfg, records_path, **kwargs)
    for name in CLASS_NAMES:
        records += real_vs_real_baseline(name, data_cfg, metrics_cfg, records_path, **kwargs)
    return records
