"""Checkpoints: bit-exact round trip, atomic writes, refusal of pickled objects, latest step, export."""

from __future__ import annotations

import json
from pathlib import Path

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
)
from medsg_lib.config import DataConfig, TrainConfig, to_jsonable
from medsg_lib.data import SyntheticXrays
from medsg_lib.devices import DistInfo
from medsg_lib.training import build_train_state, checkpoint_state, run_steps

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

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
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
