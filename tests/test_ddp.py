"""Data-parallel training: a 2-process gloo run on CPU launched with torchrun.

Rank 0 alone writes; every rank ends with the same weights (the trainer compares the ranks' state
fingerprints at each checkpoint, raises if they differ, and stores them in the checkpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medsg_lib.checkpoint import load_checkpoint
from medsg_lib.config import TrainConfig, from_jsonable
from medsg_lib.training import build_train_state, restore_state, state_fingerprint

SCRIPT = """
import sys
from pathlib import Path

import torch

from medsg_lib.data import SyntheticXrays
from medsg_lib.config import DataConfig, TrainConfig
from medsg_lib.training import train

sys.path.insert(0, sys.argv[3])  # the tests folder, for helpers
from helpers import tiny_cfg

cfg = tiny_cfg(sys.argv[1], sample_every=4)
train(cfg, DataConfig(img_size=32), Path(sys.argv[2]), dataset=SyntheticXrays(32), progress=False)
"""


def run_torchrun(tmp_path: Path, model: str) -> Path:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, str(script), model, str(run_dir), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dcgan", "medsg", "stargan", "cyclegan"])
def test_two_process_run_writes_once_and_ranks_agree(tmp_path: Path, model: str) -> None:
    run_dir = run_torchrun(tmp_path, model)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_0000002.pt",
        "step_0000004.pt",
    ]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_0000004.png"]
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # rank 0 alone logs

    ckpt = load_checkpoint(run_dir / "checkpoints" / "step_0000004.pt")
    fingerprints = ckpt["ddp"]["fingerprints"]  # (world_size, 2 * num_tensors), one row per rank
    assert ckpt["ddp"]["world_size"] == 2 and fingerprints.shape[0] == 2
    assert torch.equal(fingerprints[0], fingerprints[1])
    # the fingerprint covers exactly the saved state (nets, EMA, optimisers) and it did train
    cfg = from_jsonable(TrainConfig, ckpt["config"]["train"])
    state = build_train_state(cfg, torch.device("cpu"))
    _, initial = state_fingerprint(state)
    restore_state(state, ckpt)
    _, saved = state_fingerprint(state)
    assert torch.equal(saved, fingerprints[0])
    assert len(initial) < len(saved)  # Adam states exist after training
