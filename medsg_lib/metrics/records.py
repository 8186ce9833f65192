"""Metric records: one JSON object per line, with its options and provenance (as NVlabs' metric-*.jsonl).

Every record names what was measured and how (``REQUIRED_KEYS``); :func:`append_record` adds the time and the
library versions, so a number never travels without its protocol, feature network and weights label.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_KEYS: tuple[str, ...] = (
    "metric",  # "fid", "kid", "lpips", "fd_<name>", "precision", ...
    "protocol",  # "pytorch-fid", "paper", "domain:<name>", the LPIPS protocol string, ...
    "feature_net",
    "weights",  # weights_label(...): says "(verified)" or "UNVERIFIED"
    "class",
    "model",
    "checkpoint",
    "n_real",
    "n_fake",
    "seed",
)
VERSIONED_PACKAGES: tuple[str, ...] = ("torch", "torchvision", "pytorch-fid", "lpips", "medsg")


def library_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a metric's value ("not installed" when absent)."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _to_json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"record value of type {type(obj).__name__} is not JSON-serialisable")


def append_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` plus provenance as one JSON line to ``path`` (created with its folder); return it.

    Adds ``timestamp`` (UTC, ISO 8601) and ``versions`` unless present. Raises ValueError naming the missing
    keys of ``REQUIRED_KEYS``.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"metric record is missing required keys: {', '.join(missing)}")
    full = dict(record)
    full.setdefault("timestamp", datetime.now(UTC).isoformat(timespec="seconds"))
    full.setdefault("versions", library_versions())
    line = json.dumps(full, default=_to_json, sort_keys=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    return json.loads(line)


def read_records(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file, in order (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
