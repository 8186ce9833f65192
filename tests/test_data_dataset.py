"""Datasets: shapes and ranges, the preprocessed cache (hit, invalidation), augmentation, labels, in-memory
sets, and the real images in ../shared/data/cxr-real when they are present."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LUNG, make_covidqu, marked_image, write_png

from medsg_lib.config import CLASS_NAMES, DataConfig, PhantomConfig
from medsg_lib.data import (
    DataError,
    LabelledImages,
    SyntheticXrays,
    XrayDataset,
    build_dataset,
    cached_images,
    dataset_labels,
    read_class_folders,
    read_records,
)
from medsg_lib.data import dataset as dataset_module

REAL_ROOT = Path(__file__).parents[2] / "shared" / "data" / "cxr-real"


def data_cfg(tmp_path: Path, **overrides: object) -> DataConfig:
    cfg = DataConfig(layout="covidqu", root=tmp_path / "qu", img_size=16, cache_dir=tmp_path / "cache")
    return dataclasses.replace(cfg, **overrides)


def test_dataset_shapes_ranges_and_exact_values(tmp_path: Path) -> None:
    make_covidqu(tmp_path / "qu" / LUNG / LUNG, size=12)
    ds = build_dataset(data_cfg(tmp_path), "val", progress=False)
    assert isinstance(ds, XrayDataset) and len(ds) == 6
    assert ds.images.shape == (6, 1, 16, 16) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.labels, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.equal(ds.class_counts(), torch.tensor([2, 2, 2]))
    assert ds.transform is None
    assert ds.report.counts == {("val", c): 2 for c in CLASS_NAMES}
    for i, rec in enumerate(ds.records):
        x, y = ds[i]
        assert x.shape == (1, 16, 16) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.ndim == 0 and int(y) == rec.label
        value = 40 * rec.label + 10 * int(rec.image_path.stem[-1]) + 5
        # away from the marked top-left pixel (make_covidqu) the image is its value, exactly
        torch.testing.assert_close(
            x[:, 6:, 6:], torch.full((1, 10, 10), value / 127.5 - 1), rtol=0, atol=1e-7
        )


def test_three_channels_repeat_grey(tmp_path: Path) -> None:
    make_covidqu(tmp_path / "qu" / LUNG / LUNG, n=1, size=12)
    ds = build_dataset(data_cfg(tmp_path, channels=3), "test", progress=False)
    x, _ = ds[0]
    assert x.shape == (3, 16, 16)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_cache_hit_does_not_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_covidqu(tmp_path / "qu" / LUNG / LUNG, size=12)
    cfg = data_cfg(tmp_path)
    first = build_dataset(cfg, "train", progress=False)
    cache_files = sorted(p.name for p in cfg.cache_dir.iterdir())
    assert len(cache_files) == 1 and cache_files[0].startswith("covidqu-train-16px-1ch-")
    assert cache_files[0].endswith(".pt")  # written atomically: no temporary file left

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(dataset_module, "load_image", fail)
    second = build_dataset(cfg, "train", progress=False)
    assert torch.equal(first.images, second.images)
    assert second.records == first.records
    assert sorted(p.name for p in cfg.cache_dir.iterdir()) == cache_files


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Wrap the dataset's ``load_image`` so that the decoded paths are recorded."""
    decoded: list[Path] = []
    real = dataset_module.load_image

    def counting(path: Path, channels: int = 1) -> np.ndarray:
        decoded.append(Path(path))
        return real(path, channels)

    monkeypatch.setattr(dataset_module, "load_image", counting)
    return decoded


def test_cache_invalidated_by_touch_replace_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = make_covidqu(tmp_path / "qu" / LUNG / LUNG, size=16)  # 32 px below: at most 2x upsampling
    cfg = data_cfg(tmp_path)
    build_dataset(cfg, "val", progress=False)
    decoded = count_decodes(monkeypatch)
    build_dataset(cfg, "val", progress=False)
    assert decoded == []

    target = base / "Val" / "Normal" / "images" / "img1.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touch: same bytes, new mtime
    build_dataset(cfg, "val", progress=False)
    assert len(decoded) == 6

    write_png(target, marked_image(251, 16))  # replace the content
    decoded.clear()
    ds = build_dataset(cfg, "val", progress=False)
    assert len(decoded) == 6
    assert int(ds.images[5, 0, 8, 8]) == 251

    decoded.clear()
    ds32 = build_dataset(dataclasses.replace(cfg, img_size=32), "val", progress=False)
    assert len(decoded) == 6 and ds32.images.shape == (6, 1, 32, 32)
    assert len(list(cfg.cache_dir.glob("*.pt"))) == 4  # one file per distinct key


def test_cache_follows_record_order(tmp_path: Path) -> None:
    make_covidqu(tmp_path / "qu" / LUNG / LUNG, size=12)
    cfg = data_cfg(tmp_path)
    records, _ = read_records(cfg, ("train",))
    images, kept, skipped = cached_images(records, 16, 1, cfg.cache_dir, "t", progress=False)
    reversed_images, reversed_kept, _ = cached_images(
        records[::-1], 16, 1, cfg.cache_dir, "t", progress=False
    )
    assert skipped == () and kept == records and reversed_kept == records[::-1]
    assert torch.equal(reversed_images, images.flip(0))
    assert len(list(cfg.cache_dir.glob("*.pt"))) == 1  # same key whatever the order


def test_no_augmentation_by_default_and_faithful_only_when_asked(tmp_path: Path) -> None:
    make_covidqu(tmp_path / "qu" / LUNG / LUNG, n=1, size=12)
    cfg = data_cfg(tmp_path)
    plain = build_dataset(cfg, "train", progress=False)
    assert plain.transform is None
    assert (
        build_dataset(dataclasses.replace(cfg, faithful_augment=True), "train", train=False).transform is None
    )
    faithful = build_dataset(dataclasses.replace(cfg, faithful_augment=True), "train", progress=False)
    assert faithful.transform is not None
    # a left-to-right ramp shows flips and crops
    ramp = torch.arange(16, dtype=torch.uint8).mul(15).expand(1, 16, 16).clone()
    faithful.images[0] = ramp
    x_ref = ramp.float() / 127.5 - 1
    torch.manual_seed(0)
    outcomes = Counter()
    for _ in range(400):
        x, _ = faithful[0]
        assert x.shape == (1, 16, 16) and x.min() >= -1 and x.max() <= 1
        if torch.equal(x, x_ref):
            outcomes["same"] += 1
        elif torch.equal(x, x_ref.flip(-1)):
            outcomes["flipped"] += 1
        else:
            outcomes["cropped"] += 1
    # p(no crop, no flip) = p(no crop, flip) = 1/4, p(crop) = 1/2; a crop near scale 1 can keep the whole
    # image (then it counts as same/flipped), so "cropped" is a little below 1/2
    assert outcomes["same"] >= 70 and outcomes["flipped"] >= 70 and outcomes["cropped"] >= 100, outcomes
    plain.images[0] = ramp
    assert all(torch.equal(plain[0][0], x_ref) for _ in range(20))


def test_dataset_labels_reads_the_labels_attribute(tmp_path: Path) -> None:
    make_covidqu(tmp_path / "qu" / LUNG / LUNG, n=1, size=12)
    xray = build_dataset(data_cfg(tmp_path), "val", progress=False)
    assert torch.equal(dataset_labels(xray), torch.tensor([0, 1, 2]))
    in_memory = LabelledImages(torch.zeros(2, 1, 4, 4), torch.tensor([2, 0], dtype=torch.int32))
    labels = dataset_labels(in_memory)
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 0]
    with pytest.raises(
        TypeError, match=r"^TensorDataset has no `labels` attribute \(int64 \(N,\) class of each item\)$"
    ):
        dataset_labels(torch.utils.data.TensorDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])))


def test_in_memory_sets_have_the_dataset_contract() -> None:
    a, b = SyntheticXrays(8, channels=3, num_per_class=2, seed=1), SyntheticXrays(8, 3, 2, seed=1)
    assert len(a) == 6 and a.labels.tolist() == [0, 1, 2, 0, 1, 2]
    x, y = a[4]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64 and int(y) == 1
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, SyntheticXrays(8, 3, 2, seed=2).x)
    assert a.x.min() >= -1 and a.x.max() <= 1
    means = [float(a.x[a.labels == k].mean()) for k in range(3)]
    assert means[0] < means[1] < means[2]  # each class has its own brightness
    with pytest.raises(
        ValueError, match=r"^x must be \(N, C, H, W\) with N labels; got \(2, 4, 4\) and \(2,\)$"
    ):
        LabelledImages(torch.zeros(2, 4, 4), torch.tensor([0, 1]))


def test_phantoms_layout_writes_and_reads(tmp_path: Path) -> None:
    phantoms = PhantomConfig(root=tmp_path / "ph", img_size=32, num_train=2, num_val=1, num_test=1)
    cfg = DataConfig(img_size=16, cache_dir=tmp_path / "cache")
    records, report = read_records(cfg, ("train", "val"), phantoms, progress=False)
    assert report.counts == {**{("train", c): 2 for c in CLASS_NAMES}, **{("val", c): 1 for c in CLASS_NAMES}}
    assert all(r.image_path.is_relative_to((tmp_path / "ph").absolute()) for r in records)
    assert all(r.lung_mask_path is not None for r in records)
    ds = build_dataset(cfg, "val", phantoms, progress=False)
    assert ds.images.shape == (3, 1, 16, 16)
    moved = dataclasses.replace(cfg, root=tmp_path / "ph2")  # DataConfig.root replaces PhantomConfig.root
    records2, _ = read_records(moved, ("test",), phantoms, progress=False)
    assert len(records2) == 3 and all(
        r.image_path.is_relative_to((tmp_path / "ph2").absolute()) for r in records2
    )


@pytest.mark.skipif(not REAL_ROOT.is_dir(), reason=f"real chest X-rays not present at {REAL_ROOT}")
def test_real_cxr_counts_and_decoding(tmp_path: Path) -> None:
    rows = list(csv.DictReader((REAL_ROOT / "index.csv").open()))
    cfg = DataConfig(layout="folders", root=REAL_ROOT, img_size=64, cache_dir=tmp_path / "cache")
    class_map = dict(cfg.class_map)
    records, report = read_class_folders(REAL_ROOT, class_map, ("train", "val"), on_bad="error")
    expected = Counter((r["split"], class_map[r["cls"]]) for r in rows)
    assert report.counts == dict(expected)
    assert [report.counts[("train", c)] for c in CLASS_NAMES] == [697, 700, 700]
    assert [report.counts[("val", c)] for c in CLASS_NAMES] == [100, 100, 100]
    assert report.skipped == () and report.ignored == ()
    # ~30 files covering every (format, mode) of the index: JPEG L/RGB, PNG L/RGB/RGBA
    by_path = {REAL_ROOT / r["file"]: r for r in rows}
    picked, seen = [], Counter()
    for rec in records:
        key = (by_path[rec.image_path]["format"], by_path[rec.image_path]["mode"], rec.label)
        if seen[key] < 2:
            seen[key] += 1
            picked.append(rec)
    assert {(k[0], k[1]) for k in seen} == {(r["format"], r["mode"]) for r in rows}
    images, kept, skipped = cached_images(
        picked, 64, 1, cfg.cache_dir, "real", on_bad="error", progress=False
    )
    assert 20 <= len(picked) <= 40 and skipped == () and kept == picked
    assert images.shape == (len(picked), 1, 64, 64)
    assert 20 < images.float().mean() < 235  # real radiographs, not blank


def test_unknown_split_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^split 'training' is not one of 'train', 'val', 'test'$"):
        build_dataset(data_cfg(tmp_path), "training", progress=False)
