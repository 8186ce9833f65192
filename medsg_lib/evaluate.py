"""Evaluate sets of generated images against real images; every number becomes a JSON-lines record.

One path, :func:`evaluate_images`, runs the metrics of the registry (:mod:`medsg_lib.metrics.registry`, e.g.
``"inception"``, ``"domain"``, ``"lpips"``) on a reference set of real images and another set, under one
:class:`~medsg_lib.metrics.registry.EvalOptions`, appending each record to a JSON-lines file as soon as it is
computed. Two thin wrappers name the comparisons:

- :func:`evaluate_target`: the PNGs of ``target.fake_dir`` against the real images of ``target.target_class``
  (the TRAINING split, the paper's protocol; ``"all"``: every class, the paper's GAN/DCGAN rows), with LPIPS
  diversity. How LPIPS groups outputs and whether the paper's FID averages over source classes follow from
  the generation manifest (:class:`~medsg_lib.metrics.sources.GeneratedSet`), not from the model's name.
- :func:`real_vs_real_baseline`: the real TRAIN against the real TEST images of a class, under
  ``model = "real (train vs held-out)"`` (held-out: test, or val for class-folder sets): what a perfect generator would score at these sample sizes (no LPIPS).

Every record carries ``metric, protocol, feature_net, weights, class, model, checkpoint, n_real, n_fake,
seed, value, status`` and, where they exist, ``std``, ``ci_low``, ``ci_high``. Where the pieces live: image
sets in ``metrics.sources``, the real-feature cache in ``metrics.cache``, metric values in ``metrics.values``,
records in ``metrics.records``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medsg_lib.config import CLASS_NAMES, DataConfig, MetricsConfig, PhantomConfig
from medsg_lib.data import held_out_split
from medsg_lib.files import ALL_CLASSES, CONFIG_NAME, class_slug, project_relative, read_json
from medsg_lib.heartbeat import Heartbeat
from medsg_lib.metrics.records import Comparison
from medsg_lib.metrics.registry import EvalOptions, metric_plan, registry_name
from medsg_lib.metrics.sources import Images, RealImages, check_class, generated_set, real_images, subsample
from medsg_lib.seeds import check_one_code_version

REAL_BASELINE_MODEL = "real (train vs held-out)"
GENERATED_METRICS: tuple[str, ...] = (
    "inception",
    "domain",
    "frd",
    "lpips",
    "msssim",
)  # a generated set against real images
# real against real: LPIPS needs pretrained weights and has no literature floor; MS-SSIM of the held-out images
# is the floor of that column
REAL_METRICS: tuple[str, ...] = ("inception", "domain", "frd", "msssim")
# the share of the held-out images in each draw of the floor when there are several seeds (draws overlap)
HELDOUT_DRAW_FRACTION = 0.75


@dataclass(frozen=True)
class EvalTarget:
    """One set of generated images to evaluate.

    ``model``: provenance, the model family's name (an identifier, e.g. the training config's ``model``).
    ``target_class``: one of ``CLASS_NAMES``, or ``"all"`` (the whole generated set against the whole real set,
    the paper's GAN/DCGAN rows). ``fake_dir``: the folder of PNGs (e.g. ``generated/cpu/medsg/covid``; its
    parent holds the generation ``manifest.csv``). ``checkpoint``: path or hash, provenance.
    """

    model: str
    target_class: str
    fake_dir: Path
    checkpoint: str
    train_seed: int = 0  # the training seed of the run that made the images
    # the code version(s) that trained that run (medsg_lib.provenance.code_tag of each, "+"-joined)
    train_code: str = "unknown"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fake_dir", Path(self.fake_dir))
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if not isinstance(self.model, str) or not self.model.isidentifier():
            raise ValueError(
                f"EvalTarget.model={self.model!r} must be a non-empty identifier (a model family's name)"
            )
        check_class(self.target_class, "EvalTarget.target_class")


def evaluate_images(
    comparison: Comparison, real: RealImages, other: Images, options: EvalOptions, metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Compute the registered ``metrics`` (names or group names, :func:`~medsg_lib.metrics.registry.metric_plan`)
    comparing ``other`` with the reference ``real``, and append their records to ``comparison.records_path``
    (the one writer of metric records), each metric's as soon as its function returns. Returns them in order.

    Raises:
        ValueError: an unknown metric name (before anything is computed).
    """
    records: list[dict[str, Any]] = []
    for metric_fn, keep in metric_plan(metrics):
        for fields in metric_fn(real, other, options, comparison.seed):
            if registry_name(fields["metric"]) in keep:
                records.append(comparison.append(**fields))
    return records


def evaluate_target(
    target: EvalTarget,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    records_path: Path,
    *,
    phantoms: PhantomConfig | None = None,
    seed: int = 0,
    real_split: str = "train",
    **options: Any,
) -> list[dict[str, Any]]:
    """Evaluate ``target.fake_dir`` against the ``real_split`` images of ``target.target_class`` with the
    metrics :data:`GENERATED_METRICS`; append each record to ``records_path`` (created with its folder) as soon
    as it is computed and return them all, in order.

    ``data_cfg``, ``phantoms``: the real data set (read at ``data_cfg.img_size``, ``data_cfg.channels``).
    ``options``: the keyword fields of :class:`~medsg_lib.metrics.registry.EvalOptions` after ``metrics_cfg``
    (``feature_fn``, ``feature_name``, ``feature_weights``, ``cache_dir``, ``device``, ``download``,
    ``bootstrap_budget_s``), validated there.
    """
    eval_options = EvalOptions(metrics_cfg, **options)
    fakes = generated_set(target.fake_dir, target.target_class)
    real = real_images(data_cfg, real_split, target.target_class, phantoms, metrics_cfg.batch_size)
    comparison = Comparison(
        target.model,
        target.target_class,
        target.checkpoint,
        seed,
        Path(records_path),
        (
            ("fake_dir", project_relative(target.fake_dir)),
            ("real_split", real_split),
            ("train_seed", target.train_seed),
        ),
    )
    return evaluate_images(comparison, real, fakes, eval_options, GENERATED_METRICS)


def real_vs_real_baseline(
    target_class: str,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    records_path: Path,
    *,
    phantoms: PhantomConfig | None = None,
    seed: int = 0,
    draw: int | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """The floor of the distances: real TRAIN (as "real") against real HELD-OUT (as "fake"; ``test``, or ``val``
    for class-folder sets: :func:`medsg_lib.data.held_out_split`) images of
    ``target_class``, recorded with ``model = "real (train vs held-out)"``, ``checkpoint = "-"``.

    ``draw``: None compares every held-out image; an int compares the subset
    :func:`~medsg_lib.metrics.sources.subsample` draws with that seed (:data:`HELDOUT_DRAW_FRACTION` of the
    images), recorded as ``heldout_draw``: the floor's counterpart of a generator's training seeds.

    Computes what :func:`evaluate_target` computes except LPIPS (:data:`REAL_METRICS`), with the same
    ``options``. Both sides are cached. Note the sample sizes (``n_real``, ``n_fake`` in the records): Fréchet
    distances are biased upwards at small n, so compare a generator with the floor at similar sizes.
    """
    eval_options = EvalOptions(metrics_cfg, **options)
    held_out = held_out_split(data_cfg.layout)
    train = real_images(data_cfg, "train", target_class, phantoms, metrics_cfg.batch_size)
    test = real_images(data_cfg, held_out, target_class, phantoms, metrics_cfg.batch_size)
    extra: tuple[tuple[str, Any], ...] = (("real_split", "train"), ("fake_split", held_out))
    if draw is not None:
        test = subsample(test, HELDOUT_DRAW_FRACTION, draw)
        extra += (("heldout_draw", draw), ("heldout_subset", test.subset))
    comparison = Comparison(REAL_BASELINE_MODEL, target_class, "-", seed, Path(records_path), extra)
    return evaluate_images(comparison, train, test, eval_options, REAL_METRICS)


# ----------------------------------------------------------------------------------------------------------
# Every generated set of a profile (notebook 04)


def plan_targets(generated_root: Path) -> list[EvalTarget]:
    """One :class:`EvalTarget` per class folder holding PNGs in each generated set under ``generated_root``
    (folders written by :func:`medsg_lib.generate.generate`, each with a ``config.json``).

    A folder ``class_slug(c)`` of a set is evaluated as class ``c``; ``all`` (a model trained on every class)
    against the whole real set, as the paper's GAN and DCGAN rows. Sorted by run name, then class in the order
    ``(*CLASS_NAMES, "all")``. ``model`` and ``checkpoint`` (its sha256 when recorded) come from the config.
    """
    targets = []
    for run in sorted(p for p in Path(generated_root).iterdir() if (p / CONFIG_NAME).is_file()):
        info = read_json(run / CONFIG_NAME)
        checkpoint = info.get("checkpoint_sha256", info["checkpoint"])
        seed, code = int(info["train"].get("seed", 0)), "+".join(info.get("train_code", ["unknown"]))
        for name in (*CLASS_NAMES, ALL_CLASSES):
            fake_dir = run / class_slug(name)
            if any(fake_dir.glob("*.png")):
                targets.append(EvalTarget(info["train"]["model"], name, fake_dir, checkpoint, seed, code))
    return targets


def missing_seeds(targets: Sequence[EvalTarget], seeds: int) -> list[str]:
    """``"<model> <class>: seeds 1, 2"`` for every (model, class) of ``targets`` that lacks some of the training
    seeds ``0 .. seeds - 1`` (a multi-seed reproduce that did not finish)."""
    have: dict[tuple[str, str], set[int]] = {}
    for t in targets:
        have.setdefault((t.model, t.target_class), set()).add(t.train_seed)
    return [
        f"{model} {cls}: seed(s) {', '.join(map(str, sorted(set(range(seeds)) - found)))}"
        for (model, cls), found in have.items()
        if set(range(seeds)) - found
    ]


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
    seeds: int = 1,
) -> list[dict[str, Any]]:
    """Evaluate every set of :func:`plan_targets` and the real train-vs-test floor of each class; append all
    records to ``records_path`` (emptied first when ``fresh``) and return them.

    Raises ``ValueError`` (before evaluating anything) when the sets' runs were trained by more than one
    version of the code (:func:`medsg_lib.seeds.check_one_code_version`) or some set lacks one of the seeds
    (:func:`missing_seeds`).

    ``seeds``: the sets of training seeds ``0 .. seeds - 1`` (runs of other seeds are left out); with
    ``seeds`` > 1 the floor is measured as many times, on held-out draws (:func:`real_vs_real_baseline`'s
    ``draw``), with one seed on every held-out image."""
    from tqdm.auto import tqdm

    records_path = Path(records_path)
    if fresh:
        records_path.unlink(missing_ok=True)
    targets = [t for t in plan_targets(generated_root) if t.train_seed < seeds]
    if not targets:
        raise FileNotFoundError(
            f"no generated images under {generated_root}: run notebook 03 (generation) first"
        )
    check_one_code_version([(t.train_code, project_relative(t.fake_dir)) for t in targets])
    missing = missing_seeds(targets, seeds)
    if missing:
        raise ValueError(
            f"seeds={seeds} but some generated sets are missing: {'; '.join(missing)}. Train and generate them "
            f"(./run.sh reproduce --seeds {seeds} resumes what is there), or evaluate fewer seeds"
        )
    kwargs = dict(phantoms=phantoms, feature_fn=feature_fn, feature_weights=feature_weights, device=device)
    records: list[dict[str, Any]] = []
    heartbeat = Heartbeat("evaluate")
    draws: list[int | None] = [None] if seeds == 1 else list(range(seeds))
    total = len(targets) + len(CLASS_NAMES) * len(draws)
    for i, target in enumerate(tqdm(targets, desc="evaluate", unit="set", disable=not progress), 1):
        records += evaluate_target(target, data_cfg, metrics_cfg, records_path, **kwargs)
        heartbeat.beat(f"{i}/{total} sets ({target.model} {target.target_class})", force=True)
    floors = [(name, draw) for draw in draws for name in CLASS_NAMES]
    for i, (name, draw) in enumerate(floors, len(targets) + 1):
        records += real_vs_real_baseline(name, data_cfg, metrics_cfg, records_path, draw=draw, **kwargs)
        heartbeat.beat(f"{i}/{total} sets (real floor {name})", force=True)
    return records
