"""Writing results: small JSON/CSV/Markdown files under ``results/``, always atomically
(:mod:`medsg_lib.files`)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from medsg_lib.files import write_json_atomic, write_text_atomic


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as key-sorted JSON indented by 2 with a final newline (objects JSON lacks become ``str``),
    atomically; returns ``path``."""
    return write_json_atomic(Path(path), obj, sort_keys=True)


def write_table(df: pd.DataFrame, stem: Path, formats: tuple[str, ...] = ("csv", "md")) -> list[Path]:
    """Write ``df`` as ``stem.csv`` / ``stem.md`` / ``stem.tex`` (atomic); returns the paths written."""
    stem = Path(stem)
    writers = {
        "csv": lambda: df.to_csv(index=False),
        # disable_numparse: tabulate would re-parse formatted strings ("2446.535") and round them
        "md": lambda: df.to_markdown(index=False, disable_numparse=True) + "\n",
        "tex": lambda: df.to_latex(index=False, escape=True),
    }
    unknown = set(formats) - set(writers)
    if unknown:
        raise ValueError(f"unknown table format(s) {sorted(unknown)}; choose from {sorted(writers)}")
    return [write_text_atomic(stem.with_suffix(f".{fmt}"), writers[fmt]()) for fmt in formats]


def upsert_row(
    path: Path, key: str, row: dict[str, Any], keep: Collection[str] | None = None
) -> pd.DataFrame:
    """Insert ``row`` into the CSV table at ``path``, replacing any row with the same value in column ``key``
    (atomic); returns the table. Used for tables that several notebook runs fill one row at a time.

    ``keep``: the keys whose rows may stay (e.g. the run folders that exist); the other rows are dropped, so
    that a table never describes something that is gone (None: every row stays)."""
    path = Path(path)
    table = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(row))
    table = table[table[key] != row[key]] if key in table else table
    if keep is not None and key in table:
        table = table[table[key].astype(str).isin(set(keep))]
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values(key, ignore_index=True)
    write_text_atomic(path, table.to_csv(index=False))
    return table
