"""The one atomic-write helper, project-relative paths and run names (medsg_lib.files)."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medsg_lib.files import (
    DiskFullError,
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


def disk_full_message(path: Path, reason: str) -> str:
    """The regex of :func:`medsg_lib.files.disk_full_error`'s message for ``path`` (free space: any)."""
    return (
        re.escape(f"could not write {path}: {reason} (")
        + r"[0-9.]+ (GB|MB|kB|bytes)"
        + re.escape(
            f" free in {path.parent}). Earlier files are intact and nothing was left half-written; free some space "
            "(or, for 'File too large', raise the file-size limit: ulimit -f) and run the same command again: it "
            "goes on from the last checkpoint or finished file"
        )
    )


def test_a_full_disk_names_the_file_the_free_space_and_the_fix(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "generated" / "img.png"
    write_atomic(path, lambda f: f.write(b"old"))

    def full(f) -> None:
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DiskFullError, match=disk_full_message(path, "No space left on device")) as info:
        write_atomic(path, full)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and sorted(p.name for p in path.parent.iterdir()) == ["img.png"]

    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"step": 1})
    real_write = os.write

    def half_then_full(fd: int, data) -> int:
        real_write(fd, bytes(data[:5]))  # part of the line reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFullError, match=disk_full_message(log, "No space left on device")):
        append_jsonl(log, [{"step": 2}, {"step": 3}])
    monkeypatch.undo()
    assert log.read_text() == '{"step": 1}\n'  # no half line: the log still reads
    append_jsonl(log, {"step": 2})
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]


def test_a_real_file_size_limit_stops_a_checkpoint_and_keeps_the_previous_one(tmp_path: Path) -> None:
    # a real EFBIG from the kernel (ulimit -f in a child process; Python ignores SIGXFSZ), not a patched one
    ckpt_dir = tmp_path / "run" / "checkpoints"
    code = f"""
import resource, sys, torch
from medsg_lib.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from medsg_lib.files import DiskFullError
run = {str(tmp_path / "run")!r}
save_checkpoint(checkpoint_path(run, 1), {{"step": 1, "w": torch.arange(10)}})
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    save_checkpoint(checkpoint_path(run, 2), {{"step": 2, "w": torch.zeros(100_000)}})
except DiskFullError as err:
    print(err)
    sys.exit(3)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    message = disk_full_message(ckpt_dir / "step_0000002.pt", "File too large")
    assert re.fullmatch(rf"\[Errno {errno.EFBIG}\] {message}", done.stdout.strip()), done.stdout
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step_0000001.pt"]
    from medsg_lib.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt_dir / "step_0000001.pt")["step"] == 1


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
