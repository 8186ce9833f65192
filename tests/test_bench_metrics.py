"""``bench metrics``: our FID pipeline against the ``python -m pytorch_fid`` command on the same PNG folders.

One tiny run (8 + 8 images of 32 px, 64-d features so that no 2048 x 2048 ``sqrtm`` is needed) with RANDOM
weights: the two FIDs must agree and the record must say the weights are random.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsg_lib.__main__ import _cmd_bench_metrics, build_parser
from medsg_lib.bench import RANDOM_WEIGHTS_NOTE, bench_metrics, write_noise_pngs

KEYS = {
    "n",
    "img_size",
    "seconds_ours",
    "seconds_pytorch_fid",
    "ratio",
    "images_per_s_ours",
    "fid_ours",
    "fid_pytorch_fid",
    "abs_diff",
    "peak_mb",
    "weights",
}


def test_bench_metrics_agrees_with_pytorch_fid(tmp_path: Path) -> None:
    result = bench_metrics(n=8, img_size=32, batch_size=4, work_dir=tmp_path, dims=64)
    print({k: result[k] for k in sorted(KEYS)})
    assert KEYS <= set(result)
    assert result["n"] == 8 and result["img_size"] == 32
    assert result["weights"] == RANDOM_WEIGHTS_NOTE and "UNVERIFIED" in result["weights_label"]
    for key in KEYS - {"n", "img_size", "weights"}:
        assert math.isfinite(result[key]), key
    assert result["fid_ours"] > 0.01  # the two folders differ (the second is 20 gray levels brighter)
    assert result["abs_diff"] < 1e-3
    assert result["ratio"] == pytest.approx(result["seconds_ours"] / result["seconds_pytorch_fid"])
    stages = result["seconds_ours_stages"]
    assert result["images_per_s_ours"] == pytest.approx(16 / stages["extract"])
    assert result["peak_mb"] > 0
    # the work dir keeps the inputs: 8 PNGs per folder and the random weights under pytorch-fid's file name
    assert len(list((tmp_path / "real").glob("*.png"))) == len(list((tmp_path / "fake").glob("*.png"))) == 8
    assert (tmp_path / "torch_home/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth").is_file()


def test_write_noise_pngs_is_seeded_gray(tmp_path: Path) -> None:
    write_noise_pngs(tmp_path / "a", 2, 16, seed=3)
    write_noise_pngs(tmp_path / "b", 2, 16, seed=3)
    write_noise_pngs(tmp_path / "c", 2, 16, seed=4)
    with Image.open(tmp_path / "a" / "000001.png") as img:
        assert img.mode == "L" and img.size == (16, 16)
        a = np.asarray(img)
    with (
        Image.open(tmp_path / "b" / "000001.png") as img_b,
        Image.open(tmp_path / "c" / "000001.png") as img_c,
    ):
        np.testing.assert_array_equal(a, np.asarray(img_b))
        assert not np.array_equal(a, np.asarray(img_c))


def test_bench_metrics_bad_n() -> None:
    with pytest.raises(ValueError, match=r"n=1 must be >= 2 \(a covariance\) and batch_size=4 >= 1"):
        bench_metrics(n=1, batch_size=4)


def test_cli_parses_bench_metrics() -> None:
    args = build_parser().parse_args(["bench", "metrics", "--n", "8"])
    assert args.func is _cmd_bench_metrics
    assert args.n == [8] and args.img_size == 64 and args.batch_size == 50 and args.device == "cpu"
    assert args.dims == 2048 and args.table1_profile == ""
    args = build_parser().parse_args(["bench", "metrics", "--n", "100", "200", "--table1-profile", "smoke"])
    assert args.n == [100, 200] and args.table1_profile == "smoke"
