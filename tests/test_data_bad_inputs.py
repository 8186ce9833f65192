"""Every bad input raises DataError with an exact message naming the file and the fix, or, with
on_bad="skip", is skipped and listed in the report."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import INFECTION, LUNG, make_covidqu, write_png
from PIL import Image

from medsg_lib.config import CLASS_NAMES, DataConfig
from medsg_lib.data import (
    BadFileError,
    DataError,
    build_dataset,
    load_image,
    read_class_folders,
    read_covidqu,
)
from medsg_lib.data import dataset as dataset_module

HINT = (
    "download COVID-QU-Ex from Kaggle (anasmohammedtahir/covidqu) and unpack it there, or set DataConfig.root"
)
SKIP = "fix or remove them, or set on_bad='skip' (DataConfig.on_bad) to skip them and list them in the report"


def exact(message: str) -> str:
    """Regex matching exactly ``message`` (``pytest.raises(match=...)`` searches)."""
    return "^" + re.escape(message) + "$"


def cfg_for(tmp_path: Path, **overrides: object) -> DataConfig:
    cfg = DataConfig(layout="covidqu", root=tmp_path / "qu", img_size=16, cache_dir=tmp_path / "cache")
    return dataclasses.replace(cfg, **overrides)


# --- wrong roots and folders ---


def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(
        DataError, match=exact(f"COVID-QU-Ex root {root} does not exist or is not a folder; {HINT}")
    ):
        read_covidqu(root)


def test_root_without_subset_folder(tmp_path: Path) -> None:
    (tmp_path / "Train").mkdir()  # a tree, but not named like COVID-QU-Ex
    message = (
        f"no '{LUNG}' folder under {tmp_path} (expected {tmp_path}/{LUNG}/{LUNG}/{{Train,Val,Test}}/"
        f"{{COVID-19,Non-COVID,Normal}}/images); {HINT}"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_covidqu(tmp_path)


def test_infection_subset_missing(tmp_path: Path) -> None:
    make_covidqu(tmp_path / LUNG / LUNG)
    message = (
        f"no '{INFECTION}' folder under {tmp_path} (expected {tmp_path}/{INFECTION}/{INFECTION}/"
        f"{{Train,Val,Test}}/{{COVID-19,Non-COVID,Normal}}/images); {HINT}"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_covidqu(tmp_path, subset="infection")


def test_missing_split_folder(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG, n=1)
    for path in sorted((base / "Test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (base / "Test").rmdir()
    message = (
        f"no 'Test' folder in {base} (found: Train, Val); COVID-QU-Ex has Train, Val and Test folders: {HINT}"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_covidqu(tmp_path)
    assert len(read_covidqu(tmp_path, splits=("train", "val"))[0]) == 6


def test_unknown_class_folder_covidqu(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG, n=1)
    (base / "Val" / "Pneumonia").mkdir()
    message = (
        f"unknown class folder(s) {base / 'Val' / 'Pneumonia'}; COVID-QU-Ex class folders are COVID-19, "
        "Non-COVID, Normal: rename or remove them"
    )
    for on_bad in ("error", "skip"):  # a configuration mistake, never skipped
        with pytest.raises(DataError, match=exact(message)):
            read_covidqu(tmp_path, splits=("val",), on_bad=on_bad)


def test_missing_and_empty_class_folders(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG, n=1)
    for name in ("Normal",):
        (base / "Val" / name / "images" / "img0.png").unlink()  # empty images folder
    for path in sorted((base / "Val" / "Non-COVID").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (base / "Val" / "Non-COVID").rmdir()  # missing class folder
    message = (
        f"2 bad input(s) under {base}:\n"
        f"  {base / 'Val' / 'Non-COVID'}: missing class folder\n"
        f"  {base / 'Val' / 'Normal' / 'images'}: empty class folder: no .png, .jpg or .jpeg images\n"
        f"{SKIP}"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_covidqu(tmp_path, splits=("val",))
    records, report = read_covidqu(tmp_path, splits=("val",), on_bad="skip")
    assert [r.class_name for r in records] == ["COVID-19"]
    assert report.counts == {("val", "COVID-19"): 1, ("val", "Non-COVID"): 0, ("val", "Normal"): 0}
    assert report.skipped == (
        (base / "Val" / "Non-COVID", "missing class folder"),
        (base / "Val" / "Normal" / "images", "empty class folder: no .png, .jpg or .jpeg images"),
    )


def test_missing_mask(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG)
    (base / "Train" / "Normal" / "lung masks" / "img1.png").unlink()
    image = base / "Train" / "Normal" / "images" / "img1.png"
    mask = base / "Train" / "Normal" / "lung masks" / "img1.png"
    reason = f"its mask {mask} is missing"
    with pytest.raises(DataError, match=exact(f"1 bad input(s) under {base}:\n  {image}: {reason}\n{SKIP}")):
        read_covidqu(tmp_path, splits=("train",))
    records, report = read_covidqu(tmp_path, splits=("train",), on_bad="skip")
    assert len(records) == 5 and image not in [r.image_path for r in records]
    assert report.skipped == ((image, reason),)
    assert report.counts[("train", "Normal")] == 1


# --- files that fail while the cache is built ---


def test_mask_size_mismatch(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / "qu" / LUNG / LUNG)
    image = base / "Val" / "COVID-19" / "images" / "img0.png"
    mask = write_png(base / "Val" / "COVID-19" / "lung masks" / "img0.png", np.zeros((6, 8), np.uint8))
    reason = f"its mask {mask} is 8x6 px but the image is 8x8 px; masks must match their image"
    where = image.parent
    with pytest.raises(DataError, match=exact(f"1 bad input(s) under {where}:\n  {image}: {reason}\n{SKIP}")):
        build_dataset(cfg_for(tmp_path), "val", progress=False)
    ds = build_dataset(cfg_for(tmp_path, on_bad="skip"), "val", progress=False)
    assert len(ds) == 5 and ds.report.skipped == ((image, reason),)
    assert ds.report.counts[("val", "COVID-19")] == 1


def test_truncated_and_fake_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = make_covidqu(tmp_path / "qu" / LUNG / LUNG)
    truncated = base / "Test" / "Normal" / "images" / "img0.png"
    write_png(truncated, np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:60])
    fake = base / "Test" / "COVID-19" / "images" / "img1.png"
    fake.write_text("this is a text file named .png")
    with pytest.raises(DataError) as info:
        build_dataset(cfg_for(tmp_path), "test", progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"2 bad input(s) under {base / 'Test'}:"
    assert lines[1].startswith(f"  {fake}: cannot decode (cannot identify image file")
    assert lines[1].endswith("); the file is truncated or not an image: replace it")
    assert lines[2].startswith(f"  {truncated}: cannot decode (")
    assert lines[3] == SKIP

    # the cache remembers bad files: a second attempt raises the same without decoding
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(dataset_module, "load_image", fail)
    with pytest.raises(DataError) as again:
        build_dataset(cfg_for(tmp_path), "test", progress=False)
    assert str(again.value) == str(info.value)
    ds = build_dataset(cfg_for(tmp_path, on_bad="skip"), "test", progress=False)
    assert len(ds) == 4
    assert [p for p, _ in ds.report.skipped] == [fake, truncated]
    assert ds.report.counts == {("test", "COVID-19"): 1, ("test", "Non-COVID"): 2, ("test", "Normal"): 1}
    assert "skipped: 2;" in str(ds.report)


def test_everything_skipped(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / "qu" / LUNG / LUNG, n=1)
    for name in CLASS_NAMES:
        (base / "Val" / name / "images" / "img0.png").write_bytes(b"")
    message = (
        f"no images left in split 'val' of {base} after skipping 3 bad input(s); "
        "see dataset.report / the list above, and fix the data"
    )
    with pytest.raises(DataError, match=exact(message)):
        build_dataset(cfg_for(tmp_path, on_bad="skip"), "val", progress=False)


def test_long_lists_are_shortened(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG, n=25)
    for k in range(25):
        (base / "Train" / "Normal" / "lung masks" / f"img{k}.png").unlink()
    with pytest.raises(DataError) as info:
        read_covidqu(tmp_path, splits=("train",))
    lines = str(info.value).splitlines()
    assert lines[0] == f"25 bad input(s) under {base}:"
    assert len(lines) == 23 and lines[21] == "  ... and 5 more"


def test_load_image_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(BadFileError, match=exact(f"{missing}: file does not exist")):
        load_image(missing)
    floats = tmp_path / "f.tiff"
    Image.fromarray(np.zeros((2, 2), np.float32)).save(floats)
    with pytest.raises(
        BadFileError,
        match=exact(f"{floats}: unsupported image mode 'F'; save it as an 8-bit grey or RGB PNG/JPEG"),
    ):
        load_image(floats)
    with pytest.raises(DataError, match=exact("channels=2 is not allowed; choose 1 or 3")):
        load_image(floats, channels=2)


# --- class-folder sets ---

CLASS_MAP = {"covid": "COVID-19", "non_covid_infection": "Non-COVID", "normal": "Normal"}


def make_folders(root: Path, folders: tuple[str, ...] = tuple(CLASS_MAP), split: str = "train") -> None:
    for folder in folders:
        write_png(root / split / folder / "a.png", np.zeros((4, 4), np.uint8))


def test_folders_missing_root_and_split(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    message = (
        f"class-folder root {root} does not exist or is not a folder; "
        f"expected {root}/{{train,val}}/<class folder>/*.png, or set DataConfig.root"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_class_folders(root, CLASS_MAP)
    make_folders(tmp_path)
    message = (
        f"no 'val' folder under {tmp_path} (found: train); expected {tmp_path}/val/<class folder>/*.png, "
        "or set DataConfig.root to the folder that holds the splits"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_class_folders(tmp_path, CLASS_MAP)


def test_folders_unknown_class_folder(tmp_path: Path) -> None:
    make_folders(tmp_path, (*CLASS_MAP, "Viral Pneumonia"))
    unknown = tmp_path / "train" / "Viral Pneumonia"
    message = (
        f"unknown class folder(s) {unknown}; known names (DataConfig.class_map): "
        "covid, non_covid_infection, normal; add them to class_map or remove them"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_class_folders(tmp_path, CLASS_MAP, splits=("train",), on_bad="skip")


def test_folders_missing_and_empty_class(tmp_path: Path) -> None:
    make_folders(tmp_path, ("covid", "normal"))
    empty = tmp_path / "train" / "normal"
    (empty / "a.png").unlink()
    (empty / "notes.txt").write_text("x")
    message = (
        f"2 bad input(s) under {tmp_path}:\n"
        f"  {tmp_path / 'train'}: no folder for class 'Non-COVID' (expected one of: non_covid_infection)\n"
        f"  {empty}: empty class folder: no .png, .jpg or .jpeg images\n"
        f"{SKIP}"
    )
    with pytest.raises(DataError, match=exact(message)):
        read_class_folders(tmp_path, CLASS_MAP, splits=("train",))
    records, report = read_class_folders(tmp_path, CLASS_MAP, splits=("train",), on_bad="skip")
    assert [r.class_name for r in records] == ["COVID-19"]
    assert len(report.skipped) == 2 and report.ignored == (empty / "notes.txt",)


def test_bad_arguments(tmp_path: Path) -> None:
    make_folders(tmp_path)
    with pytest.raises(DataError, match=exact("on_bad='ignore' is not allowed; choose 'error' or 'skip'")):
        read_class_folders(tmp_path, CLASS_MAP, on_bad="ignore")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=exact("split 'dev' is not one of 'train', 'val', 'test'")):
        read_class_folders(tmp_path, CLASS_MAP, splits=("dev",))
    message = "class_map maps 'covid' to 'COVID', which is not one of COVID-19, Non-COVID, Normal"
    with pytest.raises(DataError, match=exact(message)):
        read_class_folders(tmp_path, {"covid": "COVID"})
    with pytest.raises(DataError, match=exact("subset='lungs' is not allowed; choose 'lung' or 'infection'")):
        read_covidqu(tmp_path, subset="lungs")


# --- degenerate and hostile images ---


def test_degenerate_images_are_refused_with_the_threshold_named(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / "qu" / LUNG / LUNG, size=16)
    folder = base / "Test"
    sliver = write_png(
        folder / "COVID-19" / "images" / "img0.png", np.tile(np.arange(250, dtype=np.uint8), (1, 16))
    )
    tiny = write_png(folder / "Non-COVID" / "images" / "img0.png", np.eye(4, dtype=np.uint8) * 200)
    blank = write_png(folder / "Normal" / "images" / "img0.png", 77, size=16)
    for path in (sliver, tiny, blank):  # their masks must match their size, or the mask check speaks first
        with Image.open(path) as im:
            size = im.size
        for masks in ("lung masks",):
            Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(path.parent.parent / masks / path.name)
    with pytest.raises(DataError) as info:
        build_dataset(cfg_for(tmp_path), "test", progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"3 bad input(s) under {folder}:"
    assert lines[1] == (
        f"  {sliver}: 4000x1 px is 4000.0:1, over 3:1 (transforms.MAX_ASPECT): a chest X-ray is near square and "
        "every image is stretched to a square; crop it to the chest or remove it"
    )
    assert lines[2] == (
        f"  {tiny}: 4x4 px is too small for 16 px images: its shorter side would be upsampled 4.0x, over 2x "
        "(transforms.MAX_UPSCALE); use a smaller img_size or remove it"
    )
    assert lines[3] == f"  {blank}: every pixel is 77: a blank image shows nothing; remove it"
    ds = build_dataset(cfg_for(tmp_path, on_bad="skip"), "test", progress=False)
    assert sorted(p for p, _ in ds.report.skipped) == sorted([sliver, tiny, blank]) and len(ds) == 3


def test_a_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsg_lib.data import transforms

    path = write_png(tmp_path / "big.png", np.eye(40, dtype=np.uint8) * 255)
    monkeypatch.setattr(transforms, "MAX_PIXELS", 1_000)  # a 40 x 40 header stands for a bomb's

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    message = (
        f"{path}: its header says 40x40 = 1,600 px, over the 1,000 px limit (transforms.MAX_PIXELS): a "
        "decompression bomb or not a radiograph; refused before decoding"
    )
    with pytest.raises(BadFileError, match=exact(message)):
        load_image(path)
