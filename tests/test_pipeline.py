"""The glue the notebooks call: run summaries, generation over runs, the shared classifier, result tables."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from medsg_lib import classify, report
from medsg_lib.config import ClassifierConfig, get_profile
from medsg_lib.generate import generate_runs
from medsg_lib.training import latest_samples, read_log, run_summary, train


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
    assert summary["params_generator"] > 0 and "d_total" in summary and "g_total" in summary
    assert (
        len(read_log(runs / "medsg_all")) == 4
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

    monkeypatch.setattr(classify, "train_classifier", refuse)
    classify.ensure_classifier(cfg, smoke.data, tmp_path / "cls", **kwargs)  # reused
    with pytest.raises(AssertionError, match="retrained"):
        classify.ensure_classifier(replace(cfg, seed=1), smoke.data, tmp_path / "cls", **kwargs)


def test_evaluation_split_per_layout():
    assert classify.evaluation_split("folders") == "val" and classify.evaluation_split("covidqu") == "test"
    assert isinstance(ClassifierConfig(), ClassifierConfig) and Path("x").name == "x"
