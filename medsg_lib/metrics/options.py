"""How an evaluation computes its metrics: one :class:`EvalOptions` shared by every metric function of
:mod:`medsg_lib.metrics.registry`, and the fixed settings the metrics share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from medsg_lib.config import MetricsConfig
from medsg_lib.metrics.weights import WEIGHTS

FID_PROTOCOLS: tuple[str, ...] = ("pytorch-fid", "paper")
# protocol -> key of metrics.WEIGHTS (the file a missing-weights record names)
FID_WEIGHTS: dict[str, str] = {"pytorch-fid": "pt_inception", "paper": "inception_v3_tv"}
FID_FEATURE_NETS: dict[str, str] = {
    "pytorch-fid": "pytorch-fid InceptionV3 (TF-Inception port), 2048-d",
    "paper": "torchvision inception_v3 ImageNet, avgpool 2048-d (StarGAN v2)",
}
LPIPS_FEATURE_NET = "lpips LPIPS(net='alex', version='0.1')"
LPIPS_MAX_IMAGES = 500  # random pairs are drawn among a seeded subset of at most this many images
LPIPS_NUM_PAIRS = 1000
BOOTSTRAP_BUDGET_S = 600.0  # default time budget of one bootstrap interval (see bootstrap_skip_reason)


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation computes its metrics (shared by every metric function).

    Args:
        metrics_cfg: ``fid_protocols`` (each one of :data:`FID_PROTOCOLS`), ``batch_size``, ``kid_subsets``,
            ``kid_subset_size``, ``bootstrap``, ``allow_random_weights`` (tests only; records say UNVERIFIED).
        feature_fn: optional domain feature network (B, C, H, W) in [-1, 1] -> (B, D); a plain callable must
            already be on ``device`` (an ``nn.Module`` is moved there and put in eval mode, in place).
        feature_name: names the domain metrics ``fd_<name>``, ``kid_<name>`` and protocol ``domain:<name>``;
            an identifier.
        feature_weights: provenance of the feature network (e.g. the checkpoint's sha256), in records and the
            cache key.
        cache_dir: real-feature cache (``None``: no cache).
        device: where the networks run.
        download: passed to ``resolve_weights`` (None: try, offline failure means missing; False: never).
        bootstrap_budget_s: time budget of one bootstrap interval (``values.bootstrap_skip_reason``).
    """

    metrics_cfg: MetricsConfig
    feature_fn: Callable[[Tensor], Tensor] | None = None
    feature_name: str = "classifier"
    feature_weights: str | None = None
    cache_dir: Path | None = Path("cache/stats")
    device: str | torch.device = "cpu"
    download: bool | None = None
    bootstrap_budget_s: float = BOOTSTRAP_BUDGET_S

    def __post_init__(self) -> None:
        unknown = [p for p in self.metrics_cfg.fid_protocols if p not in FID_PROTOCOLS]
        if unknown:
            raise ValueError(
                f"MetricsConfig.fid_protocols has {unknown}; choose from {', '.join(FID_PROTOCOLS)} "
                "(domain features are passed as feature_fn)"
            )
        if self.feature_fn is not None and not self.feature_name.isidentifier():
            raise ValueError(
                f"feature_name={self.feature_name!r} must be an identifier (it names metrics fd_<name>)"
            )
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))


def missing_status(weights_name: str) -> str:
    """``"missing weights: <file name>"`` for a key of ``metrics.WEIGHTS``."""
    return f"missing weights: {WEIGHTS[weights_name].file_name}"


def missing_weights_label(weights_name: str) -> str:
    """``"missing: <file name>"``: a record's ``weights`` when the file is absent."""
    return f"missing: {WEIGHTS[weights_name].file_name}"
