"""Reader for any class-folder set: ``{root}/{split}/{class folder}/*.png|jpg|jpeg``.

Folder names are mapped to the canonical classes (``CLASS_NAMES``) by a ``class_map``; several folders may map
to one class (e.g. ``Lung_Opacity`` and ``Viral Pneumonia`` to ``Non-COVID``). The split folder may be lower
case (``train``) or capitalised (``Train``); a class folder holding an ``images`` sub-folder (as in the
COVID-19 Radiography Database) is read from there. Images are not decoded here (see
:mod:`medsg_lib.data.dataset`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data.records import DataError, Findings, OnBad, ReadReport, XrayRecord, folder_names


def _check_class_map(class_map: Mapping[str, str]) -> None:
    """Raise :class:`DataError` when ``class_map`` is empty or maps to a name outside ``CLASS_NAMES``."""
    if not class_map:
        raise DataError("class_map is empty; map each class folder name to one of " + ", ".join(CLASS_NAMES))
    for folder, name in class_map.items():
        if name not in CLASS_NAMES:
            raise DataError(
                f"class_map maps {folder!r} to {name!r}, which is not one of {', '.join(CLASS_NAMES)}"
            )


def _find_split_dir(root: Path, split: str) -> Path:
    """``root/split`` or ``root/Split``; raises :class:`DataError` listing what is there otherwise."""
    for name in (split, split.capitalize()):
        if (root / name).is_dir():
            return root / name
    present = folder_names(root)
    raise DataError(
        f"no '{split}' folder under {root} (found: {', '.join(present) or 'nothing'}); expected "
        f"{root}/{split}/<class folder>/*.png, or set DataConfig.root to the folder that holds the splits"
    )


def _read_folder(class_dir: Path, class_name: str, split: str, found: Findings) -> None:
    """Add the images of one class folder to ``found``; an empty folder goes to ``found.bad``."""
    image_dir = class_dir / "images" if (class_dir / "images").is_dir() else class_dir
    images = found.images_in(image_dir)
    if not images:
        found.bad.append((class_dir, "empty class folder: no .png, .jpg or .jpeg images"))
    label = CLASS_NAMES.index(class_name)
    found.records.extend(XrayRecord(p, label, class_name, split) for p in images)


def read_class_folders(
    root: Path,
    class_map: Mapping[str, str],
    splits: Sequence[str] = ("train", "val"),
    on_bad: OnBad = "error",
) -> tuple[list[XrayRecord], ReadReport]:
    """Read ``{root}/{split}/{class folder}/`` images, mapping folder names through ``class_map``.

    Returns records sorted by split, class label and path (absolute paths), and a report. Wrong roots, missing
    split folders and class folders not in ``class_map`` always raise :class:`DataError` (the message lists
    the known names); a class of ``CLASS_NAMES`` without any folder, and empty class folders, raise unless
    ``on_bad="skip"``. Files with non-image suffixes and loose files in the split folder are ignored and
    listed in ``report.ignored``.
    """
    found = Findings(tuple(splits), on_bad)
    _check_class_map(class_map)
    root = Path(root).absolute()
    if not root.is_dir():
        raise DataError(
            f"class-folder root {root} does not exist or is not a folder; expected {root}/{{train,val}}/"
            "<class folder>/*.png, or set DataConfig.root"
        )
    for split in found.splits:
        split_dir = _find_split_dir(root, split)
        folders, unknown = found.class_folders(split_dir, class_map)
        if unknown:
            raise DataError(
                f"unknown class folder(s) {', '.join(unknown)}; known names (DataConfig.class_map): "
                f"{', '.join(sorted(class_map))}; add them to class_map or remove them"
            )
        start = len(found.records)
        for class_name in CLASS_NAMES:
            class_folders = [f for f in folders if class_map[f.name] == class_name]
            if not class_folders:
                expected = ", ".join(sorted(k for k, v in class_map.items() if v == class_name))
                reason = (
                    f"no folder for class {class_name!r} (expected one of: {expected or 'none in class_map'})"
                )
                found.bad.append((split_dir, reason))
            for folder in class_folders:
                _read_folder(folder, class_name, split, found)
        found.records[start:] = sorted(found.records[start:], key=lambda r: (r.label, str(r.image_path)))
    return found.finish(root)
