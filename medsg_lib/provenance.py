"""Which code made a result: a content hash of the library's source, and the git commit where there is one.

A run folder records the code that started it (and any other code that resumed it); its generated set copies it;
the evaluation refuses sets trained by two code versions (:func:`medsg_lib.seeds.check_one_code_version`). The hash covers the ``.py`` files of ``medsg_lib`` only, by
content: a commit that changes documents, tests or notebooks keeps it, any change of the library changes it.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def source_hash(package: Path = _PACKAGE) -> str:
    """sha256 (16 hex digits) over the relative path and bytes of every ``.py`` file under ``package``, sorted."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_PACKAGE), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"source": source_hash(), "commit": HEAD or None, "dirty": uncommitted library changes or None}``
    (computed once per process)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", ".") if commit else None
    return {"source": source_hash(), "commit": commit, "dirty": None if status is None else bool(status)}


def code_tag(version: dict[str, Any] | None) -> str:
    """The part of a :func:`code_version` that decides sameness: its source hash ("unknown" when absent)."""
    return str((version or {}).get("source") or "unknown")
