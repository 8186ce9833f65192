"""The metric registry: each name maps to a function that compares two image sets and appends records.

Every metric function has one signature, ``(comparison, real, other, options) -> records``: ``comparison``
(:class:`~medsg_lib.metrics.records.Comparison`) names what is compared and where records go, ``real`` is the
reference (:class:`~medsg_lib.metrics.sources.RealImages`), ``other`` real images of another split or a
:class:`~medsg_lib.metrics.sources.GeneratedSet`, and ``options`` one :class:`EvalOptions`.

- ``"inception"``: for each protocol of ``MetricsConfig.fid_protocols`` ("pytorch-fid", "paper"): ``fid``
  (with a bootstrap interval, or, for the paper protocol and a generated set whose manifest names several source
  classes, the mean over source classes) and ``kid``; when the pretrained file is absent, one record per metric
  with ``value: None`` and ``status: "missing weights: <file name>"``.
- ``"domain"``: with ``options.feature_fn`` (e.g. the project's X-ray classifier): ``fd_<feature_name>``,
  ``kid_<feature_name>`` and PRDC (``precision``, ``recall``, ``density``, ``coverage``) in its feature space;
  no records without a feature network.
- ``"frd"``: the Fréchet Radiomic Distance (:mod:`medsg_lib.metrics.frd`; no pretrained weights), the real
  side's radiomic features cached in ``options.cache_dir``.
- ``"lpips"``: diversity of a generated set: within groups of outputs of one source image when its manifest
  gives every file a source image (StarGAN v2's protocol), else over random pairs.
- ``"msssim"``: MS-SSIM between outputs on the same pairs as ``"lpips"`` (:mod:`medsg_lib.metrics.msssim`;
  lower = more diverse); of real images, over random pairs (the floor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from medsg_lib.config import MetricsConfig
from medsg_lib.data.transforms import normalize_u8
from medsg_lib.manifest import lpips_groups
from medsg_lib.metrics import frd, lpips_div, msssim
from medsg_lib.metrics.cache import feature_label, image_features
from medsg_lib.metrics.features import build_extractor
from medsg_lib.metrics.records import Comparison
from medsg_lib.metrics.sources import GeneratedSet, Images, RealImages, load_images, source_class_array
from medsg_lib.metrics.values import distance_fields, prdc_values
from medsg_lib.metrics.weights import WEIGHTS, MissingWeightsError

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


def _missing_weights(weights_name: str) -> str:
    return f"missing: {WEIGHTS[weights_name].file_name}"


# ----------------------------------------------------------------------------------------------------------
# Inception protocols


def _missing_inception_records(
    comparison: Comparison, protocol: str, n_real: int, n_fake: int
) -> list[dict[str, Any]]:
    weights_name = FID_WEIGHTS[protocol]
    return [
        comparison.append(
            metric=metric,
            protocol=protocol,
            feature_net=FID_FEATURE_NETS[protocol],
            weights=_missing_weights(weights_name),
            n_real=n_real,
            n_fake=n_fake,
            value=None,
            status=missing_status(weights_name),
        )
        for metric in ("fid", "kid")
    ]


def _protocol_records(
    comparison: Comparison, protocol: str, real: RealImages, other: Images, options: EvalOptions
) -> list[dict[str, Any]]:
    """fid + kid records of one Inception protocol, or missing-weights records when its file is absent."""
    cfg = options.metrics_cfg
    try:
        extractor = build_extractor(
            protocol,
            device=options.device,
            allow_random_weights=cfg.allow_random_weights,
            img_size=real.img_size if protocol == "paper" else None,  # StarGAN v2 resizes to img_size first
            download=options.download,
            seed=comparison.seed,
        )
    except MissingWeightsError:
        return _missing_inception_records(comparison, protocol, len(real), len(other))
    real_set = image_features(extractor, real, options.cache_dir, cfg.batch_size)
    other_set = image_features(extractor, other, options.cache_dir, cfg.batch_size)
    sources = source_class_array(other) if protocol == "paper" else None
    fields = distance_fields(
        extractor, real_set, other_set, cfg, "kid", comparison.seed, options.bootstrap_budget_s, sources
    )
    return [comparison.append(**f) for f in fields]


def inception_records(
    comparison: Comparison, real: RealImages, other: Images, options: EvalOptions
) -> list[dict[str, Any]]:
    """fid + kid records for each protocol of ``options.metrics_cfg.fid_protocols``, in that order."""
    records = []
    for protocol in options.metrics_cfg.fid_protocols:
        records += _protocol_records(comparison, protocol, real, other, options)
    return records


# ----------------------------------------------------------------------------------------------------------
# Domain features


class _CallableModule(nn.Module):
    """Wraps a plain callable (B, C, H, W) -> (B, D) as a module (it must already live on the right device)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def domain_records(
    comparison: Comparison, real: RealImages, other: Images, options: EvalOptions
) -> list[dict[str, Any]]:
    """fd_<name>, kid_<name> and PRDC records in the feature space of ``options.feature_fn`` (none without)."""
    feature_fn, name = options.feature_fn, options.feature_name
    if feature_fn is None:
        return []
    module = feature_fn if isinstance(feature_fn, nn.Module) else _CallableModule(feature_fn)
    label = feature_label(feature_fn, name, options.feature_weights)
    extractor = build_extractor(
        "domain",
        device=options.device,
        feature_fn=module,
        name=name,
        channels=real.channels,
        img_size=real.img_size,
    )
    extractor = replace(extractor, weights=label or f"{name} (unidentified callable, not cached)")
    cache_dir = options.cache_dir if label is not None else None
    cfg = options.metrics_cfg
    real_set = image_features(extractor, real, cache_dir, cfg.batch_size)
    other_set = image_features(extractor, other, cache_dir, cfg.batch_size)
    fields = distance_fields(
        extractor, real_set, other_set, cfg, f"kid_{name}", comparison.seed, options.bootstrap_budget_s
    )
    records = [comparison.append(**f) for f in fields]
    values, prdc_fields = prdc_values(real_set.feats, other_set.feats, comparison.seed)
    for metric, value in values.items():
        records.append(
            comparison.append(
                metric=metric,
                protocol=extractor.protocol,
                feature_net=extractor.feature_net,
                weights=extractor.weights,
                value=value,
                **prdc_fields,
            )
        )
    return records


# ----------------------------------------------------------------------------------------------------------
# Fréchet Radiomic Distance


def frd_records(
    comparison: Comparison, real: RealImages, other: Images, options: EvalOptions
) -> list[dict[str, Any]]:
    """One ``frd`` record: FRD v1 of ``other`` against ``real`` (the real radiomic features cached); with
    ``MetricsConfig.frd_masks`` a second one inside lung masks (protocol ``FRD_PROTOCOL + FRD_MASKED_SUFFIX``)."""
    cfg = options.metrics_cfg
    records = [comparison.append(**frd.frd_fields(real, other, options.cache_dir, cfg.frd_workers))]
    if cfg.frd_masks:
        fields = frd.frd_fields(real, other, options.cache_dir, cfg.frd_workers, with_masks=True)
        records.append(comparison.append(**fields))
    return records


# ----------------------------------------------------------------------------------------------------------
# LPIPS diversity


def _group_tensors(groups: Iterator[list[Path]], counter: list[int]) -> Iterator[Tensor]:
    for paths in groups:
        counter[0] += len(paths)
        yield load_images(paths)


def lpips_protocol(images: GeneratedSet) -> str:
    """Groups of outputs of one source image when the manifest gives every file a source image, else random
    pairs of samples."""
    return lpips_div.LPIPS_GROUP_PROTOCOL if images.grouped_by_source else lpips_div.LPIPS_PAIRS_PROTOCOL


def _subset(n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of at most :data:`LPIPS_MAX_IMAGES` of ``n`` items: the images the
    diversity metrics draw random pairs among (generated files and real images alike)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, min(n, LPIPS_MAX_IMAGES), replace=False))


def _chosen_files(files: tuple[Path, ...], seed: int) -> list[Path]:
    """A seeded subset of at most :data:`LPIPS_MAX_IMAGES` files, in file order (random pairs are drawn there)."""
    return [files[i] for i in _subset(len(files), seed)]


def _lpips_value(model: lpips_div.LpipsModel, images: GeneratedSet, seed: int) -> dict[str, Any]:
    """LPIPS diversity within source groups (from the manifest) or over random pairs of a seeded subset of at
    most :data:`LPIPS_MAX_IMAGES` images."""
    if images.grouped_by_source:
        counter = [0]
        groups = lpips_groups(images.manifest_dir, images.target_class)
        value, num_groups = lpips_div.lpips_diversity(model, _group_tensors(groups, counter))
        return {
            "protocol": lpips_div.LPIPS_GROUP_PROTOCOL,
            "value": value,
            "num_groups": num_groups,
            "n_fake": counter[0],
        }
    chosen = _chosen_files(images.files, seed)
    value, num_pairs = lpips_div.lpips_pairs(model, load_images(chosen), LPIPS_NUM_PAIRS, seed, batch_size=50)
    return {
        "protocol": lpips_div.LPIPS_PAIRS_PROTOCOL,
        "value": value,
        "num_pairs": num_pairs,
        "n_fake": len(chosen),
    }


def lpips_records(
    comparison: Comparison, real: RealImages, other: Images, options: EvalOptions
) -> list[dict[str, Any]]:
    """One ``lpips`` diversity record of the generated set ``other`` (``real`` is not used)."""
    if not isinstance(other, GeneratedSet):
        raise ValueError("metric 'lpips' measures the diversity of a generated set; got real images")
    base = {"metric": "lpips", "n_real": 0}
    try:
        model = lpips_div.build_lpips(
            options.device,
            allow_random_weights=options.metrics_cfg.allow_random_weights,
            download=options.download,
            seed=comparison.seed,
        )
    except MissingWeightsError:
        return [
            comparison.append(
                **base,
                protocol=lpips_protocol(other),
                feature_net=LPIPS_FEATURE_NET,
                weights=_missing_weights("alexnet"),
                n_fake=len(other),
                value=None,
                status=missing_status("alexnet"),
            )
        ]
    fields = _lpips_value(model, other, comparison.seed)
    return [comparison.append(**base, feature_net=model.feature_net, weights=model.weights, **fields)]


# ----------------------------------------------------------------------------------------------------------
# MS-SSIM diversity


def _real_tensor(images: RealImages, seed: int) -> Tensor:
    """A seeded subset of at most :data:`LPIPS_MAX_IMAGES` real images as one (K, C, H, W) tensor in [-1, 1]
    (only the chosen images are converted)."""
    keep = torch.from_numpy(_subset(len(images), seed))
    return normalize_u8(images.images_u8[images.indices[keep]])


def msssim_records(
    comparison: Comparison, real: RealImages, other: Images, options: EvalOptions
) -> list[dict[str, Any]]:
    """One ``msssim`` record: MS-SSIM between outputs of ``other`` on LPIPS's pairs (within source groups for
    an image-to-image set, else random pairs); for real images ``other`` (the floor: how alike real images of
    a class are), random pairs. Lower = more diverse. The number of scales follows ``other``'s image size
    (recorded as ``img_size``, ``levels``, ``scale_weights``); ``real`` is only the comparison's reference."""
    size = other.img_size if isinstance(other, RealImages) else Image.open(other.files[0]).size[0]
    scales = msssim.msssim_protocol_fields(size)
    base = {
        "metric": "msssim",
        "feature_net": "none (pixels)",
        "weights": "none",
        "n_real": 0,
        "img_size": size,
        "levels": scales["levels"],
        "scale_weights": scales["weights"],
        "win_size": scales["win_size"],
    }
    if isinstance(other, GeneratedSet) and other.grouped_by_source:
        paths = list(lpips_groups(other.manifest_dir, other.target_class))
        fields = {"protocol": msssim.MSSSIM_GROUP_PROTOCOL, "num_groups": len(paths)}
        if not paths:
            status = "no source image has two outputs (generate with num_latents_per_source >= 2)"
            return [comparison.append(**base, **fields, n_fake=len(other), value=None, status=status)]
        counter = [0]
        value, _ = msssim.msssim_diversity(_group_tensors(iter(paths), counter))
        fields["n_fake"] = counter[0]
    else:
        if isinstance(other, GeneratedSet):
            x = load_images(_chosen_files(other.files, comparison.seed))
        else:
            x = _real_tensor(other, comparison.seed)
        value, num_pairs = msssim.msssim_pairs(x, LPIPS_NUM_PAIRS, comparison.seed)
        fields = {"protocol": msssim.MSSSIM_PAIRS_PROTOCOL, "num_pairs": num_pairs, "n_fake": len(x)}
    return [comparison.append(**base, **fields, value=value)]


# ----------------------------------------------------------------------------------------------------------
# Registry

MetricFn = Callable[[Comparison, RealImages, Images, EvalOptions], list[dict[str, Any]]]
METRICS: Mapping[str, MetricFn] = {
    "inception": inception_records,
    "domain": domain_records,
    "frd": frd_records,
    "lpips": lpips_records,
    "msssim": msssim_records,
}


def metric_functions(names: Sequence[str]) -> list[MetricFn]:
    """The functions of ``names`` (all looked up before any runs); an unknown name raises ValueError."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    return [METRICS[n] for n in names]
