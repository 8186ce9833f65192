"""Checkpoint -> generated images on disk and a manifest (:mod:`.core`), and generation over every run of a
profile (:mod:`.runs`). Everything public is importable from ``medsg_lib.generate``."""

from medsg_lib.generate.core import (
    MANIFEST_EVERY_BATCHES,
    SourceImages,
    generate,
    generate_batches,
    plan_items,
    resolve_targets,
    to_pil,
    to_uint8_array,
    write_png,
)
from medsg_lib.generate.runs import deterministic_runs, generate_runs, generated_models

__all__ = [
    "MANIFEST_EVERY_BATCHES",
    "SourceImages",
    "deterministic_runs",
    "generate",
    "generate_batches",
    "generate_runs",
    "generated_models",
    "plan_items",
    "resolve_targets",
    "to_pil",
    "to_uint8_array",
    "write_png",
]
