"""Metric records: one JSON object per line, with its options and provenance (as NVlabs' metric-*.jsonl).

Every record names what was measured and how (``REQUIRED_KEYS``); :func:`append_record` adds the time and the
library versions, so a number never travels without its protocol, feature network and weights label. A
:class:`Comparison` holds the provenance fields that every record of one evaluation shares. Read records back
with :func:`medsg_lib.files.read_jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from medsg_lib.files import append_jsonl

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
STATUS_OK = "ok"


def library_versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape a metric's value ("not installed" when absent)."""
    versions = {}
    for name in packages:
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
    """Append ``record`` plus provenance as one JSON line to ``path`` (created with its folder); return it as
    read back (plain JSON values).

    Adds ``timestamp`` (UTC, ISO 8601) and ``versions`` unless present. Numpy scalars and arrays and paths
    become JSON values. Raises ValueError naming the missing keys of ``REQUIRED_KEYS``, TypeError naming a
    value JSON cannot hold.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"metric record is missing required keys: {', '.join(missing)}")
    full = dict(record)
    full.setdefault("timestamp", datetime.now(UTC).isoformat(timespec="seconds"))
    full.setdefault("versions", library_versions())
    plain = json.loads(json.dumps(full, default=_to_json))  # numpy, paths -> JSON values
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, plain)
    return plain


@dataclass(frozen=True)
class Comparison:
    """What is compared: the provenance fields every record of one evaluation shares, and where they go.

    ``extra``: further shared fields, e.g. ``(("fake_dir", ...), ("real_split", "train"))``.
    """

    model: str
    target_class: str
    checkpoint: str
    seed: int
    records_path: Path
    extra: tuple[tuple[str, Any], ...] = ()

    def append(self, **fields: Any) -> dict[str, Any]:
        """Append one record: the shared fields (``status`` "ok" unless ``fields`` says otherwise), then
        ``fields`` in their order; returns it (:func:`append_record`)."""
        record = {
            "class": self.target_class,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "seed": self.seed,
            "status": STATUS_OK,
            **dict(self.extra),
            **fields,
        }
        return append_record(self.records_path, record)
