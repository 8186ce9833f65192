"""Writing results: small JSON/CSV/Markdown files under ``results/``, always atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def _atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (atomic); returns ``path``."""
    return _atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
    return [_atomic_write_text(stem.with_suffix(f".{fmt}"), writers[fmt]()) for fmt in formats]


def upsert_row(path: Path, key: str, row: dict[str, Any]) -> pd.DataFrame:
    """Insert ``row`` into the CSV table at ``path``, replacing any row with the same value in column ``key``
    (atomic); returns the table. Used for tables that several notebook runs fill one row at a time."""
    path = Path(path)
    table = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(row))
    table = table[table[key] != row[key]] if key in table else table
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values(key, ignore_index=True)
    _atomic_write_text(path, table.to_csv(index=False))
    return table
