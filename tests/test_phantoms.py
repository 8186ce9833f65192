"""Synthetic chest radiographs: rendering, class design, COVID-QU-Ex layout, determinism and the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsg_lib.config import CLASS_NAMES, PhantomConfig
from medsg_lib.data.phantom_render import Phantom, render_phantom
from medsg_lib.data.phantoms import (
    INFECTION_SUBSET,
    LUNG_SUBSET,
    PHANTOM_VERSION,
    PHANTOMS_MANIFEST,
    SPLITS,
    image_rng,
    phantom_entries,
    write_phantoms,
)

COVID, NON_COVID, NORMAL = 0, 1, 2
STAT_SIZE = 64  # pixels of the images used for the class statistics
STAT_COUNT = 20  # images per class for the class statistics


def _tiny(root: Path, **changes: object) -> PhantomConfig:
    fields: dict[str, object] = {"root": root, "img_size": 32, "num_train": 2, "num_val": 1, "num_test": 1}
    fields.update(changes)
    return PhantomConfig(**fields)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _class_sample(label: int) -> list[Phantom]:
    return [render_phantom(image_rng(7, "Train", label, i), label, STAT_SIZE) for i in range(STAT_COUNT)]


@pytest.fixture(scope="module")
def samples() -> dict[int, list[Phantom]]:
    return {label: _class_sample(label) for label in (COVID, NON_COVID, NORMAL)}


def _halves(mask: np.ndarray) -> tuple[int, int]:
    """Pixels of ``mask`` in the image-left and image-right halves."""
    half = mask.shape[1] // 2
    return int(mask[:, :half].sum()), int(mask[:, half:].sum())


# --------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("label", [COVID, NON_COVID, NORMAL])
def test_render_shapes_types_and_masks(label: int) -> None:
    phantom = render_phantom(np.random.default_rng(3), label, 48)
    assert phantom.image.shape == (48, 48) and phantom.image.dtype == np.uint8
    assert phantom.lung_mask.shape == (48, 48) and phantom.lung_mask.dtype == np.bool_
    assert phantom.infection_mask.shape == (48, 48) and phantom.infection_mask.dtype == np.bool_
    assert not (phantom.infection_mask & ~phantom.lung_mask).any()  # lesions lie inside the lungs
    assert 0.15 < phantom.lung_mask.mean() < 0.5
    assert phantom.image.min() < 40 and phantom.image.max() > 200  # air outside the body, bright bone


def test_render_is_a_function_of_the_generator_state() -> None:
    a = render_phantom(np.random.default_rng(5), COVID, 40)
    b = render_phantom(np.random.default_rng(5), COVID, 40)
    c = render_phantom(np.random.default_rng(6), COVID, 40)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.infection_mask, b.infection_mask)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize(
    ("label", "digest"),
    [(COVID, "6035985194de7205"), (NON_COVID, "a1d1b6066134adf4"), (NORMAL, "ff647f51a93a6563")],
)
def test_rendering_is_unchanged(label: int, digest: str) -> None:
    """The pixels of one phantom per class, pinned: a refactoring of the rendering must not change one bit
    (a deliberate change bumps PHANTOM_VERSION and these digests)."""
    phantom = render_phantom(image_rng(0, "Train", label, 0), label, 48)
    pixels = phantom.image.tobytes() + phantom.lung_mask.tobytes() + phantom.infection_mask.tobytes()
    assert hashlib.sha256(pixels).hexdigest()[:16] == digest


def test_same_patient_at_any_size() -> None:
    """Only the film grain depends on the size: the anatomy (here the lung fraction) is the same."""
    small = render_phantom(image_rng(0, "Val", NORMAL, 3), NORMAL, 64)
    large = render_phantom(image_rng(0, "Val", NORMAL, 3), NORMAL, 256)
    assert abs(small.lung_mask.mean() - large.lung_mask.mean()) < 0.01
    shrunk = large.lung_mask.reshape(64, 4, 64, 4).mean(axis=(1, 3)) > 0.5
    assert (shrunk == small.lung_mask).mean() > 0.98


@pytest.mark.parametrize(
    ("label", "size", "match"),
    [
        (3, 32, r"render_phantom: label=3 must be 0, 1 or 2"),
        (-1, 32, r"render_phantom: label=-1 must be 0, 1 or 2"),
        (0, 8, r"render_phantom: size=8 must be >= 16 pixels"),
    ],
)
def test_render_rejects_bad_arguments(label: int, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_phantom(np.random.default_rng(0), label, size)


def test_image_rng_rejects_unknown_split() -> None:
    with pytest.raises(
        ValueError, match=r"image_rng: split='train' must be one of \('Train', 'Val', 'Test'\)"
    ):
        image_rng(0, "train", 0, 0)


# --------------------------------------------------------------------------------------------- class design


def test_normal_has_no_lesions_and_diseased_classes_always_do(samples: dict[int, list[Phantom]]) -> None:
    assert all(not p.infection_mask.any() for p in samples[NORMAL])
    for label in (COVID, NON_COVID):
        assert all(p.infection_mask.sum() >= 10 for p in samples[label]), CLASS_NAMES[label]


def test_diseased_lungs_are_more_opaque_than_normal(samples: dict[int, list[Phantom]]) -> None:
    mean_in_lung = {
        label: np.mean([p.image[p.lung_mask].mean() for p in phantoms]) for label, phantoms in samples.items()
    }
    assert mean_in_lung[COVID] > mean_in_lung[NORMAL] + 2.0
    assert mean_in_lung[NON_COVID] > mean_in_lung[NORMAL] + 5.0
    # and inside the lesions themselves the difference to the rest of the lung is clear
    for label in (COVID, NON_COVID):
        contrast = [
            p.image[p.infection_mask].mean() - p.image[p.lung_mask & ~p.infection_mask].mean()
            for p in samples[label]
        ]
        assert np.mean(contrast) > 10.0, CLASS_NAMES[label]


def test_covid_is_bilateral_and_non_covid_mostly_unilateral(samples: dict[int, list[Phantom]]) -> None:
    covid = [_halves(p.infection_mask) for p in samples[COVID]]
    assert sum(left > 0 and right > 0 for left, right in covid) >= 0.8 * STAT_COUNT
    non_covid = [_halves(p.infection_mask) for p in samples[NON_COVID]]
    dominant = [max(left, right) / (left + right) for left, right in non_covid]
    assert sum(d >= 0.9 for d in dominant) >= 0.7 * STAT_COUNT
    covid_dominant = [max(left, right) / (left + right) for left, right in covid]
    assert np.mean(dominant) > np.mean(covid_dominant) + 0.2


def test_covid_lesions_are_peripheral_and_basal(samples: dict[int, list[Phantom]]) -> None:
    """Lesion centroids lie in the lower half of the lung and lateral to the lung's own centroid."""
    lower, lateral = 0, 0
    for p in samples[COVID]:
        rows, cols = np.nonzero(p.lung_mask)
        lesion_rows, lesion_cols = np.nonzero(p.infection_mask)
        lower += lesion_rows.mean() > (rows.min() + rows.max()) / 2
        center = STAT_SIZE / 2
        lateral += np.mean(np.abs(lesion_cols - center)) > np.mean(np.abs(cols - center))
    assert lower >= 0.9 * STAT_COUNT and lateral >= 0.9 * STAT_COUNT


def test_heart_lies_over_the_left_lung_on_the_image_right(samples: dict[int, list[Phantom]]) -> None:
    """PA view: the lower chest just right of the midline (heart) is brighter than its mirror (right lung)."""
    rows = slice(int(0.55 * STAT_SIZE), int(0.68 * STAT_SIZE))
    right, left = (
        slice(int(0.58 * STAT_SIZE), int(0.7 * STAT_SIZE)),
        slice(int(0.3 * STAT_SIZE), int(0.42 * STAT_SIZE)),
    )
    for p in samples[NORMAL]:
        image = p.image.astype(np.float64)
        assert image[rows, right].mean() > image[rows, left].mean() + 5.0
        assert p.lung_mask[rows, right].mean() < p.lung_mask[rows, left].mean()


# --------------------------------------------------------------------------------------------- files


def test_layout_counts_and_png_format(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path / "phantoms")
    assert write_phantoms(cfg, progress=False) == cfg.root
    counts = {"Train": 2, "Val": 1, "Test": 1}
    for subset, kinds in (
        (LUNG_SUBSET, {"images", "lung masks"}),
        (INFECTION_SUBSET, {"images", "lung masks", "infection masks"}),
    ):
        assert {p.name for p in (cfg.root / subset).iterdir()} == set(SPLITS)
        for split in SPLITS:
            assert {p.name for p in (cfg.root / subset / split).iterdir()} == set(CLASS_NAMES)
            for class_name in CLASS_NAMES:
                class_dir = cfg.root / subset / split / class_name
                assert {p.name for p in class_dir.iterdir()} == kinds
                names = [sorted(p.name for p in (class_dir / kind).iterdir()) for kind in sorted(kinds)]
                assert all(n == names[0] for n in names) and len(names[0]) == counts[split]
                for kind in kinds:
                    for name in names[0]:
                        with Image.open(class_dir / kind / name) as im:
                            assert (im.format, im.mode, im.size) == ("PNG", "L", (32, 32))
                            values = set(np.unique(np.asarray(im)).tolist())
                        if kind != "images":
                            assert values <= {0, 255}
    covid_train = cfg.root / LUNG_SUBSET / "Train" / "COVID-19" / "images"
    assert sorted(p.name for p in covid_train.iterdir()) == [
        "phantom_covid_000000.png",
        "phantom_covid_000001.png",
    ]
    normal_test = cfg.root / LUNG_SUBSET / "Test" / "Normal" / "images"
    assert [p.name for p in normal_test.iterdir()] == ["phantom_normal_000003.png"]
    # the same images and lung masks in both subsets
    for kind in ("images", "lung masks"):
        a = cfg.root / LUNG_SUBSET / "Val" / "Non-COVID" / kind / "phantom_non_covid_000002.png"
        b = cfg.root / INFECTION_SUBSET / "Val" / "Non-COVID" / kind / "phantom_non_covid_000002.png"
        assert a.read_bytes() == b.read_bytes()
    manifest = json.loads((cfg.root / PHANTOMS_MANIFEST).read_text())
    assert manifest["phantom_version"] == PHANTOM_VERSION
    assert manifest["config"] == {"img_size": 32, "num_train": 2, "num_val": 1, "num_test": 1, "seed": 0}


def test_masks_on_disk_match_the_regenerated_phantom(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path)
    write_phantoms(cfg, progress=False)
    entries = list(phantom_entries(cfg))
    assert len(entries) == 3 * 4 and len({(e.label, e.name) for e in entries}) == 12
    entry = next(e for e in entries if e.split == "Test" and e.label == COVID)
    phantom = render_phantom(image_rng(cfg.seed, entry.split, entry.label, entry.index), entry.label, 32)
    class_dir = cfg.root / INFECTION_SUBSET / "Test" / "COVID-19"
    np.testing.assert_array_equal(np.asarray(Image.open(class_dir / "images" / entry.name)), phantom.image)
    lung = np.asarray(Image.open(class_dir / "lung masks" / entry.name))
    infection = np.asarray(Image.open(class_dir / "infection masks" / entry.name))
    np.testing.assert_array_equal(lung == 255, phantom.lung_mask)
    np.testing.assert_array_equal(infection == 255, phantom.infection_mask)
    assert infection.any()


def test_same_config_gives_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = _files(write_phantoms(_tiny(tmp_path / "a"), progress=False))
    second = _files(write_phantoms(_tiny(tmp_path / "b"), progress=False))
    assert first == second and len(first) == 12 * 5 + 1
    other = _files(write_phantoms(_tiny(tmp_path / "c", seed=1), progress=False))
    assert other.keys() == first.keys()
    images = [k for k in first if "images" in k]
    assert all(first[k] != other[k] for k in images)


def test_second_call_with_same_config_writes_nothing(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path)
    write_phantoms(cfg, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    image = next(iter(p for p in before if p.suffix == ".png"))
    image.write_bytes(b"tampered")  # a skipped call must not even look at the images
    write_phantoms(cfg, progress=True)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in before if p != image)
    assert image.read_bytes() == b"tampered"


def test_changed_config_rewrites_and_removes_stale_files(tmp_path: Path) -> None:
    root = tmp_path / "phantoms"
    write_phantoms(_tiny(root), progress=False)
    user_file = root / LUNG_SUBSET / "Train" / "Normal" / "images" / "mine.png"
    user_file.write_bytes(b"not a phantom")
    write_phantoms(_tiny(root, img_size=16, num_train=1), progress=False)
    expected = _files(write_phantoms(_tiny(tmp_path / "fresh", img_size=16, num_train=1), progress=False))
    got = _files(root)
    assert got.pop(str(user_file.relative_to(root))) == b"not a phantom"  # only phantoms are deleted
    assert got == expected


def test_missing_manifest_after_a_crash_means_a_full_rewrite(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path)
    reference = _files(write_phantoms(cfg, progress=False))
    (tmp_path / PHANTOMS_MANIFEST).unlink()
    broken = tmp_path / INFECTION_SUBSET / "Val" / "Normal" / "infection masks" / "phantom_normal_000002.png"
    broken.write_bytes(b"half written")
    write_phantoms(cfg, progress=False)
    assert _files(tmp_path) == reference


def test_changed_version_in_manifest_means_a_rewrite(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path)
    write_phantoms(cfg, progress=False)
    manifest = tmp_path / PHANTOMS_MANIFEST
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "phantom_version": "0"}))
    image = tmp_path / LUNG_SUBSET / "Train" / "COVID-19" / "images" / "phantom_covid_000000.png"
    image.write_bytes(b"old rendering")
    write_phantoms(cfg, progress=False)
    assert image.read_bytes() != b"old rendering"
    assert json.loads(manifest.read_text())["phantom_version"] == PHANTOM_VERSION
