"""The one resumable trainer of every model family: ``train(cfg, data_cfg, run_dir)``.

The loop knows no model: it asks the family (:mod:`medsg_lib.families`) for the networks, each step's random
choices, the step itself and the sample grid, and does the rest the same way for all: the run directory
(:mod:`.rundir`), checkpoints every ``ckpt_every`` steps, logs, NaN stops and resume. Randomness: :mod:`.plan`.

Data parallelism (torchrun): ``cfg.batch_size`` is the GLOBAL batch, split evenly over ranks (it must be
divisible by the world size); every rank draws the global step plan and takes its share of it (so the ranks
together see what one process sees, :mod:`.plan`), gradients are averaged
by hand (:func:`medsg_lib.devices.all_reduce_grads`, which explains why not DDP) and BatchNorm buffers are
broadcast from rank 0 after each step. Every rank reads the same checkpoint; rank 0 alone writes the log,
samples and checkpoints; at each checkpoint all ranks compare fingerprints of their states and stop if they
have diverged (the fingerprints are stored in the checkpoint).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medsg_lib.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    latest_intact_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_aside,
)
from medsg_lib.config import DataConfig, PhantomConfig, TrainConfig
from medsg_lib.devices import (
    DDP_TIMEOUT_ENV,
    DistInfo,
    broadcast_state,
    configure_backend,
    ddp_timeout_s,
    init_distributed,
    resolve_amp,
)
from medsg_lib.families import family_of, resolve
from medsg_lib.families.base import ModelFamily, StepContext, TrainState
from medsg_lib.files import CONFIG_NAME, LOG_NAME, append_jsonl, folder_lock, read_json, write_json_atomic
from medsg_lib.heartbeat import Heartbeat
from medsg_lib.provenance import code_version
from medsg_lib.training.interrupt import TrainingInterrupted, deferred_interrupt
from medsg_lib.training.plan import StepPlans, check_dataset, make_loader, make_plan_fn
from medsg_lib.training.rundir import (
    LogWindow,
    check_resumable,
    clear_run,
    run_config,
    save_samples,
    truncate_log,
    with_code,
)
from medsg_lib.training.state import build_train_state, check_ranks_agree, checkpoint_state, restore_state


def run_steps(
    state: TrainState,
    cfg: TrainConfig,
    dataset: Dataset,
    labels: Tensor,
    stop: int,
    device: torch.device,
    info: DistInfo,
    family: ModelFamily | None = None,
) -> Iterator[dict[str, Tensor | float]]:
    """Train from ``state.step`` to ``stop``; yields each step's loss terms (detached tensors, see
    :meth:`ModelFamily.train_step`) once ``state.step`` is updated. ``family``: the resolved family of ``cfg``
    (the trainer resolves it once); None resolves ``cfg`` here."""
    if family is None:
        cfg = resolve(cfg)
        family = family_of(cfg)
    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"TrainConfig.batch_size={cfg.batch_size} (the global batch) must be divisible by the world size "
            f"{info.world_size}"
        )
    plans = StepPlans(make_plan_fn(cfg, labels, cfg.batch_size, info.rank, family, info.world_size))
    ctx = StepContext(device=device, info=info)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    loader = make_loader(dataset, plans, state.step, stop, cfg, device)
    for t, (x, y) in enumerate(loader, start=state.step + 1):
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        plan = plans.take(t).to(device)
        terms = family.train_step(state, family.to_batch(x, y, plan), cfg, ctx)
        state.step = t
        yield terms


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def _prepare_run_dir(run_dir: Path, config: dict[str, Any], resume: bool, info: DistInfo) -> None:
    """Check (every rank) and write (rank 0) ``config.json``; ``resume=False`` first clears the run. The file
    keeps the code version that started the run and lists any other that resumed it (:func:`with_code`)."""
    if resume:
        check_resumable(run_dir, config)
    _barrier(info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            clear_run(run_dir)
        path = run_dir / CONFIG_NAME
        previous = read_json(path) if path.is_file() else None
        new = with_code(config, previous, code_version())
        if new != previous:  # a finished run resumed by the same code is left untouched
            write_json_atomic(path, new)
    _barrier(info)


def _resume(state: TrainState, run_dir: Path, device: torch.device, info: DistInfo) -> None:
    """Continue from the newest checkpoint that loads; newer ones that do not (corrupt, truncated) are named in a
    warning and set aside as ``*.pt.corrupt`` once every rank has chosen."""
    if latest_checkpoint(run_dir) is None:
        return
    found = latest_intact_checkpoint(run_dir, map_location=device)
    if found is not None:
        restore_state(state, found[0])
    _barrier(info)
    if info.is_main:
        set_aside(run_dir, state.step)
        truncate_log(run_dir / LOG_NAME, state.step)


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    keys = [k for k in record if k.endswith("_total")] + ["images_per_s"]
    return {k.removesuffix("_total"): f"{record[k]:.3g}" for k in keys}


def train(
    cfg: TrainConfig,
    data_cfg: DataConfig,
    run_dir: Path,
    *,
    phantoms: PhantomConfig | None = None,
    dataset: Dataset | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train ``cfg.model`` on the train split of ``data_cfg`` (or on ``dataset``) into ``run_dir``; return it.

    Writes ``config.json``, ``log.jsonl``, ``samples/step_*.png`` and ``checkpoints/step_*.pt``
    (:mod:`.rundir`). With ``resume`` (default) it continues from the latest checkpoint of ``run_dir``,
    refusing a run dir whose config differs except in ``RESUMABLE_FIELDS``; ``resume=False`` starts over,
    deleting the run's previous checkpoints, log and samples. ``stop_at`` stops after that step, having
    written a checkpoint, as if the run was killed then (tests). Under torchrun, trains data-parallel.

    Raises:
        FloatingPointError: a loss term became NaN or infinite (the message names the step, the term, the
            run dir and the last good checkpoint).
        RankLostError: under torchrun, a collective failed because another rank died or hangs (after
            ``$MEDSG_DDP_TIMEOUT`` seconds, default 1800); the message names the last checkpoint.
        TrainingInterrupted: Ctrl-C (SIGINT) in a single-process run: the step in progress finished and was
            checkpointed (:mod:`.interrupt`); the message names the checkpoint.
        ValueError: config mismatch on resume; data that does not fit ``cfg``.
    """
    run_dir = Path(run_dir)
    cfg = resolve(cfg)
    family = family_of(cfg)  # resolved once, handed to everything below
    with init_distributed(cfg.device) as (info, device), ExitStack() as held:
        if info.is_main:  # one writer per run folder: a second train on it is refused, naming this process
            held.enter_context(folder_lock(run_dir, f"train {cfg.model}"))
        cfg = replace(cfg, amp=resolve_amp(cfg.amp, device))  # recorded as used ("auto" never is)
        config = run_config(cfg, data_cfg)
        configure_backend(device)
        _prepare_run_dir(run_dir, config, resume, info)
        if dataset is None:
            from medsg_lib.data import build_dataset

            dataset = build_dataset(
                data_cfg, "train", phantoms, train=True, progress=progress and info.is_main
            )
        labels = check_dataset(dataset, cfg)
        state = build_train_state(cfg, device, family)
        # Python's own generator is part of a checkpoint (restored on resume); seeded here so that a fresh run
        # writes the same checkpoint bytes every time (its state otherwise comes from the OS at start-up)
        random.seed(cfg.seed)
        if resume:
            _resume(state, run_dir, device, info)
        broadcast_state([*state.nets.values(), *state.ema.values()], info.world_size)
        stop = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
        try:
            _train_loop(family, state, cfg, dataset, labels, stop, run_dir, config, device, info, progress)
        except RuntimeError as err:
            if info.distributed and PEER_FAILURE.search(str(err)):
                raise RankLostError(_rank_lost_message(err, info, run_dir)) from err
            raise
    return run_dir


class RankLostError(RuntimeError):
    """A data-parallel collective failed because another rank died or hangs (the message says what to do)."""


# what gloo and NCCL say when a peer is gone or silent
PEER_FAILURE = re.compile(
    r"timed out|connection (closed|reset) by peer|broken pipe|communicator was aborted", re.I
)


def _rank_lost_message(err: RuntimeError, info: DistInfo, run_dir: Path) -> str:
    last = latest_checkpoint(run_dir)
    first_line = str(err).strip().splitlines()[0]
    return (
        f"rank {info.rank} of {info.world_size} stopped: a collective failed ({first_line}), so another rank died "
        f"or hangs (a rank waits {ddp_timeout_s():g} s, {DDP_TIMEOUT_ENV}). The last checkpoint is "
        f"{last if last is not None else 'none (no checkpoint yet)'}; run the same torchrun command again to "
        "resume from it"
    )


def _train_loop(
    family: ModelFamily,
    state: TrainState,
    cfg: TrainConfig,
    dataset: Dataset,
    labels: Tensor,
    stop: int,
    run_dir: Path,
    config: dict[str, Any],
    device: torch.device,
    info: DistInfo,
    progress: bool,
) -> None:
    """Steps ``state.step + 1 .. stop`` with logging, samples and checkpoints (rank 0 writes)."""
    if state.step >= stop:
        return
    inputs = family.sample_inputs(cfg, dataset, labels)
    window = LogWindow(cfg.batch_size)
    heartbeat = Heartbeat(f"train {run_dir.name}")
    bar = tqdm(
        total=cfg.iterations,
        initial=state.step,
        desc=f"train {cfg.model}",
        disable=not (progress and info.is_main),
    )
    with bar, deferred_interrupt(enabled=not info.distributed) as interrupted:
        for terms in run_steps(state, cfg, dataset, labels, stop, device, info, family):
            t = state.step
            window.add(t, terms)
            bar.update(1)
            is_log = t % cfg.log_every == 0 or t == cfg.iterations
            is_sample = t % cfg.sample_every == 0 or t == cfg.iterations
            is_ckpt = t % cfg.ckpt_every == 0 or t == stop or interrupted()
            if is_sample or is_ckpt:  # on every rank, so that the ranks stop together
                # the only host synchronisation between log lines: nothing is written after a NaN
                window.check_finite(run_dir)
            if is_log:
                record = window.flush(t, run_dir)
                bar.set_postfix(_postfix(record), refresh=False)
                terms_text = ", ".join(f"{k} {v}" for k, v in _postfix(record).items())
                heartbeat.beat(f"step {t}/{cfg.iterations}: {terms_text}", force=t == stop)
                if info.is_main:
                    append_jsonl(run_dir / LOG_NAME, record)
            if info.is_main and is_sample:
                save_samples(family, state, cfg, inputs, run_dir, device)
            if is_ckpt:
                fingerprints = check_ranks_agree(state, info) if info.distributed else None
                if info.is_main:
                    save_checkpoint(
                        checkpoint_path(run_dir, t), checkpoint_state(state, config, fingerprints)
                    )
                    prune_checkpoints(run_dir, cfg.keep_checkpoints)
                _barrier(info)
            if interrupted():
                raise TrainingInterrupted(
                    f"training stopped by Ctrl-C after step {t}: checkpoint {checkpoint_path(run_dir, t)} "
                    "written; run the same command to continue from it"
                )
