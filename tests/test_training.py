"""The trainer: bit-exact resume, what one step changes, NaN stop, config checks, logs, samples, benchmark."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import tiny_cfg
from PIL import Image

from medsg_lib import losses
from medsg_lib.bench import bench_train
from medsg_lib.checkpoint import load_checkpoint
from medsg_lib.config import CLASS_NAMES, DataConfig
from medsg_lib.data import SyntheticXrays
from medsg_lib.devices import DistInfo, select_device
from medsg_lib.families.base import StepPlan
from medsg_lib.training import (
    build_train_state,
    make_plan_fn,
    run_steps,
    step_seed,
    train,
)
from medsg_lib.training.interrupt import TrainingInterrupted

CPU = torch.device("cpu")
DATA = DataConfig(img_size=32)


def dataset() -> SyntheticXrays:
    return SyntheticXrays(32, 1, num_per_class=4)


def final_state(run_dir: Path, step: int) -> dict:
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"step_{step:07d}.pt")
    return {k: ckpt[k] for k in ("step", "nets", "ema", "optimizers")}


def tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in tensors(sub, f"{prefix}.{key}").items()}
    return {}


# bf16: the cpu profile's training on a CPU with bf16 units (amp="auto")
@pytest.mark.parametrize(
    ("model", "amp"),
    [
        ("medsg", "off"),
        ("dcgan", "off"),
        ("medsg", "bf16"),
        ("dcgan", "bf16"),
        ("stargan", "off"),
        ("stargan", "bf16"),
        ("cyclegan", "off"),
        ("cyclegan", "bf16"),
        ("rsgan", "off"),
        ("stylegan2", "off"),
        ("stylegan2", "bf16"),
    ],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, model: str, amp: str) -> None:
    cfg = tiny_cfg(model, amp=amp)
    train(cfg, DATA, tmp_path / "a", dataset=dataset(), progress=False)
    train(cfg, DATA, tmp_path / "b", dataset=dataset(), progress=False, stop_at=2)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step_0000002.pt"]
    train(cfg, DATA, tmp_path / "b", dataset=dataset(), progress=False)

    a, b = tensors(final_state(tmp_path / "a", 4)), tensors(final_state(tmp_path / "b", 4))
    assert sorted(a) == sorted(b)
    assert any(".ema." in k for k in a) == (model in ("medsg", "stylegan2"))
    assert any(".optimizers." in k and k.endswith("exp_avg_sq") for k in a)
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert unequal == []
    if model == "cyclegan":  # the image pools are state: full after step 1, drawn from afterwards
        assert int(a[".nets.image_pools.covid_a_count"]) == 3
    if model == "stylegan2":  # ADA's p and the path-length mean are state, and they moved
        assert float(a[".nets.augment_pipe.p"]) > 0 and float(a[".nets.path_length.mean"]) > 0
    # the run did train: weights moved from step 2
    mid = tensors(final_state(tmp_path / "b", 2))
    assert all(not torch.equal(mid[k], a[k]) for k in a if k.endswith(".weight") and ".nets." in k)
    # the log of the resumed run has each step once, with the same losses
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in "ab"
    ]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    for ra, rb in zip(*logs, strict=True):
        assert {k: v for k, v in ra.items() if k not in ("images_per_s", "seconds")} == {
            k: v for k, v in rb.items() if k not in ("images_per_s", "seconds")
        }


class AugmentedXrays(SyntheticXrays):
    """Adds noise from torch's global generator in ``__getitem__``, as random augmentations do."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(index)
        return (x + 0.1 * torch.randn(x.shape)).clamp(-1, 1), y


def test_augmentation_is_seeded_per_item_in_workers_and_on_resume(tmp_path: Path) -> None:
    cfg = tiny_cfg("dcgan")
    train(cfg, DATA, tmp_path / "a", dataset=AugmentedXrays(32), progress=False)
    with_workers = replace(cfg, num_workers=2)  # a resumable field
    train(with_workers, DATA, tmp_path / "b", dataset=AugmentedXrays(32), progress=False, stop_at=2)
    train(cfg, DATA, tmp_path / "b", dataset=AugmentedXrays(32), progress=False)
    a, b = tensors(final_state(tmp_path / "a", 4)), tensors(final_state(tmp_path / "b", 4))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_one_medsg_step_moves_d_g_a_little_f_and_the_ema(tmp_path: Path) -> None:
    cfg = tiny_cfg(ema_beta=0.9)
    data = dataset()
    state = build_train_state(cfg, CPU)
    before = {n: {k: v.clone() for k, v in net.state_dict().items()} for n, net in state.nets.items()}
    terms = next(run_steps(state, cfg, data, data.labels, 1, CPU, DistInfo()))
    assert state.step == 1 and terms["lambda_ds"] == cfg.net.lambda_ds

    def max_change(name: str) -> float:
        after = state.nets[name].state_dict()
        return max(float((after[k] - before[name][k]).abs().max()) for k in after)

    # Adam's first step moves each weight by about lr (1e-4 for G, E, D; f_lr = 1e-6 for F)
    for name in ("generator", "style_encoder", "discriminator"):
        assert 5e-5 < max_change(name) < 3e-4, name
    assert 0 < max_change("mapping_network") < 3e-6
    for name, ema_net in state.ema.items():
        online = state.nets[name].state_dict()
        for key, value in ema_net.state_dict().items():
            expected = before[name][key] + (1 - cfg.net.ema_beta) * (online[key] - before[name][key])
            torch.testing.assert_close(value, expected, rtol=0, atol=3e-7)  # fp32 rounding
        assert max(float((v - before[name][k]).abs().max()) for k, v in ema_net.state_dict().items()) > 0


@pytest.mark.parametrize(
    ("model", "loss_name", "calls_per_step", "term", "amp"),
    [
        ("medsg", "medsg_d_loss", 2, "d_latent_total", "off"),
        ("dcgan", "baseline_g_loss", 1, "g_total", "off"),
        ("dcgan", "baseline_g_loss", 1, "g_total", "bf16"),
    ],
)
def test_nan_loss_stops_with_step_and_term(
    tmp_path: Path, monkeypatch, model, loss_name, calls_per_step, term, amp
):
    original = getattr(losses, loss_name)
    calls = []

    def nan_at_step_2(*args, **kwargs):
        loss, parts = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == calls_per_step + 1:  # first call of step 2
            return loss * float("nan"), {k: float("nan") for k in parts}
        return loss, parts

    monkeypatch.setattr(losses, loss_name, nan_at_step_2)
    run_dir = tmp_path / "run"
    with pytest.raises(FloatingPointError) as err:
        train(tiny_cfg(model, ckpt_every=1, amp=amp), DATA, run_dir, dataset=dataset(), progress=False)
    last = run_dir / "checkpoints" / "step_0000001.pt"
    assert str(err.value) == (
        f"training diverged at step 2: loss term {term!r} is nan (run dir {run_dir}); "
        f"the last good checkpoint is {last}. Running again resumes from it and diverges again: change the "
        "run first, e.g. a lower learning rate or amp='off' (float32)"
    )
    assert sorted(p.name for p in last.parent.iterdir()) == ["step_0000001.pt"]


def test_config_mismatch_on_resume_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_cfg("dcgan", iterations=1)
    train(cfg, DATA, run_dir, dataset=dataset(), progress=False)
    changed = tiny_cfg("dcgan", iterations=1, batch_size=6, lr=1e-3)
    with pytest.raises(ValueError) as err:
        train(changed, DATA, run_dir, dataset=dataset(), progress=False)
    assert str(err.value) == (
        f"cannot resume {run_dir}: its config.json differs from this run's config in "
        "train.batch_size: 4 -> 6; train.net.lr: 0.0002 -> 0.001. Use a new run_dir, or resume=False "
        "to start over in this one (which deletes its checkpoints, log and samples)."
    )
    # resumable fields may change: training is extended from step 1 to 2
    train(tiny_cfg("dcgan", iterations=2), DATA, run_dir, dataset=dataset(), progress=False)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_0000001.pt",
        "step_0000002.pt",
    ]
    # resume=False starts over with the new config
    train(changed, DATA, run_dir, dataset=dataset(), progress=False, resume=False)
    assert json.loads((run_dir / "config.json").read_text())["train"]["batch_size"] == 6
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_0000001.pt"]
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("model", "keys", "png_size"),
    [
        (
            "medsg",
            {f"d_{m}_{t}" for m in ("latent", "ref") for t in ("total", "real", "fake", "reg")}
            | {f"g_{m}_{t}" for m in ("latent", "ref") for t in ("total", "adv", "sty", "ds", "cyc")}
            | {"lambda_ds"},
            # 6 rows (2 sources x 3 domains), 4 columns (source + 3 domains), 32 px, 2 px padding
            (4 * 34 + 2, 6 * 34 + 2),
        ),
        ("dcgan", {"d_total", "d_real", "d_fake", "g_total", "g_adv"}, (4 * 34 + 2, 4 * 34 + 2)),
    ],
)
def test_log_and_sample_grid(tmp_path: Path, model: str, keys: set[str], png_size: tuple[int, int]) -> None:
    run_dir = train(
        tiny_cfg(model, iterations=2, log_every=2), DATA, tmp_path / "run", dataset=dataset(), progress=False
    )
    (record,) = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert set(record) == keys | {"step", "images_per_s", "seconds"}
    assert record["step"] == 2 and record["images_per_s"] > 0
    if model == "medsg":
        assert record["lambda_ds"] == pytest.approx((2.0 + 1.5) / 2)  # mean over steps 1, 2 of a 4-step decay
    assert json.loads((run_dir / "config.json").read_text())["train"]["model"] == model
    with Image.open(run_dir / "samples" / "step_0000002.png") as im:
        assert im.size == png_size


def test_step_plans_are_balanced_seeded_and_shared_out_over_ranks() -> None:
    labels = torch.tensor([0] * 30 + [1] * 3 + [2] * 1)  # imbalanced
    cfg = tiny_cfg()
    plan = make_plan_fn(cfg, labels, batch=64, rank=0)
    domains = torch.bincount(labels[[i for i, _ in plan(1).items[:64]]], minlength=3)
    assert domains.min() >= 10  # uniform over domains, not over images (0 would get ~56 of 64)
    assert plan(1).items == plan(1).items and torch.equal(plan(1).z[0], plan(1).z[0])
    assert plan(1).items != plan(2).items
    assert step_seed(0, 1, 0) != step_seed(0, 1, 1) != step_seed(1, 1, 0)
    # two ranks: each takes its half of every group (real images, then two sets of references) of the global plan
    halves = [make_plan_fn(cfg, labels, 64, rank=r, world_size=2)(1) for r in (0, 1)]
    whole = plan(1)
    for g in range(3):
        assert (
            halves[0].items[32 * g : 32 * (g + 1)] + halves[1].items[32 * g : 32 * (g + 1)]
            == whole.items[64 * g : 64 * (g + 1)]
        )
    for k in range(2):
        assert torch.equal(torch.cat([halves[0].z[k], halves[1].z[k]]), whole.z[k])
    with pytest.raises(ValueError, match=r"a step plan's z has 5 rows, not groups of the global batch 4"):
        StepPlan(items=[(0, 0)] * 4, z=[torch.zeros(5, 2)]).for_rank(0, 2, 4)
    baseline = make_plan_fn(tiny_cfg("dcgan", target_class="Normal"), labels, batch=16, rank=0)
    assert {int(labels[i]) for i, _ in baseline(3).items} == {CLASS_NAMES.index("Normal")}


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_select_device_prefers_cuda_then_mps_then_cpu(
    monkeypatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert select_device("auto") == torch.device(expected)
    assert select_device("cpu") == torch.device("cpu")
    if not cuda:
        with pytest.raises(RuntimeError, match=r"^device='cuda' but CUDA is not available here; use device="):
            select_device("cuda")
    if not mps:
        with pytest.raises(RuntimeError, match=r"^device='mps' but MPS is not available here; use device="):
            select_device("mps")


def test_bench_train_reports_speed_and_sizes() -> None:
    result = bench_train(tiny_cfg(), "cpu", steps=1, warmup=0, num_threads=1)
    assert result["images_per_s"] > 0 and result["s_per_iter"] > 0 and result["peak_memory_mb"] > 0
    assert set(result["params"]) == {"generator", "mapping_network", "style_encoder", "discriminator"}
    assert result["params"]["mapping_network"] > 0 and result["num_threads"] == 1


def test_a_run_writes_the_same_checkpoint_bytes_every_time(tmp_path: Path) -> None:
    import random

    from medsg_lib.files import file_sha256

    cfg = tiny_cfg("dcgan")
    train(cfg, DATA, tmp_path / "a", dataset=dataset(), progress=False)
    random.random()  # Python's generator moved on, as anything in a process (or a new process) moves it
    train(cfg, DATA, tmp_path / "b", dataset=dataset(), progress=False)
    shas = {run: file_sha256(tmp_path / run / "checkpoints" / "step_0000004.pt") for run in "ab"}
    assert shas["a"] == shas["b"]  # so a generated set's checkpoint hash is the same in every fresh clone


def test_ctrl_c_finishes_the_step_checkpoints_it_and_resumes_bit_exactly(tmp_path: Path, monkeypatch) -> None:
    cfg = tiny_cfg("dcgan", ckpt_every=4)  # no periodic checkpoint before the end
    train(cfg, DATA, tmp_path / "a", dataset=dataset(), progress=False)
    original, calls = losses.baseline_g_loss, []

    def ctrl_c_during_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # inside step 3, between the discriminator's update and the generator's
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(losses, "baseline_g_loss", ctrl_c_during_step_3)
    run = tmp_path / "b"
    # as in a terminal (a test run in the background or under nohup ignores SIGINT, and so would training)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrainingInterrupted) as err:
            train(cfg, DATA, run, dataset=dataset(), progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is gone again
    finally:
        signal.signal(signal.SIGINT, previous)
    checkpoint = run / "checkpoints" / "step_0000003.pt"
    assert str(err.value) == (
        f"training stopped by Ctrl-C after step 3: checkpoint {checkpoint} written; run the same command to "
        "continue from it"
    )
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["step_0000003.pt"]
    monkeypatch.undo()
    train(cfg, DATA, run, dataset=dataset(), progress=False)
    a, b = tensors(final_state(tmp_path / "a", 4)), tensors(final_state(run, 4))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
