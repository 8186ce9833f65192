"""Training of every model family, resumable, on CPU, one GPU or several (torchrun).

- :mod:`.plan`: each step's random choices as a function of (seed, step, rank), and the loader;
- :mod:`.state`: networks, EMA and optimisers; their checkpoint dict; fingerprints across ranks;
- :mod:`.rundir`: the run directory's config, log, sample grids and summary;
- :mod:`.loop`: ``train`` itself.
"""

from medsg_lib.training.loop import run_steps, train
from medsg_lib.training.plan import make_plan_fn, step_generator, step_seed
from medsg_lib.training.rundir import (
    RESUMABLE_FIELDS,
    latest_samples,
    read_log,
    run_code_tags,
    run_summary,
    run_train_config,
)
from medsg_lib.training.state import build_train_state, checkpoint_state, restore_state, state_fingerprint

__all__ = [
    "RESUMABLE_FIELDS",
    "build_train_state",
    "checkpoint_state",
    "latest_samples",
    "make_plan_fn",
    "read_log",
    "restore_state",
    "run_code_tags",
    "run_steps",
    "run_summary",
    "run_train_config",
    "state_fingerprint",
    "step_generator",
    "step_seed",
    "train",
]
