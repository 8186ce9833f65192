"""Records, read reports and the bad-input policy shared by every reader.

A reader turns a folder tree into a list of :class:`XrayRecord` (one image, its label and optional masks) and
a :class:`ReadReport` (counts per split and class, skipped files with their reason, ignored non-image files).
Every bad input raises :class:`DataError` unless ``on_bad="skip"``, in which case it is skipped and listed in
the report: nothing bad passes silently.

Readers only check the tree (folders, suffixes, existence of masks); full decoding, which also catches
truncated files, happens once when the preprocessed cache is built (:mod:`medsg_lib.data.dataset`), under the
same policy.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medsg_lib.config import CLASS_NAMES

OnBad = Literal["error", "skip"]

SPLITS: tuple[str, ...] = ("train", "val", "test")


def layout_splits(layout: str) -> tuple[str, ...]:
    """The splits a layout has: COVID-QU-Ex and the phantoms train/val/test, class-folder sets train/val."""
    return ("train", "val") if layout == "folders" else SPLITS


def held_out_split(layout: str) -> str:
    """The one held-out split of a layout, for every metric, floor, audit and classifier: ``test`` where the
    layout has one, else ``val`` (class-folder sets)."""
    return layout_splits(layout)[-1]


# Image file suffixes (lower case). Files with other suffixes are ignored and counted in ReadReport.ignored.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
# Bad inputs listed in one DataError message; the rest are counted.
MAX_LISTED = 20
SKIP_HINT = (
    "fix or remove them, or set on_bad='skip' (DataConfig.on_bad) to skip them and list them in the report"
)


class DataError(ValueError):
    """A bad input: wrong root, missing or unknown folder, missing mask, unreadable image. Names the fix."""


class BadFileError(DataError):
    """One file that cannot be used; ``str()`` is ``"{path}: {reason}"``."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class XrayRecord:
    """One chest X-ray on disk.

    ``label`` indexes :data:`medsg_lib.config.CLASS_NAMES` (0 COVID-19, 1 Non-COVID, 2 Normal); ``split`` is
    one of ``"train"``, ``"val"``, ``"test"``. Mask paths are set only by the COVID-QU-Ex reader.
    """

    image_path: Path
    label: int
    class_name: str
    split: str
    lung_mask_path: Path | None = None
    infection_mask_path: Path | None = None


@dataclass(frozen=True)
class ReadReport:
    """What a reader found: kept images per (split, class), skipped inputs with reasons, ignored files.

    ``counts`` has one entry per requested split and every class of ``CLASS_NAMES`` (zeros included) and
    counts the records returned. ``skipped`` holds ``(path, reason)`` for each input skipped with
    ``on_bad="skip"``; ``ignored`` holds files without an image suffix (e.g. ``notes.txt``, ``.DS_Store``),
    which are never read.
    """

    root: Path
    counts: dict[tuple[str, str], int]
    skipped: tuple[tuple[Path, str], ...] = ()
    ignored: tuple[Path, ...] = ()

    @property
    def total(self) -> int:
        """Number of records kept."""
        return sum(self.counts.values())

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits covered by ``counts``, in the canonical order."""
        present = {s for s, _ in self.counts}
        return tuple(s for s in SPLITS if s in present)

    def to_table(self) -> str:
        """Counts as a fixed-width table: one row per split, one column per class, and a total column."""
        headers = ["split", *CLASS_NAMES, "total"]
        rows = []
        for split in self.splits:
            values = [self.counts.get((split, c), 0) for c in CLASS_NAMES]
            rows.append([split, *map(str, values), str(sum(values))])
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        return "\n".join(_format_row(row, widths) for row in [headers, *rows])

    def __str__(self) -> str:
        lines = [f"read {self.total} images from {self.root}", self.to_table()]
        lines.append(f"skipped: {len(self.skipped)}; ignored non-image files: {len(self.ignored)}")
        lines.extend(f"  skipped {path}: {reason}" for path, reason in self.skipped[:MAX_LISTED])
        if len(self.skipped) > MAX_LISTED:
            lines.append(f"  ... and {len(self.skipped) - MAX_LISTED} more (see ReadReport.skipped)")
        return "\n".join(lines)


def _format_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """First cell left-aligned, the others right-aligned, two spaces apart."""
    padded = [
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(padded)


def check_on_bad(on_bad: str) -> None:
    """Raise :class:`DataError` unless ``on_bad`` is ``"error"`` or ``"skip"``."""
    if on_bad not in ("error", "skip"):
        raise DataError(f"on_bad={on_bad!r} is not allowed; choose 'error' or 'skip'")


def check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    """``splits`` as a tuple, checked to be non-empty and each one of ``SPLITS``."""
    splits = tuple(splits)
    if not splits:
        raise DataError("splits is empty; pass one or more of 'train', 'val', 'test'")
    for split in splits:
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not one of 'train', 'val', 'test'")
    return splits


def is_image_file(path: Path) -> bool:
    """True for a non-hidden file whose suffix is in ``IMAGE_SUFFIXES`` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def folder_names(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` (for messages that say what was found instead)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def format_bad(bad: Sequence[tuple[Path, str]], where: Path) -> str:
    """Message listing bad inputs ``(path, reason)`` found under ``where`` and how to fix them."""
    lines = [f"{len(bad)} bad input(s) under {where}:"]
    lines.extend(f"  {path}: {reason}" for path, reason in bad[:MAX_LISTED])
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    lines.append(SKIP_HINT)
    return "\n".join(lines)


def apply_on_bad(bad: Sequence[tuple[Path, str]], where: Path, on_bad: OnBad) -> tuple[tuple[Path, str], ...]:
    """Raise :class:`DataError` listing ``bad`` if there is any and ``on_bad="error"``; else return them."""
    if bad and on_bad == "error":
        raise DataError(format_bad(bad, where))
    return tuple(bad)


def make_report(
    root: Path,
    records: Iterable[XrayRecord],
    splits: Sequence[str],
    skipped: Sequence[tuple[Path, str]] = (),
    ignored: Sequence[Path] = (),
) -> ReadReport:
    """Count ``records`` per (split, class) over ``splits`` x ``CLASS_NAMES`` and wrap them in a report."""
    counts = {(s, c): 0 for s in splits for c in CLASS_NAMES}
    for rec in records:
        counts[(rec.split, rec.class_name)] += 1
    return ReadReport(root=Path(root), counts=counts, skipped=tuple(skipped), ignored=tuple(ignored))


@dataclass
class Findings:
    """What a reader finds while it walks a tree for ``splits`` under the ``on_bad`` policy (both checked when
    it is created): records, bad inputs, ignored files. Internal to :mod:`medsg_lib.data`."""

    splits: tuple[str, ...]
    on_bad: OnBad
    records: list[XrayRecord] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_on_bad(self.on_bad)
        self.splits = check_splits(self.splits)

    def class_folders(self, split_dir: Path, known: Collection[str]) -> tuple[list[Path], list[str]]:
        """The sub-folders of ``split_dir`` named in ``known`` and the paths of the others, both sorted by
        name; loose files and hidden folders go to ``ignored``."""
        folders, unknown = [], []
        for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith("."):
                self.ignored.append(Path(entry.path))
            elif entry.name in known:
                folders.append(Path(entry.path))
            else:
                unknown.append(entry.path)
        return folders, unknown

    def images_in(self, image_dir: Path) -> list[Path]:
        """The image files of ``image_dir`` sorted by name (:func:`is_image_file`); the others go to ``ignored``."""
        images = []
        for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_file() and is_image_file(path):
                images.append(path)
            else:
                self.ignored.append(path)
        return images

    def finish(self, root: Path) -> tuple[list[XrayRecord], ReadReport]:
        """A reader's result: the records and their report; the bad inputs raise (``on_bad="error"``, the
        message names ``root``) or are listed in the report as skipped."""
        skipped = apply_on_bad(self.bad, root, self.on_bad)
        return self.records, make_report(root, self.records, self.splits, skipped, self.ignored)
