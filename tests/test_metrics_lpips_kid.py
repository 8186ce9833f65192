"""LPIPS diversity against a direct ``lpips.LPIPS`` call, KID against its formula, PRDC against ``prdc``."""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

import lpips
import numpy as np
import prdc as prdc_package
import pytest
import torch

from medsg_lib.metrics import weights
from medsg_lib.metrics.features import random_state_dict
from medsg_lib.metrics.kid import kid, kid_subset_size
from medsg_lib.metrics.lpips_div import build_lpips, lpips_diversity, lpips_pairs
from medsg_lib.metrics.prdc_metric import prdc

# KID ----------------------------------------------------------------------------------------------


def kid_by_formula(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit double sums."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_one_subset_of_all_samples_equals_formula() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(loc=0.7, size=(12, 5))
    mean, std = kid(x, y, num_subsets=1, subset_size=12, seed=3)
    expected = kid_by_formula(x, y)
    assert expected > 0.05
    assert mean == pytest.approx(expected, abs=1e-10)
    assert std == 0.0


def test_kid_identical_distributions_near_zero() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = kid(x, y, num_subsets=20, subset_size=200, seed=0)
    shifted, _ = kid(x, y + 0.5, num_subsets=20, subset_size=200, seed=0)
    assert abs(same) < 0.01 < shifted


def test_kid_clips_subset_size_with_warning() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    with pytest.warns(UserWarning, match=r"KID: subset_size 1000 clipped to 20 \(n_real=30, n_fake=20\)"):
        kid(x, y, num_subsets=2)
    assert kid_subset_size(30, 20, 1000) == 20
    with pytest.raises(
        ValueError, match=r"features must be \(N, D\) with one D, got \(30, 4\) and \(20, 3\)"
    ):
        kid(x, y[:, :3])


# PRDC ---------------------------------------------------------------------------------------------


def test_prdc_equals_package_and_checks_sizes() -> None:
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 6)), rng.normal(loc=0.3, size=(30, 6))
    ours = prdc(real, fake, nearest_k=5)
    reference = prdc_package.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    assert ours == {k: float(v) for k, v in reference.items()}
    assert prdc(real, real)["coverage"] == 1.0
    small = prdc_package.compute_prdc(real_features=real, fake_features=fake[:7], nearest_k=5)
    assert prdc(real, fake[:7]) == {k: float(v) for k, v in small.items()}  # the smallest size it handles
    with pytest.raises(ValueError, match="needs at least 7 samples per set, got n_real=40, n_fake=6"):
        prdc(real, fake[:6])


# LPIPS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_lpips():
    return build_lpips(allow_random_weights=True, seed=0)


def test_lpips_of_identical_images_is_zero(random_lpips) -> None:
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    value, num_groups = lpips_diversity(random_lpips, [x.repeat(4, 1, 1, 1), x.repeat(3, 1, 1, 1)])
    assert (value, num_groups) == (0.0, 2)
    assert "UNVERIFIED" in random_lpips.weights


def test_lpips_pairs_of_two_images(random_lpips) -> None:
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    direct = random_lpips.distance(x[:1], x[1:]).item()
    value, num_pairs = lpips_pairs(random_lpips, x, num_pairs=5, seed=0, batch_size=2)
    assert direct > 0 and num_pairs == 5
    assert value == pytest.approx(direct, rel=1e-6)  # every pair of distinct samples is (0, 1) or (1, 0)


def test_lpips_groups_need_two_images(random_lpips) -> None:
    with pytest.raises(
        ValueError, match=r"group 1 must be \(K, C, H, W\) with K >= 2, got shape \(1, 1, 32, 32\)"
    ):
        lpips_diversity(random_lpips, [torch.zeros(2, 1, 32, 32), torch.zeros(1, 1, 32, 32)])


def test_lpips_diversity_equals_direct_lpips_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random AlexNet weights under torchvision's file name in a temporary TORCH_HOME: lpips' own loader
    (through torchvision's alexnet(pretrained=True)) and ours must give the same distances."""
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(random_state_dict("alexnet", seed=1), checkpoints / weights.WEIGHTS["alexnet"].file_name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("tests never download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    ours = build_lpips(verify=False)
    assert "UNVERIFIED" in ours.weights
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated alexnet(pretrained=True)
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()

    gen = torch.Generator().manual_seed(0)
    groups = [torch.rand(4, 1, 32, 32, generator=gen) * 2 - 1 for _ in range(2)]  # gray, (K, 1, H, W)
    value, num_groups = lpips_diversity(ours, groups)
    with torch.no_grad():
        per_group = [
            np.mean(
                [
                    reference(g[i : i + 1].repeat(1, 3, 1, 1), g[j : j + 1].repeat(1, 3, 1, 1)).item()
                    for i in range(4)
                    for j in range(i + 1, 4)
                ]
            )
            for g in groups
        ]
    print(f"LPIPS diversity ours {value!r} direct lpips {np.mean(per_group)!r}")
    assert num_groups == 2 and value > 0
    assert value == pytest.approx(float(np.mean(per_group)), abs=1e-6)


def test_lpips_offline_gives_the_resolver_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(weights.MissingWeightsError, match=r"'alexnet-owt-7be5be79\.pth'.*download=False"):
        build_lpips(download=False)
