"""Metric values as pure functions of features: Fréchet distance with its bootstrap interval, KID, PRDC, and
the paper's mean over source classes; each returns the fields of its record (provenance is added by
:class:`medsg_lib.metrics.records.Comparison`).

Paper protocol for image-to-image models: the authors' FID of class t is the mean over the source classes s of
FID(s -> t outputs, training images of t). :func:`distance_fields` gives that mean when the outputs' source
classes are usable (``aggregation: "mean over source classes"``, the pooled value in ``value_pooled``);
otherwise the value is pooled over all outputs (``aggregation: "pooled"``).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from medsg_lib.config import MetricsConfig
from medsg_lib.metrics.cache import FeatureSet
from medsg_lib.metrics.features import FeatureExtractor
from medsg_lib.metrics.fid import RunningStats, fid_bootstrap_ci, fid_from_stats
from medsg_lib.metrics.kid import kid, kid_subset_size
from medsg_lib.metrics.prdc_metric import prdc
from medsg_lib.metrics.records import STATUS_OK

PRDC_NEAREST_K = 5  # Naeem et al. 2020; clipped for tiny sets (prdc_nearest_k)
PRDC_MAX_SAMPLES = 5000  # per set: PRDC holds (n, n) distance matrices; larger sets are subsampled (seeded)
PRDC_NAMES: tuple[str, ...] = ("precision", "recall", "density", "coverage")


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
    if k < 1:
        fields["status"] = f"skipped: PRDC needs >= 3 images per set, got {len(real)} and {len(fake)}"
        return dict.fromkeys(PRDC_NAMES), fields
    return prdc(real, fake, k), fields


def usable_sources(sources: np.ndarray | None) -> bool:
    """True when there are several source classes, each with at least 2 outputs (a covariance needs 2)."""
    if sources is None:
        return False
    _, counts = np.unique(sources.astype(str), return_counts=True)
    return len(counts) > 1 and int(counts.min()) >= 2


def mean_over_sources(
    real: FeatureSet, fake: FeatureSet, sources: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The paper's per-class FID: the mean over source classes of FID(outputs from that source, real).

    ``sources``: (n_fake,) the source class of each row of ``fake.feats``."""
    per_source = {}
    for source in sorted(set(sources.tolist())):
        rows = fake.feats[sources == source]
        per_source[source] = fid_from_stats(real.stats, RunningStats.from_features(rows))
    return float(np.mean(list(per_source.values()))), per_source


def distance_fields(
    extractor: FeatureExtractor,
    real: FeatureSet,
    fake: FeatureSet,
    metrics_cfg: MetricsConfig,
    kid_metric: str,
    seed: int,
    budget_s: float,
    sources: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Fréchet distance record fields, KID record fields) of one extractor, in record order.

    The Fréchet value has a bootstrap interval (:func:`frechet_values`), or, with usable ``sources``
    (:func:`usable_sources`, the source class of each fake row), is the mean over source classes.
    """
    common = {
        "protocol": extractor.protocol,
        "feature_net": extractor.feature_net,
        "weights": extractor.weights,
        "n_real": real.n,
        "n_fake": fake.n,
        "feature_dim": int(real.feats.shape[1]),
    }
    if usable_sources(sources):
        mean, per_source = mean_over_sources(real, fake, sources)
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
        fd = frechet_values(real, fake, metrics_cfg.bootstrap, seed, budget_s)
        fd["aggregation"] = "pooled"
    kid_fields = kid_values(real.feats, fake.feats, metrics_cfg, seed)
    return {"metric": extractor.metric, **common, **fd}, {"metric": kid_metric, **common, **kid_fields}
