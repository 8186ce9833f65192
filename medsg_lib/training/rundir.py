"""A training run's directory: its config, log, sample grids and summary (checkpoints: :mod:`medsg_lib.checkpoint`).

::

    config.json                  {"train": TrainConfig (model's own fields in "net"), "data": DataConfig}
    log.jsonl                    one line per ``log_every`` steps: step, every loss term (means over the
                                 window), images_per_s, seconds
    samples/step_{t:07d}.png     fixed-input sample grids every ``sample_every`` steps and at the end
    checkpoints/step_{t:07d}.pt  every ``ckpt_every`` steps and at the end

Steps are counted from 1; ``step_{t}`` is the state after ``t`` completed iterations.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.utils import save_image

from medsg_lib.checkpoint import latest_checkpoint
from medsg_lib.config import DataConfig, TrainConfig, to_jsonable
from medsg_lib.families import get_family, load_train_config
from medsg_lib.families.base import ModelFamily, SampleInputs, TrainState
from medsg_lib.files import (
    CHECKPOINT_DIR,
    CONFIG_NAME,
    LOG_NAME,
    SAMPLES_DIR,
    read_json,
    read_jsonl,
    write_text_atomic,
)
from medsg_lib.models import count_parameters
from medsg_lib.provenance import code_tag

# fields that may change when a run is resumed (they change how, not what, is computed; compile and
# channels_last: the rounding of later steps)
RESUMABLE_FIELDS: dict[str, frozenset[str]] = {
    "train": frozenset(
        {
            "iterations",
            "log_every",
            "sample_every",
            "ckpt_every",
            "keep_checkpoints",
            "num_workers",
            "device",
            "compile",
            "channels_last",
        }
    ),
    "data": frozenset({"cache_dir", "on_bad"}),
}


def run_config(cfg: TrainConfig, data_cfg: DataConfig) -> dict[str, Any]:
    """The contents of ``config.json``."""
    return {"train": to_jsonable(cfg), "data": to_jsonable(data_cfg)}


def with_code(
    config: dict[str, Any], previous: dict[str, Any] | None, code: dict[str, Any]
) -> dict[str, Any]:
    """``config`` with ``"code"`` (the version that started the run: ``previous``'s, else ``code``; "unknown"
    for a ``previous`` config without one) and ``"code_resumed"`` (every other version that opened it again, in
    order: a run trained by two versions of the library says so)."""
    # a run folder written before runs recorded their code: its start is of unknown code
    first = code if previous is None else previous.get("code") or {"source": None}
    previous = previous or {}
    resumed = list(previous.get("code_resumed", []))
    if code_tag(code) not in {code_tag(first), *map(code_tag, resumed)}:
        resumed.append(code)
    return {**config, "code": first, "code_resumed": resumed}


def run_code_tags(config: dict[str, Any]) -> tuple[str, ...]:
    """The code versions (:func:`~medsg_lib.provenance.code_tag`) that trained a run, from its ``config.json``."""
    return (code_tag(config.get("code")), *(code_tag(c) for c in config.get("code_resumed", [])))


def _flat(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"net": {"ngf": 8}}`` -> ``{"net.ngf": 8}`` (nested configs compared field by field)."""
    flat: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"stage.field: old -> new"`` for every field that differs, except :data:`RESUMABLE_FIELDS`."""
    diffs = []
    for stage in ("train", "data"):
        before, after = _flat(old.get(stage, {})), _flat(new.get(stage, {}))
        for name in sorted(set(before) | set(after)):
            if name not in RESUMABLE_FIELDS[stage] and before.get(name) != after.get(name):
                diffs.append(f"{stage}.{name}: {before.get(name)!r} -> {after.get(name)!r}")
    return diffs


def check_resumable(run_dir: Path, config: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``run_dir/config.json`` exists with a different config (naming the fields)."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return
    diffs = config_differences(read_json(path), config)
    if diffs:
        raise ValueError(
            f"cannot resume {run_dir}: its {CONFIG_NAME} differs from this run's config in "
            f"{'; '.join(diffs)}. Use a new run_dir, or resume=False to start over in this one "
            "(which deletes its checkpoints, log and samples)."
        )


def clear_run(run_dir: Path) -> None:
    """Delete what :func:`medsg_lib.training.train` wrote in ``run_dir`` (checkpoints, log, samples, config)."""
    patterns = [f"{CHECKPOINT_DIR}/step_*.pt", f"{SAMPLES_DIR}/step_*.png", LOG_NAME, CONFIG_NAME]
    for pattern in patterns:
        for path in run_dir.glob(pattern):
            path.unlink()


def truncate_log(log_path: Path, last_step: int) -> None:
    """Drop log lines of steps after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not log_path.is_file():
        return
    lines = log_path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= last_step]
    if len(kept) != len(lines):
        write_text_atomic(log_path, "".join(f"{line}\n" for line in kept))


class LogWindow:
    """The loss terms of the steps since the last log line, read from the device in one go.

    :meth:`add` keeps each step's terms as they come (detached 0-d tensors or floats), without a host
    synchronisation; :meth:`check_finite` reads every pending step with one ``tolist()`` and raises at the
    first non-finite term; :meth:`flush` returns the means over the window and the images per second.
    """

    def __init__(self, images_per_step: int) -> None:
        self.images_per_step = images_per_step
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.pending: list[tuple[int, dict[str, Tensor | float]]] = []
        self.t0 = time.perf_counter()

    def add(self, step: int, terms: dict[str, Tensor | float]) -> None:
        self.pending.append((step, terms))

    def check_finite(self, run_dir: Path) -> None:
        """Read the pending steps' terms (one device synchronisation), add them to the window's sums and raise
        ``FloatingPointError`` (:func:`check_finite`) at the first step with a non-finite term."""
        if not self.pending:
            return
        tensors = [v for _, terms in self.pending for v in terms.values() if isinstance(v, Tensor)]
        numbers = iter(torch.stack([v.float() for v in tensors]).tolist() if tensors else [])
        pending, self.pending = self.pending, []
        for step, terms in pending:
            values = {k: next(numbers) if isinstance(v, Tensor) else float(v) for k, v in terms.items()}
            check_finite(values, step, run_dir)
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count += 1

    def flush(self, step: int, run_dir: Path) -> dict[str, Any]:
        """The log record of the window ending at ``step`` (after :meth:`check_finite`); starts a new window."""
        self.check_finite(run_dir)
        seconds = time.perf_counter() - self.t0
        record = {"step": step, **{k: v / self.count for k, v in self.sums.items()}}
        record["images_per_s"] = self.images_per_step * self.count / max(seconds, 1e-9)
        record["seconds"] = seconds
        self._reset()
        return record


def check_finite(terms: dict[str, float], step: int, run_dir: Path) -> None:
    """Raise ``FloatingPointError`` naming the step, the first non-finite term and the last checkpoint."""
    for name, value in terms.items():
        if not math.isfinite(value):
            last = latest_checkpoint(run_dir)
            raise FloatingPointError(
                f"training diverged at step {step}: loss term {name!r} is {value} (run dir {run_dir}); "
                f"the last good checkpoint is {last if last is not None else 'none (no checkpoint yet)'}. "
                f"Running again {'resumes from it' if last is not None else 'starts at step 0'} and diverges "
                "again: change the run first, e.g. a lower learning rate or amp='off' (float32)"
            )


def save_samples(
    family: ModelFamily,
    state: TrainState,
    cfg: TrainConfig,
    inputs: SampleInputs,
    run_dir: Path,
    device: torch.device,
) -> Path:
    """Write ``run_dir/samples/step_{t:07d}.png`` (the family's sample grid) and return its path."""
    images, nrow = family.sample_grid(state, cfg, inputs, device)
    path = run_dir / SAMPLES_DIR / f"step_{state.step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1))
    return path


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/log.jsonl`` in order (empty list when the run has not logged yet)."""
    return read_jsonl(Path(run_dir) / LOG_NAME)


def latest_samples(run_dir: Path) -> Path | None:
    """The newest ``samples/step_*.png`` of ``run_dir`` (None when there is none)."""
    grids = sorted((Path(run_dir) / SAMPLES_DIR).glob("step_*.png"))
    return grids[-1] if grids else None


def run_train_config(run_dir: Path) -> TrainConfig:
    """The :class:`TrainConfig` a run directory was trained with (its ``config.json``)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a training run directory (train first)")
    return load_train_config(read_json(path)["train"])


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One row describing a finished run: model, class, size, precision, steps, parameters per net, logged training
    seconds, mean images/s and the last logged value of each total loss (for ``results/training_runs.csv``)."""
    run_dir = Path(run_dir)
    cfg = run_train_config(run_dir)
    log = read_log(run_dir)
    last = log[-1] if log else {}
    row: dict[str, Any] = {
        "run": run_dir.name,
        "model": cfg.model,
        "target_class": cfg.target_class,
        "img_size": cfg.img_size,
        "batch_size": cfg.batch_size,
        "amp": cfg.amp,
        "steps": last.get("step", 0),
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in log), 1),
        "images_per_s": round(sum(r.get("images_per_s", 0.0) for r in log) / max(len(log), 1), 2),
    }
    row.update({f"params_{k}": count_parameters(m) for k, m in get_family(cfg.model).build(cfg).items()})
    row.update({k: round(v, 4) for k, v in last.items() if k.endswith("_total")})
    return row
