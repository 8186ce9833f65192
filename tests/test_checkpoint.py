"""Checkpoints: bit-exact round trip, atomic writes, refusal of pickled objects, latest step, export, a stored
digest that catches a flipped bit, resuming past a corrupt checkpoint, keeping the newest N."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_cfg
from safetensors import safe_open
from torch import nn

from medsg_lib.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_path,
    export_generator,
    latest_checkpoint,
    load_checkpoint,
    load_nets_for_inference,
    save_checkpoint,
    state_digest,
)
from medsg_lib.config import DataConfig, TrainConfig, to_jsonable
from medsg_lib.data import SyntheticXrays
from medsg_lib.devices import DistInfo
from medsg_lib.training import build_train_state, checkpoint_state, run_steps, train

CPU = torch.device("cpu")


def trained_state_dict(cfg: TrainConfig, steps: int = 1) -> dict:
    """A checkpoint dict after ``steps`` real training steps (so optimiser states are populated)."""
    state = build_train_state(cfg, CPU)
    dataset = SyntheticXrays(cfg.img_size, cfg.channels)
    for _ in run_steps(state, cfg, dataset, dataset.labels, steps, CPU, DistInfo()):
        pass
    config = {"train": to_jsonable(cfg), "data": to_jsonable(DataConfig(img_size=cfg.img_size))}
    return checkpoint_state(state, config)


def assert_same_tree(a, b, where: str = "") -> int:
    """Recursively equal (tensors: ``torch.equal`` and same dtype); returns the number of tensors compared."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
        return 1
    if isinstance(a, dict):
        assert list(a) == list(b), where
        return sum(assert_same_tree(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, list | tuple):
        assert len(a) == len(b), where
        pairs = enumerate(zip(a, b, strict=True))
        return sum(assert_same_tree(x, y, f"{where}[{i}]") for i, (x, y) in pairs)
    assert a == b, where
    return 0


@pytest.mark.parametrize("model", ["medsg", "dcgan"])
def test_round_trip_is_bit_exact(tmp_path: Path, model: str) -> None:
    state = trained_state_dict(tiny_cfg(model))
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded.pop("format") == CHECKPOINT_FORMAT
    num_tensors = assert_same_tree(state, loaded)
    assert num_tensors > 50  # nets, EMA, Adam moments, RNG states
    assert loaded["optimizers"]["generator"]["state"]  # Adam states were saved, not empty


def test_atomic_write_leaves_no_temp_file_and_keeps_old_on_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "step_0000001.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(3)})
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_0000001.pt"]

    def failing_fsync(fd: int) -> None:  # the bytes are in the temporary file; flushing them fails
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_0000001.pt"]
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))


class _Arbitrary:
    pass


@pytest.mark.parametrize("payload", [nn.Linear(2, 2), {"format": CHECKPOINT_FORMAT, "obj": _Arbitrary()}])
def test_pickle_bearing_checkpoint_is_refused(tmp_path: Path, payload) -> None:
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    expected = (
        f"{path} is refused for safety: it holds pickled Python objects that weights_only loading does not "
        "allow (only tensors and plain containers are loaded); write checkpoints with "
        "medsg_lib.checkpoint.save_checkpoint"
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == expected


def test_wrong_format_and_truncated_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert (
        str(err.value) == f"{path} is not a medsg-ckpt-v1 checkpoint: format None, expected 'medsg-ckpt-v1'"
    )
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="could not be read as a torch checkpoint"):
        load_checkpoint(path)


def test_latest_checkpoint_picks_highest_step(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    assert latest_checkpoint(tmp_path) is None
    for name in ["step_0000002.pt", "step_0000010.pt", "step_0000009.pt", "step_0000020.pt.tmp.123", "x.pt"]:
        (ckpt_dir / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == ckpt_dir / "step_0000010.pt"


@pytest.mark.parametrize("model", ["medsg", "dcgan"])
def test_export_and_inference_loading_agree(tmp_path: Path, model: str) -> None:
    cfg = tiny_cfg(model)
    state = trained_state_dict(cfg)
    ckpt = checkpoint_path(tmp_path, 1)
    save_checkpoint(ckpt, state)
    export = export_generator(ckpt, tmp_path / "export" / "generator.safetensors")
    with safe_open(str(export), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["train"] == to_jsonable(cfg)
    assert meta["source"] == ("ema" if model == "medsg" else "online")

    from_pt, cfg_pt = load_nets_for_inference(ckpt)
    from_st, cfg_st = load_nets_for_inference(export)
    assert cfg_pt == cfg_st == cfg
    expected = ["generator", "mapping_network", "style_encoder"] if model == "medsg" else ["generator"]
    assert sorted(from_pt) == sorted(from_st) == expected
    source = state["ema"] if model == "medsg" else state["nets"]
    for name in expected:
        assert not from_pt[name].training
        for key, value in from_st[name].state_dict().items():
            assert torch.equal(value, source[name][key]), (name, key)
    with torch.no_grad():
        if model == "medsg":
            x = torch.rand(2, 1, 32, 32) * 2 - 1
            y = torch.tensor([0, 2])
            z = torch.randn(2, cfg.net.latent_dim)
            outs = [n["generator"](x, n["mapping_network"](z, y)) for n in (from_pt, from_st)]
        else:
            z = torch.randn(2, cfg.net.nz)
            outs = [n["generator"](z) for n in (from_pt, from_st)]
    assert outs[0].shape == (2, 1, 32, 32)
    assert torch.equal(outs[0], outs[1])


def flip_a_bit_of(path: Path, value: float) -> None:
    """Flip one bit of the float32 ``value`` where it is stored in ``path`` (a tensor's data, not the zip's
    structure: the file still loads, with one number changed)."""
    data = bytearray(path.read_bytes())
    at = data.find(np.float32(value).tobytes())
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_caught_by_the_digest_stored_in_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "step_0000001.pt"
    state = {"step": 1, "w": torch.arange(1000, dtype=torch.float32) + 0.5, "rng": (3, (1, 2), None)}
    save_checkpoint(path, state)
    stored = torch.load(path, weights_only=True)
    assert stored["sha256"] == state_digest({**state, "format": CHECKPOINT_FORMAT}) == state_digest(stored)
    assert "sha256" not in load_checkpoint(path)  # checked, then removed
    flip_a_bit_of(path, 777.5)
    assert not torch.equal(torch.load(path, weights_only=True)["w"], state["w"])  # torch.load does not notice
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is corrupt: its content does not match the sha256 stored in it (a changed bit on disk)"
    )
    # the digest sees every kind of value: a tensor's dtype, a key, a number in a tuple
    base = state_digest(state)
    assert base != state_digest({**state, "w": state["w"].double()})
    assert base != state_digest({**state, "rng": (3, (1, 3), None)})
    assert base != state_digest({"step": 1, "v": state["w"], "rng": state["rng"]})


@pytest.mark.parametrize("damage", ["bit", "empty"])
def test_resume_skips_a_corrupt_latest_checkpoint_and_stays_bit_exact(tmp_path: Path, damage: str) -> None:
    cfg = tiny_cfg("dcgan", ckpt_every=1, iterations=4)
    data, dataset = DataConfig(img_size=32), SyntheticXrays(32, 1, num_per_class=4)
    train(cfg, data, tmp_path / "a", dataset=dataset, progress=False)
    run = tmp_path / "b"
    train(cfg, data, run, dataset=dataset, progress=False, stop_at=3)
    latest, previous = checkpoint_path(run, 3), checkpoint_path(run, 2)
    if damage == "bit":
        weight = load_checkpoint(latest)["nets"]["generator"]
        flip_a_bit_of(latest, float(next(iter(weight.values())).flatten()[7]))
        reason = "its content does not match the sha256 stored in it (a changed bit on disk)"
    else:
        latest.write_bytes(b"")
        reason = "could not be read as a torch checkpoint (truncated?)"
    with pytest.warns(RuntimeWarning) as caught:
        train(cfg, data, run, dataset=dataset, progress=False)
    [warning] = [str(w.message) for w in caught if "resuming from" in str(w.message)]
    assert warning.startswith(f"{latest} ") and reason in warning
    assert warning.endswith(f"; resuming from {previous} instead")
    names = sorted(p.name for p in latest.parent.iterdir())
    assert names == sorted([f"step_000000{k}.pt" for k in (1, 2, 3, 4)] + ["step_0000003.pt.corrupt"])
    a, b = load_checkpoint(checkpoint_path(tmp_path / "a", 4)), load_checkpoint(checkpoint_path(run, 4))
    assert_same_tree(
        {k: a[k] for k in ("step", "nets", "optimizers")}, {k: b[k] for k in ("step", "nets", "optimizers")}
    )
    logged = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]


def test_only_the_newest_checkpoints_are_kept_when_asked(tmp_path: Path) -> None:
    cfg = tiny_cfg("dcgan", ckpt_every=1, iterations=4, keep_checkpoints=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(
            cfg,
            DataConfig(img_size=32),
            tmp_path,
            dataset=SyntheticXrays(32, 1, num_per_class=4),
            progress=False,
        )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_0000003.pt",
        "step_0000004.pt",
    ]
    with pytest.raises(ValueError, match=r"TrainConfig.keep_checkpoints=-1 must be >= 0 \(0: keep all\)"):
        tiny_cfg("dcgan", keep_checkpoints=-1)
