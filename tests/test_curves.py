"""Learning curves: the long-run config, the plateau rule by hand, and checkpoint evaluation that resumes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_cfg, write_png
from torch import nn

from medsg_lib.config import CurveConfig, DataConfig, GenerateConfig, MetricsConfig
from medsg_lib.curves import (
    curve_frame,
    curve_train_config,
    evaluate_checkpoints,
    plateau_step,
    run_checkpoints,
)


def test_curve_config_trains_longer_with_evenly_spaced_checkpoints() -> None:
    base = tiny_cfg("dcgan", iterations=500, log_every=10, ckpt_every=250)
    long = curve_train_config(base, CurveConfig(factor=10, num_checkpoints=10))
    assert (long.iterations, long.ckpt_every, long.sample_every, long.log_every) == (5000, 500, 500, 10)
    assert long.net == base.net and long.seed == base.seed
    with pytest.raises(ValueError, match=r"CurveConfig.factor=0 must be an int >= 1"):
        CurveConfig(factor=0)


def test_plateau_is_where_later_checkpoints_stop_improving_by_more_than_the_tolerance() -> None:
    steps = [500, 1000, 2000, 3000, 4000]
    frd = [9.0, 7.5, 7.1, 7.2, 7.0]
    assert plateau_step(steps, frd, tolerance=0.2) == 2000  # 7.0 later is only 0.1 better
    assert plateau_step(steps, frd, tolerance=0.05) == 4000  # still improving at the end
    assert plateau_step(steps, frd, tolerance=3.0) == 500
    assert plateau_step(list(reversed(steps)), list(reversed(frd)), 0.2) == 2000  # order of input irrelevant
    with pytest.raises(ValueError, match="as many values as steps"):
        plateau_step([1, 2], [1.0], 0.1)


def test_curve_frame_means_over_the_classes_of_a_checkpoint() -> None:
    records = [
        {"curve": "medsg", "model": "medsg", "class": c, "step": 10, "metric": "frd", "value": v}
        for c, v in (("COVID-19", 6.0), ("Non-COVID", 7.0), ("Normal", 8.0))
    ] + [
        {"curve": "dcgan", "model": "dcgan", "class": "all", "step": 10, "metric": "frd", "value": 5.0},
        {
            "curve": "dcgan",
            "model": "dcgan",
            "class": "all",
            "step": 10,
            "metric": "kid_classifier",
            "value": 1.0,
        },
        {"model": "dcgan", "class": "all", "metric": "frd", "value": 1.0},  # a Table 1 record: not a curve
    ]
    frame = curve_frame(records, {"medsg": "Med-StyleGAN2"}).set_index("curve")
    assert frame.loc["medsg", "value"] == pytest.approx(7.0) and frame.loc["medsg", "n_classes"] == 3
    assert frame.loc["medsg", "label"] == "Med-StyleGAN2" and frame.loc["dcgan", "value"] == pytest.approx(
        5.0
    )
    assert len(frame) == 2


class Projection(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 4): fixed, pretrained-free
        return torch.stack(
            [x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., :8, :].mean((1, 2, 3)), x.amax((1, 2, 3))], 1
        )


def test_checkpoints_are_evaluated_once_and_an_interrupted_one_is_redone(tmp_path: Path) -> None:
    from medsg_lib.data.memory import SyntheticXrays
    from medsg_lib.training import train

    rng = np.random.default_rng(0)
    for folder in ("covid", "non_covid_infection", "normal"):  # a class-folder set, 32 px
        for k in range(6):
            write_png(
                tmp_path / "real" / "train" / folder / f"{k}.png", rng.integers(0, 255, (32, 32), np.uint8)
            )
    data_cfg = DataConfig(layout="folders", root=tmp_path / "real", img_size=32, cache_dir=tmp_path / "cache")
    run_dir = tmp_path / "runs" / "dcgan"
    train(
        tiny_cfg("dcgan"), data_cfg, run_dir, dataset=SyntheticXrays(32, 1, num_per_class=4), progress=False
    )
    assert [s for s, _ in run_checkpoints(run_dir)] == [2, 4]
    metrics_cfg = MetricsConfig(bootstrap=0, kid_subsets=2, kid_subset_size=2)
    records_path = tmp_path / "curves.jsonl"
    kwargs = dict(feature_fn=Projection(), feature_weights="fixed projection")

    def evaluate() -> list[dict]:
        return evaluate_checkpoints(
            run_dir, data_cfg, GenerateConfig(num_per_class=6, batch_size=4), metrics_cfg, records_path,
            tmp_path / "work", **kwargs,
        )  # fmt: skip

    first = evaluate()
    assert {(r["step"], r["metric"]) for r in first} >= {
        (2, "frd"),
        (4, "frd"),
        (2, "fd_classifier"),
        (4, "msssim"),
    }
    assert all(r["curve"] == "dcgan" and r["class"] == "all" and r["iterations"] == 4 for r in first)
    assert not any((tmp_path / "work").iterdir())  # images deleted after each checkpoint
    assert evaluate() == []  # nothing left to do
    # a run interrupted while checkpoint 4 was measured: its records never reached the file; only 4 is redone
    lines = records_path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] == 2]
    records_path.write_text("".join(f"{line}\n" for line in kept))
    redone = evaluate()
    assert {r["step"] for r in redone} == {4}
    assert [r["value"] for r in redone] == [r["value"] for r in first if r["step"] == 4]  # deterministic


def test_plateau_table_uses_each_models_seed_spread() -> None:
    import pandas as pd

    from medsg_lib.curves import curve_classes, plateau_table, seed_spreads

    seeds = pd.DataFrame(
        [("medsg", c, "frd", s, v) for c, base in (("COVID-19", 7.0), ("Normal", 8.0))
         for s, v in enumerate([base, base + 0.2, base + 0.4])]
        + [("dcgan", "all", "frd", s, v) for s, v in enumerate([7.0, 7.0, 7.0])]
        + [("dcgan", "all", "msssim", 0, 0.9)],
        columns=["model", "class", "metric", "replicate", "value"],
    )  # fmt: skip
    spreads = seed_spreads(seeds)
    assert spreads["medsg"] == pytest.approx(0.2) and spreads["dcgan"] == pytest.approx(0.0)
    # a family with per-class rows beside its whole-set row: a whole-set curve takes the whole-set row's sd only
    per_class = pd.DataFrame(
        [("dcgan", "Normal", "frd", s, v) for s, v in enumerate([6.0, 7.0, 8.0])], columns=seeds.columns
    )
    both = pd.concat([seeds, per_class])
    assert seed_spreads(both)["dcgan"] == pytest.approx(0.5)  # (0 + 1) / 2 over the two classes
    curve_records = [{"curve": "dcgan", "model": "dcgan", "class": "all"}, {"curve": "medsg", "model": "medsg",
                     "class": "Normal"}, {"curve": "medsg", "model": "medsg", "class": "COVID-19"}, {"model": "x"}]  # fmt: skip
    assert curve_classes(curve_records) == {"dcgan": ["all"], "medsg": ["COVID-19", "Normal"]}
    assert seed_spreads(both, classes=curve_classes(curve_records))["dcgan"] == pytest.approx(0.0)
    assert seed_spreads(both, classes={"dcgan": ["Normal"]}) == pytest.approx({"dcgan": 1.0, "medsg": 0.2})
    frame = pd.DataFrame(
        [("medsg", "Med-StyleGAN2", "medsg", s, "frd", v, 3) for s, v in ((100, 9.0), (200, 7.5), (400, 7.4), (800, 7.3))]
        + [("dcgan", "DCGAN", "dcgan", s, "frd", v, 1) for s, v in ((100, 8.0), (200, 7.0))]
        + [("gan", "GAN", "gan", 100, "frd", 9.0, 1)],
        columns=["curve", "label", "model", "step", "metric", "value", "n_classes"],
    )  # fmt: skip
    table = plateau_table(frame, spreads).set_index("curve")
    assert table.loc["medsg", "plateau_step"] == 200  # 7.3 later is within 0.2 of 7.5
    assert table.loc["medsg", "best_step"] == 800 and table.loc["medsg", "first"] == pytest.approx(9.0)
    assert table.loc["dcgan", "plateau_step"] == 200  # still improving at its last checkpoint
    assert pd.isna(table.loc["gan", "plateau_step"]) and math.isnan(table.loc["gan", "tolerance"])  # no seeds


def test_curve_families_can_be_chosen_by_name_for_runs_spread_over_sittings() -> None:
    from medsg_lib.curves import curve_families
    from medsg_lib.families import FAMILIES
    from medsg_lib.profiles import get_profile

    prof = get_profile("cpu")
    every = curve_families(prof)
    assert every == [name for name in FAMILIES if prof.reproduce_targets(name)]  # registry order
    chosen = curve_families(prof, " stylegan2,medsg ")
    assert chosen == ["medsg", "stylegan2"]  # in registry order, not the caller's
    with pytest.raises(ValueError) as err:
        curve_families(prof, "medsg,nope")
    assert str(err.value) == (
        f"models='medsg,nope': nope not among the families this profile trains ({', '.join(every)}); "
        "leave it empty for all"
    )
