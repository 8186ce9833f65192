"""Model FLOPs of a training iteration, and how far a measured speed is from the device's peak.

FLOPs are counted by torch's own formulas (those of ``torch.utils.flop_counter``: matrix multiplications and convolutions,
forward, backward and R1's double backward; element-wise work is not counted, as in the usual model-FLOP
utilisation). Model FLOP utilisation (MFU) = achieved FLOP/s / the device's peak FLOP/s.

Peaks are NVIDIA's datasheet numbers for dense tensor-core math (without 2:4 sparsity, i.e. half the
datasheet's starred figures). For any device, ``"measured"`` times a large matrix product there instead, and on
a CPU a large convolution too (:func:`measured_peak_tflops`): the ceiling this machine actually reaches, in
float32 or bf16.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from medsg_lib.bench.measure import synchronize

# dense tensor-core peaks in TFLOP/s (datasheets: H100 SXM5 / PCIe, H200 SXM / NVL)
PEAK_TFLOPS: dict[str, float] = {
    "h100-sxm-bf16": 989.4,
    "h100-sxm-tf32": 494.7,
    "h100-pcie-bf16": 756.0,
    "h100-pcie-tf32": 378.0,
    "h200-sxm-bf16": 989.4,
    "h200-sxm-tf32": 494.7,
    "h200-nvl-bf16": 835.5,
    "h200-nvl-tf32": 417.5,
}


class _FlopCount(TorchDispatchMode):
    """Adds up torch's own FLOP formulas (``flop_counter.flop_registry``) of every operator dispatched.

    ``FlopCounterMode`` itself cannot count a step with R1: its per-module attribution installs backward hooks
    that ``torch.autograd.grad`` refuses ("A leaf node was passed to _will_engine_execute_node"). The formulas
    are the same; only the module breakdown is dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's hook)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix multiplications and convolutions that ``fn()`` runs (forward, backward and double
    backward), by torch's own formulas (those of ``torch.utils.flop_counter.FlopCounterMode``)."""
    with _FlopCount() as counter:
        fn()
    return int(counter.total)


def _tflops(
    fn: Callable[[], object], flops: int, device: torch.device, per_timing: int, repeats: int
) -> float:
    """TFLOP/s of ``fn`` (``flops`` per call): the median of ``repeats`` timings of ``per_timing`` calls, after
    one warm-up timing."""
    times = []
    for _ in range(repeats + 1):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(per_timing):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) / per_timing)
    return flops / statistics.median(times[1:]) / 1e12


def matmul_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """TFLOP/s of ``n x n`` by ``n x n`` matrix products in ``dtype`` on ``device`` (``n`` = 8192 and 10
    products per timing on a GPU, 2048 and 1 on a CPU; median of ``repeats`` timings after one warm-up; random
    inputs). Call it after :func:`medsg_lib.devices.configure_backend` (TF32 on CUDA)."""
    n, per_timing = (2048, 1) if device.type == "cpu" else (8192, 10)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    return _tflops(lambda: a @ b, 2 * n**3, device, per_timing, repeats)


# the convolution probe: 32 images of 256 channels at 16 x 16, a 3 x 3 kernel to 256 channels (9.7 GFLOP)
CONV_PROBE = (32, 256, 16, 3)


def conv_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """TFLOP/s of a 3 x 3 convolution (:data:`CONV_PROBE`) in ``dtype`` on ``device``, one per timing (median of
    ``repeats`` after one warm-up; random inputs). On a CPU it runs in oneDNN, which a matrix product may not:
    torch's float32 matrix product calls MKL, whose kernels on AMD CPUs leave AVX-512 unused (0.21 TFLOP/s on
    two Zen 5 cores, where this convolution reaches 0.47)."""
    batch, channels, size, k = CONV_PROBE
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device, dtype)
    w = torch.randn(channels, channels, k, k, generator=gen).to(device, dtype)
    flops = 2 * batch * channels * channels * k * k * size * size
    return _tflops(lambda: torch.nn.functional.conv2d(x, w, padding=k // 2), flops, device, 1, repeats)


def measured_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The ceiling this machine reaches in ``dtype``: :func:`matmul_tflops`, and on a CPU the larger of it and
    :func:`conv_tflops` (the two libraries' best kernels differ by CPU vendor)."""
    peak = matmul_tflops(device, dtype)
    return max(peak, conv_tflops(device, dtype)) if device.type == "cpu" else peak


def peak_tflops(value: str, device: torch.device | None = None, amp: str = "off") -> float:
    """A peak in TFLOP/s from a number (``"989.4"``), a name of :data:`PEAK_TFLOPS` (``"h200-sxm-bf16"``) or
    ``"measured"``: :func:`measured_peak_tflops` on ``device`` in bf16 when ``amp == "bf16"``, else float32 (on CUDA
    with the TF32 setting of :func:`medsg_lib.devices.configure_backend`).

    Raises:
        ValueError: neither a positive number nor a known name (the message lists the names).
    """
    if value == "measured":
        dtype = torch.bfloat16 if amp == "bf16" else torch.float32
        return measured_peak_tflops(device or torch.device("cpu"), dtype)
    if value in PEAK_TFLOPS:
        return PEAK_TFLOPS[value]
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not (math.isfinite(number) and number > 0):
        raise ValueError(
            f"peak {value!r} is neither a positive number of TFLOP/s, 'measured', nor one of "
            f"{', '.join(PEAK_TFLOPS)}"
        )
    return number


def utilisation(flops_per_iter: int, s_per_iter: float, peak: float | None) -> dict[str, float | None]:
    """``{"tflops_per_iter", "achieved_tflops", "mfu"}`` (``mfu`` None without a peak in TFLOP/s)."""
    achieved = flops_per_iter / s_per_iter / 1e12
    return {
        "tflops_per_iter": flops_per_iter / 1e12,
        "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else None,
    }
