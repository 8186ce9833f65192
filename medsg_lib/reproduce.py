"""Run the numbered notebooks in order with papermill: the one command that regenerates tables and figures.

Each job is a notebook plus parameters; executed copies go to ``results/executed/`` (git-ignored). The first
failing notebook stops the run with an error naming the notebook, its executed copy and the failing cell.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsg_lib.families import FAMILIES
from medsg_lib.files import check_seed_count
from medsg_lib.heartbeat import ENV, PREFIX
from medsg_lib.paths import project_root
from medsg_lib.profiles import Profile, get_profile


@dataclass(frozen=True)
class NotebookJob:
    """One papermill execution: ``notebook`` (file name in ``notebooks/``) with ``parameters``; ``tags``: the
    values that tell this job from the notebook's other jobs (e.g. model and class), for the copy's name."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def output_name(self) -> str:
        """File name of the executed copy, e.g. ``02_training__dcgan__COVID-19.ipynb`` (file-name safe)."""
        name = "__".join([Path(self.notebook).stem, *self.tags])
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".ipynb"


@dataclass(frozen=True)
class JobResult:
    """What one executed job took and wrote."""

    job: NotebookJob
    seconds: float
    output: Path


# the kernels' own log at ERROR: ipykernel warns at every start that its (localhost) sockets are not encrypted,
# a line per notebook the user cannot act on; the notebooks' own warnings are in their outputs, untouched
KERNEL_ARGUMENTS: tuple[str, ...] = ("--IPKernelApp.log_level=ERROR",)


class NotebookFailed(RuntimeError):
    """A notebook failed under papermill; the message names it, its executed copy and the error."""


def _training_parameters(profile: Profile, seeds: int = 1) -> Iterator[dict[str, Any]]:
    # every registered model, each for the classes it trains in `reproduce` in this profile (its family's
    # reproduce_targets unless the profile overrides them): Med-StyleGAN2 is one multi-domain model; the
    # baselines are trained on the whole set (as the paper did) and once per class (so that per-class FIDs
    # compare with Med-StyleGAN2's); seed by seed, so that an interrupted multi-seed run has whole seeds; seed 0
    # without a `seed` parameter (the one-seed jobs are the same whatever `seeds`)
    for seed in range(seeds):
        for name in FAMILIES:
            for target in profile.reproduce_targets(name):
                yield {"model": name, "target_class": target, **({"seed": seed} if seed else {})}


# notebook file -> parameter sets beyond the profile (one job each); notebooks not listed run once.
_EXPANSIONS = {"02_training.ipynb": _training_parameters}


def notebook_parameters(path: Path) -> set[str]:
    """The names in a notebook's ``parameters`` cell (papermill's own reader)."""
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


def numbered_notebooks(notebooks_dir: Path) -> list[Path]:
    """Every ``NN_*.ipynb`` of ``notebooks_dir``, in the order they run."""
    return sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))


def plan_jobs(
    profile: str,
    notebooks_dir: Path | None = None,
    common: Mapping[str, Any] | None = None,
    seeds: int = 1,
) -> list[NotebookJob]:
    """The ordered jobs for ``profile``: every ``NN_*.ipynb`` in ``notebooks_dir`` (sorted), expanded.

    ``common``: parameters for every notebook that declares them (e.g. ``layout``, ``data_root``, ``device``,
    or any ``-p NAME VALUE``); empty values ("", None) are left out, so notebooks keep their profile's
    defaults. A name that no notebook declares raises ValueError listing what they do declare.

    ``seeds`` > 1: every model is trained with seeds ``0 .. seeds - 1`` (seed 0's runs are the one-seed
    reproduce's, resumed), and only the notebooks that declare a ``seeds`` parameter run, with it; the others
    depend on seed 0 alone and are the one-seed reproduce's.
    """
    prof = get_profile(profile)  # validates the name
    check_seed_count(seeds)
    notebooks_dir = notebooks_dir or project_root() / "notebooks"
    common = {k: v for k, v in (common or {}).items() if v not in ("", None)}
    notebooks = numbered_notebooks(notebooks_dir)
    declared = {nb.name: notebook_parameters(nb) for nb in notebooks} if common or seeds > 1 else {}
    if seeds > 1:
        notebooks = [nb for nb in notebooks if "seeds" in declared[nb.name]]
        common = {**common, "seeds": seeds}
    unknown = set(common) - set().union(*declared.values()) if common else set()
    if unknown:
        known = ", ".join(sorted(set().union(*declared.values()) - {"profile"}))
        raise ValueError(f"no notebook has parameter(s) {', '.join(sorted(unknown))}; they have: {known}")
    jobs: list[NotebookJob] = []
    for nb in notebooks:
        shared = {k: v for k, v in common.items() if k in declared.get(nb.name, ())}
        expand = _EXPANSIONS.get(nb.name)
        for extra in expand(prof, seeds) if expand else [{}]:
            params = {"profile": profile, **shared, **extra}
            tags = tuple(f"seed{v}" if k == "seed" else str(v) for k, v in extra.items())
            jobs.append(NotebookJob(nb.name, params, tags))
    return jobs


class _Heartbeats:
    """A stdout sink for papermill that forwards the notebooks' heartbeat lines (:mod:`medsg_lib.heartbeat`)."""

    def __init__(self) -> None:
        self.pending = ""

    def write(self, text: str) -> None:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.startswith(PREFIX):
                print(f"  {line}", flush=True)

    def flush(self) -> None:
        pass


def run_jobs(
    jobs: list[NotebookJob],
    notebooks_dir: Path | None = None,
    out_dir: Path | None = None,
    kernel: str = "python3",
    progress: bool = True,
    heartbeat_s: float = 30.0,
) -> list[JobResult]:
    """Execute ``jobs`` in order with papermill (cwd = project root); returns what each took and wrote.

    While a notebook runs, its heartbeat lines (training steps and losses, images generated, sets evaluated;
    at most one per ``heartbeat_s`` seconds, 0: none) are printed. Raises :class:`NotebookFailed` at the first
    failing notebook.
    """
    import papermill as pm

    root = project_root()
    notebooks_dir = notebooks_dir or root / "notebooks"
    out_dir = out_dir or root / "results" / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(heartbeat_s if progress else 0)  # the kernels inherit it
    results: list[JobResult] = []
    for i, job in enumerate(jobs, 1):
        out_path = out_dir / job.output_name
        shown = out_path.relative_to(root) if out_path.is_relative_to(root) else out_path
        print(f"[reproduce] {i}/{len(jobs)} {job.notebook} {job.parameters} -> {shown}", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(notebooks_dir / job.notebook),
                str(out_path),
                parameters=job.parameters,
                kernel_name=kernel,
                cwd=str(root),
                progress_bar=False,
                stdout_file=_Heartbeats() if progress else None,
                extra_arguments=list(KERNEL_ARGUMENTS),
            )
        except pm.PapermillExecutionError as err:
            raise NotebookFailed(
                f"notebook {job.notebook} with {job.parameters} failed in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}\nExecuted copy with the traceback: {out_path}"
            ) from err
        seconds = time.perf_counter() - t0
        print(f"[reproduce] {job.notebook} done in {seconds:.1f} s", flush=True)
        results.append(JobResult(job, seconds, out_path))
    return results


def summary_table(results: list[JobResult]) -> str:
    """A plain-text table of the jobs: notebook, the parameters beyond the profile, seconds, executed copy."""
    root = project_root()
    rows = [("notebook", "parameters", "seconds", "executed copy")]
    for r in results:
        params = ", ".join(f"{k}={v}" for k, v in r.job.parameters.items() if k != "profile") or "-"
        out = r.output.relative_to(root) if r.output.is_relative_to(root) else r.output
        rows.append((r.job.notebook, params, f"{r.seconds:.1f}", str(out)))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


# the CPU family (devices.cpu_family) that executed the committed notebooks' outputs: `./run.sh test` masks their
# checked numbers on any other family (bits differ by family)
NOTEBOOKS_CPU_FILE = Path(".ci") / "notebooks-cpu"
# what a notebook in the smoke profile writes; a run left from another smoke config would be resumed or refused
SMOKE_OUTPUTS: tuple[str, ...] = ("runs", "generated", "results", "figures")


def stale_smoke_outputs(root: Path) -> list[Path]:
    """The smoke profile's output folders under ``root`` (``runs/smoke``, ``runs/smoke-*``, ...)."""
    found = (p for d in SMOKE_OUTPUTS for p in (Path(root) / d).glob("smoke*") if p.is_dir())
    return sorted(p for p in found if p.name == "smoke" or p.name.startswith("smoke-"))


def remove_smoke_outputs(root: Path) -> None:
    """Remove :func:`stale_smoke_outputs` (disposable: the committed notebooks train their smoke runs afresh)."""
    for path in stale_smoke_outputs(root):
        print(f"[medsg] removing {path.relative_to(root)}", file=sys.stderr, flush=True)  # stdout: results
        shutil.rmtree(path)


def prepare_notebook_checks(root: Path | None = None) -> str:
    """Before `./run.sh test` checks the committed notebooks: remove the smoke outputs of earlier runs, and say
    why the checked numbers must be masked: this CPU's family (:func:`~medsg_lib.devices.cpu_family`) is not
    the one in :data:`NOTEBOOKS_CPU_FILE` (bits differ by family). Empty: compare them exactly."""
    from medsg_lib.devices import cpu_family

    root = Path(root or project_root())
    remove_smoke_outputs(root)
    made_on, here = (root / NOTEBOOKS_CPU_FILE).read_text(encoding="utf-8").strip(), cpu_family()
    if here == made_on:
        return ""
    return (
        f"this CPU ({here}) is not of the family the notebooks' checked outputs were made on ({made_on}), so "
        "their numbers are masked (.ci/nbval-other-cpu.cfg); names, labels and the cells' assertions are still "
        "checked"
    )


def refresh_notebooks(
    notebooks_dir: Path | None = None,
    stamp: Path | None = None,
    progress: bool = True,
    root: Path | None = None,
) -> list[JobResult]:
    """Execute every numbered notebook in place, in order, with its committed parameters (the smoke profile):
    the outputs `./run.sh test` checks. The smoke outputs of earlier runs are removed first (as `./run.sh test`
    does: the notebooks would resume them instead of training afresh). Then this CPU's family
    (:func:`~medsg_lib.devices.cpu_family`) is written to ``stamp`` (default: :data:`NOTEBOOKS_CPU_FILE` under
    ``root``), so that a CPU of another family knows to mask the checked numbers. ``root``: where the smoke outputs are removed
    and the stamp goes (default: :func:`~medsg_lib.paths.project_root`, where the notebooks run).

    Raises:
        NotebookFailed: a notebook failed (the stamp is left as it was).
    """
    from medsg_lib.devices import cpu_family

    root = Path(root or project_root())
    notebooks_dir = Path(notebooks_dir or root / "notebooks")
    remove_smoke_outputs(root)
    jobs = [NotebookJob(nb.name) for nb in numbered_notebooks(notebooks_dir)]
    results = run_jobs(jobs, notebooks_dir, out_dir=notebooks_dir, progress=progress)
    stamp = Path(stamp or root / NOTEBOOKS_CPU_FILE)
    stamp.write_text(cpu_family() + "\n", encoding="utf-8")
    return results
