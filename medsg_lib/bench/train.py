"""Training-speed benchmark: the real training step of :mod:`medsg_lib.training` on synthetic in-memory data.

``bench_train(cfg, "cuda")`` needs no data on disk and writes nothing; it returns a JSON-able dict with the
speed, the model FLOPs of one iteration (:mod:`.flops`) and the achieved TFLOP/s. The CLI ``python -m
medsg_lib bench train`` appends it as one line to ``results/bench_train.jsonl``, from which
:func:`bench_table` builds the performance table (results/performance.md, quoted by docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch

from medsg_lib.bench.flops import count_flops, peak_tflops, utilisation
from medsg_lib.bench.measure import cpu_name, peak_rss_mb, synchronize
from medsg_lib.config import TrainConfig
from medsg_lib.data import SyntheticXrays
from medsg_lib.devices import DistInfo, configure_backend, resolve_amp, select_device
from medsg_lib.families.base import TrainState
from medsg_lib.models import count_parameters
from medsg_lib.profiles import get_profile
from medsg_lib.training import build_train_state, run_steps


def bench_train(
    cfg: TrainConfig,
    device: str,
    steps: int = 5,
    warmup: int = 2,
    num_threads: int | None = None,
    peak: str | None = None,
) -> dict[str, Any]:
    """Time ``steps`` training iterations of ``cfg`` on ``device`` after ``warmup`` untimed ones.

    Uses the trainer's own step (data loading from memory included), ``cfg.batch_size`` images per step.
    Memory: on CUDA ``peak_memory_mb`` is ``torch.cuda.max_memory_allocated`` over the timed steps (tensors
    only, not the caching allocator's reserve); on CPU/MPS it is the process's peak resident set size
    (``ru_maxrss``, the whole process including Python and torch, so only comparable within one machine).
    ``num_threads`` sets torch's CPU threads for the benchmark (restored after); on a CPU shared with other
    processes, 1 thread can be many times faster than 2 for small models (OpenMP threads wait on each other).
    FLOPs: one extra, untimed iteration of a separate eager state, counted with torch's FLOP formulas
    (:func:`medsg_lib.bench.flops.count_flops`; the model FLOPs do not depend on compilation or memory format); ``peak`` (TFLOP/s, a datasheet name or ``"measured"``, see
    :func:`medsg_lib.bench.flops.peak_tflops`; measured after the backend and threads are set) gives the
    model-FLOP utilisation.

    Returns:
        ``{"model", "img_size", "batch_size", "channels", "device", "amp", "channels_last", "compile",
        "steps", "warmup", "s_per_iter", "iters_per_s", "images_per_s", "tflops_per_iter",
        "achieved_tflops", "mfu", "peak_tflops", "peak_memory_mb", "memory_measure", "params": {net: count},
        "num_threads", "torch"}``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps!r} must be >= 1 and warmup={warmup!r} >= 0")
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _bench(cfg, device, steps, warmup, peak)
    finally:
        torch.set_num_threads(threads_before)


def bench_config(
    profile: str, model: str, img_size: int, batch_size: int, paper_widths: bool = False, **changes: Any
) -> TrainConfig:
    """The training config a benchmark times: ``profile``'s settings for ``model`` at ``img_size`` and
    ``batch_size``, the paper's widths when ``paper_widths`` (a family config's defaults are the paper's), then
    ``changes`` (e.g. ``amp``, ``channels_last``, ``compile``, ``channels``)."""
    cfg = replace(get_profile(profile).train_config(model), img_size=img_size, batch_size=batch_size)
    if paper_widths:
        cfg = replace(cfg, net=type(cfg.net)())
    return replace(cfg, **changes)


def bench_summary(result: dict[str, Any]) -> str:
    """One line of a :func:`bench_train` result: s/iteration, images/s, TFLOP per iteration, TFLOP/s, MFU."""
    peak = result["peak_tflops"]
    mfu = f", MFU {result['mfu']:.1%} of {peak:g}" if peak else " (MFU: pass --peak-tflops)"
    return (
        f"{result['s_per_iter']:.3g} s/iteration, {result['images_per_s']:.3g} images/s, "
        f"{result['tflops_per_iter']:.3g} TFLOP/iteration, {result['achieved_tflops']:.3g} TFLOP/s{mfu}"
    )


def _steps(cfg: TrainConfig, dev: torch.device, num: int) -> tuple[TrainState, Iterator[Any]]:
    """A fresh training state and an iterator over ``num`` of its steps on in-memory synthetic X-rays."""
    dataset = SyntheticXrays(cfg.img_size, cfg.channels, num_per_class=max(2, cfg.batch_size), seed=cfg.seed)
    state = build_train_state(cfg, dev)
    return state, run_steps(state, cfg, dataset, dataset.labels, num, dev, DistInfo())


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        return f"cpu: {cpu_name()}, {torch.get_num_threads()} threads"
    return str(dev)


def step_flops(cfg: TrainConfig, device: torch.device) -> int:
    """Model FLOPs of one training iteration of ``cfg`` (eager, first step of a fresh state)."""
    _, steps = _steps(replace(cfg, compile=False), device, 1)
    return count_flops(lambda: next(steps))


def _bench(cfg: TrainConfig, device: str, steps: int, warmup: int, peak_name: str | None) -> dict[str, Any]:
    dev = select_device(device)
    configure_backend(dev)
    cfg = replace(
        cfg,
        device=str(dev),
        num_workers=0,
        iterations=max(cfg.iterations, steps + warmup),
        amp=resolve_amp(cfg.amp, dev),
    )
    peak = peak_tflops(peak_name, dev, cfg.amp) if peak_name else None
    flops = step_flops(cfg, dev)
    state, step_iter = _steps(cfg, dev, warmup + steps)
    for _ in range(warmup):
        next(step_iter)
    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(step_iter)
    synchronize(dev)
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak_mb, measure = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
    else:
        peak_mb, measure = peak_rss_mb(), "process peak RSS (ru_maxrss)"
    return {
        "model": cfg.model,
        "img_size": cfg.img_size,
        "batch_size": cfg.batch_size,
        "channels": cfg.channels,
        "device": _device_name(dev),
        "amp": cfg.amp if dev.type in ("cuda", "cpu") else "off",
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "steps": steps,
        "warmup": warmup,
        "s_per_iter": seconds / steps,
        "iters_per_s": steps / seconds,
        "images_per_s": steps * cfg.batch_size / seconds,
        **utilisation(flops, seconds / steps, peak),
        "peak_tflops": peak,
        "peak_source": peak_name,
        "peak_memory_mb": peak_mb,
        "memory_measure": measure,
        "params": {name: count_parameters(net) for name, net in state.nets.items()},
        "num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# columns of the performance table: (header, record key, format)
TABLE_COLUMNS = (
    ("date", "date", "{}"),
    ("device", "device", "{}"),
    ("model", "model", "{}"),
    ("px", "img_size", "{}"),
    ("batch", "batch_size", "{}"),
    ("ch", "channels", "{}"),
    ("amp", "amp", "{}"),
    ("channels_last", "channels_last", "{}"),
    ("compile", "compile", "{}"),
    ("s/iter", "s_per_iter", "{:.3g}"),
    ("images/s", "images_per_s", "{:.3g}"),
    ("TFLOP/iter", "tflops_per_iter", "{:.3g}"),
    ("TFLOP/s", "achieved_tflops", "{:.3g}"),
    ("MFU", "mfu", "{:.1%}"),
    ("peak MB", "peak_memory_mb", "{:.0f}"),
    ("torch", "torch", "{}"),
)


def bench_table(records: list[dict[str, Any]]) -> str:
    """A markdown table of ``bench train`` records (one row each, in order; missing values as "-")."""

    def cell(record: dict[str, Any], key: str, fmt: str) -> str:
        value = record.get(key)
        return "-" if value is None else fmt.format(value)

    lines = [
        "| " + " | ".join(h for h, _, _ in TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(r, k, f) for _, k, f in TABLE_COLUMNS) + " |" for r in records]
    return "\n".join(lines) + "\n"
