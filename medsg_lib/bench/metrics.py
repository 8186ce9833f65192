"""Metrics benchmarks: our FID pipeline against ``python -m pytorch_fid``, and the Table 1 evaluation.

``bench_metrics(n)`` times our FID pipeline (:mod:`medsg_lib.metrics`) against the ``python -m pytorch_fid``
command on the same PNG folders, each as a fresh subprocess (same interpreter start-up and imports on both
sides), with a seeded RANDOM state dict under pytorch-fid's file name in a temporary TORCH_HOME: no download,
and FID values that mean nothing except that the two implementations must agree. ``bench_table1(profile)`` times
:func:`medsg_lib.evaluate.evaluate_generated` on a profile's generated images.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medsg_lib.bench.measure import peak_rss_mb, reset_peak_rss, synchronize, vm_kib

RANDOM_WEIGHTS_NOTE = "RANDOM (benchmark only, values meaningless)"
_WORKER_CODE = (
    "import sys; from medsg_lib.bench.metrics import metrics_worker_main; metrics_worker_main(sys.argv[1])"
)


@contextlib.contextmanager
def _work_dir(work_dir: Path | None, prefix: str) -> Iterator[Path]:
    """``work_dir`` (created), or a temporary folder named ``prefix*`` that is deleted on exit."""
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


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
    base_kib = vm_kib("VmRSS")
    exact_peak = reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    stats1 = extract_stats(extractor, Path(dir1), batch_size)
    stats2 = extract_stats(extractor, Path(dir2), batch_size)
    synchronize(dev)
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    value = fid_from_stats(stats1, stats2)
    t_fid = time.perf_counter() - t0
    peak_kib = vm_kib("VmHWM") if exact_peak else None
    result: dict[str, Any] = {
        "fid": value,
        "num_images": stats1.n + stats2.n,
        "seconds_build": t_build,
        "seconds_extract": t_extract,
        "seconds_fid": t_fid,
        "images_per_s": (stats1.n + stats2.n) / t_extract,
        "peak_mb": peak_kib / 1024 if peak_kib is not None else peak_rss_mb(),
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
    with _work_dir(work_dir, "medsg-bench-metrics-") as work:
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
    from medsg_lib.evaluate import evaluate_generated, plan_targets
    from medsg_lib.metrics.features import list_image_files
    from medsg_lib.paths import output_dirs
    from medsg_lib.profiles import get_profile

    prof = get_profile(profile)
    generated = output_dirs(profile).generated
    if not plan_targets(generated):
        return None
    metrics_cfg = replace(prof.metrics, allow_random_weights=True)
    with _work_dir(work_dir, "medsg-bench-table1-") as work, contextlib.chdir(work):
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
