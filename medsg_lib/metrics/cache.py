"""Features of image sets, with the real side cached on disk.

Features are kept as (n, D) arrays (KID, PRDC and the bootstrap need them) next to their moments. The real
side's features are cached in ``cache_dir`` per (data set identity, split, class, image size, channels,
protocol, weights) (:func:`real_stats_key`): moments through :func:`medsg_lib.metrics.fid.cached_stats`
(``stats-<hash>.npz``) and the features themselves, as float32, in ``features-<hash>.npz`` beside them. A
domain feature network is identified by its weights label or, for an ``nn.Module``, by a hash of its state
dict (:func:`feature_label`); a plain callable without a label is never cached. Generated sets are never
cached (they change).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medsg_lib.files import write_atomic
from medsg_lib.metrics.features import FeatureExtractor
from medsg_lib.metrics.fid import RunningStats, cached_stats, extract_stats, stats_cache_path
from medsg_lib.metrics.sources import Images, RealImages


@dataclass
class FeatureSet:
    """Features of one image set under one extractor: moments over all n images and the features (n, D)."""

    stats: RunningStats
    feats: np.ndarray  # (n, D) float64

    @property
    def n(self) -> int:
        return self.stats.n


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


def features_cache_path(key: dict[str, Any], cache_dir: Path) -> Path:
    """``cache_dir/features-<hash>.npz``: beside the moments' ``stats-<hash>.npz`` of the same key."""
    stats_path = stats_cache_path(key, cache_dir)
    return stats_path.with_name(stats_path.name.replace("stats-", "features-", 1))


def load_features(path: Path, key_json: str) -> np.ndarray | None:
    """The float32 features (n, D) cached at ``path``, or None when absent; a file of another key raises."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        if str(data["key"]) != key_json:
            raise ValueError(f"features cache {path} holds key {data['key']}, expected {key_json}; delete it")
        return data["feats"]


def save_features(path: Path, key_json: str, feats: np.ndarray) -> None:
    """Write ``feats`` (n, D) and the key (JSON) to ``path`` (``.npz``), atomically."""
    write_atomic(path, lambda f: np.savez(f, feats=feats, key=key_json))


def real_stats_key(real: RealImages, extractor: FeatureExtractor) -> dict[str, Any]:
    """The cache key of the real features: every field of ``fid.STATS_KEY_FIELDS`` plus the channel count (and
    the subset's name for a subset of the class)."""
    key = {
        "dataset": real.identity,
        "split": real.split,
        "class": real.target_class,
        "img_size": real.img_size,
        "channels": real.channels,
        "protocol": extractor.protocol,
        "weights": extractor.weights,
    }
    return {**key, "subset": real.subset} if real.subset else key


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
    path = features_cache_path(key, cache_dir)
    feats = load_features(path, key_json)
    if feats is None:
        fresh = extract_stats(extractor, real, batch_size, keep=None)
        feats = fresh.features.astype(np.float32)
        save_features(path, key_json, feats)
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


def image_features(
    extractor: FeatureExtractor, images: Images, cache_dir: Path | None, batch_size: int
) -> FeatureSet:
    """Features of either kind of set: real images through the cache, generated files never cached."""
    if isinstance(images, RealImages):
        return real_features(extractor, images, cache_dir, batch_size)
    return fake_features(extractor, images.files, batch_size)
