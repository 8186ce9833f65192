"""Learning curves: the offline metrics (FRD, classifier FD, MS-SSIM) at the checkpoints of long runs.

Is a profile's iteration count converged, and which way would more training move its numbers? Each model family
is trained on the whole set for ``factor`` times its profile's iterations (:func:`curve_train_config`: runs
``runs/<...>/curves/<model>``, resumable bit-exactly like any run, with ``num_checkpoints`` evenly spaced
checkpoints); every checkpoint generates ``num_per_class`` images per class it can make, which are measured
against the training images as Table 1 measures them (:data:`CURVE_METRICS`), then deleted. A checkpoint's
records are appended together when all are computed (``curve``: the run, ``step``), so an interrupted
evaluation redoes only the checkpoint it was in.

:func:`plateau_step` reads a curve: the first checkpoint after which the metric never improves by more than a
tolerance (e.g. the seed-to-seed sd of that model's Table 1 cell).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from scipy.linalg import LinAlgWarning
from torch import Tensor

from medsg_lib.config import (
    CurveConfig,
    DataConfig,
    GenerateConfig,
    MetricsConfig,
    PhantomConfig,
    TrainConfig,
)
from medsg_lib.evaluate import evaluate_images
from medsg_lib.files import CHECKPOINT_DIR, append_jsonl, class_slug, file_sha256, read_jsonl
from medsg_lib.metrics.records import Comparison
from medsg_lib.metrics.registry import EvalOptions, metric_plan
from medsg_lib.metrics.sources import generated_set, real_images

if TYPE_CHECKING:
    from medsg_lib.profiles import Profile

CURVE_METRICS: tuple[str, ...] = ("domain", "frd", "msssim")  # what needs no download
CURVE_VALUES: tuple[str, ...] = ("frd", "fd_classifier", "msssim")  # the records plotted


def curve_families(profile: Profile, models: str = "") -> list[str]:
    """The families whose learning curves the profile draws: those its ``reproduce`` trains, in registry order;
    ``models`` (comma-separated names, e.g. ``"stylegan2"``) keeps only those, so that long runs can be spread
    over several sittings. An unknown name raises, naming the choices."""
    from medsg_lib.families import FAMILIES

    names = [name for name in FAMILIES if profile.reproduce_targets(name)]
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in names]
    if unknown:
        raise ValueError(f"models={models!r}: {', '.join(unknown)} not among the families this profile trains "
                         f"({', '.join(names)}); leave it empty for all")  # fmt: skip
    return [name for name in names if not wanted or name in wanted]


def curve_train_config(base: TrainConfig, cfg: CurveConfig) -> TrainConfig:
    """``base`` (a profile's run) trained ``cfg.factor`` times as long, checkpointed (and sampled)
    ``cfg.num_checkpoints`` times at even intervals."""
    iterations = base.iterations * cfg.factor
    every = max(1, iterations // cfg.num_checkpoints)
    return dataclasses.replace(
        base,
        iterations=iterations,
        ckpt_every=every,
        sample_every=every,
        log_every=min(base.log_every, every),
    )


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint of a run, by step."""
    found = [(int(p.stem.split("_")[1]), p) for p in (Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt")]
    return sorted(found)


def evaluated_steps(records_path: Path, curve: str) -> set[int]:
    """The checkpoints of run ``curve`` whose records are in ``records_path``."""
    if not Path(records_path).is_file():
        return set()
    return {int(r["step"]) for r in read_jsonl(records_path) if r.get("curve") == curve}


def evaluate_checkpoints(
    run_dir: Path,
    data_cfg: DataConfig,
    gen_cfg: GenerateConfig,
    metrics_cfg: MetricsConfig,
    records_path: Path,
    work_dir: Path,
    *,
    phantoms: PhantomConfig | None = None,
    feature_fn: Callable[[Tensor], Tensor] | None = None,
    feature_weights: str | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Records of :data:`CURVE_METRICS` for every checkpoint of ``run_dir`` not yet in ``records_path``: its
    images (``gen_cfg``) against the training images of each class it generates, with ``curve`` (the run's
    name) and ``step``. Images are written under ``work_dir`` and deleted after each checkpoint."""
    from medsg_lib.generate import generate
    from medsg_lib.training import run_train_config

    run_dir, records_path = Path(run_dir), Path(records_path)
    train_cfg = run_train_config(run_dir)
    run_data = dataclasses.replace(data_cfg, img_size=train_cfg.img_size, channels=train_cfg.channels)
    options = EvalOptions(metrics_cfg, feature_fn=feature_fn, feature_weights=feature_weights, device=device)
    metric_plan(CURVE_METRICS)  # unknown names fail before anything runs
    done = evaluated_steps(records_path, run_dir.name)
    records: list[dict[str, Any]] = []
    for step, ckpt in run_checkpoints(run_dir):
        if step in done:
            continue
        out = generate(ckpt, work_dir / f"{run_dir.name}-step{step}", gen_cfg, run_data, phantoms=phantoms,
                       device=device, progress=False)  # fmt: skip
        pending = work_dir / f"{run_dir.name}-step{step}.jsonl"
        pending.unlink(missing_ok=True)
        sha = file_sha256(ckpt)[:16]
        for cls in _generated_classes(out):
            fakes = generated_set(out / class_slug(cls), cls)
            real = real_images(run_data, "train", cls, phantoms, metrics_cfg.batch_size)
            extra = (("curve", run_dir.name), ("step", step), ("iterations", train_cfg.iterations))
            comparison = Comparison(train_cfg.model, cls, sha, 0, pending, extra)
            with warnings.catch_warnings():
                # fewer images than feature dimensions make the covariances singular, at every checkpoint alike
                # (the Frechet distances' known small-n bias, docs/metrics.md): nothing a reader can act on here
                warnings.simplefilter("ignore", LinAlgWarning)
                evaluate_images(comparison, real, fakes, options, CURVE_METRICS)
        step_records = read_jsonl(pending)
        append_jsonl(records_path, step_records)  # a checkpoint's records in one write
        records += step_records
        pending.unlink()
        shutil.rmtree(out)
    return records


def _generated_classes(out_dir: Path) -> list[str]:
    from medsg_lib.config import CLASS_NAMES
    from medsg_lib.files import ALL_CLASSES

    return [c for c in (*CLASS_NAMES, ALL_CLASSES) if any((out_dir / class_slug(c)).glob("*.png"))]


def curve_frame(records: Sequence[dict[str, Any]], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (curve, model, step, metric): the mean over the classes a checkpoint generated (a
    class-conditional model's three classes; a whole-set model's one set), with the label and ``n_classes``."""
    labels = labels or {}
    rows = [
        {
            "curve": r["curve"],
            "model": r["model"],
            "class": r["class"],
            "step": int(r["step"]),
            "metric": r["metric"],
            "value": r["value"],
        }  # fmt: skip
        for r in records
        if r.get("curve") and r["metric"] in CURVE_VALUES and r.get("value") is not None
    ]
    frame = pd.DataFrame(rows, columns=["curve", "model", "class", "step", "metric", "value"])
    grouped = frame.groupby(["curve", "model", "step", "metric"], sort=True)["value"]
    out = grouped.agg(value="mean", n_classes="count").reset_index()
    out.insert(1, "label", [labels.get(m, m) for m in out["model"]])
    return out


def plateau_step(steps: Sequence[int], values: Sequence[float], tolerance: float) -> int:
    """The first of ``steps`` after which no later value is lower by more than ``tolerance`` (lower is better):
    where more training stopped helping by more than that. The last step when the curve still improves at the
    end."""
    if len(steps) != len(values) or not steps:
        raise ValueError("plateau_step needs as many values as steps, at least one")
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance!r} must be >= 0")
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    s, v = [steps[i] for i in order], [float(values[i]) for i in order]
    for i in range(len(s)):
        if all(later >= v[i] - tolerance for later in v[i + 1 :]):
            return s[i]
    return s[-1]  # unreachable: the last step always qualifies


def run_learning_curves(
    train_configs: dict[str, TrainConfig],
    data_cfg: DataConfig,
    gen_cfg: GenerateConfig,
    metrics_cfg: MetricsConfig,
    runs_dir: Path,
    records_path: Path,
    *,
    phantoms: PhantomConfig | None = None,
    feature_fn: Callable[[Tensor], Tensor] | None = None,
    feature_weights: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train (or resume) each long run of ``train_configs`` (run name -> config, e.g. from
    :func:`curve_train_config`) in ``runs_dir/<name>``, then evaluate its checkpoints not yet measured
    (:func:`evaluate_checkpoints`, without bootstrap intervals). Returns the new records."""
    from medsg_lib.training import train

    metrics_cfg = dataclasses.replace(metrics_cfg, bootstrap=0)
    records: list[dict[str, Any]] = []
    for name, cfg in train_configs.items():
        run_data = dataclasses.replace(data_cfg, img_size=cfg.img_size, channels=cfg.channels)
        run_dir = train(cfg, run_data, Path(runs_dir) / name, phantoms=phantoms, progress=progress)
        records += evaluate_checkpoints(
            run_dir, data_cfg, gen_cfg, metrics_cfg, records_path, Path(runs_dir) / "work",
            phantoms=phantoms, feature_fn=feature_fn, feature_weights=feature_weights, device=device,
        )  # fmt: skip
    return records


def curve_classes(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Model -> the classes its learning-curve records measure (a whole-set run: ``["all"]``), sorted."""
    found: dict[str, set[str]] = {}
    for r in records:
        if r.get("curve"):
            found.setdefault(r["model"], set()).add(r["class"])
    return {model: sorted(classes) for model, classes in found.items()}


def seed_spreads(
    seed_values: pd.DataFrame, metric: str = "frd", classes: Mapping[str, Sequence[str]] | None = None
) -> dict[str, float]:
    """Model -> the seed-to-seed sd of ``metric`` (the sample sd over replicates of each class, averaged over
    the classes) from a Table 1 ``table1_seeds.csv`` frame (:func:`medsg_lib.table1.seed_values`). With
    ``classes`` (e.g. :func:`curve_classes`), a listed model's average covers only those classes: a whole-set
    curve's tolerance is the sd of the whole-set row, not of the per-class rows of the same family."""
    part = seed_values[(seed_values["metric"] == metric) & seed_values["value"].notna()]
    if classes:
        keep = [
            classes.get(m) is None or c in classes[m]
            for m, c in zip(part["model"], part["class"], strict=True)
        ]
        part = part[keep]
    sds = part.groupby(["model", "class"])["value"].std(ddof=1).dropna()
    return {model: float(v) for model, v in sds.groupby(level="model").mean().items()}


def plateau_table(frame: pd.DataFrame, tolerances: dict[str, float], metric: str = "frd") -> pd.DataFrame:
    """Per curve of ``frame`` (:func:`curve_frame`): the first and best value of ``metric``, the step of the
    best, and :func:`plateau_step` with the model's tolerance (its seed spread; NaN when unknown)."""
    rows = []
    for (curve, label, model), part in frame[frame["metric"] == metric].groupby(["curve", "label", "model"]):
        part = part.sort_values("step")
        tol = tolerances.get(model)
        plateau = None if tol is None else plateau_step(part["step"].tolist(), part["value"].tolist(), tol)
        best = part.loc[part["value"].idxmin()]
        rows.append(
            {
                "curve": curve, "label": label, "metric": metric, "first_step": int(part["step"].iloc[0]),
                "first": float(part["value"].iloc[0]), "best_step": int(best["step"]), "best": float(best["value"]),
                "last_step": int(part["step"].iloc[-1]), "last": float(part["value"].iloc[-1]),
                "tolerance": float("nan") if tol is None else tol, "plateau_step": plateau,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)
