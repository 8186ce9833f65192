"""Reader for COVID-QU-Ex (Kaggle ``anasmohammedtahir/covidqu``) and for the phantoms in its layout.

Layout of the download (masks share the image's file name)::

    {root}/Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/
        images/*.png   lung masks/*.png
    {root}/Infection Segmentation Data/Infection Segmentation Data/{Train,Val,Test}/
        {COVID-19,Non-COVID,Normal}/images/*.png   lung masks/*.png   infection masks/*.png

``root`` may also point at the outer or the inner ``Lung Segmentation Data`` folder (single or doubled
nesting). The reader checks folders, suffixes and that every image has its masks; it does not decode (see
:mod:`medsg_lib.data.dataset`, which decodes every image once when it builds the cache).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data.records import DataError, Findings, OnBad, ReadReport, XrayRecord, folder_names

SUBSET_FOLDERS: dict[str, str] = {
    "lung": "Lung Segmentation Data",
    "infection": "Infection Segmentation Data",
}
SPLIT_FOLDERS: dict[str, str] = {"train": "Train", "val": "Val", "test": "Test"}
MASK_FOLDERS: dict[str, tuple[str, ...]] = {
    "lung": ("lung masks",),
    "infection": ("lung masks", "infection masks"),
}
DOWNLOAD_HINT = (
    "download COVID-QU-Ex from Kaggle (anasmohammedtahir/covidqu) and unpack it there, or set DataConfig.root"
)


def sibling_lung_mask(image_path: Path) -> Path | None:
    """The lung mask of an image in the COVID-QU-Ex layout (``<class>/images/NAME`` ->
    ``<class>/lung masks/NAME``), or None when the image is not in that layout or the mask does not exist.
    Used for images known only by path, e.g. the source images in a generation manifest."""
    image_path = Path(image_path)
    if image_path.parent.name != "images":
        return None
    mask = image_path.parent.parent / MASK_FOLDERS["lung"][0] / image_path.name
    return mask if mask.is_file() else None


def find_subset_dir(root: Path, subset: str = "lung") -> Path:
    """Return the folder holding ``Train/Val/Test`` of ``subset`` ("lung" or "infection") under ``root``.

    Tries ``root/<name>/<name>`` (the download), ``root/<name>`` and ``root`` itself when it is named
    ``<name>``, where ``<name>`` is ``"Lung Segmentation Data"`` or ``"Infection Segmentation Data"``. Raises
    :class:`DataError` saying what was expected otherwise.
    """
    if subset not in SUBSET_FOLDERS:
        raise DataError(f"subset={subset!r} is not allowed; choose 'lung' or 'infection'")
    root = Path(root)
    name = SUBSET_FOLDERS[subset]
    if not root.is_dir():
        raise DataError(f"COVID-QU-Ex root {root} does not exist or is not a folder; {DOWNLOAD_HINT}")
    candidates = [root / name / name, root / name] + ([root] if root.name == name else [])
    for candidate in candidates:
        if any((candidate / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
            return candidate
    raise DataError(
        f"no '{name}' folder under {root} (expected {root}/{name}/{name}/{{Train,Val,Test}}/"
        f"{{COVID-19,Non-COVID,Normal}}/images); {DOWNLOAD_HINT}"
    )


def _list_names(folder: Path) -> set[str]:
    """Names of the regular files in ``folder`` (empty when it does not exist)."""
    if not folder.is_dir():
        return set()
    return {e.name for e in os.scandir(folder) if e.is_file()}


def _read_class(class_dir: Path, label: int, split: str, subset: str, found: Findings) -> None:
    """Add the records of one ``{split}/{class}`` folder to ``found`` (bad inputs to ``found.bad``)."""
    if not class_dir.is_dir():
        found.bad.append((class_dir, "missing class folder"))
        return
    image_dir = class_dir / "images"
    if not image_dir.is_dir():
        found.bad.append((image_dir, "missing images folder"))
        return
    images = found.images_in(image_dir)
    if not images:
        found.bad.append((image_dir, "empty class folder: no .png, .jpg or .jpeg images"))
        return
    mask_names = {folder: _list_names(class_dir / folder) for folder in MASK_FOLDERS[subset]}
    for path in images:
        missing = [folder for folder in MASK_FOLDERS[subset] if path.name not in mask_names[folder]]
        if missing:
            reason = "; ".join(f"its mask {class_dir / folder / path.name} is missing" for folder in missing)
            found.bad.append((path, reason))
            continue
        masks = {folder: class_dir / folder / path.name for folder in MASK_FOLDERS[subset]}
        found.records.append(
            XrayRecord(
                image_path=path,
                label=label,
                class_name=CLASS_NAMES[label],
                split=split,
                lung_mask_path=masks["lung masks"],
                infection_mask_path=masks.get("infection masks"),
            )
        )


def read_covidqu(
    root: Path,
    subset: str = "lung",
    splits: Sequence[str] = ("train", "val", "test"),
    on_bad: OnBad = "error",
) -> tuple[list[XrayRecord], ReadReport]:
    """Read the COVID-QU-Ex tree under ``root`` (see the module docstring for the accepted layouts).

    Returns records sorted by split, class (label 0, 1, 2 = COVID-19, Non-COVID, Normal) and file name, with
    absolute paths, and a report. Checks: the subset folder and each split folder exist; split folders hold
    only the three class folders; each class folder has a non-empty ``images`` folder; every image has its
    mask(s) (``lung masks``; also ``infection masks`` for ``subset="infection"``). Wrong roots, missing split
    folders and unknown class folders always raise :class:`DataError`; missing/empty class folders and images
    without masks raise unless ``on_bad="skip"``. Files with non-image suffixes are ignored and listed in
    ``report.ignored``. Images are not decoded here.
    """
    found = Findings(tuple(splits), on_bad)
    subset_dir = find_subset_dir(Path(root).absolute(), subset)
    for split in found.splits:
        split_dir = subset_dir / SPLIT_FOLDERS[split]
        if not split_dir.is_dir():
            present = folder_names(subset_dir)
            raise DataError(
                f"no '{SPLIT_FOLDERS[split]}' folder in {subset_dir} "
                f"(found: {', '.join(present) or 'nothing'}); COVID-QU-Ex has Train, Val and Test folders: "
                f"{DOWNLOAD_HINT}"
            )
        _, unknown = found.class_folders(split_dir, CLASS_NAMES)
        if unknown:
            raise DataError(
                f"unknown class folder(s) {', '.join(unknown)}; COVID-QU-Ex class folders are "
                f"{', '.join(CLASS_NAMES)}: rename or remove them"
            )
        for label, class_name in enumerate(CLASS_NAMES):
            _read_class(split_dir / class_name, label, split, subset, found)
    return found.finish(subset_dir)
