"""Speed paths and their measurement: FLOP counts, utilisation, the bench record and table, losses kept on the
device between log lines, bf16 autocast / channels_last / torch.compile on CPU, and the GPU check's code."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_cfg
from torch import nn

from medsg_lib import losses
from medsg_lib.bench import bench_table, count_flops, peak_tflops, step_flops, utilisation
from medsg_lib.bench.gpu_check import GpuCheckConfig, check_table, gpu_check
from medsg_lib.config import DataConfig
from medsg_lib.data import SyntheticXrays
from medsg_lib.devices import DistInfo
from medsg_lib.training import build_train_state, run_steps, train

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def _losses(cfg, steps: int = 3) -> list[dict[str, float]]:
    """The loss terms of ``steps`` training steps of ``cfg`` on 32 px synthetic X-rays, as floats."""
    data = SyntheticXrays(32, 1, num_per_class=4)
    state = build_train_state(cfg, CPU)
    out = []
    for terms in run_steps(state, cfg, data, data.labels, steps, CPU, DistInfo()):
        out.append({k: float(v) for k, v in terms.items()})
    return out


def _assert_close(a: list[dict[str, float]], b: list[dict[str, float]], rtol: float, atol: float) -> None:
    for step, (ta, tb) in enumerate(zip(a, b, strict=True), 1):
        for key in ta:
            assert math.isfinite(tb[key]), (step, key)
            assert tb[key] == pytest.approx(ta[key], rel=rtol, abs=atol), (step, key, ta[key], tb[key])


# ---------------------------------------------------------------- FLOPs and utilisation


def test_flops_of_a_linear_layer_forward_and_backward() -> None:
    layer = nn.Linear(8, 16, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 8 * 16
    # backward: one product for the input's gradient, one for the weight's
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 8 * 16


def test_flops_of_a_convolution() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    assert count_flops(lambda: conv(x)) == 2 * (2 * 8 * 8) * 5 * (3 * 3 * 3)


def test_step_flops_are_linear_in_the_batch() -> None:
    """Every convolution and product of a Med-StyleGAN2 iteration (R1's double backward included) scales with
    the batch: twice the batch, exactly twice the FLOPs."""
    small = step_flops(tiny_cfg("medsg", batch_size=2), CPU)
    assert small > 0 and step_flops(tiny_cfg("medsg", batch_size=4), CPU) == 2 * small


def test_utilisation_and_peaks() -> None:
    assert utilisation(2 * 10**12, 0.5, 8.0) == {"tflops_per_iter": 2.0, "achieved_tflops": 4.0, "mfu": 0.5}
    assert utilisation(10**12, 1.0, None)["mfu"] is None
    assert peak_tflops("h200-sxm-bf16") == 989.4 and peak_tflops("h100-sxm-tf32") == 494.7
    assert peak_tflops("12.5") == 12.5
    assert (
        0 < peak_tflops("measured", CPU) < 100
    )  # a timed float32 matrix product and convolution on this CPU
    with pytest.raises(
        ValueError, match=r"peak 'h300' is neither a positive number of TFLOP/s, 'measured', nor one of h100"
    ):
        peak_tflops("h300")


def test_measured_peak_is_the_faster_library_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsg_lib.bench import flops

    # the probe's FLOPs are torch's own count of that convolution
    batch, channels, size, k = flops.CONV_PROBE
    x, w = torch.randn(batch, channels, size, size), torch.randn(channels, channels, k, k)
    probe = 2 * batch * channels * channels * k * k * size * size
    assert count_flops(lambda: torch.nn.functional.conv2d(x, w, padding=k // 2)) == probe
    # MKL's float32 product on an AMD CPU is half oneDNN's convolution: the ceiling is the faster of the two
    monkeypatch.setattr(flops, "matmul_tflops", lambda device, dtype: 0.21)
    monkeypatch.setattr(flops, "conv_tflops", lambda device, dtype: 0.47)
    assert flops.measured_peak_tflops(CPU, torch.float32) == 0.47
    assert flops.peak_tflops("measured", CPU) == 0.47
    monkeypatch.setattr(flops, "conv_tflops", lambda device, dtype: 0.1)
    assert flops.measured_peak_tflops(CPU, torch.float32) == 0.21
    # on a GPU the matrix product alone (no convolution is timed there)
    monkeypatch.setattr(
        flops, "conv_tflops", lambda device, dtype: pytest.fail("timed a convolution on a GPU")
    )
    assert flops.measured_peak_tflops(torch.device("cuda"), torch.bfloat16) == 0.21


def test_bench_table_rows() -> None:
    record = {
        "date": "2026-12-03", "device": "cpu: X, 2 threads", "model": "medsg", "img_size": 64, "batch_size": 2,
        "channels": 3, "amp": "off", "channels_last": False, "compile": False, "s_per_iter": 6.54321,
        "images_per_s": 0.3057, "tflops_per_iter": 0.4567, "achieved_tflops": 0.0698, "mfu": None,
        "peak_memory_mb": 2345.6, "torch": "2.14.1",
    }  # fmt: skip
    lines = bench_table([record]).splitlines()
    assert lines[0].startswith("| date | device | model | px | batch | ch | amp |")
    assert lines[2] == (
        "| 2026-12-03 | cpu: X, 2 threads | medsg | 64 | 2 | 3 | off | False | False | 6.54 | 0.306 | 0.457 | "
        "0.0698 | - | 2346 | 2.14.1 |"
    )


def test_bench_train_cli_appends_a_record(tmp_path: Path) -> None:
    results = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "-m", "medsg_lib", "bench", "train", "--profile", "smoke", "--img-size", "32",
           "--batch-size", "2", "--steps", "1", "--warmup", "0", "--peak-tflops", "0.5",
           "--results", str(results)]  # fmt: skip
    for _ in range(2):
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    first, second = (json.loads(line) for line in results.read_text().splitlines())
    assert first["tflops_per_iter"] == second["tflops_per_iter"] > 0  # counted, not timed
    assert first["mfu"] == pytest.approx(first["achieved_tflops"] / 0.5)
    assert {"date", "device", "torch", "images_per_s", "s_per_iter", "peak_memory_mb"} <= set(first)
    table = subprocess.run(
        [sys.executable, "-m", "medsg_lib", "bench", "table", "--results", str(results)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert len(table.splitlines()) == 4  # header, rule, two records


# ---------------------------------------------------------------- no host synchronisation per step


def test_a_step_returns_its_loss_terms_as_device_tensors() -> None:
    cfg = tiny_cfg("medsg")
    data = SyntheticXrays(32, 1, num_per_class=4)
    terms = next(run_steps(build_train_state(cfg, CPU), cfg, data, data.labels, 1, CPU, DistInfo()))
    tensors = {k for k, v in terms.items() if isinstance(v, torch.Tensor)}
    assert tensors == set(terms) - {"lambda_ds"}
    assert all(terms[k].ndim == 0 and not terms[k].requires_grad for k in tensors)


def test_a_nan_between_log_lines_is_caught_before_the_next_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """Losses are read once per log, sample or checkpoint step; a NaN at step 2 of a run that logs every 10
    and checkpoints every 3 is reported as step 2, and no checkpoint is written after it."""
    original, calls = losses.baseline_g_loss, []

    def nan_at_step_2(*args, **kwargs):
        loss, parts = original(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), parts) if len(calls) == 2 else (loss, parts)

    monkeypatch.setattr(losses, "baseline_g_loss", nan_at_step_2)
    run_dir = tmp_path / "run"
    cfg = tiny_cfg("dcgan", iterations=6, log_every=10, ckpt_every=3, sample_every=10)
    with pytest.raises(FloatingPointError) as err:
        train(
            cfg,
            DataConfig(img_size=32),
            run_dir,
            dataset=SyntheticXrays(32, 1, num_per_class=4),
            progress=False,
        )
    assert str(err.value) == (
        f"training diverged at step 2: loss term 'g_total' is nan (run dir {run_dir}); "
        "the last good checkpoint is none (no checkpoint yet). Running again starts at step 0 and diverges "
        "again: change the run first, e.g. a lower learning rate or amp='off' (float32)"
    )
    assert not list(run_dir.glob("checkpoints/*.pt"))


# ---------------------------------------------------------------- GPU paths, tested on the CPU


def test_bf16_autocast_on_cpu_stays_close_to_float32() -> None:
    fp32 = _losses(tiny_cfg("medsg"))
    bf16 = _losses(tiny_cfg("medsg", amp="bf16"))
    assert fp32 != bf16  # autocast did change the arithmetic
    _assert_close(fp32, bf16, rtol=0.05, atol=0.05)


def test_channels_last_gives_the_losses_of_contiguous_tensors() -> None:
    _assert_close(_losses(tiny_cfg("medsg")), _losses(tiny_cfg("medsg", channels_last=True)), 1e-4, 1e-5)


HAS_CXX = any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not HAS_CXX, reason="torch.compile on CPU needs a C++ compiler (g++ or clang++)")
def test_compiled_training_agrees_with_eager() -> None:
    from torch._dynamo.utils import counters

    eager = _losses(tiny_cfg("gan"), steps=2)
    counters.clear()
    compiled = _losses(tiny_cfg("gan", compile=True), steps=2)
    assert counters["stats"]["unique_graphs"] > 0  # compiled, not a silent fallback to eager
    _assert_close(eager, compiled, 1e-4, 1e-5)


def test_ema_update_is_bit_identical_to_a_per_parameter_lerp() -> None:
    from copy import deepcopy

    from medsg_lib.families.base import update_ema

    state = build_train_state(tiny_cfg("medsg"), CPU)
    with torch.no_grad():
        for net in state.nets.values():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
    looped = deepcopy(state.ema)
    update_ema(state.ema, state.nets, 0.99)
    for name, ema_net in looped.items():
        for p_ema, p, p_new in zip(
            ema_net.parameters(), state.nets[name].parameters(), state.ema[name].parameters(), strict=True
        ):
            p_ema.data.lerp_(p, 1 - 0.99)
            assert torch.equal(p_ema, p_new)


def test_foreach_adam_is_bit_identical_to_the_per_parameter_loop() -> None:
    """Two Med-StyleGAN2 steps with the optimisers rebuilt as per-parameter loops give the same bits."""
    cfg = tiny_cfg("medsg")
    data = SyntheticXrays(32, 1, num_per_class=4)
    states = [build_train_state(cfg, CPU) for _ in range(2)]
    for opt in states[1].optimizers.values():
        for group in opt.param_groups:
            group["foreach"] = False
    assert all(g["foreach"] for opt in states[0].optimizers.values() for g in opt.param_groups)
    for state in states:
        for _ in run_steps(state, cfg, data, data.labels, 2, CPU, DistInfo()):
            pass
    for name, net in states[0].nets.items():
        for (key, a), b in zip(
            net.state_dict().items(), states[1].nets[name].state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), (name, key)


def test_compile_keeps_checkpoint_keys() -> None:
    """``module.compile()`` in place, not a ``torch.compile(net)`` wrapper (whose keys get ``_orig_mod.``):
    a compiled run's state dict has the eager run's keys, so checkpoints and resume are unchanged."""
    eager = build_train_state(tiny_cfg("gan"), CPU)
    compiled = build_train_state(tiny_cfg("gan", compile=True), CPU)
    for name, net in eager.nets.items():
        assert list(compiled.nets[name].state_dict()) == list(net.state_dict())


# ---------------------------------------------------------------- the GPU check's code, tiny, on the CPU


def test_gpu_check_runs_every_step_quickly_on_cpu(tmp_path: Path) -> None:
    rows = gpu_check(tmp_path, GpuCheckConfig.quick("cpu"))
    assert [r for r in rows if "error" in r] == []
    names = [r["check"] for r in rows]
    assert names[0].startswith("smoke pipeline") and names[-1].startswith("FID features")
    assert "RANDOM weights" in rows[0]["result"]
    generation = next(r for r in rows if r["check"].startswith("generate "))
    assert generation["result"].startswith(f"{GpuCheckConfig.quick().num_generate} images in")
    assert (tmp_path / "gpu_check.md").read_text().count("\n| ") == len(rows) + 1
    assert len((tmp_path / "gpu_check.jsonl").read_text().splitlines()) == len(rows)


def test_gpu_check_table_shows_failures() -> None:
    table = check_table([{"check": "bench", "seconds": 1.0, "error": "RuntimeError: boom"}])
    assert table.splitlines()[-1] == "| bench | 1.0 | - | FAILED: RuntimeError: boom |"


# ---------------------------------------------------------------- amp="auto": bf16 where the device has bf16 units

CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 1\n"
)


def test_cpu_flags_are_read_from_cpuinfo_text() -> None:
    from medsg_lib.devices import cpu_flags

    assert cpu_flags(CPUINFO.format(extra="amx_bf16")) == {"fpu", "sse2", "avx2", "avx512f", "amx_bf16"}
    assert cpu_flags("model name\t: no flags line\n") == frozenset()


def test_cpu_family_is_the_widest_instruction_set_of_the_flags() -> None:
    from medsg_lib.devices import cpu_family, cpu_flags

    def family(extra: str, machine: str = "x86_64") -> str:
        return cpu_family(cpu_flags(CPUINFO.format(extra=extra)), machine)

    assert family("avx512_bf16 amx_bf16 amx_tile") == "x86-amx"  # the project's Xeon
    assert family("avx512_bf16") == "x86-avx512-bf16"  # an AMD EPYC of Zen 4
    assert family("") == "x86-avx512"  # the template lists avx512f
    assert cpu_family(frozenset({"fpu", "avx2"}), "AMD64") == "x86"
    assert family("amx_bf16", "aarch64") == "aarch64"  # not x86: the machine names the family
    here = cpu_family()
    assert here in {"x86-amx", "x86-avx512-bf16", "x86-avx512", "x86"} or not here.startswith("x86")


def test_cpu_cores_is_this_process_share_of_the_machine() -> None:
    import os

    from medsg_lib.devices import cpu_cores

    assert 1 <= cpu_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cpu_cores() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs a oneDNN build of torch")
def test_bf16_units_are_amx_or_avx512_bf16_not_plain_avx512() -> None:
    from medsg_lib.devices import cpu_flags, cpu_has_bf16

    # oneDNN's own check (torch.ops.mkldnn._is_mkldnn_bf16_supported) says yes on plain AVX-512, where bf16 is
    # emulated and slower than fp32: the flags decide
    assert not cpu_has_bf16(cpu_flags(CPUINFO.format(extra="")))
    assert cpu_has_bf16(cpu_flags(CPUINFO.format(extra="amx_bf16 amx_tile")))
    assert cpu_has_bf16(cpu_flags(CPUINFO.format(extra="avx512_bf16")))


def test_resolve_amp(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsg_lib import devices

    assert devices.resolve_amp("off", CPU) == "off" and devices.resolve_amp("bf16", CPU) == "bf16"
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: True)
    assert devices.resolve_amp("auto", CPU) == "bf16"
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: False)
    assert devices.resolve_amp("auto", CPU) == "off"
    assert devices.resolve_amp("auto", torch.device("meta")) == "off"
    with pytest.raises(ValueError, match=r"^amp='fp16' is not allowed; choose one of 'off', 'bf16', 'auto'$"):
        devices.resolve_amp("fp16", CPU)
    with pytest.raises(ValueError, match=r"resolve 'auto' with resolve_amp"):
        devices.autocast(CPU, "auto")


@pytest.mark.parametrize("has_bf16", [True, False])
def test_a_run_records_the_precision_it_used_not_auto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_bf16: bool
) -> None:
    from medsg_lib import devices

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: has_bf16)
    data = SyntheticXrays(32, 1, num_per_class=4)

    def run(iterations: int) -> Path:
        cfg = tiny_cfg("dcgan", amp="auto", iterations=iterations)
        return train(cfg, DataConfig(img_size=32), tmp_path, dataset=data, progress=False)

    recorded = json.loads((run(2) / "config.json").read_text())["train"]["amp"]
    assert recorded == ("bf16" if has_bf16 else "off")
    run(3)  # the same "auto" resumes on the same machine; another machine's choice is a config change
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: not has_bf16)
    other = "off" if has_bf16 else "bf16"
    with pytest.raises(ValueError, match=f"train.amp: '{recorded}' -> '{other}'"):
        run(4)
