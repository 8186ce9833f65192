"""Several training seeds: aggregation of Table 1's cells, the ranking rule, code versions, the seed plumbing
(run names, output folders, the reproduce plan, the held-out draws) and a multi-seed run resumed after a kill."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import nbformat
import pytest
import torch
from helpers import tiny_cfg

from medsg_lib.config import DataConfig
from medsg_lib.evaluate import REAL_BASELINE_MODEL
from medsg_lib.families import FAMILIES
from medsg_lib.files import CONFIG_NAME, run_name
from medsg_lib.metrics.cache import real_stats_key
from medsg_lib.metrics.frd import FRD_PROTOCOL
from medsg_lib.metrics.sources import RealImages, subsample
from medsg_lib.notebook import is_unset, overrides
from medsg_lib.paths import output_dirs
from medsg_lib.profiles import get_profile
from medsg_lib.reproduce import plan_jobs
from medsg_lib.seeds import (
    aggregate_seeds,
    check_one_code_version,
    mean_sd_table,
    min_attainable_p,
    permutation_p,
    ranking_table,
    summarise_over_seeds,
)
from medsg_lib.table1 import build_table1, seed_values, write_table1
from medsg_lib.training.rundir import run_code_tags, with_code


def rec(model: str, cls: str, metric: str, value: float | None, seed: int, **kw) -> dict:
    protocol = {"frd": FRD_PROTOCOL, "msssim": "ms-ssim", "fd_classifier": "domain:classifier"}[metric]
    return {
        "model": model, "class": cls, "metric": metric, "protocol": protocol, "value": value,
        "train_seed": seed, "status": "ok" if value is not None else "missing weights: x.pth", **kw,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# the permutation test and the ranking rule


def test_permutation_p_by_hand() -> None:
    assert permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(
        2 / 20
    )  # only the observed split and its mirror
    assert permutation_p([1, 2, 3], [1, 2, 3]) == 1.0
    # 5 vs (1, 3): splits {5|1,3} d=3, {1|5,3} d=3, {3|5,1} d=0 -> 2 of 3 at least as extreme
    assert permutation_p([5], [1, 3]) == pytest.approx(2 / 3)
    assert min_attainable_p(3, 3) == pytest.approx(0.1)
    assert min_attainable_p(5, 5) == pytest.approx(2 / 252)
    with pytest.raises(ValueError, match="at least one value on each side"):
        permutation_p([], [1.0])


def test_ranking_finds_a_planted_difference_and_not_seed_noise() -> None:
    records = [
        *(rec("near", "Normal", "frd", v, s) for s, v in enumerate([1.0, 1.1, 1.2])),
        *(rec("far", "Normal", "frd", v, s) for s, v in enumerate([5.0, 5.1, 5.2])),
        *(rec("noise", "Normal", "frd", v, s) for s, v in enumerate([1.15, 0.95, 1.05])),
        *(rec("one_seed", "Normal", "frd", 9.0, 0) for _ in range(1)),  # one seed: never ranked
    ]
    table = ranking_table(records, ("frd",), {"near": "Near", "far": "Far"}).set_index(["a", "b"])
    assert set(table.index) == {("Near", "Far"), ("Near", "noise"), ("Far", "noise")}
    near_far = table.loc[("Near", "Far")]
    assert near_far["verdict"] == "a < b" and near_far["p_value"] == pytest.approx(0.1)
    assert near_far["difference"] == pytest.approx(-4.0) and near_far["sd_a"] == pytest.approx(0.1)
    assert table.loc[("Near", "noise"), "verdict"] == "not separated"
    assert table.loc[("Far", "noise"), "verdict"] == "a > b"
    # at alpha 0.05 three seeds can never separate two rows
    assert (ranking_table(records, ("frd",), alpha=0.05)["verdict"] == "not separated").all()


def test_seed_noise_is_called_different_at_the_stated_rate() -> None:
    rng = random.Random(0)
    trials = 3000
    null = sum(
        permutation_p([rng.gauss(0, 1) for _ in range(3)], [rng.gauss(0, 1) for _ in range(3)]) <= 0.1
        for _ in range(trials)
    )
    assert abs(null / trials - 0.1) < 4 * math.sqrt(0.1 * 0.9 / trials)  # exactly 0.1 in expectation
    shifted = sum(
        permutation_p([rng.gauss(0, 1) for _ in range(3)], [rng.gauss(6, 1) for _ in range(3)]) <= 0.1
        for _ in range(500)
    )
    assert shifted / 500 > 0.95  # a difference of 6 seed sds is found nearly always


# ----------------------------------------------------------------------------------------------------------
# aggregation and Table 1


def test_aggregate_seeds_means_and_sds_by_hand() -> None:
    one = rec("dcgan", "Normal", "frd", 7.0, 0)
    assert aggregate_seeds([one]) == [one]  # one replicate: the record itself
    records = [rec("medsg", "Normal", "frd", v, s, ci_low=0.0, ci_high=9.0) for s, v in enumerate([1, 2, 6])]
    (agg,) = aggregate_seeds(records)
    assert agg["value"] == pytest.approx(3.0) and agg["seed_sd"] == pytest.approx(math.sqrt(7.0))
    assert agg["seed_values"] == [1, 2, 6] and agg["n_seeds"] == 3 and agg["replicates"] == [0, 1, 2]
    assert "ci_low" not in agg and "train_seed" not in agg
    # a repeated record of one seed replaces the earlier one (the last wins, as in Table 1)
    (again,) = aggregate_seeds([*records, rec("medsg", "Normal", "frd", 3.0, 2)])
    assert again["value"] == pytest.approx(2.0)
    missing = aggregate_seeds([rec("medsg", "Normal", "frd", 1.0, 0), rec("medsg", "Normal", "frd", None, 1)])
    assert missing[0]["value"] is None and missing[0]["status"] == "missing weights: x.pth"
    # the real floor's draws are replicates too
    floor = [{**rec(REAL_BASELINE_MODEL, "Normal", "frd", v, 0), "train_seed": None, "heldout_draw": d}
             for d, v in enumerate([4.0, 5.0])]  # fmt: skip
    assert aggregate_seeds(floor)[0]["value"] == pytest.approx(4.5)


def test_table1_cells_are_mean_and_sd_over_seeds(tmp_path: Path) -> None:
    records = [
        rec("medsg", "Normal", m, v + s, s) for s in range(3) for m, v in (("frd", 7.0), ("msssim", 0.5))
    ] + [rec("dcgan", "Normal", "frd", 7.5, 0)]
    table = build_table1(records).set_index("model")
    assert table.loc["Med-StyleGAN2 (Normal)", "FRD (radiomics)"] == "8.000 ± 1.000"
    assert table.loc["Med-StyleGAN2 (Normal)", "MS-SSIM (lower = more diverse)"] == "1.500 ± 1.000"
    assert table.loc["Med-StyleGAN2 (Normal)", "seeds"] == "3"
    assert (
        table.loc["DCGAN (Normal)", "FRD (radiomics)"] == "7.500"
        and table.loc["DCGAN (Normal)", "seeds"] == "1"
    )
    write_table1(table.reset_index(), tmp_path, alpha=0.1)
    notes = (tmp_path / "table1.md").read_text()
    assert "mean ± sample sd over 1/3 training seeds" in notes and "alpha = 0.1" in notes
    # one seed everywhere: no seeds column, the cells as before
    single = build_table1([r for r in records if r["train_seed"] == 0])
    assert "seeds" not in single.columns
    assert single.set_index("model").loc["Med-StyleGAN2 (Normal)", "FRD (radiomics)"] == "7.000"
    values = seed_values(records)
    assert len(values) == 7 and set(values["replicate"]) == {0, 1, 2}
    assert values.iloc[0].to_dict()["label"] == "Med-StyleGAN2"


def test_sets_of_two_code_versions_are_refused_before_evaluation(tmp_path: Path) -> None:
    from helpers import write_png

    from medsg_lib.config import MetricsConfig
    from medsg_lib.evaluate import evaluate_generated

    check_one_code_version([("aaaa", "x"), ("aaaa", "y")])  # one version: fine
    for name, seed, code in (("medsg", 0, "aaaa"), ("medsg_seed1", 1, "bbbb")):
        info = {"train": {"model": "medsg", "seed": seed}, "checkpoint": "c", "train_code": [code]}
        (tmp_path / name).mkdir()
        (tmp_path / name / CONFIG_NAME).write_text(json.dumps(info))
        write_png(tmp_path / name / "normal" / "000000.png", 1)
    records = tmp_path / "records.jsonl"
    with pytest.raises(ValueError, match=r"trained by 2 versions of the code \(aaaa: .*medsg/normal; bbbb: "):
        evaluate_generated(tmp_path, DataConfig(), MetricsConfig(), records, seeds=2)
    assert not records.exists()  # refused before anything was computed


def test_a_run_records_the_code_that_started_and_resumed_it() -> None:
    v1, v2 = {"source": "1111", "commit": "c1"}, {"source": "2222", "commit": "c2"}
    first = with_code({"train": {}}, None, v1)
    assert first["code"] == v1 and first["code_resumed"] == []
    assert with_code({"train": {}}, first, v1) == first  # resumed by the same code: nothing added
    resumed = with_code({"train": {}}, first, v2)
    assert resumed["code"] == v1 and resumed["code_resumed"] == [v2]
    assert with_code({"train": {}}, resumed, v2)["code_resumed"] == [v2]
    assert run_code_tags(resumed) == ("1111", "2222") and run_code_tags({}) == ("unknown",)
    older = with_code({"train": {}}, {"train": {}}, v2)  # a run folder from before code was recorded
    assert run_code_tags(older) == ("unknown", "2222")


# ----------------------------------------------------------------------------------------------------------
# plumbing


def test_seeded_run_names_output_folders_and_overrides(tmp_path: Path, monkeypatch) -> None:
    assert run_name("dcgan", "COVID-19") == "dcgan_covid"
    assert (
        run_name("dcgan", "COVID-19", 2) == "dcgan_covid_seed2"
        and run_name("medsg", "all", 1) == "medsg_seed1"
    )
    with pytest.raises(ValueError, match=r"seed=-1 must be an int >= 0"):
        run_name("medsg", "all", -1)
    monkeypatch.setenv("MEDSG_ROOT", str(tmp_path))
    one, three = output_dirs("cpu"), output_dirs("cpu", seeds=3)
    assert three.results == one.results / "seeds3" and three.figures == one.figures / "seeds3"
    assert three.runs == one.runs and three.generated == one.generated  # runs and images are shared
    assert output_dirs("cpu", "folders-x", 2).results == tmp_path / "results" / "cpu-folders-x" / "seeds2"
    with pytest.raises(ValueError, match="seeds=0 must be an int >= 1"):
        output_dirs("cpu", seeds=0)
    # False is a value, not "the profile's" (False == 0 in Python)
    assert is_unset(0) and is_unset("") and is_unset(None) and not is_unset(False) and not is_unset(0.5)
    assert overrides(tiny_cfg("dcgan"), channels_last=False, seed=0).channels_last is False


def _notebook(path: Path, params: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_reproduce_plans_seeds_only_where_notebooks_take_them(tmp_path: Path) -> None:
    _notebook(tmp_path / "01_data.ipynb", 'profile = "smoke"')
    _notebook(tmp_path / "02_training.ipynb", 'profile = "smoke"\nseed = 0\nseeds = 1')
    _notebook(tmp_path / "04_metrics.ipynb", 'profile = "smoke"\nseeds = 1')
    one = plan_jobs("cpu", tmp_path)
    assert all("seeds" not in j.parameters and "seed" not in j.parameters for j in one)
    three = plan_jobs("cpu", tmp_path, seeds=3)
    assert [j.notebook for j in three][-1] == "04_metrics.ipynb" and three[-1].parameters["seeds"] == 3
    assert all(j.notebook != "01_data.ipynb" for j in three)  # depends on seed 0 alone
    training = [j for j in three if j.notebook == "02_training.ipynb"]
    runs = sum(len(get_profile("cpu").reproduce_targets(name)) for name in FAMILIES)
    assert len(training) == 3 * runs
    assert [j.parameters.get("seed", 0) for j in training] == [s for s in range(3) for _ in range(runs)]
    assert training[0].parameters == {**one[1].parameters, "seeds": 3}  # seed 0: the one-seed job
    assert training[runs].output_name == "02_training__medsg__all__seed1.ipynb"
    with pytest.raises(ValueError, match="seeds=0 must be an int >= 1"):
        plan_jobs("cpu", tmp_path, seeds=0)


def test_held_out_draws_are_subsets_named_for_the_caches() -> None:
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 4, 4).contiguous()
    real = RealImages(
        images, torch.arange(0, 20, 2), "test", "Normal", "id", 4, tuple(Path(f"m{i}") for i in range(10))
    )
    a, b = subsample(real, 0.75, 0), subsample(real, 0.75, 1)
    assert (
        len(a) == 8 and a.subset == "draw 0 of 0.75" and set(a.indices.tolist()) <= set(real.indices.tolist())
    )
    assert a.indices.tolist() == sorted(a.indices.tolist()) and a.indices.tolist() != b.indices.tolist()
    assert a.indices.tolist() == subsample(real, 0.75, 0).indices.tolist()  # the same draw, the same images
    assert a.lung_masks == tuple(Path(f"m{i // 2}") for i in a.indices.tolist())
    key = lambda r: real_stats_key(r, type("X", (), {"protocol": "p", "weights": "w"})())  # noqa: E731
    assert "subset" not in key(real) and key(a)["subset"] == "draw 0 of 0.75" and key(a) != key(b)
    with pytest.raises(ValueError, match="fraction=0 must be in"):
        subsample(real, 0, 0)


def test_a_multi_seed_run_resumed_after_a_kill_redoes_nothing_finished(tmp_path: Path) -> None:
    from medsg_lib.data.memory import SyntheticXrays
    from medsg_lib.training import train

    data = SyntheticXrays(32, 1, num_per_class=4, seed=0)
    data_cfg = DataConfig(img_size=32)
    runs = {s: tmp_path / run_name("dcgan", "all", s) for s in (0, 1)}
    train(tiny_cfg("dcgan", seed=0), data_cfg, runs[0], dataset=data, progress=False)
    # seed 1 "killed" after its first checkpoint (step 2 of 4), then the whole plan run again
    train(tiny_cfg("dcgan", seed=1), data_cfg, runs[1], dataset=data, progress=False, stop_at=2)
    finished = {p: p.stat().st_mtime_ns for p in runs[0].rglob("*") if p.is_file()}
    for s in (0, 1):
        train(tiny_cfg("dcgan", seed=s), data_cfg, runs[s], dataset=data, progress=False)
    assert {p: p.stat().st_mtime_ns for p in runs[0].rglob("*") if p.is_file()} == finished
    assert sorted(p.name for p in (runs[1] / "checkpoints").iterdir()) == [
        "step_0000002.pt",
        "step_0000004.pt",
    ]
    configs = [json.loads((runs[s] / CONFIG_NAME).read_text()) for s in (0, 1)]
    assert [c["train"]["seed"] for c in configs] == [0, 1] and configs[0]["code"]["source"]
    a, b = (torch.load(runs[s] / "checkpoints" / "step_0000004.pt", weights_only=True) for s in (0, 1))
    first = next(iter(a["nets"]["generator"]))
    assert not torch.equal(a["nets"]["generator"][first], b["nets"]["generator"][first])  # other seeds


def test_generated_sets_carry_their_training_seed_and_code(tmp_path: Path) -> None:
    from helpers import write_png

    from medsg_lib.evaluate import missing_seeds, plan_targets

    for name, seed in (("dcgan", 0), ("dcgan_seed1", 1), ("gan", 0)):
        info = {
            "train": {"model": name.split("_")[0], "seed": seed},
            "checkpoint": "c",
            "train_code": ["ab", "cd"],
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / CONFIG_NAME).write_text(json.dumps(info))
        write_png(tmp_path / name / "all" / "000000.png", 1)
    targets = plan_targets(tmp_path)
    assert [(t.model, t.train_seed, t.train_code) for t in targets] == [
        ("dcgan", 0, "ab+cd"), ("dcgan", 1, "ab+cd"), ("gan", 0, "ab+cd"),
    ]  # fmt: skip
    assert missing_seeds(targets, 2) == ["gan all: seed(s) 1"] and missing_seeds(targets, 1) == []
    assert missing_seeds(targets, 3) == ["dcgan all: seed(s) 2", "gan all: seed(s) 1, 2"]


def test_deterministic_runs_skip_folders_that_are_not_training_runs(tmp_path: Path) -> None:
    from medsg_lib.generate import deterministic_runs

    for name, info in (
        ("cyclegan_seed1", {"train": {"model": "cyclegan", "seed": 1}}),
        ("dcgan", {"train": {"model": "dcgan"}}),
        ("classifier", {"classifier": {"stem": "torchvision"}}),  # notebook 04's classifier: no "train"
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / CONFIG_NAME).write_text(json.dumps(info))
    (tmp_path / "curves").mkdir()  # notebook 09's long runs: a folder of runs
    assert deterministic_runs(tmp_path) == ["cyclegan_seed1"]


def test_summaries_over_seeds_by_hand() -> None:
    import pandas as pd

    table = pd.DataFrame(
        {
            "layer": ["l3", "l3", "l3", "l3", "l3", "l3"],
            "class": ["A", "B", "A", "B", "A", "B"],
            "share": [0.2, 0.5, 0.4, 0.5, 0.6, 0.8],
            "hit": [1.0, float("nan"), 0.0, float("nan"), 1.0, float("nan")],
            "seed": [0, 0, 1, 1, 2, 2],
        }
    )
    out = summarise_over_seeds(table, ["layer", "class"], ["share", "hit"], "seed")
    assert out["class"].tolist() == ["A", "B"] and out["n_seeds"].tolist() == [3, 3]
    a, b = out.iloc[0], out.iloc[1]
    assert a["share"] == pytest.approx(0.4) and a["share_sd"] == pytest.approx(0.2)  # sd of 0.2, 0.4, 0.6
    assert (a["share_min"], a["share_max"]) == (0.2, 0.6)
    assert b["share"] == pytest.approx(0.6) and b["share_sd"] == pytest.approx(math.sqrt(0.03))
    assert a["hit"] == pytest.approx(2 / 3) and math.isnan(b["hit"])  # no lesion: no value, not a zero
    with pytest.raises(ValueError, match=r"the table has no column\(s\) \['iou'\]"):
        summarise_over_seeds(table, ["layer"], ["iou"], "seed")


def test_cam_classifier_seeds_train_each_seed_once_into_its_own_run(tmp_path: Path, monkeypatch) -> None:
    import medsg_lib.classify.stage as stage
    from medsg_lib.classify import cam_classifier_seeds
    from medsg_lib.config import ClassifierConfig

    calls = []

    def fake_ensure(cfg, data_cfg, run_dir, **kwargs):
        calls.append((cfg.seed, run_dir.name, kwargs["name"]))
        return f"model{cfg.seed}", {"seed": cfg.seed}

    monkeypatch.setattr(stage, "ensure_classifier", fake_ensure)
    cam_cfg, main_cfg = ClassifierConfig(stem="fine", seed=0), ClassifierConfig(seed=5)
    first = ("seed-0 model", {"seed": 0})
    got = cam_classifier_seeds(cam_cfg, main_cfg, first, DataConfig(), tmp_path, 3)
    assert got[0] is first and [m for m, _ in got[1:]] == ["model1", "model2"]
    assert calls == [
        (1, "cam_classifier_seed1", "cam_classifier_seed1"),
        (2, "cam_classifier_seed2", "cam_classifier_seed2"),
    ]
    calls.clear()  # a profile without a Figure 1 classifier of its own: the main one's recipe, seeds after its own
    cam_classifier_seeds(None, main_cfg, first, DataConfig(), tmp_path, 2)
    assert calls == [(6, "classifier_seed1", "classifier_seed1")]
    assert cam_classifier_seeds(cam_cfg, main_cfg, first, DataConfig(), tmp_path, 1) == [first]
    with pytest.raises(ValueError, match="seeds=0 must be an int >= 1"):
        cam_classifier_seeds(cam_cfg, main_cfg, first, DataConfig(), tmp_path, 0)


def test_mean_sd_table_reads_as_mean_plus_minus_sd() -> None:
    import pandas as pd

    summary = pd.DataFrame(
        {
            "k": ["a", "b", "c"],
            "n_seeds": [3, 1, 3],
            "v": [0.41234, 0.5, float("nan")],
            "v_sd": [0.2, None, None],
        }
    )
    assert mean_sd_table(summary, ["k"], ["v"], digits=2)["v"].tolist() == ["0.41 ± 0.20", "0.50", "—"]
