"""FRD: our cached two-step path equals ``frd_score.compute_frd`` on the same files; caching, RGB, records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medsg_lib.data.covidqu import sibling_lung_mask
from medsg_lib.metrics import frd
from medsg_lib.metrics.sources import GeneratedSet, RealImages


def smooth_images(n: int, size: int, seed: int, contrast: float = 1.0) -> np.ndarray:
    """(n, size, size) uint8: a shared bright disc ("lung field") plus seeded low-frequency texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    disc = (xx**2 + yy**2 < 0.12).astype(float)
    out = []
    for _ in range(n):
        coarse = rng.normal(size=(size // 8, size // 8))
        texture = np.kron(coarse, np.ones((8, 8)))
        img = 100 + 80 * disc + contrast * 20 * texture + rng.normal(scale=4, size=(size, size))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_set(folder: Path, images: np.ndarray, mode: str = "L") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(images):
        paths.append(folder / f"{k:03d}.png")
        Image.fromarray(img).convert(mode).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("frd")
    a = write_set(root / "a", smooth_images(14, 64, seed=0))
    b = write_set(root / "b", smooth_images(14, 64, seed=1, contrast=2.0))
    return a, b


def test_cached_path_equals_compute_frd(two_sets: tuple[list[Path], list[Path]]) -> None:
    from frd_score import compute_frd

    a, b = two_sets
    expected = compute_frd([[str(p) for p in a], [str(p) for p in b]], frd_version="v1", num_workers=2)
    fa, names = frd.radiomic_features(a)
    fb, _ = frd.radiomic_features(b)
    value, kept = frd.frd_from_features(fa, fb)
    assert np.isfinite(expected)
    assert value == pytest.approx(float(expected), rel=1e-6, abs=1e-6)
    assert kept["n_real"] == 14 and kept["n_fake"] == 14
    assert 300 < kept["num_features"] <= fa.shape[1] == len(names)
    # more texture contrast is further away than another draw of the same distribution
    same, _ = frd.frd_from_features(fa[:7], fa[7:])
    assert same < value


def test_features_on_one_itk_thread_equal_frd_scores_own_bit_for_bit(
    two_sets: tuple[list[Path], list[Path]],
) -> None:
    import SimpleITK as sitk
    from frd_score import frd as frd_lib

    a, _ = two_sets
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    extractor = frd_lib.get_feature_extractor(frd_version="v1", image_dim=2)
    expected, _, _ = frd_lib.compute_features([str(p) for p in a], extractor, num_workers=2, frd_version="v1")
    got, _ = frd.radiomic_features(a, num_workers=2)
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float64))
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before  # restored


def test_frd_rejects_mismatched_features() -> None:
    with pytest.raises(ValueError, match=r"same F, got \(3, 4\) and \(3, 5\)"):
        frd.frd_from_features(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"at least 2 images per set without NaN features, got \[3, 1\]"):
        frd.frd_from_features(np.ones((3, 4)), np.array([[1.0, 2, 3, 4], [np.nan, 1, 1, 1]]))


def test_real_features_cached_and_rgb_generated_converted(
    tmp_path: Path, two_sets: tuple[list[Path], list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    imgs = smooth_images(6, 64, seed=0)
    real = RealImages(torch.from_numpy(imgs)[:, None], torch.arange(6), "train", "Normal", "test-set", 50)
    first = frd.set_features(real, tmp_path)
    (cache_file,) = tmp_path.glob("radiomics-*.npz")
    direct, _ = frd.radiomic_features(write_set(tmp_path / "direct", imgs))
    np.testing.assert_array_equal(first, direct)  # PNGs written from the uint8 tensors are lossless

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(frd, "radiomic_features", no_extraction)
    np.testing.assert_array_equal(frd.set_features(real, tmp_path), first)
    monkeypatch.undo()

    rgb = GeneratedSet(tmp_path / "rgb", "Normal", tuple(write_set(tmp_path / "rgb", imgs, mode="RGB")))
    np.testing.assert_allclose(frd.set_features(rgb, None), first, rtol=1e-6)
    assert cache_file.exists()


def test_class_sets_are_cut_from_one_extraction_of_their_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    u8 = torch.from_numpy(smooth_images(6, 64, seed=1))[:, None]
    sizes, original = [], frd.radiomic_features

    def counting(files, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        sizes.append(len(files))
        return original(files, *args, **kwargs)

    monkeypatch.setattr(frd, "radiomic_features", counting)
    normal = RealImages(u8, torch.tensor([0, 2, 4]), "train", "Normal", "test-set", 50)
    covid = RealImages(u8, torch.tensor([1, 3, 5]), "train", "COVID-19", "test-set", 50)
    cut = frd.set_features(normal, tmp_path)
    frd.set_features(covid, tmp_path)
    frd.set_features(frd.whole_split(normal), tmp_path)
    assert sizes == [6]  # the split's six images, once, for both classes and "all"
    np.testing.assert_array_equal(cut, frd.set_features(normal, None))  # = the class set's own extraction
    assert sizes == [6, 3]


def test_lung_masks_real_and_borrowed_from_sources(tmp_path: Path) -> None:
    imgs = smooth_images(8, 64, seed=2)
    class_dir = tmp_path / "Normal"
    sources = write_set(class_dir / "images", imgs)
    disc = np.zeros((64, 64), dtype=np.uint8)
    disc[12:52, 8:56] = 255
    mask_files = write_set(class_dir / "lung masks", np.stack([disc] * 8))
    assert sibling_lung_mask(sources[3]) == mask_files[3]
    assert sibling_lung_mask(tmp_path / "elsewhere.png") is None

    real = RealImages(
        torch.from_numpy(imgs)[:, None], torch.arange(8), "train", "Normal", "masked", 50, tuple(mask_files)
    )
    fakes = write_set(tmp_path / "gen" / "normal", smooth_images(8, 64, seed=3))
    translated = GeneratedSet(tmp_path / "gen" / "normal", "Normal", tuple(fakes), tuple(map(str, sources)))
    masked = frd.frd_fields(real, translated, tmp_path / "cache", with_masks=True)
    whole = frd.frd_fields(real, translated, tmp_path / "cache")
    assert masked["masks"] == "lung" and masked["protocol"] == frd.FRD_PROTOCOL + frd.FRD_MASKED_SUFFIX
    assert np.isfinite(masked["value"]) and masked["value"] != whole["value"]
    assert len(list((tmp_path / "cache").glob("radiomics-*.npz"))) == 2  # masked and whole cached apart
    # inside the mask the features equal those of the cropped region's extraction with the mask files
    direct, _ = frd.radiomic_features(write_set(tmp_path / "direct", imgs), mask_files)
    np.testing.assert_array_equal(frd.set_features(real, tmp_path / "cache", with_masks=True), direct)

    samples = GeneratedSet(tmp_path / "gen" / "normal", "Normal", tuple(fakes))
    none = frd.frd_fields(real, samples, None, with_masks=True)
    assert none["value"] is None
    assert (
        none["status"]
        == "no lung masks for the generated images: noise-to-image samples have no source image"
    )
    unmasked_real = RealImages(
        torch.from_numpy(imgs)[:, None], torch.arange(8), "train", "Normal", "plain", 50
    )
    assert frd.frd_fields(unmasked_real, translated, None, with_masks=True)["status"] == (
        "no lung masks for the real images (the data set has none, e.g. a class-folder set)"
    )


def test_generated_images_of_another_size_are_resized_to_the_real_size(tmp_path: Path) -> None:
    small = smooth_images(6, 32, seed=4)
    files = write_set(tmp_path / "gen" / "normal", small)
    fakes = GeneratedSet(tmp_path / "gen" / "normal", "Normal", tuple(files))
    resized = [np.asarray(Image.fromarray(x).resize((64, 64), Image.Resampling.LANCZOS)) for x in small]
    expected, _ = frd.radiomic_features(write_set(tmp_path / "resized", np.stack(resized)))
    np.testing.assert_array_equal(frd.set_features(fakes, None, size=64), expected)
