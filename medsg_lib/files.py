"""One place for how medsg writes files and what it calls them.

Every file medsg writes goes through :func:`write_atomic`: the bytes go to a temporary file in the same folder,
which then replaces the target with ``os.replace``. A crash leaves either the old file or the new one, never a
partial one, and the temporary file is removed on error. The file names shared by several stages (a run's
``config.json``, ``log.jsonl``, ``checkpoints/``, ``samples/``, a generated set's ``manifest.csv``) and the
run-name convention live here too, so that a reader and a writer can never disagree.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CONFIG_NAME = "config.json"  # the config of a training run, a generated set or a classifier run
LOG_NAME = "log.jsonl"  # one JSON record per line, appended while a run trains
CHECKPOINT_DIR = "checkpoints"  # run_dir/checkpoints/step_{t:07d}.pt
SAMPLES_DIR = "samples"  # run_dir/samples/step_{t:07d}.png
MANIFEST_NAME = "manifest.csv"  # one row per generated image
ALL_CLASSES = "all"  # the target class of a model trained on every class (and its folder of images)


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any], *, fsync: bool = False) -> Path:
    """Create ``path`` by calling ``write(f)`` on a binary file opened in the same folder, then ``os.replace``.

    ``fsync=True`` flushes the bytes to disk before the replace (checkpoints: a power cut cannot leave an empty
    file under the final name). Parent folders are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`write_atomic`)."""
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None: Python writes
    them as ``NaN``/``Infinity``, which is not JSON and which strict readers (browsers, jq) refuse."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as strict JSON (:func:`strict_json`) indented by 2 with a final newline, atomically;
    objects JSON lacks become ``str``."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=sort_keys, default=str, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def read_json(path: Path) -> Any:
    """The JSON value of a UTF-8 file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file in order; an absent file has none (a run that has not logged yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line (a log grows line by line; a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed (checkpoints and weights can be large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def project_relative(path: Path | str) -> str:
    """``path`` relative to the project root, so that committed results name no machine's folders: inside the
    project as a plain relative path, outside it as given when given relative, else as ``../...`` from the
    project root (e.g. ``/work/shared/data/x`` -> ``../shared/data/x``)."""
    from medsg_lib.paths import project_root

    path = Path(path)
    root = project_root()
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path) if not path.is_absolute() else os.path.relpath(path.resolve(), root)


def class_slug(target_class: str) -> str:
    """Folder name of a class: ``covid``, ``non_covid``, ``normal`` (``CLASS_SLUGS``), or ``all``."""
    from medsg_lib.config import CLASS_NAMES, CLASS_SLUGS

    if target_class == ALL_CLASSES:
        return ALL_CLASSES
    if target_class not in CLASS_NAMES:
        allowed = ", ".join(map(repr, (*CLASS_NAMES, ALL_CLASSES)))
        raise ValueError(f"unknown class {target_class!r}; choose one of {allowed}")
    return CLASS_SLUGS[CLASS_NAMES.index(target_class)]


def run_folders(runs_root: Path) -> set[str]:
    """The names of the folders under ``runs_root`` (``runs/<profile>/``): the runs that exist; empty when the
    folder does not."""
    root = Path(runs_root)
    return {d.name for d in root.iterdir() if d.is_dir()} if root.is_dir() else set()


def check_seed_count(seeds: int) -> int:
    """``seeds`` (how many training seeds, 0 .. seeds - 1), refused with a ValueError unless an int >= 1."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be an int >= 1")
    return seeds


def run_name(model: str, target_class: str, seed: int = 0) -> str:
    """Name of a training run, of its folder under ``runs/<profile>/`` and of its generated set under
    ``generated/<profile>/``: ``medsg``, ``dcgan`` (trained on every class), ``dcgan_covid`` (one class);
    a training seed other than 0 is a suffix: ``dcgan_covid_seed2``."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")
    name = model if target_class == ALL_CLASSES else f"{model}_{class_slug(target_class)}"
    return name if seed == 0 else f"{name}_seed{seed}"
