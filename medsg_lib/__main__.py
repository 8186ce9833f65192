"""Command line: ``python -m medsg_lib <command>`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from medsg_lib.config import AMP_CHOICES, TrainConfig
from medsg_lib.families import FAMILIES
from medsg_lib.profiles import PROFILE_NAMES, get_profile

BENCH_RESULTS = "results/bench_train.jsonl"  # relative to the working directory (the project root)


def _parameter_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill's command line reads it: int, float, true/false, else text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _data_root_argument(text: str) -> str:
    """A data folder as the notebooks see it (their working directory is the project root): relative to the
    project root, so that configs and results name no machine's folders. Missing folders stop here."""
    from medsg_lib.paths import project_root

    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise SystemExit(f"--data-root {text}: no such folder ({path})")
    return os.path.relpath(path, project_root())


def _cmd_refresh_notebooks(args: argparse.Namespace) -> int:
    from medsg_lib.devices import cpu_family
    from medsg_lib.reproduce import NOTEBOOKS_CPU_FILE, NotebookFailed, refresh_notebooks, summary_table

    try:
        results = refresh_notebooks(progress=not args.quiet)
    except NotebookFailed as err:
        print(f"[refresh-notebooks] FAILED: {err}", file=sys.stderr)
        return 1
    print(summary_table(results))
    print(
        f"[refresh-notebooks] {len(results)} notebooks executed in place; {NOTEBOOKS_CPU_FILE}: {cpu_family()}"
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from medsg_lib.files import FolderBusyError, folder_lock
    from medsg_lib.notebook import data_source_tag
    from medsg_lib.paths import project_root
    from medsg_lib.reproduce import NotebookFailed, plan_jobs, run_jobs, summary_table

    data_root = _data_root_argument(args.data_root) if args.data_root else ""
    common: dict[str, Any] = {"layout": args.layout, "data_root": data_root, "device": args.device}
    common.update({name: _parameter_value(value) for name, value in args.parameter or ()})
    try:
        jobs = plan_jobs(args.profile, common=common, seeds=args.seeds)
    except ValueError as err:
        print(f"[reproduce] {err}", file=sys.stderr)
        return 2
    if args.only:
        jobs = [j for j in jobs if any(j.notebook.startswith(p) for p in args.only)]
    tag = data_source_tag(get_profile(args.profile), args.layout, data_root)
    executed = project_root() / "results" / "executed" / (f"{args.profile}-{tag}" if tag else "")
    if tag:
        print(
            f"[reproduce] data {data_root or 'of the profile'} (layout {args.layout or 'of the profile'}): outputs in "
            f"results/{args.profile}-{tag}/ and figures/{args.profile}-{tag}/"
        )
    t0 = time.perf_counter()
    try:
        # one reproduce per data source at a time: two would train the same runs and write the same tables
        with folder_lock(executed, f"reproduce --profile {args.profile}"):
            results = run_jobs(jobs, out_dir=executed, progress=not args.quiet)
    except FolderBusyError as err:
        print(f"[reproduce] {err}", file=sys.stderr)
        return 1
    except NotebookFailed as err:
        print(f"[reproduce] FAILED: {err}", file=sys.stderr)
        return 1
    print(summary_table(results))
    print(
        f"[reproduce] {len(jobs)} notebook runs, profile {args.profile!r}, in {time.perf_counter() - t0:.0f} s"
    )
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from medsg_lib.data.phantoms import write_phantoms

    cfg = get_profile(args.profile).phantoms
    if args.root:
        cfg = replace(cfg, root=Path(args.root))
    t0 = time.perf_counter()
    root = write_phantoms(cfg)
    print(f"phantoms in {root} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from medsg_lib.files import run_name
    from medsg_lib.notebook import overrides
    from medsg_lib.paths import output_dirs
    from medsg_lib.training import train

    prof = get_profile(args.profile)
    cfg = overrides(
        prof.train_config(args.model, args.target_class),
        iterations=args.iterations,
        device=args.device,
        seed=args.seed,
    )
    data_cfg = overrides(
        prof.data, layout=args.layout, root=args.data_root, img_size=cfg.img_size, channels=cfg.channels
    )
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else output_dirs(args.profile).runs / run_name(cfg.model, cfg.target_class, cfg.seed)
    )
    print(f"run dir: {train(cfg, data_cfg, run_dir, phantoms=prof.phantoms, resume=not args.restart)}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from medsg_lib.checkpoint import latest_checkpoint
    from medsg_lib.generate import generate
    from medsg_lib.notebook import overrides

    prof = get_profile(args.profile)
    run_dir = Path(args.run_dir)
    ckpt = latest_checkpoint(run_dir) if run_dir.is_dir() else run_dir
    if ckpt is None:
        print(f"no checkpoint in {run_dir}: train first (python -m medsg_lib train ...)", file=sys.stderr)
        return 1
    gen_cfg = overrides(prof.generate, num_per_class=args.num_per_class, mode=args.mode)
    data_cfg = overrides(prof.data, layout=args.layout, root=args.data_root)
    out = generate(ckpt, Path(args.out_dir), gen_cfg, data_cfg, phantoms=prof.phantoms, device=args.device)
    print(f"images in {out}")
    return 0


def bench_train_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` that ``bench train`` times: the profile's, with the flags given (``--amp`` and
    ``--channels-last`` left out keep the profile's own setting)."""
    from medsg_lib.bench import bench_config

    given = {"amp": args.amp, "channels_last": args.channels_last}
    return bench_config(
        args.profile,
        args.model,
        args.img_size,
        args.batch_size,
        args.paper_widths,
        channels=args.channels,
        compile=args.compile,
        **{k: v for k, v in given.items() if v is not None},
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from medsg_lib.bench import bench_summary, bench_train
    from medsg_lib.files import append_jsonl

    cfg = bench_train_config(args)
    result = bench_train(
        cfg,
        args.device,
        steps=args.steps,
        warmup=args.warmup,
        num_threads=args.threads or None,
        peak=args.peak_tflops or None,
    )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "profile": args.profile,
        "paper_widths": args.paper_widths,
        **result,
    }
    print(json.dumps(result, indent=2, default=str))
    print(bench_summary(result))
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(Path(args.results), result)
        print(f"appended to {args.results} (table: python -m medsg_lib bench table)")
    return 0


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from medsg_lib.bench.gpu_check import GpuCheckConfig, gpu_check

    cfg = GpuCheckConfig.quick(args.device) if args.quick else GpuCheckConfig(device=args.device)
    rows = gpu_check(Path(args.out), cfg)
    return 1 if any("error" in row for row in rows) else 0


def _cmd_bench_table(args: argparse.Namespace) -> int:
    from medsg_lib.bench import bench_table
    from medsg_lib.files import read_jsonl, write_text_atomic

    records = read_jsonl(Path(args.results))
    if not records:
        print(f"no records in {args.results}: run python -m medsg_lib bench train first", file=sys.stderr)
        return 1
    table = bench_table(records)
    print(table, end="")
    if args.out:
        write_text_atomic(Path(args.out), table)
        print(f"written to {args.out}")
    return 0


def _cmd_bench_metrics(args: argparse.Namespace) -> int:
    import json

    from medsg_lib.bench import RANDOM_WEIGHTS_NOTE, bench_metrics, bench_table1

    results = []
    for n in args.n:
        work_dir = Path(args.work_dir) / f"n{n}" if args.work_dir else None
        results.append(
            bench_metrics(n, args.img_size, args.batch_size, args.device, work_dir, dims=args.dims)
        )
    print(f"FID feature extraction, ours vs python -m pytorch_fid; weights {RANDOM_WEIGHTS_NOTE}")
    print(f"{'n':>6} {'ours s':>8} {'pt-fid s':>9} {'ratio':>6} {'img/s':>7} {'peak MB':>8} {'|dFID|':>9}")
    for r in results:
        print(
            f"{r['n']:>6} {r['seconds_ours']:>8.1f} {r['seconds_pytorch_fid']:>9.1f} {r['ratio']:>6.2f} "
            f"{r['images_per_s_ours']:>7.1f} {r['peak_mb']:>8.0f} {r['abs_diff']:>9.2g}"
        )
    table1 = None
    if args.table1_profile:
        table1 = bench_table1(args.table1_profile, args.device)
        if table1 is None:
            print(f"table1: no generated images for profile {args.table1_profile!r}; skipped")
        else:
            print(f"table1 evaluation ({args.table1_profile}): {table1['seconds']:.1f} s")
    print(json.dumps({"metrics": results, "table1": table1}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medsg_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("reproduce", help="run every numbered notebook in order (tables and figures)")
    p.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 02")
    p.add_argument("--layout", default="", help="phantoms | covidqu | folders (empty: the profile's)")
    p.add_argument(
        "--data-root",
        default="",
        help="data folder (empty: the profile's); other data writes its own outputs",
    )
    p.add_argument(
        "--device", default="", help="auto | cpu | cuda | mps, for every notebook that trains or runs"
    )
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="a parameter for every notebook that has it (papermill's spelling), e.g. -p per_class 8",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train every model with seeds 0..N-1; Table 1 as mean ± sd and a ranking table in results/seeds<N>/ "
        "(runs only the notebooks with a `seeds` parameter: 02-05, 09 and 10; default 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no heartbeat lines while a notebook runs")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "refresh-notebooks",
        help="execute the committed notebooks in place (smoke profile, earlier smoke outputs removed) and "
        "record this CPU's family in .ci/notebooks-cpu",
    )
    p.add_argument("--quiet", action="store_true", help="no heartbeat lines while a notebook runs")
    p.set_defaults(func=_cmd_refresh_notebooks)

    p = sub.add_parser("phantoms", help="write the synthetic-radiograph default data set")
    p.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    p.add_argument("--root", help="output folder (default: the profile's)")
    p.set_defaults(func=_cmd_phantoms)

    p = sub.add_parser("train", help="train one model (resumes from the run's latest checkpoint)")
    p.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    p.add_argument("--model", default=next(iter(FAMILIES)), choices=tuple(FAMILIES))
    p.add_argument("--target-class", default="all", help="all, or one class for the baselines")
    p.add_argument("--iterations", type=int, default=0, help="0: the profile's")
    p.add_argument("--seed", type=int, default=0, help="training seed (run folder <run>_seed<k> for k > 0)")
    p.add_argument("--device", default="", help="auto | cpu | cuda | mps (empty: the profile's)")
    p.add_argument("--layout", default="", help="phantoms | covidqu | folders (empty: the profile's)")
    p.add_argument("--data-root", default="", help="data folder (empty: the profile's)")
    p.add_argument("--run-dir", default="", help="default: runs/<profile>/<model>[_<class>][_seed<k>]")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="write images per class from a run's latest checkpoint")
    p.add_argument("run_dir", help="a run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("out_dir")
    p.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    p.add_argument("--num-per-class", type=int, default=0, help="0: the profile's (8,000 in paper)")
    p.add_argument("--mode", default="", help="latent | reference (empty: the profile's)")
    p.add_argument("--layout", default="")
    p.add_argument("--data-root", default="")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("bench", help="benchmarks: bench train --model medsg --img-size 256 --batch-size 8")
    bench = p.add_subparsers(dest="what", required=True)
    b = bench.add_parser("train", help="images/s, s/iteration and peak memory of training steps")
    b.add_argument("--model", default=next(iter(FAMILIES)), choices=tuple(FAMILIES))
    b.add_argument(
        "--profile", default="paper", choices=PROFILE_NAMES, help="widths and settings to start from"
    )
    b.add_argument("--img-size", type=int, default=256)
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--channels", type=int, default=1)
    b.add_argument("--device", default="cpu")
    b.add_argument(
        "--amp",
        default=None,
        choices=AMP_CHOICES,
        help="autocast precision (auto: bf16 where the device has bf16 units); default: the profile's",
    )
    b.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC tensors and weights; default: the profile's",
    )
    b.add_argument("--paper-widths", action="store_true", help="default (paper) widths whatever the profile")
    b.add_argument("--compile", action="store_true", help="torch.compile the family's compilable nets")
    b.add_argument(
        "--peak-tflops",
        default="",
        help="the device's peak for the FLOP utilisation: TFLOP/s, 'measured' (a timed matrix product in "
        "the run's precision) or a datasheet name such as h200-sxm-bf16 (docs/performance.md)",
    )
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b.add_argument("--results", default=BENCH_RESULTS, help="JSONL file the record is appended to ('': none)")
    b.set_defaults(func=_cmd_bench)
    b = bench.add_parser("gpu-check", help="the one-call GPU check (scripts/gpu_check.sh): one table")
    b.add_argument("--out", default="results/gpu_check", help="folder of gpu_check.md and gpu_check.jsonl")
    b.add_argument("--device", default="cuda")
    b.add_argument("--quick", action="store_true", help="tiny sizes (a CPU test of the same code)")
    b.set_defaults(func=_cmd_gpu_check)
    b = bench.add_parser("table", help="the markdown performance table of the bench train records")
    b.add_argument("--results", default=BENCH_RESULTS)
    b.add_argument("--out", default="", help="also write the table to this file")
    b.set_defaults(func=_cmd_bench_table)
    b = bench.add_parser(
        "metrics", help="FID images/s and time, ours vs python -m pytorch_fid (RANDOM weights)"
    )
    b.add_argument("--n", type=int, nargs="+", default=[100], help="images per folder, one run each")
    b.add_argument("--img-size", type=int, default=64)
    b.add_argument("--batch-size", type=int, default=50)
    b.add_argument("--device", default="cpu")
    b.add_argument("--dims", type=int, default=2048, choices=(64, 192, 768, 2048))
    b.add_argument("--work-dir", default="", help="keep images, weights and logs here (default: temporary)")
    b.add_argument(
        "--table1-profile", default="", choices=("", *PROFILE_NAMES), help="also time evaluate_generated"
    )
    b.set_defaults(func=_cmd_bench_metrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    from medsg_lib.files import DiskFullError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DiskFullError as err:  # the message names the file, the free space and the fix: no traceback
        print(f"[medsg] stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # training's names the checkpoint it wrote and how to continue
        print(f"[medsg] {err or 'stopped by Ctrl-C'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
