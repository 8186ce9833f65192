"""Run the numbered notebooks in order with papermill: the one command that regenerates tables and figures.

Each job is a notebook plus parameters; executed copies go to ``results/executed/`` (git-ignored). The first
failing notebook stops the run with an error naming the notebook, its executed copy and the failing cell.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsg_lib.families import FAMILIES
from medsg_lib.paths import project_root
from medsg_lib.profiles import get_profile


@dataclass(frozen=True)
class NotebookJob:
    """One papermill execution: ``notebook`` (file name in ``notebooks/``) with ``parameters``."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def output_name(self) -> str:
        """File name of the executed copy, e.g. ``02_training__dcgan__COVID-19.ipynb``."""
        stem = Path(self.notebook).stem
        tags = [str(v) for k, v in self.parameters.items() if k not in ("profile",)]
        return "__".join([stem, *tags]).replace(" ", "_") + ".ipynb"


class NotebookFailed(RuntimeError):
    """A notebook failed under papermill; the message names it, its executed copy and the error."""


def _training_parameters() -> Iterator[dict[str, Any]]:
    # every registered model, each for the classes its family trains in `reproduce`: Med-StyleGAN2 is one
    # multi-domain model; the baselines are trained on the whole set (as the paper did) and once per class (so
    # that per-class FIDs compare with Med-StyleGAN2's)
    for name, family in FAMILIES.items():
        for target in family.reproduce_targets:
            yield {"model": name, "target_class": target}


# notebook file -> parameter sets beyond the profile (one job each); notebooks not listed run once.
_EXPANSIONS = {"02_training.ipynb": _training_parameters}


def plan_jobs(profile: str, notebooks_dir: Path | None = None) -> list[NotebookJob]:
    """The ordered jobs for ``profile``: every ``NN_*.ipynb`` in ``notebooks_dir`` (sorted), expanded."""
    get_profile(profile)  # validates the name
    notebooks_dir = notebooks_dir or project_root() / "notebooks"
    jobs: list[NotebookJob] = []
    for nb in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        expand = _EXPANSIONS.get(nb.name)
        for extra in expand() if expand else [{}]:
            jobs.append(NotebookJob(nb.name, {"profile": profile, **extra}))
    return jobs


def run_jobs(
    jobs: list[NotebookJob],
    notebooks_dir: Path | None = None,
    out_dir: Path | None = None,
    kernel: str = "python3",
    progress: bool = True,
) -> list[Path]:
    """Execute ``jobs`` in order with papermill (cwd = project root); returns the executed copies' paths.

    Raises :class:`NotebookFailed` at the first failing notebook.
    """
    import papermill as pm

    root = project_root()
    notebooks_dir = notebooks_dir or root / "notebooks"
    out_dir = out_dir or root / "results" / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, job in enumerate(jobs, 1):
        out_path = out_dir / job.output_name
        shown = out_path.relative_to(root) if out_path.is_relative_to(root) else out_path
        print(f"[reproduce] {i}/{len(jobs)} {job.notebook} {job.parameters} -> {shown}")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(notebooks_dir / job.notebook),
                str(out_path),
                parameters=job.parameters,
                kernel_name=kernel,
                cwd=str(root),
                progress_bar=progress,
            )
        except pm.PapermillExecutionError as err:
            raise NotebookFailed(
                f"notebook {job.notebook} with {job.parameters} failed in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}\nExecuted copy with the traceback: {out_path}"
            ) from err
        print(f"[reproduce] {job.notebook} done in {time.perf_counter() - t0:.1f} s")
        written.append(out_path)
    return written
