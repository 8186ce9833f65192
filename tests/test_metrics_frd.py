"""FRD: our cached two-step path equals ``frd_score.compute_frd`` on the same files; caching, RGB, records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
