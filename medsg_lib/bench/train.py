"""Training-speed benchmark: the real training step of :mod:`medsg_lib.training` on synthetic in-memory data.

``bench_train(cfg, "cuda")`` needs no data on disk and writes nothing; it returns a JSON-able dict (the CLI
``python -m medsg_lib bench train`` prints it or appends it to a JSONL record).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from medsg_lib.bench.measure import peak_rss_mb, synchronize
from medsg_lib.config import TrainConfig
from medsg_lib.data import SyntheticXrays
from medsg_lib.devices import DistInfo, configure_backend, select_device
from medsg_lib.models import count_parameters
from medsg_lib.training import build_train_state, run_steps


def bench_train(
    cfg: TrainConfig, device: str, steps: int = 5, warmup: int = 2, num_threads: int | None = None
) -> dict[str, Any]:
    """Time ``steps`` training iterations of ``cfg`` on ``device`` after ``warmup`` untimed ones.

    Uses the trainer's own step (data loading from memory included), ``cfg.batch_size`` images per step.
    Memory: on CUDA ``peak_memory_mb`` is ``torch.cuda.max_memory_allocated`` over the timed steps (tensors
    only, not the caching allocator's reserve); on CPU/MPS it is the process's peak resident set size
    (``ru_maxrss``, the whole process including Python and torch, so only comparable within one machine).
    ``num_threads`` sets torch's CPU threads for the benchmark (restored after); on a CPU shared with other
    processes, 1 thread can be many times faster than 2 for small models (OpenMP threads wait on each other).

    Returns:
        ``{"model", "img_size", "batch_size", "device", "amp", "steps", "warmup", "s_per_iter", "iters_per_s",
        "images_per_s", "peak_memory_mb", "memory_measure", "params": {net: count}, "num_threads", "torch"}``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps!r} must be >= 1 and warmup={warmup!r} >= 0")
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _bench(cfg, device, steps, warmup)
    finally:
        torch.set_num_threads(threads_before)


def _bench(cfg: TrainConfig, device: str, steps: int, warmup: int) -> dict[str, Any]:
    dev = select_device(device)
    configure_backend(dev)
    cfg = replace(cfg, device=str(dev), num_workers=0, iterations=max(cfg.iterations, steps + warmup))
    dataset = SyntheticXrays(cfg.img_size, cfg.channels, num_per_class=max(2, cfg.batch_size), seed=cfg.seed)
    state = build_train_state(cfg, dev)
    step_iter = run_steps(state, cfg, dataset, dataset.labels, warmup + steps, dev, DistInfo())
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
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "amp": cfg.amp if dev.type == "cuda" else "off",
        "steps": steps,
        "warmup": warmup,
        "s_per_iter": seconds / steps,
        "iters_per_s": steps / seconds,
        "images_per_s": steps * cfg.batch_size / seconds,
        "peak_memory_mb": peak_mb,
        "memory_measure": measure,
        "params": {name: count_parameters(net) for name, net in state.nets.items()},
        "num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
