"""One place for how medsg writes files and what it calls them.

Every file medsg writes goes through :func:`write_atomic`: the bytes go to a temporary file in the same folder,
which then replaces the target with ``os.replace``. A crash leaves either the old file or the new one, never a
partial one, and the temporary file is removed on error; a write that fails for want of space raises
:class:`DiskFullError`, which names the file, the free space and the fix. The file names shared by several stages (a run's
``config.json``, ``log.jsonl``, ``checkpoints/``, ``samples/``, a generated set's ``manifest.csv``) and the
run-name convention live here too, so that a reader and a writer can never disagree.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

CONFIG_NAME = "config.json"  # the config of a training run, a generated set or a classifier run
LOG_NAME = "log.jsonl"  # one JSON record per line, appended while a run trains
CHECKPOINT_DIR = "checkpoints"  # run_dir/checkpoints/step_{t:07d}.pt
SAMPLES_DIR = "samples"  # run_dir/samples/step_{t:07d}.png
MANIFEST_NAME = "manifest.csv"  # one row per generated image
ALL_CLASSES = "all"  # the target class of a model trained on every class (and its folder of images)
# errors of a write that ran out of room: the disk (or quota) is full, or the file passed the size limit
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(OSError):
    """A write that failed for want of space (:data:`DISK_FULL_ERRNOS`); the message names the file, the free
    space and the fix. Nothing was left under the file's name (:func:`write_atomic`) or half a line at the end of
    a log (:func:`append_jsonl`)."""


def disk_full_error(path: Path, err: OSError) -> DiskFullError:
    """The :class:`DiskFullError` for ``err`` (one of :data:`DISK_FULL_ERRNOS`) raised while writing ``path``."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    return DiskFullError(
        err.errno,
        f"could not write {path}: {err.strerror} ({_size(free)} free in {folder}). Earlier files are intact and "
        "nothing was left half-written; free some space (or, for 'File too large', raise the file-size limit: "
        "ulimit -f) and run the same command again: it goes on from the last checkpoint or finished file",
    )


LOCK_NAME = ".medsg-lock"  # in a folder one process writes: a run, a generated set, a reproduce's outputs


class FolderBusyError(RuntimeError):
    """A folder that another live process is writing (:func:`folder_lock`); the message names the process."""


@contextmanager
def folder_lock(folder: Path, purpose: str) -> Iterator[None]:
    """Hold ``folder`` for this process during the block, so that a second writer is refused instead of
    overwriting its files (two ``train`` runs on one run folder). The lock is the kernel's (``flock`` on
    ``folder/.medsg-lock``): a process that dies releases it, so a lock left by a dead process is taken over
    without asking. The file names the holder and is removed at the end. ``folder`` is created.

    Raises:
        FolderBusyError: another live process holds ``folder``; the message names it (pid, host, purpose, start).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip() or "another process"
            raise FolderBusyError(
                f"{folder} is in use by {holder}; two writers would overwrite each other's files. Wait for it "
                "to finish or stop it, then run this again (a stopped run resumes)"
            ) from None
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"process {os.getpid()} on {socket.gethostname()} ({purpose}, since {since})".encode(), 0
        )
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"


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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(path, exc) from exc
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_torch_atomic(path: Path, obj: Any, *, fsync: bool = False) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`write_atomic`). The bytes are made in memory first:
    ``torch.save`` writing into a file turns a full disk's ``OSError`` into an unrelated ``RuntimeError``
    ("unexpected pos"), which would hide the :class:`DiskFullError`."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_atomic(path, lambda f: f.write(buffer.getbuffer()), fsync=fsync)


def read_torch_cache(path: Path, **expected: Any) -> dict | None:
    """The dict cached at ``path`` (:func:`write_torch_atomic`) when it exists, loads and holds every
    ``expected`` item (e.g. ``key=...``, ``version=...``); else None, and the caller rebuilds it: a missing,
    damaged or stale cache file is never trusted."""
    import torch

    if not Path(path).is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # a damaged cache file is rebuilt, never trusted
        return None
    if not isinstance(payload, dict) or any(payload.get(k) != v for k, v in expected.items()):
        return None
    return payload


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


def append_jsonl(path: Path, record: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Append one record (or a list of them, in one write) as lines: a log grows line by line, and a crash loses
    at most what is being written. A write that fails (a full disk: :class:`DiskFullError`) leaves the file as
    it was, without half a line."""
    records = record if isinstance(record, list) else [record]
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            os.ftruncate(fd, start)
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full_error(Path(path), exc) from exc
            raise
    finally:
        os.close(fd)


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
