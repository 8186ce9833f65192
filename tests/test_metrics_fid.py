"""FID: the Fréchet distance, streaming statistics, and our extractors against the field's own tools.

The end-to-end check runs the real ``python -m pytorch_fid`` on two tiny PNG folders, with a seeded random
state dict written under pytorch-fid's file name into a temporary TORCH_HOME (its own loader finds it there);
our pipeline reads the same file through ``resolve_weights(verify=False)``. The numbers mean nothing (random
weights), but they must agree.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance

from medsg_lib.metrics import features, fid, weights
from medsg_lib.metrics.features import build_extractor, extract_features, random_state_dict, tensor_to_pil

NUM_IMAGES = 4  # per folder; batches of 3 leave a partial batch
IMG_SIZE = 32


def random_stats(d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=(d, 3 * d))
    return rng.normal(size=d), a @ a.T / (3 * d)


# Fréchet distance ---------------------------------------------------------------------------------


def test_frechet_distance_equals_pytorch_fid() -> None:
    rng = np.random.default_rng(0)
    (mu1, s1), (mu2, s2) = random_stats(16, rng), random_stats(16, rng)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid passes scipy's deprecated disp=
        reference = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert ours > 1.0
    assert ours == pytest.approx(reference, abs=1e-6)


def test_frechet_distance_identical_is_zero() -> None:
    mu, sigma = random_stats(16, np.random.default_rng(1))
    assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_equal_covariances_is_squared_mean_difference() -> None:
    rng = np.random.default_rng(2)
    mu1, sigma = random_stats(16, rng)
    mu2 = rng.normal(size=16)
    expected = float(np.sum((mu1 - mu2) ** 2))
    assert fid.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9)


def test_frechet_terms_split_a_shift_from_a_narrowing() -> None:
    real = np.random.default_rng(0).standard_normal((400, 3))
    shifted = fid.frechet_terms(real, real + np.array([3.0, 0.0, 4.0]))  # same spread, mean moved by 5
    assert shifted["mean_term"] == pytest.approx(25.0) and shifted["cov_term"] == pytest.approx(0.0, abs=1e-6)
    narrow = fid.frechet_terms(
        real, 0.5 * (real - real.mean(axis=0)) + real.mean(axis=0)
    )  # same mean, half sd
    assert narrow["mean_term"] == pytest.approx(0.0, abs=1e-20)
    assert narrow["trace_fake"] == pytest.approx(narrow["trace_real"] / 4)
    # cov term of N(0, S) against N(0, S/4): tr(S) + tr(S)/4 - 2 tr(S/2) = tr(S)/4
    assert narrow["cov_term"] == pytest.approx(narrow["trace_real"] / 4, rel=1e-6)
    assert narrow["fd"] == pytest.approx(narrow["mean_term"] + narrow["cov_term"])


def test_frechet_distance_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"mean vectors differ in length: \(3,\) vs \(4,\)"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# RunningStats -------------------------------------------------------------------------------------


def test_running_stats_chunks_equal_all_at_once() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(loc=5.0, scale=3.0, size=(103, 7))
    stats = fid.RunningStats(keep=None)
    for chunk in (x[:1], x[1:40], x[40:41], x[41:]):
        stats.update(chunk)
    assert stats.n == 103
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(stats.features, x)


def test_running_stats_reservoir_and_moments() -> None:
    x = np.arange(60.0).reshape(20, 3)
    stats = fid.RunningStats(keep=5, seed=0)
    for start in range(0, 20, 6):
        stats.update(x[start : start + 6])
    kept = stats.features
    assert kept.shape == (5, 3)
    assert {tuple(r) for r in kept} <= {tuple(r) for r in x}
    again = fid.RunningStats.from_moments(stats.mean, stats.cov, stats.n)
    np.testing.assert_allclose(again.cov, np.cov(x, rowvar=False), atol=1e-10)
    with pytest.raises(ValueError, match="no features were kept"):
        _ = fid.RunningStats().update(x).features
    with pytest.raises(ValueError, match="a covariance needs at least 2 samples, got 1"):
        _ = fid.RunningStats().update(x[:1]).cov


def test_fid_from_features_and_bootstrap() -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(60, 4)), rng.normal(loc=0.5, size=(50, 4))
    value = fid.fid_from_features(real, fake)
    assert fid.fid_from_features(real, real) == pytest.approx(0.0, abs=1e-8)
    assert value == pytest.approx(
        fid.frechet_distance(
            real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
        )
    )
    first = fid.fid_bootstrap_ci(real, fake, num_resamples=20, seed=7)
    assert first == fid.fid_bootstrap_ci(real, fake, num_resamples=20, seed=7)
    assert first[0] == value and first[1] < first[2]
    assert first != fid.fid_bootstrap_ci(real, fake, num_resamples=20, seed=8)


def test_cached_stats_computes_once(tmp_path: Path) -> None:
    key = {
        "dataset": "phantoms",
        "split": "Train",
        "class": "Normal",
        "img_size": 32,
        "protocol": "p",
        "weights": "w",
    }
    x = np.random.default_rng(5).normal(size=(10, 3))
    calls = []

    def compute() -> fid.RunningStats:
        calls.append(1)
        return fid.RunningStats.from_features(x)

    first = fid.cached_stats(key, compute, tmp_path)
    second = fid.cached_stats(key, compute, tmp_path)
    assert len(calls) == 1 and second.n == 10
    np.testing.assert_array_equal(first.cov, second.cov)
    fid.cached_stats(key | {"weights": "other"}, compute, tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("stats-*.npz"))) == 2
    assert len(list(tmp_path.iterdir())) == 2  # written atomically: no temporary file left behind
    with pytest.raises(
        ValueError, match=r"stats cache key is missing split, weights \(required: dataset, split"
    ):
        fid.cached_stats({"dataset": "d", "class": "c", "img_size": 1, "protocol": "p"}, compute, tmp_path)


# Extractors against pytorch-fid -------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME holding a seeded random state dict under pytorch-fid's file name."""
    home = tmp_path_factory.mktemp("torch_home")
    target = home / "hub" / "checkpoints" / weights.WEIGHTS["pt_inception"].file_name
    target.parent.mkdir(parents=True)
    torch.save(random_state_dict("pt_inception", seed=0), target)
    return home


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.Tensor]:
    """Two folders of 32 px noise PNGs: gray ones written from a tensor in [-1, 1], RGB ones written as is."""
    root = tmp_path_factory.mktemp("images")
    gen = torch.Generator().manual_seed(0)
    x_gray = torch.rand(NUM_IMAGES, 1, IMG_SIZE, IMG_SIZE, generator=gen) * 2 - 1  # (B, 1, H, W) in [-1, 1]
    (root / "a").mkdir(), (root / "b").mkdir()
    for i, img in enumerate(tensor_to_pil(x_gray)):
        img.save(root / "a" / f"{i:06d}.png")
    rgb = (torch.rand(NUM_IMAGES, IMG_SIZE, IMG_SIZE, 3, generator=gen) * 255).to(torch.uint8).numpy()
    for i, arr in enumerate(rgb):
        Image.fromarray(arr, mode="RGB").save(root / "b" / f"{i:06d}.png")
    return root / "a", root / "b", x_gray


def run_pytorch_fid(torch_home: Path, *args: str) -> str:
    """Run the real ``python -m pytorch_fid`` with TORCH_HOME = torch_home; returns its stdout."""
    command = [sys.executable, "-m", "pytorch_fid", *args, "--device", "cpu", "--batch-size", "3"]
    command += ["--num-workers", "0"]
    env = {"TORCH_HOME": str(torch_home), "PATH": "", "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def offline_home(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    return torch_home


def test_pool3_statistics_equal_pytorch_fid_save_stats(
    offline_home: Path, image_dirs: tuple[Path, Path, torch.Tensor], tmp_path: Path
) -> None:
    """2048-d pool3 path: our mean and covariance of a folder equal ``pytorch_fid --save-stats``'s.

    (Their FID at 2048 dims would need a 2048 x 2048 sqrtm, ~1 min on this CPU; the FID itself is compared at
    64 dims below, and frechet_distance against pytorch-fid's function above.)"""
    dir_a, _, x_gray = image_dirs
    run_pytorch_fid(offline_home, "--save-stats", "--dims", "2048", str(dir_a), str(tmp_path / "a.npz"))
    with np.load(tmp_path / "a.npz") as ref:
        mu_ref, sigma_ref = ref["mu"], ref["sigma"]
    extractor = build_extractor("pytorch-fid", verify=False)
    assert "UNVERIFIED" in extractor.weights and extractor.metric == "fid"
    stats = fid.extract_stats(extractor, dir_a, batch_size=3)
    assert stats.n == NUM_IMAGES and stats.dim == 2048
    print(
        f"pool3 stats: max |mu - ref| {np.abs(stats.mean - mu_ref).max():.3g}, "
        f"max |sigma - ref| {np.abs(stats.cov - sigma_ref).max():.3g}, "
        f"max |sigma| {np.abs(sigma_ref).max():.3g}"
    )
    # float32 features: the subprocess may run convolutions with another thread count (the test session uses
    # one thread, tests/conftest.py), which reorders float32 sums (seen: 5e-7).
    np.testing.assert_allclose(stats.mean, mu_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(stats.cov, sigma_ref, rtol=0, atol=1e-5)
    # the generator path: the tensor the gray PNGs were written from gives the same features as the files
    from_tensor = extract_features(extractor, x_gray[:2], batch_size=2)
    np.testing.assert_array_equal(from_tensor, extract_features(extractor, sorted(dir_a.glob("*.png"))[:2]))


def test_fid_of_folders_equals_pytorch_fid_command(
    offline_home: Path, image_dirs: tuple[Path, Path, torch.Tensor]
) -> None:
    dir_a, dir_b, _ = image_dirs
    stdout = run_pytorch_fid(offline_home, "--dims", "64", str(dir_a), str(dir_b))
    reference = float(re.search(r"FID:\s+(\S+)", stdout).group(1))
    ours = fid.compute_fid_folders(dir_a, dir_b, "pytorch-fid", batch_size=3, dims=64, verify=False)
    print(f"FID (64-d) ours {ours!r} pytorch-fid {reference!r} difference {ours - reference:.3g}")
    assert ours > 0.1
    assert ours == pytest.approx(reference, abs=1e-3, rel=1e-6)


def test_paper_protocol_is_stargan_v2_pipeline(tmp_path: Path, image_dirs, monkeypatch) -> None:
    """Our "paper" extractor equals StarGAN v2's recipe written out here: PIL Resize(299), ToTensor, ImageNet
    Normalize, then torchvision Inception's blocks called one by one (no transform_input)."""
    dir_a, _, x_gray = image_dirs
    extractor = build_extractor("paper", allow_random_weights=True, seed=3)
    assert "UNVERIFIED" in extractor.weights
    files = sorted(dir_a.glob("*.png"))[:2]
    transform = T.Compose(
        [T.Resize([299, 299]), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    net = extractor.net
    blocks = [net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, 2)]
    blocks += [net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2)]
    blocks += [
        getattr(net, f"Mixed_{n}") for n in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")
    ]
    with torch.no_grad():
        expected = (
            torch.nn.Sequential(*blocks, torch.nn.AdaptiveAvgPool2d(1))(batch).flatten(1).double().numpy()
        )
    ours = extract_features(extractor, files)
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(extract_features(extractor, x_gray[:2]), ours)


def test_domain_protocol_is_never_fid(image_dirs) -> None:
    dir_a, _, x_gray = image_dirs
    torch.manual_seed(0)
    toy = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(IMG_SIZE * IMG_SIZE, 5))
    extractor = build_extractor("domain", feature_fn=toy, name="toy")
    assert (extractor.protocol, extractor.metric) == ("domain:toy", "fd_toy")
    quantised = features.to_uint8(x_gray).float() / 255 * 2 - 1
    with torch.no_grad():
        expected = toy(quantised).double().numpy()
    np.testing.assert_allclose(extract_features(extractor, dir_a, batch_size=4), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="protocol='domain' needs feature_fn"):
        build_extractor("domain")
    with pytest.raises(
        ValueError, match="unknown feature protocol 'fid'; choose one of pytorch-fid, paper, domain"
    ):
        build_extractor("fid")


def test_to_uint8_matches_save_image_levels() -> None:
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 7)
    assert features.to_uint8(x).flatten().tolist() == [0, 0, 0, 128, 191, 255, 255]
    with pytest.raises(
        ValueError, match=r"images must be \(B, C, H, W\) with C = 1 or 3, got shape \(2, 2\)"
    ):
        features.to_uint8(torch.zeros(2, 2))


def test_offline_extractor_gives_the_resolver_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(weights.MissingWeightsError, match=r"'inception_v3_google-0cc3c7bd\.pth'.*offline"):
        build_extractor("paper")
