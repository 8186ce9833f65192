"""Config validation, the reproduce planner/runner and the command line."""

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from medsg_lib.config import DataConfig, TrainConfig, from_jsonable, to_jsonable
from medsg_lib.families import FAMILIES, DCGANConfig, GANConfig, MedSGConfig, load_train_config, resolve
from medsg_lib.files import run_name
from medsg_lib.notebook import overrides
from medsg_lib.paths import project_root
from medsg_lib.profiles import PROFILE_NAMES, get_profile
from medsg_lib.reproduce import NotebookFailed, NotebookJob, plan_jobs, refresh_notebooks, run_jobs


def test_every_profile_builds_and_round_trips_through_json():
    for name in PROFILE_NAMES:
        prof = get_profile(name)
        for model in FAMILIES:
            cfg = prof.train_config(model)
            assert load_train_config(to_jsonable(cfg)) == cfg
            assert from_jsonable(TrainConfig, to_jsonable(cfg)).net == to_jsonable(cfg.net)  # unresolved
        assert from_jsonable(DataConfig, to_jsonable(prof.data)) == prof.data


def test_unknown_profile_names_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown profile 'fast'; choose one of smoke, cpu, paper, paper-faithful"
    ):
        get_profile("fast")


def test_w_hpf_other_than_zero_is_refused():
    with pytest.raises(
        ValueError, match=r"MedSGConfig.w_hpf=1.0 is not supported: w_hpf > 0 needs StarGAN v2's"
    ):
        MedSGConfig(w_hpf=1.0)


@pytest.mark.parametrize("size", [8, 48, 1024])
def test_image_size_must_be_power_of_two_in_range(size):
    with pytest.raises(
        ValueError, match=rf"TrainConfig.img_size={size} must be a power of two between 16 and 512"
    ):
        TrainConfig(img_size=size)


def test_bad_choice_names_field_and_allowed_values():
    registered = ", ".join(map(repr, FAMILIES))
    with pytest.raises(ValueError) as err:
        resolve(TrainConfig(model="vae"))  # the registry resolves a config: it names every registered model
    assert str(err.value) == f"TrainConfig.model='vae' is not allowed; choose one of {registered}"
    with pytest.raises(
        ValueError, match=r"TrainConfig.net is a DCGANConfig but model='medsg' takes a MedSGConfig"
    ):
        resolve(TrainConfig(model="medsg", net=DCGANConfig()))
    with pytest.raises(ValueError, match=r"DataConfig.root must be set for layout='covidqu'"):
        DataConfig(layout="covidqu")


def test_medsg_is_one_model_for_all_classes():
    with pytest.raises(ValueError, match=r"target_class must be 'all' for model='medsg'"):
        resolve(TrainConfig(model="medsg", target_class="Normal"))


def test_profiles_keep_paper_values():
    paper, faithful = (
        get_profile("paper").train_config("medsg"),
        get_profile("paper-faithful").train_config("medsg"),
    )
    assert (paper.img_size, paper.batch_size, paper.iterations, paper.net.lambda_ds, paper.net.w_hpf) == (
        256,
        8,
        100_000,
        2.0,
        0,
    )
    assert (paper.net.lr, paper.net.f_lr, paper.net.beta1, paper.net.beta2, paper.net.weight_decay) == (
        1e-4,
        1e-6,
        0.0,
        0.99,
        1e-4,
    )
    assert (faithful.channels, faithful.batch_size, faithful.iterations) == (3, 2, 5_000)
    assert (
        get_profile("paper-faithful").data.faithful_augment and not get_profile("paper").data.faithful_augment
    )


def test_overrides_ignore_unset_sentinels():
    cfg = TrainConfig()
    assert overrides(cfg, iterations=0, device="", model=None) == cfg
    assert overrides(cfg, iterations=5, seed=3) == replace(cfg, iterations=5, seed=3)
    assert run_name("dcgan", "Non-COVID") == "dcgan_non_covid" and run_name("medsg", "all") == "medsg"


def _write_nb(path: Path, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile: str = "smoke"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_plan_orders_notebooks_and_expands_training(tmp_path):
    for name in ("02_training.ipynb", "01_data_exploration.ipynb", "notes.ipynb"):
        _write_nb(tmp_path / name, "pass")
    jobs = plan_jobs("cpu", tmp_path)
    assert jobs[0] == NotebookJob("01_data_exploration.ipynb", {"profile": "cpu"})
    training = [j.parameters for j in jobs[1:]]
    assert training[0] == {"profile": "cpu", "model": "medsg", "target_class": "all"}
    expected = [
        {"profile": "cpu", "model": n, "target_class": t}
        for n in FAMILIES
        for t in get_profile("cpu").reproduce_targets(n)
    ]
    # every registered family, each for its reproduce targets in the profile, in registry order
    assert training == expected
    assert len(training) >= 1 + 2 * 4  # at least medsg + (dcgan, gan) x (all + 3 classes)
    assert {"profile": "cpu", "model": "rsgan", "target_class": "Normal"} not in training  # cpu: whole set
    paper = [j.parameters for j in plan_jobs("paper", tmp_path)[1:]]
    assert {"profile": "paper", "model": "rsgan", "target_class": "Normal"} in paper  # the family's targets
    assert (
        jobs[1 + expected.index({**expected[0], "model": "dcgan"})].output_name
        == "02_training__dcgan__all.ipynb"
    )
    assert all(j.notebook != "notes.ipynb" for j in jobs)


def test_run_jobs_stops_at_first_failing_notebook(tmp_path, capfd):
    nb_dir, out_dir = tmp_path / "nb", tmp_path / "out"
    nb_dir.mkdir()
    _write_nb(nb_dir / "01_ok.ipynb", "x = 1")
    _write_nb(nb_dir / "02_bad.ipynb", "raise RuntimeError('boom')")
    _write_nb(nb_dir / "03_never.ipynb", "x = 3")
    jobs = plan_jobs("smoke", nb_dir)
    with pytest.raises(
        NotebookFailed,
        match=r"notebook 02_bad.ipynb with \{'profile': 'smoke'\} failed in cell \d+: RuntimeError: boom",
    ):
        run_jobs(jobs, nb_dir, out_dir, progress=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["01_ok.ipynb", "02_bad.ipynb"]
    assert "without encryption" not in capfd.readouterr().err  # the kernels' start-up warning is not shown


def test_refresh_executes_the_notebooks_in_place_and_stamps_the_cpu_family(tmp_path):
    from medsg_lib.devices import cpu_family

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _write_nb(nb_dir / "01_first.ipynb", "print(6 * 7)")
    _write_nb(nb_dir / "02_second.ipynb", "print(profile)")
    _write_nb(nb_dir / "notes.ipynb", "raise RuntimeError('not a numbered notebook')")
    for stale in ("runs/smoke", "generated/smoke-seed1", "results/smoke"):
        (tmp_path / stale).mkdir(parents=True)
    (tmp_path / "runs" / "cpu").mkdir()
    (tmp_path / "runs" / "smokey").mkdir()  # another name, kept
    stamp = tmp_path / "notebooks-cpu"
    results = refresh_notebooks(nb_dir, stamp, progress=False, root=tmp_path)
    assert [r.output for r in results] == [nb_dir / "01_first.ipynb", nb_dir / "02_second.ipynb"]
    outputs = [
        nbformat.read(nb_dir / n, as_version=4).cells[1].outputs
        for n in ("01_first.ipynb", "02_second.ipynb")
    ]
    assert [o[0]["text"] for o in outputs] == ["42\n", "smoke\n"]  # committed parameters, nothing injected
    assert len(nbformat.read(nb_dir / "02_second.ipynb", as_version=4).cells) == 2
    assert stamp.read_text() == cpu_family() + "\n"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*")) == [
        "notebooks/01_first.ipynb",
        "notebooks/02_second.ipynb",
        "notebooks/notes.ipynb",
        "runs/cpu",
        "runs/smokey",
    ]
    # a failing notebook stamps nothing
    _write_nb(nb_dir / "03_bad.ipynb", "raise RuntimeError('boom')")
    stamp.write_text("x86-amx\n")
    with pytest.raises(NotebookFailed, match="03_bad.ipynb"):
        refresh_notebooks(nb_dir, stamp, progress=False, root=tmp_path)
    assert stamp.read_text() == "x86-amx\n"


def test_cli_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "medsg_lib", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("reproduce", "phantoms", "refresh-notebooks"):
        assert command in out.stdout


def test_baselines_get_their_own_training_settings():
    prof = get_profile("paper")
    dcgan = prof.train_config("dcgan", "Normal")
    assert (dcgan.model, dcgan.target_class, dcgan.img_size, dcgan.batch_size) == ("dcgan", "Normal", 64, 128)
    assert prof.train_config("medsg") == resolve(
        prof.train
    )  # the paper profile sizes no model: family defaults
    assert dcgan.net == DCGANConfig() and prof.train_config("gan").net == GANConfig()


def test_cli_bench_train_prints_speed(capsys):
    from medsg_lib.__main__ import main

    argv = ["bench", "train", "--model", "gan", "--profile", "smoke", "--img-size", "32", "--batch-size", "4"]
    assert main([*argv, "--steps", "1", "--warmup", "0", "--results", ""]) == 0
    out = capsys.readouterr().out
    assert '"images_per_s"' in out and '"s_per_iter"' in out


def test_cli_train_then_generate(tmp_path, capsys):
    from medsg_lib.__main__ import main

    run_dir, out_dir = tmp_path / "run", tmp_path / "gen"
    assert (
        main(
            [
                "train",
                "--profile",
                "smoke",
                "--model",
                "dcgan",
                "--target-class",
                "Normal",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    assert main(["generate", str(run_dir), str(out_dir), "--profile", "smoke", "--num-per-class", "3"]) == 0
    assert sorted(p.name for p in (out_dir / "normal").glob("*.png")) == [
        "200000.png",
        "200001.png",
        "200002.png",
    ]
    (tmp_path / "empty").mkdir()
    assert main(["generate", str(tmp_path / "empty"), str(out_dir), "--profile", "smoke"]) == 1
    assert "no checkpoint in" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*missing\.pt does not exist: pass a run's"):
        main(["generate", str(tmp_path / "missing.pt"), str(out_dir), "--profile", "smoke"])


def test_common_parameters_reach_only_the_notebooks_that_declare_them(tmp_path):
    _write_nb(tmp_path / "01_data_exploration.ipynb", "pass")
    nb = nbformat.read(tmp_path / "01_data_exploration.ipynb", as_version=4)
    nb.cells[0].source += '\ndata_root: str = ""  # data folder\nlayout: str = ""'
    nbformat.write(nb, tmp_path / "03_generation.ipynb")
    common = {"layout": "folders", "data_root": "../data/some set/x", "device": ""}
    jobs = plan_jobs("cpu", tmp_path, common)
    assert jobs[0].parameters == {"profile": "cpu"}  # declares neither
    assert jobs[-1].parameters == {"profile": "cpu", "layout": "folders", "data_root": "../data/some set/x"}
    assert jobs[-1].output_name == "03_generation.ipynb"  # data parameters never enter the file name
    assert NotebookJob("02_x.ipynb", {}, ("a/b c", "COVID-19")).output_name == "02_x__a_b_c__COVID-19.ipynb"
    with pytest.raises(
        ValueError, match=r"no notebook has parameter\(s\) per_clas; they have: data_root, layout"
    ):
        plan_jobs("cpu", tmp_path, {"per_clas": 3})


def test_heartbeat_lines_are_forwarded_and_the_rest_is_not(capsys, monkeypatch):
    from medsg_lib.heartbeat import ENV, Heartbeat
    from medsg_lib.reproduce import _Heartbeats

    sink = _Heartbeats()
    sink.write("table row\n[medsg] train medsg: step 10/1")
    sink.write("00: g 1.2\nnoise\n")
    assert capsys.readouterr().out == "  [medsg] train medsg: step 10/100: g 1.2\n"
    monkeypatch.setenv(ENV, "0")
    Heartbeat("x").beat("never", force=True)
    monkeypatch.setenv(ENV, "3600")
    beat = Heartbeat("evaluate")
    beat.beat("not yet")
    beat.beat("3/16 sets", force=True)
    assert capsys.readouterr().out == "[medsg] evaluate: 3/16 sets\n"


def test_other_data_gets_its_own_output_folders(monkeypatch, tmp_path):
    from medsg_lib.paths import data_tag, output_dirs

    monkeypatch.setenv("MEDSG_ROOT", str(tmp_path))
    assert data_tag() == ""
    assert data_tag("folders", "/x/y/cxr real") == "folders-cxr_real"
    assert data_tag("", "/data/COVID-QU-Ex") == "default-COVID-QU-Ex"
    default, other = output_dirs("cpu"), output_dirs("cpu", "folders-cxr-real")
    assert (default.results, default.runs) == (tmp_path / "results", tmp_path / "runs" / "cpu")
    assert other.results == tmp_path / "results" / "cpu-folders-cxr-real"
    assert other.figures == tmp_path / "figures" / "cpu-folders-cxr-real"
    assert other.generated == tmp_path / "generated" / "cpu-folders-cxr-real"


def test_cli_reproduce_refuses_unknown_parameters_and_missing_data(tmp_path):
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "medsg_lib", "reproduce", *a], capture_output=True, text=True
    )
    out = run("--profile", "smoke", "-p", "per_clas", "3")
    assert out.returncode == 2 and "no notebook has parameter(s) per_clas" in out.stderr
    out = run("--data-root", str(tmp_path / "absent"))
    assert out.returncode != 0 and f"--data-root {tmp_path / 'absent'}: no such folder" in out.stderr


def test_data_source_tags_and_claims(monkeypatch, tmp_path):
    from medsg_lib.notebook import claim_output_dirs, data_source_tag
    from medsg_lib.paths import output_dirs

    assert data_source_tag(get_profile("cpu")) == ""  # the embedded default: committed outputs
    assert (
        data_source_tag(get_profile("paper")) == "covidqu-COVID-QU-Ex"
    )  # real data: never the committed ones
    assert data_source_tag(get_profile("cpu"), "folders", "/a/cxr-real") == "folders-cxr-real"
    monkeypatch.setenv("MEDSG_ROOT", str(tmp_path))
    dirs = output_dirs("cpu", "folders-cxr")
    claim_output_dirs(dirs, "folders", "/a/cxr")
    claim_output_dirs(dirs, "folders", "/a/cxr")  # the same data again: fine
    with pytest.raises(
        ValueError,
        match=r"holds runs on folders data at '(\.\./)+a/cxr', not '(\.\./)+b/cxr': two data folders",
    ):
        claim_output_dirs(dirs, "folders", "/b/cxr")


def test_bench_train_keeps_the_profiles_precision_and_layout_unless_given():
    from medsg_lib.__main__ import bench_train_config, build_parser

    base = [
        "bench",
        "train",
        "--model",
        "dcgan",
        "--profile",
        "cpu",
        "--img-size",
        "64",
        "--batch-size",
        "32",
    ]
    cfg = bench_train_config(build_parser().parse_args(base))
    assert (cfg.amp, cfg.channels_last) == ("auto", True)  # what the cpu profile trains with
    cfg = bench_train_config(build_parser().parse_args([*base, "--amp", "off", "--no-channels-last"]))
    assert (cfg.amp, cfg.channels_last) == ("off", False)
    cfg = bench_train_config(build_parser().parse_args(["bench", "train", "--channels-last"]))
    assert (cfg.amp, cfg.channels_last, cfg.img_size) == ("off", True, 256)  # the paper profile's precision


def test_a_second_reproduce_on_the_same_outputs_is_refused(tmp_path):
    from medsg_lib.files import folder_lock

    executed = tmp_path / "results" / "executed"
    env = {**os.environ, "MEDSG_ROOT": str(tmp_path)}
    shutil.copytree(project_root() / "notebooks", tmp_path / "notebooks")
    with folder_lock(executed, "reproduce --profile smoke"):
        out = subprocess.run(
            [sys.executable, "-m", "medsg_lib", "reproduce", "--profile", "smoke", "--only", "99"],
            capture_output=True,
            text=True,
            env=env,
        )
    assert out.returncode == 1
    assert f"[reproduce] {executed} is in use by process {os.getpid()} on " in out.stderr
    assert "(reproduce --profile smoke, since " in out.stderr
