"""Readers (COVID-QU-Ex, class folders), decoding of every Pillow mode, preprocessing and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import INFECTION, LUNG, make_covidqu, write_png
from PIL import Image

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data import (
    ReadReport,
    XrayRecord,
    load_image,
    load_mask,
    preprocess,
    read_class_folders,
    read_covidqu,
    rgb_to_gray,
    to_tensor,
)


def test_read_covidqu_doubled_layout_records_counts_and_masks(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG)
    records, report = read_covidqu(tmp_path)
    assert len(records) == 18
    assert report.root == base
    assert report.counts == {(s, c): 2 for s in ("train", "val", "test") for c in CLASS_NAMES}
    assert report.skipped == () and report.ignored == ()
    assert records[0] == XrayRecord(
        image_path=base / "Train" / "COVID-19" / "images" / "img0.png",
        label=0,
        class_name="COVID-19",
        split="train",
        lung_mask_path=base / "Train" / "COVID-19" / "lung masks" / "img0.png",
        infection_mask_path=None,
    )
    assert [(r.split, r.label) for r in records[:6]] == [("train", 0)] * 2 + [("train", 1)] * 2 + [
        ("train", 2)
    ] * 2
    for rec in records:
        assert rec.class_name == CLASS_NAMES[rec.label]
        assert rec.image_path.parent.parent.name == rec.class_name
        assert rec.lung_mask_path is not None and rec.lung_mask_path.name == rec.image_path.name
        assert rec.lung_mask_path.is_file()


@pytest.mark.parametrize("layout", ["doubled", "single", "inner", "outer"])
def test_read_covidqu_accepts_nesting_variants(tmp_path: Path, layout: str) -> None:
    base = {"doubled": tmp_path / LUNG / LUNG, "single": tmp_path / LUNG, "inner": tmp_path / LUNG / LUNG}[
        "doubled" if layout == "outer" else layout
    ]
    make_covidqu(base, n=1)
    root = {"doubled": tmp_path, "single": tmp_path, "inner": base, "outer": tmp_path / LUNG}[layout]
    records, report = read_covidqu(root, splits=("val",))
    assert report.root == base
    assert [r.image_path for r in records] == [base / "Val" / c / "images" / "img0.png" for c in CLASS_NAMES]
    assert report.counts == {("val", c): 1 for c in CLASS_NAMES}


def test_read_covidqu_infection_subset_has_both_masks(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / INFECTION / INFECTION, subset="infection", n=1)
    records, _ = read_covidqu(tmp_path, subset="infection", splits=("test",))
    assert len(records) == 3
    rec = records[2]
    assert rec.split == "test" and rec.label == 2
    assert rec.lung_mask_path == base / "Test" / "Normal" / "lung masks" / "img0.png"
    assert rec.infection_mask_path == base / "Test" / "Normal" / "infection masks" / "img0.png"


def test_non_image_files_are_ignored_and_listed(tmp_path: Path) -> None:
    base = make_covidqu(tmp_path / LUNG / LUNG, n=1)
    notes = base / "Train" / "Normal" / "images" / "notes.txt"
    notes.write_text("not an image")
    ds_store = base / "Train" / ".DS_Store"
    ds_store.write_bytes(b"\0")
    records, report = read_covidqu(tmp_path, splits=("train",))
    assert len(records) == 3
    assert set(report.ignored) == {notes, ds_store}
    assert "ignored non-image files: 2" in str(report)


def make_folders(root: Path, layout: dict[str, dict[str, list[str]]]) -> None:
    """``layout[split][folder]`` lists file names; each is a constant 8x8 image of value 100."""
    for split, folders in layout.items():
        for folder, names in folders.items():
            for name in names:
                write_png(root / split / folder / name, 100)


def test_read_class_folders_maps_names_and_suffixes(tmp_path: Path) -> None:
    make_folders(
        tmp_path,
        {
            "train": {"covid": ["b.png", "a.jpg"], "Lung_Opacity": ["c.jpeg"], "Viral Pneumonia": ["d.PNG"]},
            "Val": {"covid": ["e.png"], "Lung_Opacity": ["f.png"], "normal": ["g.png"]},
        },
    )
    write_png(tmp_path / "train" / "normal" / "images" / "h.png", 0)  # COVID-19 Radiography Database style
    class_map = {
        "covid": "COVID-19",
        "Lung_Opacity": "Non-COVID",
        "Viral Pneumonia": "Non-COVID",
        "normal": "Normal",
    }
    records, report = read_class_folders(tmp_path, class_map)
    names = [(r.split, r.class_name, r.image_path.name) for r in records]
    assert names == [
        ("train", "COVID-19", "a.jpg"),
        ("train", "COVID-19", "b.png"),
        ("train", "Non-COVID", "c.jpeg"),
        ("train", "Non-COVID", "d.PNG"),
        ("train", "Normal", "h.png"),
        ("val", "COVID-19", "e.png"),
        ("val", "Non-COVID", "f.png"),
        ("val", "Normal", "g.png"),
    ]
    assert [r.label for r in records] == [0, 0, 1, 1, 2, 0, 1, 2]
    assert all(r.lung_mask_path is None for r in records)
    assert report.counts == {
        ("train", "COVID-19"): 2,
        ("train", "Non-COVID"): 2,
        ("train", "Normal"): 1,
        ("val", "COVID-19"): 1,
        ("val", "Non-COVID"): 1,
        ("val", "Normal"): 1,
    }


def test_report_table_and_str() -> None:
    counts = {("train", "COVID-19"): 697, ("train", "Non-COVID"): 700, ("train", "Normal"): 700}
    counts |= {("val", c): 100 for c in CLASS_NAMES}
    report = ReadReport(Path("/data"), counts, skipped=((Path("/data/x.png"), "cannot decode"),))
    assert report.total == 2397
    assert report.to_table() == (
        "split  COVID-19  Non-COVID  Normal  total\n"
        "train       697        700     700   2097\n"
        "val         100        100     100    300"
    )
    assert str(report).splitlines()[0] == "read 2397 images from /data"
    assert str(report).splitlines()[-2:] == [
        "skipped: 1; ignored non-image files: 0",
        "  skipped /data/x.png: cannot decode",
    ]


# --- decoding ---


def test_load_image_16bit_scaled_by_full_range(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 257, 32767, 32768, 65535, 514]], np.uint16)
    path = write_png(tmp_path / "x16.png", values)
    assert Image.open(path).mode == "I;16"
    out = load_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 1, 1, 127, 128, 255, 2]])


def test_load_image_rgb_luma_exact_on_pure_colours(tmp_path: Path) -> None:
    rgb = np.zeros((1, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[0, 3] = (255, 255, 255)
    rgb[0, 4] = (77, 77, 77)
    path = write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(load_image(path), [[76, 150, 29, 255, 77]])
    np.testing.assert_array_equal(load_image(path, channels=3), rgb)  # colour kept, like .convert("RGB")


def test_rgb_to_gray_matches_pillow() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_gray(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_load_image_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.array([[[200, 100, 50, 128], [10, 20, 30, 0], [90, 90, 90, 255]]], np.uint8)
    path = write_png(tmp_path / "rgba.png", rgba)
    assert Image.open(path).mode == "RGBA"
    # (200, 100, 50) * 128 / 255 -> (100, 50, 25) -> luma 62; alpha 0 -> black; opaque grey unchanged
    np.testing.assert_array_equal(load_image(path), [[62, 0, 90]])
    np.testing.assert_array_equal(load_image(path, channels=3), [[[100, 50, 25], [0, 0, 0], [90, 90, 90]]])
    la = Image.fromarray(np.array([[[200, 128], [40, 255]]], np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), [[100, 40]])


def test_load_image_palette_and_bilevel(tmp_path: Path) -> None:
    pal = Image.new("P", (3, 1))
    pal.putpalette([0, 0, 0, 128, 128, 128, 255, 0, 0] + [0] * (253 * 3))
    pal.putdata([0, 1, 2])
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), [[0, 128, 76]])
    pal.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 fully transparent -> black
    np.testing.assert_array_equal(load_image(tmp_path / "pt.png"), [[0, 0, 76]])
    bilevel = Image.fromarray(np.array([[0, 1, 1]], bool))
    bilevel.save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    np.testing.assert_array_equal(load_image(tmp_path / "b.png"), [[0, 255, 255]])


def test_load_image_jpeg_and_grey_to_three_channels(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "g.jpg", quality=95)
    gray = load_image(tmp_path / "g.jpg")
    assert gray.shape == (16, 16) and gray.dtype == np.uint8
    assert np.abs(gray.astype(int) - 100).max() <= 1
    rgb = load_image(tmp_path / "g.jpg", channels=3)
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=2))


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    array = np.zeros((4, 6), np.uint8)
    array[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(array).save(tmp_path / "o.png", exif=exif)
    out = load_image(tmp_path / "o.png")
    assert out.shape == (6, 4)
    assert out[0, 3] == 255 and out.sum() == 255


# --- preprocessing ---


@pytest.mark.parametrize(("value", "expected"), [(0, -1.0), (255, 1.0), (102, 102 / 127.5 - 1)])
def test_constant_image_maps_to_exact_value(value: int, expected: float) -> None:
    img = np.full((37, 53), value, np.uint8)
    small = preprocess(img, 16)
    assert small.shape == (16, 16) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, value)
    x = to_tensor(small)
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32
    # 0 and 255 are exact; other levels within float32 rounding of v / 127.5 - 1
    torch.testing.assert_close(x, torch.full((1, 16, 16), expected), rtol=0, atol=1e-7)


def test_preprocess_keeps_rgb_and_antialiases() -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    assert preprocess(rgb, 8).shape == (8, 8, 3)
    assert to_tensor(preprocess(rgb, 8)).shape == (3, 8, 8)
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    small = preprocess(checker, 16).astype(int)  # anti-aliased: grey, not the 0/255 of nearest neighbour
    assert np.abs(small[2:-2, 2:-2] - 128).max() <= 1


def test_preprocess_and_to_tensor_reject_bad_arrays() -> None:
    with pytest.raises(
        ValueError, match=r"^preprocess expects a uint8 \(H, W\) or \(H, W, 3\) array, got float32"
    ):
        preprocess(np.zeros((4, 4), np.float32), 2)
    with pytest.raises(
        ValueError, match=r"^to_tensor expects a uint8 \(H, W\) or \(H, W, C\) array, got int64 \(4,\)$"
    ):
        to_tensor(np.zeros(4, np.int64))


def test_load_mask_nearest_and_threshold(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    write_png(tmp_path / "m.png", mask)
    out = load_mask(tmp_path / "m.png", 4)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, np.repeat([[True, True, False, False]], 4, axis=0))
    write_png(tmp_path / "m01.png", (mask > 0).astype(np.uint8))  # masks stored as 0/1
    np.testing.assert_array_equal(load_mask(tmp_path / "m01.png", 8), mask > 0)
