"""Command line: ``python -m medsg_lib <command>`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from medsg_lib.config import PROFILE_NAMES, get_profile


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from medsg_lib.reproduce import NotebookFailed, plan_jobs, run_jobs

    jobs = plan_jobs(args.profile)
    if args.only:
        jobs = [j for j in jobs if any(j.notebook.startswith(p) for p in args.only)]
    t0 = time.perf_counter()
    try:
        run_jobs(jobs, progress=not args.quiet)
    except NotebookFailed as err:
        print(f"[reproduce] FAILED: {err}", file=sys.stderr)
        return 1
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medsg_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("reproduce", help="run every numbered notebook in order (tables and figures)")
    p.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 02")
    p.add_argument("--quiet", action="store_true", help="no papermill progress bars")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("phantoms", help="write the synthetic-radiograph default data set")
    p.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    p.add_argument("--root", help="output folder (default: the profile's)")
    p.set_defaults(func=_cmd_phantoms)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
