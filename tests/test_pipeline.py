"""The glue the notebooks call: run summaries, generation over runs, the shared classifier, result tables."""

from dataclasses import replace

import pandas as pd
import pytest
from helpers import marked_image, write_png

from medsg_lib import classify, report
from medsg_lib.classify import stage
from medsg_lib.files import LOG_NAME, read_jsonl
from medsg_lib.generate import generate_runs
from medsg_lib.profiles import get_profile
from medsg_lib.training import latest_samples, run_summary, train


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke profile with its phantoms written to a temporary folder."""
    prof = get_profile("smoke")
    root = tmp_path_factory.mktemp("phantoms")
    return replace(
        prof,
        phantoms=replace(prof.phantoms, root=root),
        data=replace(prof.data, cache_dir=root / "cache"),
    )


def test_upsert_row_replaces_by_key(tmp_path):
    path = tmp_path / "t.csv"
    report.upsert_row(path, "run", {"run": "b", "x": 1})
    report.upsert_row(path, "run", {"run": "a", "x": 2})
    table = report.upsert_row(path, "run", {"run": "b", "x": 3})
    assert table.to_dict(orient="records") == [{"run": "a", "x": 2}, {"run": "b", "x": 3}]
    assert pd.read_csv(path).equals(table)
    # rows of runs that are gone are dropped when the next row is written
    table = report.upsert_row(path, "run", {"run": "c", "x": 4}, keep={"b", "c"})
    assert table["run"].tolist() == ["b", "c"]


def test_run_folders_are_the_folders_that_exist(tmp_path):
    from medsg_lib.files import run_folders

    (tmp_path / "runs" / "dcgan").mkdir(parents=True)
    (tmp_path / "runs" / "data_source.json").write_text("{}")
    assert run_folders(tmp_path / "runs") == {"dcgan"} and run_folders(tmp_path / "none") == set()


def test_write_table_formats_and_rejects_unknown(tmp_path):
    df = pd.DataFrame({"model": ["GAN"], "FID": ["2446.535"]})
    written = report.write_table(df, tmp_path / "t1", formats=("csv", "md", "tex"))
    assert [p.name for p in written] == ["t1.csv", "t1.md", "t1.tex"]
    assert "| GAN     | 2446.535 |" in (tmp_path / "t1.md").read_text()  # strings kept as formatted
    with pytest.raises(ValueError, match=r"unknown table format\(s\) \['html'\]"):
        report.write_table(df, tmp_path / "t1", formats=("html",))


def test_run_summary_and_generation_over_runs(smoke, tmp_path):
    runs = tmp_path / "runs"
    for model, target in (("medsg", "all"), ("dcgan", "Normal")):
        cfg = smoke.train_config(model, target)
        data = replace(smoke.data, img_size=cfg.img_size)
        train(cfg, data, runs / f"{model}_{target}", phantoms=smoke.phantoms, progress=False)
    summary = run_summary(runs / "dcgan_Normal")
    assert (summary["model"], summary["target_class"], summary["steps"]) == ("dcgan", "Normal", 4)
    assert summary["amp"] == "off"  # the precision the run used (smoke trains in float32)
    assert summary["params_generator"] > 0 and "d_total" in summary and "g_total" in summary
    assert (
        len(read_jsonl(runs / "medsg_all" / LOG_NAME)) == 4
        and latest_samples(runs / "medsg_all").name == "step_0000004.png"
    )

    gen_cfg = replace(smoke.generate, num_per_class=3)
    table = generate_runs(
        runs, tmp_path / "gen", gen_cfg, smoke.data, phantoms=smoke.phantoms, progress=False
    )
    assert table[["run", "class", "n_images"]].values.tolist() == [
        ["dcgan_Normal", "Normal", 3],
        ["medsg_all", "COVID-19", 3],
        ["medsg_all", "Non-COVID", 3],
        ["medsg_all", "Normal", 3],
    ]


def test_ensure_classifier_trains_once_and_writes_results(smoke, tmp_path, monkeypatch):
    cfg = replace(smoke.classifier, epochs=1)
    kwargs = dict(phantoms=smoke.phantoms, results_dir=tmp_path, figures_dir=tmp_path, progress=False)
    _, result = classify.ensure_classifier(cfg, smoke.data, tmp_path / "cls", **kwargs)
    assert result["split"] == "test" and result["init"] == "scratch"
    assert sum(map(sum, result["confusion"])) == 12  # 4 test phantoms per class
    assert (tmp_path / "classifier.json").is_file() and (tmp_path / "fig_classifier_confusion.png").is_file()

    def refuse(*args, **kw):
        raise AssertionError("retrained although the config is unchanged")

    monkeypatch.setattr(stage, "train_classifier", refuse)
    classify.ensure_classifier(cfg, smoke.data, tmp_path / "cls", **kwargs)  # reused
    with pytest.raises(AssertionError, match="retrained"):
        classify.ensure_classifier(replace(cfg, seed=1), smoke.data, tmp_path / "cls", **kwargs)


def test_class_folder_sets_do_not_choose_the_epoch_on_their_held_out_split(tmp_path, monkeypatch):
    for split in ("train", "val"):
        for k, folder in enumerate(("covid", "non_covid_infection", "normal")):
            for i in range(3):
                write_png(tmp_path / "set" / split / folder / f"{i}.png", marked_image(60 * k + 10 * i, 32))
    data = replace(
        get_profile("smoke").data, layout="folders", root=tmp_path / "set", cache_dir=tmp_path / "c"
    )
    seen = {}

    def capture(cfg, train_set, run_dir, val_set=None, progress=True):
        seen["val_set"] = val_set
        raise RuntimeError("stop after the call")

    monkeypatch.setattr(stage, "train_classifier", capture)
    with pytest.raises(RuntimeError, match="stop after the call"):
        classify.ensure_classifier(get_profile("smoke").classifier, data, tmp_path / "cls", progress=False)
    assert seen["val_set"] is None  # val is the held-out split here: the last epoch is kept


def test_evaluation_split_per_layout():
    assert classify.evaluation_split("folders") == "val"  # class-folder sets have no test split
    assert classify.evaluation_split("covidqu") == "test" and classify.evaluation_split("phantoms") == "test"


def test_fig2_panels_pick_lowest_seed_and_fall_back(tmp_path):
    from types import SimpleNamespace

    from medsg_lib import plots

    gen = tmp_path / "gen"
    write_png(gen / "medsg" / "covid" / "000002.png", 10)
    write_png(gen / "medsg" / "covid" / "000001.png", 20)
    write_png(gen / "dcgan_covid" / "covid" / "100000.png", 30)
    for k in range(2):  # whole-set GAN only: the fallback, one sample per class row while there are enough
        write_png(gen / "gan" / "all" / f"30000{k}.png", 40 + k)
    write_png(gen / "dcgan" / "normal" / "000007.png", 70)  # a class folder of a whole-set run
    real = [
        SimpleNamespace(class_name="COVID-19", image_path=write_png(tmp_path / "real" / n, 50))
        for n in ("b.png", "a.png")
    ]
    panels = plots.fig2_panels(gen, real)
    assert panels[("COVID-19", "Med-StyleGAN2")].name == "000001.png"
    assert panels[("COVID-19", "DCGAN")].name == "100000.png"
    assert [panels[(c, "GAN")] for c in ("COVID-19", "Non-COVID", "Normal")] == [
        gen / "gan" / "all" / n for n in ("300000.png", "300001.png", "300001.png")
    ]
    assert panels[("COVID-19", "original")].name == "a.png"
    assert panels[("Normal", "DCGAN")] == gen / "dcgan" / "normal" / "000007.png"
    assert panels[("Normal", "Med-StyleGAN2")] is None and panels[("Normal", "original")] is None
    fig = plots.save_fig2(panels, 32, tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 1000
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]  # models with no image have no column
    assert titles == ["Med-StyleGAN2", "DCGAN", "GAN", "original"]


def test_cam_study_measures_maps_and_gaussian_baseline():
    import numpy as np
    import torch

    from medsg_lib import cam
    from medsg_lib.models.classifier import build_classifier

    torch.manual_seed(0)
    model = build_classifier().eval()
    lung = np.zeros((3, 64, 64), bool)
    lung[:, 16:48, 8:28] = True
    inputs = {"real": cam.CamInputs(torch.rand(3, 1, 64, 64) * 2 - 1, np.array([0, 1, 2]), lung, lung.copy())}
    table, maps = cam.cam_study(model, inputs, layers=("layer3",))
    assert set(table["source"]) == {"real", "baseline: centred Gaussian (real)"}
    assert maps[("gradcam, layer3", "real")].shape == (3, 64, 64)
    gauss = table[(table["source"] == "baseline: centred Gaussian (real)") & (table["class"] == "all")].iloc[
        0
    ]
    expected = np.mean([cam.energy_inside(cam.gaussian_baseline(64, 64), m) for m in lung])
    assert gauss["lung_energy_share"] == pytest.approx(expected, abs=1e-12)
    assert gauss["lung_area_fraction"] == pytest.approx(lung.mean())


def test_utility_experiment_trains_three_classifiers(smoke, tmp_path):
    from medsg_lib.data import build_dataset
    from medsg_lib.utility import generated_dataset, utility_experiment

    for k, slug in enumerate(("covid", "non_covid", "normal")):
        for i in range(2):
            write_png(tmp_path / "gen" / slug / f"{k}{i:05d}.png", 60 * k + 10 * i)
    synthetic = generated_dataset(tmp_path / "gen", 32)
    assert synthetic.labels.tolist() == [0, 0, 1, 1, 2, 2]
    data = smoke.data
    real = build_dataset(data, "train", smoke.phantoms, train=False, progress=False)
    test = build_dataset(data, "test", smoke.phantoms, train=False, progress=False)
    cfg = replace(smoke.classifier, epochs=1)
    table = utility_experiment(cfg, real, {"Gen A": synthetic}, test, tmp_path / "runs", progress=False)
    assert table[["generator", "training_data", "n_train", "n_test"]].values.tolist() == [
        ["none", "real", 24, 12],
        ["Gen A", "synthetic", 6, 12],
        ["Gen A", "real+synthetic", 30, 12],
    ]
    assert (tmp_path / "runs" / "gen_a" / "real_plus_synthetic").is_dir()
    # accuracy over the 12 test images (rounded to 4 places in the table): a whole number of them, each classifier
    correct = table["accuracy"] * 12
    assert ((correct - correct.round()).abs() <= 12 * 5e-5).all() and table["accuracy"].between(0, 1).all()
    with pytest.raises(FileNotFoundError, match=r"no generated images under .*: run notebook 03"):
        generated_dataset(tmp_path / "nothing", 32)


def test_plan_targets_covers_medsg_classes_and_baselines(tmp_path):
    import json

    from medsg_lib.evaluate import plan_targets

    def run(name, model, target, slugs):
        info = {
            "train": {"model": model, "target_class": target},
            "checkpoint": f"{name}.pt",
            "checkpoint_sha256": name,
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(info))
        for slug in slugs:
            write_png(tmp_path / name / slug / "000000.png", 1)

    run("medsg", "medsg", "all", ["covid", "non_covid", "normal"])
    run("dcgan", "dcgan", "all", ["all"])
    run("gan_normal", "gan", "Normal", ["normal"])
    run("gan_covid", "gan", "COVID-19", [])  # trained, nothing generated: skipped
    (tmp_path / "stray").mkdir()  # no config.json: not a generated set
    got = [
        (t.model, t.target_class, t.fake_dir.relative_to(tmp_path).as_posix()) for t in plan_targets(tmp_path)
    ]
    assert got == [
        ("dcgan", "all", "dcgan/all"),
        ("gan", "Normal", "gan_normal/normal"),
        ("medsg", "COVID-19", "medsg/covid"),
        ("medsg", "Non-COVID", "medsg/non_covid"),
        ("medsg", "Normal", "medsg/normal"),
    ]
