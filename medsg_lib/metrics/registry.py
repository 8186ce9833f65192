"""The metric registry: every metric an evaluation can ask for, keyed by its name, and the function that
computes it.

Metrics that share one feature extraction are computed together, once (the feature network is the costly
part): ``fid`` and ``kid`` (Inception features, for each protocol of ``MetricsConfig.fid_protocols``:
"pytorch-fid", "paper"), ``fd_domain``, ``kid_domain`` and ``prdc`` (the domain features of
``options.feature_fn``, recorded as ``fd_<feature_name>``, ``kid_<feature_name>``, ``precision``, ``recall``,
``density``, ``coverage``), then ``frd``, ``lpips`` and ``msssim`` on their own. :func:`metric_plan` says which
function runs for a list of names and which of its records are kept; the group names ``"inception"`` and
``"domain"`` ask for all of a group's metrics.

Every function has one signature, ``(real, other, options, seed) -> list of record fields``: ``real`` is the
reference (:class:`~medsg_lib.metrics.sources.RealImages`), ``other`` real images of another split or a
:class:`~medsg_lib.metrics.sources.GeneratedSet`, ``options`` one :class:`EvalOptions` and ``seed`` the
evaluation's seed (subsets, pairs, bootstrap). Functions compute; they write nothing: the one writer of
records is :func:`medsg_lib.evaluate.evaluate_images`. When a pretrained file is absent, a metric gets one
record with ``value: None`` and ``status: "missing weights: <file name>"``; without a feature network the domain
metrics get none. FRD: :mod:`medsg_lib.metrics.frd`; LPIPS and MS-SSIM: :mod:`medsg_lib.metrics.diversity`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from medsg_lib.metrics import frd
from medsg_lib.metrics.cache import feature_label, image_features
from medsg_lib.metrics.diversity import lpips_records, msssim_records
from medsg_lib.metrics.features import build_extractor
from medsg_lib.metrics.options import (
    FID_FEATURE_NETS,
    FID_WEIGHTS,
    EvalOptions,
    missing_status,
    missing_weights_label,
)
from medsg_lib.metrics.sources import Images, RealImages, source_class_array
from medsg_lib.metrics.values import distance_fields, prdc_values
from medsg_lib.metrics.weights import MissingWeightsError

# ----------------------------------------------------------------------------------------------------------
# Inception protocols


def _missing_inception_records(protocol: str, n_real: int, n_fake: int) -> list[dict[str, Any]]:
    weights_name = FID_WEIGHTS[protocol]
    return [
        dict(
            metric=metric,
            protocol=protocol,
            feature_net=FID_FEATURE_NETS[protocol],
            weights=missing_weights_label(weights_name),
            n_real=n_real,
            n_fake=n_fake,
            value=None,
            status=missing_status(weights_name),
        )
        for metric in ("fid", "kid")
    ]


def _protocol_records(
    protocol: str, real: RealImages, other: Images, options: EvalOptions, seed: int
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
            seed=seed,
        )
    except MissingWeightsError:
        return _missing_inception_records(protocol, len(real), len(other))
    real_set = image_features(extractor, real, options.cache_dir, cfg.batch_size)
    other_set = image_features(extractor, other, options.cache_dir, cfg.batch_size)
    sources = source_class_array(other) if protocol == "paper" else None
    fields = distance_fields(
        extractor, real_set, other_set, cfg, "kid", seed, options.bootstrap_budget_s, sources
    )
    return list(fields)


def inception_records(
    real: RealImages, other: Images, options: EvalOptions, seed: int
) -> list[dict[str, Any]]:
    """fid + kid records for each protocol of ``options.metrics_cfg.fid_protocols``, in that order."""
    records = []
    for protocol in options.metrics_cfg.fid_protocols:
        records += _protocol_records(protocol, real, other, options, seed)
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


def domain_records(real: RealImages, other: Images, options: EvalOptions, seed: int) -> list[dict[str, Any]]:
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
        extractor, real_set, other_set, cfg, f"kid_{name}", seed, options.bootstrap_budget_s
    )
    records = list(fields)
    values, prdc_fields = prdc_values(real_set.feats, other_set.feats, seed)
    for metric, value in values.items():
        records.append(
            dict(
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


def frd_records(real: RealImages, other: Images, options: EvalOptions, seed: int) -> list[dict[str, Any]]:
    """One ``frd`` record: FRD v1 of ``other`` against ``real`` (the real radiomic features cached); with
    ``MetricsConfig.frd_masks`` a second one inside lung masks (protocol ``FRD_PROTOCOL + FRD_MASKED_SUFFIX``)."""
    cfg = options.metrics_cfg
    records = [dict(**frd.frd_fields(real, other, options.cache_dir, cfg.frd_workers))]
    if cfg.frd_masks:
        fields = frd.frd_fields(real, other, options.cache_dir, cfg.frd_workers, with_masks=True)
        records.append(dict(**fields))
    return records


# ----------------------------------------------------------------------------------------------------------
# Registry

MetricFn = Callable[[RealImages, Images, EvalOptions, int], list[dict[str, Any]]]
METRICS: Mapping[str, MetricFn] = {
    "fid": inception_records,
    "kid": inception_records,
    "fd_domain": domain_records,
    "kid_domain": domain_records,
    "prdc": domain_records,
    "frd": frd_records,
    "lpips": lpips_records,
    "msssim": msssim_records,
}
GROUPS: Mapping[str, tuple[str, ...]] = {
    "inception": ("fid", "kid"),
    "domain": ("fd_domain", "kid_domain", "prdc"),
}
PRDC_METRICS: tuple[str, ...] = ("precision", "recall", "density", "coverage")


def registry_name(record_metric: str) -> str:
    """The registry's name of a record's ``metric``: ``fd_<feature name>`` -> ``fd_domain``, ``kid_<feature
    name>`` -> ``kid_domain``, a PRDC component -> ``prdc``, any other unchanged."""
    if record_metric in PRDC_METRICS:
        return "prdc"
    if record_metric.startswith("fd_"):
        return "fd_domain"
    if record_metric.startswith("kid_"):
        return "kid_domain"
    return record_metric


def metric_plan(names: Sequence[str]) -> list[tuple[MetricFn, frozenset[str]]]:
    """The functions that compute the metrics ``names`` (group names expand), each once, in the order first
    asked for, with the registry names of the records to keep from it. An unknown name raises ValueError
    before anything runs."""
    wanted = [m for n in names for m in GROUPS.get(n, (n,))]
    unknown = [n for n in wanted if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join([*METRICS, *GROUPS])}")
    plan: dict[MetricFn, set[str]] = {}
    for name in wanted:
        plan.setdefault(METRICS[name], set()).add(name)
    return [(fn, frozenset(keep)) for fn, keep in plan.items()]
