"""Devices, mixed precision and torchrun-launched data parallelism, kept out of the training loop.

- :func:`select_device` turns ``"auto" | "cpu" | "cuda" | "cuda:1" | "mps"`` into a ``torch.device``.
- :func:`configure_backend` enables TF32 matmuls/convolutions and the cuDNN autotuner on CUDA (no-op
elsewhere).
- :func:`autocast` is a bf16 autocast context on CUDA or CPU when asked for, a no-op context otherwise;
  :func:`resolve_amp` turns ``amp="auto"`` into ``"bf16"`` where the device has bf16 units, else ``"off"``.
- :func:`compile_module` compiles a module in place with ``torch.compile``, or says why it stays eager.
- :class:`DistInfo`, :func:`init_distributed`, :func:`all_reduce_grads`, :func:`broadcast_state` and
  :func:`gather_fingerprints`: data parallelism by hand (see :func:`all_reduce_grads` for why not
  ``DistributedDataParallel``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from medsg_lib.config import AMP_CHOICES


def select_device(name: str) -> torch.device:
    """The torch device for ``name``: ``"auto"`` picks CUDA, then MPS, then CPU.

    Raises:
        RuntimeError: ``name`` asks for CUDA or MPS on a machine without it (naming the fix).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here; use device='auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={name!r} but MPS is not available here; use device='auto' or 'cpu'")
    return device


def configure_backend(device: torch.device) -> None:
    """On CUDA: TF32 for fp32 matmuls and convolutions, and the cuDNN autotuner (shapes are fixed per run).

    TF32 keeps fp32 storage and range with a 10-bit mantissa in the multiply; it is the usual setting for GAN
    training on Ampere and later GPUs. Nothing changes on CPU or MPS.
    """
    if device.type != "cuda":
        return
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 when ``amp == "bf16"`` on CUDA or CPU; else a no-op context.

    bf16 needs no loss scaling (fp32's exponent range). On a CPU it is fast only with bf16 units (AVX512-BF16
    or AMX, :func:`cpu_has_bf16`); elsewhere it is emulated and slower than fp32. ``amp`` must be resolved
    (:func:`resolve_amp`): ``"auto"`` is refused here so that no run records a precision it did not use.
    """
    if amp not in AMP_RESOLVED:
        raise ValueError(f"autocast takes amp={AMP_RESOLVED}, got {amp!r}; resolve 'auto' with resolve_amp")
    if amp == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


AMP_RESOLVED: tuple[str, ...] = ("off", "bf16")
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo names of x86 bf16 units


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one; a container's share, not the
    host's count), at least 1: how many worker processes CPU-bound work spreads over."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``cpuinfo``: its text; empty where unreadable)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_family(flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """The family of CPU whose kernels decide a result's bits: the widest x86 instruction set oneDNN uses for
    convolutions and matrix products (``x86-amx``, ``x86-avx512-bf16``, ``x86-avx512``, ``x86``), or the
    machine's name elsewhere (e.g. ``aarch64``). Two CPUs of one family train the same bits; across families
    the roundings differ, and GAN training amplifies them. ``flags``, ``machine``: given, for tests."""
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64"):
        return machine.lower() or "unknown"
    flags = cpu_flags() if flags is None else flags
    for flag, family in (
        ("amx_bf16", "x86-amx"),
        ("avx512_bf16", "x86-avx512-bf16"),
        ("avx512f", "x86-avx512"),
    ):
        if flag in flags:
            return family
    return "x86"


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU has bf16 units (AMX-BF16 or AVX512-BF16) and oneDNN to use them.

    Read from the CPU's flags (``flags``: given, for tests), not from
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported``, which also says yes on AVX-512 CPUs without bf16 units,
    where oneDNN emulates bf16 and is slower than fp32. False where the flags are unreadable (not Linux).
    """
    if not getattr(torch.backends.mkldnn, "is_available", lambda: False)():
        return False
    return bool((cpu_flags() if flags is None else flags) & CPU_BF16_FLAGS)


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast precision a run uses: ``"auto"`` is ``"bf16"`` on a CUDA GPU with bf16 tensor cores
    (compute capability 8 or more) or a CPU with bf16 units (:func:`cpu_has_bf16`), else ``"off"``; ``"off"``
    and ``"bf16"`` stay as asked."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r} is not allowed; choose one of {', '.join(map(repr, AMP_CHOICES))}")
    if amp != "auto":
        return amp
    if device.type == "cuda":  # bf16 tensor cores from Ampere (compute capability 8) on; emulated before
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "off"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "off"


def compile_module(module: nn.Module, device: torch.device) -> str:
    """``module.compile()`` in place (state_dict keys unchanged) where ``torch.compile`` can work; returns
    ``"compiled"`` or the reason it stays eager (no C++ compiler for a CPU build, unsupported platform).

    Compilation itself happens at the first call; a failure there falls back to eager for that graph with
    torch's own warning (``torch._dynamo.config.suppress_errors``), so training never stops for it.
    """
    import shutil

    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "eager: torch.compile is not supported on this Python/platform"
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "eager: torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH"
    torch._dynamo.config.suppress_errors = True
    module.compile()
    return "compiled"


class AutocastModule(nn.Module):
    """Runs ``module`` under :func:`autocast` and returns fp32 outputs.

    Used for the generator, mapping network and style encoder inside the discriminator step, so that the
    fake images are made in bf16 while the discriminator, and with it R1's double backward, stays fp32.
    """

    def __init__(self, module: nn.Module, device: torch.device, amp: str) -> None:
        super().__init__()
        self.module = module
        self.device = device
        self.amp = amp

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            out = self.module(*args)
        return out.float()


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun launch (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun``; unset means one process."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


DDP_TIMEOUT_ENV = "MEDSG_DDP_TIMEOUT"  # seconds a rank waits in a collective for the others (default 1800)


def ddp_timeout_s() -> float:
    """How long a rank waits in a collective for a rank that died or hangs before it stops with an error:
    ``$MEDSG_DDP_TIMEOUT`` seconds, else 1800 (a checkpoint written by a slow file system must fit in it)."""
    text = os.environ.get(DDP_TIMEOUT_ENV, "1800")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{DDP_TIMEOUT_ENV}={text!r} must be a number of seconds > 0")
    return value


@contextlib.contextmanager
def init_distributed(device_name: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """Context giving ``(DistInfo, device)``; under torchrun it joins (and on exit leaves) the process group.

    Backend: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU. A process group that the
    caller already initialised is used as is and left open.
    """
    info = dist_info_from_env()
    device = select_device(device_name)
    if device.type == "cuda" and info.distributed:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    owns_group = info.distributed and not dist.is_initialized()
    if owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=ddp_timeout_s()))
    if info.distributed and dist.get_world_size() != info.world_size:
        raise RuntimeError(f"WORLD_SIZE={info.world_size} but the process group has {dist.get_world_size()}")
    try:
        yield info, device
    finally:
        if owns_group:
            dist.destroy_process_group()


def all_reduce_grads(params: Iterable[nn.Parameter], world_size: int) -> None:
    """Average gradients over ranks in place (one flat all-reduce); no-op for ``world_size == 1``.

    Why not ``DistributedDataParallel``: Med-StyleGAN2 calls G, F and E several times per loss,
    back-propagates R1 through a double backward, and lets the generator loss reach D's parameters that are
    not stepped; DDP's reducer supports neither repeated forwards before one backward nor double backward
    without special modes. Averaging the gradients after ``backward()`` is exactly what DDP computes, for any
    graph.

    A parameter with no gradient on every rank keeps ``grad = None`` (so Adam skips it, as in one process);
    one with a gradient on some rank gets the average with zeros for the others.
    """
    params = [p for p in params if p.requires_grad]
    if world_size == 1 or not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has_grad)
    used = [p for p, flag in zip(params, has_grad.tolist(), strict=True) if flag > 0]
    if not used:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in used])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in used:
        n = p.numel()
        mean = flat[offset : offset + n].view_as(p)
        if p.grad is None:
            p.grad = mean.clone(memory_format=torch.preserve_format)
        else:
            p.grad.copy_(mean)  # keeps the gradient's memory format (channels_last)
        offset += n


def broadcast_state(modules: Iterable[nn.Module], world_size: int, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank; no-op in one process.

    Buffers: BatchNorm running statistics differ per rank after a step on different batches; as DDP does by
    default, rank 0's are taken so that all ranks (and the checkpoint rank 0 writes) agree.
    """
    if world_size == 1:
        return
    for module in modules:
        tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def gather_fingerprints(fingerprint: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """All ranks' ``fingerprint`` tensors (same shape on every rank), in rank order."""
    if world_size == 1:
        return [fingerprint]
    out = [torch.empty_like(fingerprint) for _ in range(world_size)]
    dist.all_gather(out, fingerprint)
    return out
