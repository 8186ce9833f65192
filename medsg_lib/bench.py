"""Training-speed benchmark: the real training step of :mod:`medsg_lib.training` on synthetic in-memory data.

``bench_train(cfg, "cuda")`` needs no data on disk and writes nothing; it returns a JSON-able dict (the CLI
``python -m medsg_lib bench train`` prints it or appends it to a JSONL record).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from medsg_lib.config import CLASS_NAMES, TrainConfig
from medsg_lib.devices import DistInfo, configure_backend, select_device
from medsg_lib.models import count_parameters
from medsg_lib.training import build_train_state, run_steps


class SyntheticXrays(Dataset):
    """``num_per_class`` random images per class, float32 ``(C, S, S)`` in [-1, 1]; ``labels`` int64 ``(N,)``.

    Each class has its own mean brightness so that the classes differ; the content is noise (speed tests and
    unit tests only).
    """

    def __init__(self, img_size: int, channels: int = 1, num_per_class: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        num_classes = len(CLASS_NAMES)
        self.labels = torch.arange(num_classes * num_per_class, dtype=torch.int64) % num_classes  # (N,)
        noise = torch.rand(len(self.labels), channels, img_size, img_size, generator=gen)  # [0, 1)
        offset = (self.labels.float() / num_classes - 0.5).view(-1, 1, 1, 1)
        self.images = (noise + offset).clamp(0, 1) * 2 - 1  # (N, C, S, S) in [-1, 1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


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
    _synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(step_iter)
    _synchronize(dev)
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak_mb, measure = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
    else:
        peak_mb, measure = _peak_rss_mb(), "process peak RSS (ru_maxrss)"
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


# Metrics benchmark ------------------------------------------------------------------------------------------
# ``bench_metrics(n)`` times our FID pipeline (medsg_lib.metrics) against the ``python -m pytorch_fid`` command on
# the same PNG folders, each as a fresh subprocess (same interpreter start-up and imports on both sides), with
# a seeded RANDOM state dict under pytorch-fid's file name in a temporary TORCH_HOME: no download, and FID
# values that mean nothing except that the two implementations must agree.

RANDOM_WEIGHTS_NOTE = "RANDOM (benchmark only, values meaningless)"
_WORKER_CODE = "import sys; from medsg_lib.bench import metrics_worker_main; metrics_worker_main(sys.argv[1])"


def write_noise_pngs(out_dir: Path, num_images: int, img_size: int, seed: int, offset: float = 0.0) -> Path:
    """Write ``num_images`` grayscale PNGs ``{i:06d}.png`` (``img_size`` px) of smooth seeded noise to ``out_dir``.

    Each image is coarse uniform noise (``img_size // 8`` px) upsampled bicubically, plus fine Gaussian noise
    (std 8 levels) and ``offset`` gray levels; one image is in memory at a time. Returns ``out_dir``.
    """
    if num_images < 1 or img_size < 8:
        raise ValueError(f"num_images={num_images} must be >= 1 and img_size={img_size} >= 8")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse = img_size // 8
    for i in range(num_images):
        low = Image.fromarray((rng.random((coarse, coarse)) * 255).astype(np.uint8), mode="L")
        smooth = np.asarray(low.resize((img_size, img_size), Image.Resampling.BICUBIC), dtype=np.float64)
        gray = smooth + rng.normal(0.0, 8.0, size=smooth.shape) + offset  # (S, S) gray levels
        Image.fromarray(np.clip(gray, 0, 255).round().astype(np.uint8), mode="L").save(
            out_dir / f"{i:06d}.png"
        )
    return out_dir


def write_random_fid_weights(torch_home: Path, seed: int = 0) -> Path:
    """Save a seeded random pytorch-fid state dict as ``<torch_home>/hub/checkpoints/pt_inception-...pth``.

    Both pytorch-fid (through ``torch.hub``) and :func:`medsg_lib.metrics.resolve_weights` find it there when
    ``TORCH_HOME=torch_home``. Benchmarks and tests only: every number computed with it is meaningless.
    """
    from medsg_lib.metrics.features import random_state_dict
    from medsg_lib.metrics.weights import WEIGHTS

    target = Path(torch_home) / "hub" / "checkpoints" / WEIGHTS["pt_inception"].file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict("pt_inception", seed=seed), target)
    return target


def _vm_kib(field: str) -> float | None:
    """``field`` (e.g. "VmRSS", "VmHWM") of ``/proc/self/status`` in KiB; None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5, resets VmHWM); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _vm_kib("VmHWM") is not None


def metrics_worker(dir1: Path, dir2: Path, batch_size: int, device: str, dims: int = 2048) -> dict[str, Any]:
    """Our pipeline on two folders, timed by stage: build the pytorch-fid extractor (weights from
    ``$TORCH_HOME``, hash not checked, never downloaded), stream features into :class:`RunningStats`, FID.

    Memory: ``peak_mb`` is the peak resident set size from just after the network is built to the end
    (Linux: VmHWM reset through ``/proc/self/clear_refs``; elsewhere the whole process's ``ru_maxrss``);
    ``base_mb`` is the resident size at that start, so ``peak_mb - base_mb`` is what extraction and FID add.
    On CUDA, ``cuda_peak_mb`` is ``torch.cuda.max_memory_allocated`` over the same span.
    """
    from medsg_lib.metrics.features import build_extractor
    from medsg_lib.metrics.fid import extract_stats, fid_from_stats

    dev = torch.device(device)
    t0 = time.perf_counter()
    extractor = build_extractor("pytorch-fid", device=dev, dims=dims, verify=False, download=False)
    t_build = time.perf_counter() - t0
    gc.collect()
    base_kib = _vm_kib("VmRSS")
    exact_peak = _reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    stats1 = extract_stats(extractor, Path(dir1), batch_size)
    stats2 = extract_stats(extractor, Path(dir2), batch_size)
    _synchronize(dev)
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    value = fid_from_stats(stats1, stats2)
    t_fid = time.perf_counter() - t0
    peak_kib = _vm_kib("VmHWM") if exact_peak else None
    result: dict[str, Any] = {
        "fid": value,
        "num_images": stats1.n + stats2.n,
        "seconds_build": t_build,
        "seconds_extract": t_extract,
        "seconds_fid": t_fid,
        "images_per_s": (stats1.n + stats2.n) / t_extract,
        "peak_mb": peak_kib / 1024 if peak_kib is not None else _peak_rss_mb(),
        "base_mb": base_kib / 1024 if base_kib is not None else None,
        "memory_measure": "peak RSS after the network is built (VmHWM reset)"
        if exact_peak
        else "process peak RSS (ru_maxrss)",
        "weights_label": extractor.weights,
    }
    if dev.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return result


def metrics_worker_main(args_json: str) -> None:
    """Subprocess entry of :func:`bench_metrics`: run :func:`metrics_worker` on JSON arguments, print JSON."""
    print(json.dumps(metrics_worker(**json.loads(args_json))))


def _run_timed(
    command: list[str], env: dict[str, str], log_prefix: Path, timeout: float
) -> tuple[float, str]:
    """Run ``command``; return (wall seconds, stdout). Output goes to ``<log_prefix>.out|.err``; a non-zero exit
    or a timeout raises RuntimeError with the end of stderr."""
    out_path, err_path = log_prefix.with_suffix(".out"), log_prefix.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        seconds = time.perf_counter() - t0
    if rc != 0:
        why = f"timed out after {timeout:.0f} s" if rc is None else f"exit status {rc}"
        raise RuntimeError(f"{' '.join(command[:3])} ... {why}:\n{err_path.read_text()[-3000:]}")
    return seconds, out_path.read_text()


def bench_metrics(
    n: int,
    img_size: int = 64,
    batch_size: int = 50,
    device: str = "cpu",
    work_dir: Path | None = None,
    *,
    dims: int = 2048,
    num_workers: int = 0,
    seed: int = 0,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Time our FID of two folders of ``n`` PNGs each against ``python -m pytorch_fid`` on the same folders.

    Writes under ``work_dir`` (default: a temporary folder, deleted after): ``real/`` and ``fake/`` (``n``
    grayscale ``img_size`` px PNGs each, :func:`write_noise_pngs`, seeds ``seed`` and ``seed + 1``, the second
    set 20 gray levels brighter), ``torch_home/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (RANDOM
    weights, :func:`write_random_fid_weights`) and the subprocesses' ``*.out``/``*.err`` logs. Both sides run
    as fresh ``sys.executable`` subprocesses with ``TORCH_HOME`` set to that folder (``MEDSG_WEIGHTS_DIR``
    removed): ours (:func:`metrics_worker`) and ``python -m pytorch_fid real fake --device D --batch-size B
    --dims dims --num-workers num_workers``; ``seconds_*`` are their wall times, start-up and imports included.
    ``dims`` < 2048 (64, 192, 768) makes the two 2048 x 2048 ``sqrtm`` (~1 min each on a busy 2-core CPU) cheap.

    Returns:
        ``{"n", "img_size", "batch_size", "dims", "device", "num_workers", "seconds_ours",
        "seconds_pytorch_fid", "ratio" (ours / pytorch-fid), "images_per_s_ours" (2n images / feature
        extraction time), "seconds_ours_stages" ({"build", "extract", "fid"}), "fid_ours", "fid_pytorch_fid",
        "abs_diff", "peak_mb" (ours, see metrics_worker), "base_mb", "memory_measure", "weights" (says
        RANDOM), "weights_label", "torch", "num_threads"}``.
    """
    from medsg_lib.metrics.weights import WEIGHTS_DIR_ENV

    if n < 2 or batch_size < 1:
        raise ValueError(f"n={n} must be >= 2 (a covariance) and batch_size={batch_size} >= 1")
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medsg-bench-metrics-")))
        else:
            work = Path(work_dir)
            work.mkdir(parents=True, exist_ok=True)
        dir1 = write_noise_pngs(work / "real", n, img_size, seed)
        dir2 = write_noise_pngs(work / "fake", n, img_size, seed + 1, offset=20.0)
        write_random_fid_weights(work / "torch_home", seed=seed)
        env = {k: v for k, v in os.environ.items() if k != WEIGHTS_DIR_ENV}
        env["TORCH_HOME"] = str(work / "torch_home")
        worker_args = {
            "dir1": str(dir1),
            "dir2": str(dir2),
            "batch_size": batch_size,
            "device": device,
            "dims": dims,
        }
        ours_cmd = [sys.executable, "-c", _WORKER_CODE, json.dumps(worker_args)]
        seconds_ours, stdout = _run_timed(ours_cmd, env, work / f"ours-n{n}", timeout_s)
        ours = json.loads(stdout.strip().splitlines()[-1])
        theirs_cmd = [sys.executable, "-m", "pytorch_fid", str(dir1), str(dir2), "--device", device]
        theirs_cmd += [
            "--batch-size",
            str(batch_size),
            "--dims",
            str(dims),
            "--num-workers",
            str(num_workers),
        ]
        seconds_theirs, stdout = _run_timed(theirs_cmd, env, work / f"pytorch_fid-n{n}", timeout_s)
    match = re.search(r"FID:\s+(\S+)", stdout)
    if match is None:
        raise RuntimeError(f"no 'FID: <value>' in the output of pytorch-fid: {stdout[-500:]!r}")
    fid_theirs = float(match.group(1))
    return {
        "n": n,
        "img_size": img_size,
        "batch_size": batch_size,
        "dims": dims,
        "device": device,
        "num_workers": num_workers,
        "seconds_ours": seconds_ours,
        "seconds_pytorch_fid": seconds_theirs,
        "ratio": seconds_ours / seconds_theirs,
        "images_per_s_ours": ours["images_per_s"],
        "seconds_ours_stages": {k: ours[f"seconds_{k}"] for k in ("build", "extract", "fid")},
        "fid_ours": ours["fid"],
        "fid_pytorch_fid": fid_theirs,
        "abs_diff": abs(ours["fid"] - fid_theirs),
        "peak_mb": ours["peak_mb"],
        "base_mb": ours["base_mb"],
        "memory_measure": ours["memory_measure"],
        "weights": RANDOM_WEIGHTS_NOTE,
        "weights_label": ours["weights_label"],
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
    }


def bench_table1(profile: str, device: str = "cpu", work_dir: Path | None = None) -> dict[str, Any] | None:
    """Time :func:`medsg_lib.evaluate.evaluate_generated` on the generated images of ``profile``, or return
    None when that folder holds none.

    RANDOM Inception and LPIPS weights (``MetricsConfig.allow_random_weights``), no domain classifier (notebook
    04 adds one), cold caches: it runs with ``work_dir`` (default: a temporary folder, deleted after) as the
    current directory, so the real-feature cache (``cache/stats``) and ``metrics.jsonl`` are written there.
    Returns ``{"profile", "device", "seconds", "num_records", "num_generated_images", "weights"}``.
    """
    from medsg_lib.config import get_profile
    from medsg_lib.evaluate import evaluate_generated, plan_targets
    from medsg_lib.metrics.features import list_image_files
    from medsg_lib.paths import output_dirs

    prof = get_profile(profile)
    generated = output_dirs(profile).generated
    if not plan_targets(generated):
        return None
    metrics_cfg = replace(prof.metrics, allow_random_weights=True)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medsg-bench-table1-")))
        else:
            work = Path(work_dir)
            work.mkdir(parents=True, exist_ok=True)
        stack.enter_context(contextlib.chdir(work))
        t0 = time.perf_counter()
        records = evaluate_generated(
            generated,
            prof.data,
            metrics_cfg,
            work / "metrics.jsonl",
            phantoms=prof.phantoms,
            device=device,
            progress=False,
        )
        seconds = time.perf_counter() - t0
    return {
        "profile": profile,
        "device": device,
        "seconds": seconds,
        "num_records": len(records),
        "num_generated_images": len(list_image_files(generated)),
        "weights": RANDOM_WEIGHTS_NOTE,
    }
