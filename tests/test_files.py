"""The one atomic-write helper, project-relative paths and run names (medsg_lib.files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medsg_lib.files import (
    append_jsonl,
    class_slug,
    project_relative,
    read_jsonl,
    run_name,
    write_atomic,
    write_json_atomic,
)
from medsg_lib.paths import project_root


def test_write_atomic_replaces_whole_files_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "table.csv"
    write_atomic(path, lambda f: f.write(b"old"))
    assert path.read_bytes() == b"old"

    def crash(f) -> None:
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, crash)
    assert path.read_bytes() == b"old"  # the previous file survives
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]  # no temporary file left


def test_written_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_jsonl_round_trip_and_absent_file(tmp_path: Path) -> None:
    assert read_jsonl(tmp_path / "log.jsonl") == []
    append_jsonl(tmp_path / "log.jsonl", {"step": 1})
    append_jsonl(tmp_path / "log.jsonl", {"step": 2, "loss": 0.5})
    assert read_jsonl(tmp_path / "log.jsonl") == [{"step": 1}, {"step": 2, "loss": 0.5}]


def test_paths_in_results_are_relative_to_the_project(tmp_path: Path) -> None:
    assert project_relative(project_root() / "runs" / "cpu" / "classifier" / "classifier.pt") == (
        "runs/cpu/classifier/classifier.pt"
    )
    outside = project_relative(tmp_path / "elsewhere.png")  # outside: relative to the project root
    assert outside.startswith("../") and (project_root() / outside).resolve() == tmp_path / "elsewhere.png"


def test_run_names_and_class_folders() -> None:
    assert run_name("dcgan", "Non-COVID") == "dcgan_non_covid" and run_name("medsg", "all") == "medsg"
    assert [class_slug(c) for c in ("COVID-19", "Normal", "all")] == ["covid", "normal", "all"]
    with pytest.raises(
        ValueError, match=r"unknown class 'Flu'; choose one of 'COVID-19', 'Non-COVID', 'Normal', 'all'"
    ):
        class_slug("Flu")


def test_manifest_preview_names_no_machine_folder(tmp_path, monkeypatch):
    from medsg_lib.manifest import GeneratedItem, manifest_preview, manifest_rows, write_manifest

    monkeypatch.setenv("MEDSG_ROOT", str(tmp_path))
    inside = tmp_path / "data" / "phantoms" / "x.png"
    items = [
        GeneratedItem(1, "Normal", str(inside), "COVID-19", "latent", 0),
        GeneratedItem(2, "Normal", "../shared/y.png", "COVID-19", "latent", 1),
        GeneratedItem(3, "Normal", None, None, "noise", None),
    ]
    run = {"model": "medsg", "checkpoint": "c", "checkpoint_sha256": "s"}
    write_manifest(tmp_path / "gen", manifest_rows(items, run))
    preview = manifest_preview(tmp_path / "gen", rows=3)
    assert preview["source_image"].tolist()[:2] == ["data/phantoms/x.png", "../shared/y.png"]
    assert preview["source_image"].isna().tolist() == [False, False, True]


def test_json_files_are_strict_json(tmp_path):
    import json

    from medsg_lib.files import write_json_atomic

    path = write_json_atomic(tmp_path / "x.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": (2,)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": [2]}


def test_project_relative_never_returns_a_machine_path(tmp_path, monkeypatch):
    from medsg_lib.files import project_relative

    project = tmp_path / "main"
    project.mkdir()
    monkeypatch.setenv("MEDSG_ROOT", str(project))
    assert project_relative(project / "results" / "x.json") == "results/x.json"
    assert project_relative("../shared/data/x") == "../shared/data/x"  # relative: as given
    assert project_relative(project / ".." / "shared" / "data" / "x") == "../shared/data/x"
    assert project_relative(tmp_path / "data" / "y") == "../data/y"
