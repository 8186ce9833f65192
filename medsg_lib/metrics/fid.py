"""Fréchet distance, streaming feature statistics, bootstrap intervals and a cache of real-set statistics.

FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017), computed as pytorch-fid 0.3.0's
``calculate_frechet_distance`` does (scipy's ``sqrtm``; if the product is singular, 1e-6 is added to both
diagonals; a small imaginary part is dropped). Which network gives the features is the extractor's protocol
(``features.py``); the protocol and weights label must go into every record (``records.py``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from medsg_lib.files import write_atomic
from medsg_lib.metrics.features import FeatureExtractor, ImageSource, build_extractor, iter_features

STATS_KEY_FIELDS: tuple[str, ...] = ("dataset", "split", "class", "img_size", "protocol", "weights")


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); mu (D,), sigma (D, D).

    Same algorithm and eps handling as ``pytorch_fid.fid_score.calculate_frechet_distance``.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"covariances {sigma1.shape}, {sigma2.shape} do not match means of length {mu1.shape[0]}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: singular product of covariances; adding {eps} to their diagonals (as pytorch-fid does)",
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_terms(f_real: np.ndarray, f_fake: np.ndarray) -> dict[str, float]:
    """The Fréchet distance of two feature sets ``(N, D)`` split into its mean term ``|mu_r - mu_f|^2`` and the
    rest (the covariance term), with each set's covariance trace (its spread): is a set far because it is
    shifted or because it is too narrow / too wide?"""
    mu_r, mu_f = f_real.mean(axis=0), f_fake.mean(axis=0)
    cov_r, cov_f = np.cov(f_real, rowvar=False), np.cov(f_fake, rowvar=False)
    fd = frechet_distance(mu_r, cov_r, mu_f, cov_f)
    mean_term = float(((mu_r - mu_f) ** 2).sum())
    return {
        "fd": fd,
        "mean_term": mean_term,
        "cov_term": fd - mean_term,
        "trace_real": float(np.trace(np.atleast_2d(cov_r))),
        "trace_fake": float(np.trace(np.atleast_2d(cov_f))),
    }


class RunningStats:
    """Streaming mean and covariance of feature vectors in float64 (Chan et al.'s pairwise update).

    Memory is O(D^2) whatever the number of samples. ``keep`` asks for the features themselves too (for KID,
    PRDC or the bootstrap): 0 keeps none, None keeps all, k > 0 keeps a uniform random subset of k
    (reservoir sampling, seeded).
    """

    def __init__(self, keep: int | None = 0, seed: int = 0) -> None:
        if keep is not None and keep < 0:
            raise ValueError(f"keep={keep} must be >= 0 or None (all)")
        self.keep = keep
        self.n = 0
        self._mean: np.ndarray | None = None  # (D,)
        self._m2: np.ndarray | None = None  # (D, D) sum of outer products of deviations from the mean
        self._kept: list[np.ndarray] = []
        self._reservoir: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int:
        if self._mean is None:
            raise ValueError("RunningStats is empty: call update() first")
        return self._mean.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """(D,) float64."""
        if self._mean is None:
            raise ValueError("RunningStats is empty: call update() first")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """(D, D) float64, unbiased (divides by n - 1) like ``np.cov(rowvar=False)``."""
        if self._m2 is None or self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return self._m2 / (self.n - 1)

    @property
    def features(self) -> np.ndarray:
        """The kept features (k, D) float64, in arrival order when all are kept."""
        if self.keep == 0:
            raise ValueError("no features were kept; construct RunningStats(keep=None) or keep=k > 0")
        if self.keep is None:
            return np.concatenate(self._kept, axis=0) if self._kept else np.empty((0, 0))
        if self._reservoir is None:
            return np.empty((0, 0))
        return self._reservoir[: min(self.n, self.keep)].copy()

    def update(self, feats: np.ndarray) -> RunningStats:
        """Add a batch of features (B, D); returns self."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (B, D), got shape {x.shape}")
        if self._mean is not None and x.shape[1] != self.dim:
            raise ValueError(f"feature dimension changed from {self.dim} to {x.shape[1]}")
        nb = x.shape[0]
        if nb == 0:
            return self
        mean_b = x.mean(axis=0)
        dev = x - mean_b
        m2_b = dev.T @ dev
        if self._mean is None:
            self._mean, self._m2 = mean_b, m2_b
        else:
            n_new = self.n + nb
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (nb / n_new)
            self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.n * nb / n_new)
        self._keep(x)
        self.n += nb
        return self

    def _keep(self, x: np.ndarray) -> None:
        if self.keep is None:
            self._kept.append(x.copy())
        elif self.keep > 0:
            if self._reservoir is None:
                self._reservoir = np.empty((self.keep, x.shape[1]))
            for i, row in enumerate(x):  # algorithm R
                seen = self.n + i
                if seen < self.keep:
                    self._reservoir[seen] = row
                else:
                    j = self._rng.integers(0, seen + 1)
                    if j < self.keep:
                        self._reservoir[j] = row

    @classmethod
    def from_features(cls, feats: np.ndarray, keep: int | None = 0) -> RunningStats:
        """Statistics of all of ``feats`` (N, D) at once."""
        return cls(keep=keep).update(feats)

    @classmethod
    def from_moments(cls, mean: np.ndarray, cov: np.ndarray, n: int) -> RunningStats:
        """Statistics from a stored mean (D,), covariance (D, D) and count (further updates stay exact)."""
        stats = cls()
        stats._mean = np.asarray(mean, dtype=np.float64)
        stats._m2 = np.asarray(cov, dtype=np.float64) * (int(n) - 1)
        stats.n = int(n)
        return stats


def fid_from_stats(stats_real: RunningStats, stats_fake: RunningStats) -> float:
    """FID between two sets of statistics."""
    return frechet_distance(stats_real.mean, stats_real.cov, stats_fake.mean, stats_fake.cov)


def fid_from_features(f_real: np.ndarray, f_fake: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    return fid_from_stats(RunningStats.from_features(f_real), RunningStats.from_features(f_fake))


def fid_bootstrap_ci(
    f_real: np.ndarray, f_fake: np.ndarray, num_resamples: int = 200, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """(FID, lower, upper): FID of the full sets and its percentile bootstrap interval at level 1 - alpha.

    Each resample draws both sets with replacement (real and fake sampling both add variance). One resample
    costs one ``sqrtm`` of a D x D matrix: 20 to 80 s at D = 2048 on a busy 2-core CPU, so keep
    ``num_resamples`` small there.
    """
    if num_resamples < 1 or not 0 < alpha < 1:
        raise ValueError(f"need num_resamples >= 1 and 0 < alpha < 1, got {num_resamples}, {alpha}")
    rng = np.random.default_rng(seed)
    fid = fid_from_features(f_real, f_fake)
    values = []
    for _ in range(num_resamples):
        idx_r = rng.integers(0, len(f_real), len(f_real))
        idx_f = rng.integers(0, len(f_fake), len(f_fake))
        values.append(fid_from_features(f_real[idx_r], f_fake[idx_f]))
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return fid, float(lo), float(hi)


def extract_stats(
    extractor: FeatureExtractor,
    source: ImageSource,
    batch_size: int = 50,
    keep: int | None = 0,
    seed: int = 0,
) -> RunningStats:
    """Streaming statistics of the features of ``source`` (tensors or files); ``keep`` as RunningStats."""
    stats = RunningStats(keep=keep, seed=seed)
    for feats in iter_features(extractor, source, batch_size):
        stats.update(feats)
    if stats.n == 0:
        raise ValueError("the image source is empty")
    return stats


def compute_fid_folders(
    dir1: Path,
    dir2: Path,
    protocol: str = "pytorch-fid",
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    **extractor_kwargs: object,
) -> float:
    """FID between the image files under ``dir1`` and ``dir2``, read as pytorch-fid reads them.

    Unlike ``python -m pytorch_fid`` (top-level files only) the folders are searched recursively.
    ``extractor_kwargs`` go to :func:`build_extractor` (weights_path, img_size, dims, verify, ...).
    """
    extractor = build_extractor(protocol, device=device, **extractor_kwargs)  # type: ignore[arg-type]
    return fid_from_stats(
        extract_stats(extractor, Path(dir1), batch_size), extract_stats(extractor, Path(dir2), batch_size)
    )


def stats_cache_path(key: dict, cache_dir: Path) -> Path:
    """``cache_dir/stats-<hash>.npz`` for ``key``; the key must name every field of ``STATS_KEY_FIELDS``."""
    missing = [f for f in STATS_KEY_FIELDS if f not in key]
    if missing:
        raise ValueError(
            f"stats cache key is missing {', '.join(missing)} (required: {', '.join(STATS_KEY_FIELDS)})"
        )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"stats-{digest}.npz"


def cached_stats(key: dict, compute: Callable[[], RunningStats], cache_dir: Path) -> RunningStats:
    """Statistics of a real set, loaded from ``cache_dir`` or computed by ``compute()`` and saved there.

    The file ``stats-<hash of key>.npz`` holds mean, cov, n and the key as JSON (checked on load). Kept
    features are not cached: a cached RunningStats has ``keep=0``.
    """
    path = stats_cache_path(key, cache_dir)
    key_json = json.dumps(key, sort_keys=True, default=str)
    if path.is_file():
        with np.load(path) as data:
            if str(data["key"]) != key_json:
                raise ValueError(f"stats cache {path} holds key {data['key']}, expected {key_json}")
            return RunningStats.from_moments(data["mean"], data["cov"], int(data["n"]))
    stats = compute()
    write_atomic(path, lambda f: np.savez(f, mean=stats.mean, cov=stats.cov, n=stats.n, key=key_json))
    return stats
