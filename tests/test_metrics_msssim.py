"""MS-SSIM diversity against ``pytorch_msssim.ms_ssim``, brute-force pair means and the LPIPS pair drawing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim

from medsg_lib.metrics.lpips_div import lpips_pairs
from medsg_lib.metrics.msssim import (
    _ms_ssim,
    msssim_distance,
    msssim_diversity,
    msssim_levels,
    msssim_pairs,
    msssim_protocol_fields,
    msssim_weights,
)

STANDARD = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def images(seed: int, n: int, size: int, channels: int = 1, noise: float = 0.5) -> torch.Tensor:
    """(n, C, size, size) in [-1, 1]: one shared smooth image plus per-image noise (intermediate MS-SSIM)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, channels, size + 8, size + 8, generator=g), 9, 1)
    x = (base - 0.5) * 4 + noise * torch.randn(n, channels, size, size, generator=g)
    return x.clamp(-1, 1)


def library(x0: torch.Tensor, x1: torch.Tensor, weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """``pytorch_msssim.ms_ssim`` on [-1, 1] images (only > 160 px, its assert)."""
    w = None if weights is None else list(weights)
    return ms_ssim((x0 + 1) / 2, (x1 + 1) / 2, data_range=1.0, size_average=False, weights=w)


def test_levels_by_size() -> None:
    assert [msssim_levels(s) for s in (64, 256, 161, 160, 81, 80, 41, 40, 21, 11)] == [
        3,
        5,
        5,
        4,
        4,
        3,
        3,
        2,
        2,
        1,
    ]
    assert msssim_levels(1000) == 5
    assert msssim_levels(64, win_size=7) == 4  # 64 > 6 * 8
    with pytest.raises(
        ValueError, match=r"MS-SSIM needs images larger than win_size - 1 = 10 px, got size 10"
    ):
        msssim_levels(10)


def test_weights_standard_at_five_and_renormalised_below() -> None:
    assert msssim_weights(5) == STANDARD  # as published and ms_ssim's default (they sum to 1.0001)
    for levels in range(1, 5):
        w = msssim_weights(levels)
        assert len(w) == levels and sum(w) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(np.array(w) * sum(STANDARD[:levels]), STANDARD[:levels], rtol=1e-12)
    assert msssim_weights(1) == (1.0,)
    with pytest.raises(ValueError, match=r"levels must be 1 to 5, got 6"):
        msssim_weights(6)
    fields = msssim_protocol_fields(64)
    assert fields["levels"] == 3 and fields["win_size"] == 11
    assert fields["weights"] == pytest.approx([0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305])


@pytest.mark.parametrize("channels", [1, 3])
def test_five_levels_equal_library_default(channels: int) -> None:
    x0, x1 = images(0, 3, 192, channels, noise=0.2), images(1, 3, 192, channels, noise=0.2)
    ours = msssim_distance(x0, x1)
    assert ours.shape == (3,) and 0.1 < ours.min() and ours.max() < 0.9  # not clamped to 0 or 1
    torch.testing.assert_close(ours, library(x0, x1), rtol=0, atol=1e-7)


def test_truncated_levels_equal_library_with_weights() -> None:
    """The loop used below 161 px equals ms_ssim given the same 3 weights (where ms_ssim's assert allows)."""
    x0, x1 = images(2, 2, 192), images(3, 2, 192)
    w3 = msssim_weights(3)
    ours = _ms_ssim((x0 + 1) / 2, (x1 + 1) / 2, w3, 11)
    torch.testing.assert_close(ours, library(x0, x1, w3), rtol=0, atol=1e-7)
    assert not torch.allclose(ours, library(x0, x1), atol=1e-3)  # the levels matter


def test_library_rejects_64_px_whatever_the_weights() -> None:
    """Why we run the loop ourselves: ms_ssim asserts > 160 px even when given 3 weights."""
    x = images(4, 1, 64)
    with pytest.raises(AssertionError, match="larger than 160"):
        library(x, x, msssim_weights(3))


def test_identical_images_give_one_constant_images_included() -> None:
    x = images(5, 3, 64)
    const = torch.full((2, 1, 64, 64), 0.3)
    torch.testing.assert_close(msssim_distance(x, x), torch.ones(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(msssim_distance(const, const), torch.ones(2), rtol=0, atol=1e-5)
    black, white = torch.full((1, 1, 64, 64), -1.0), torch.full((1, 1, 64, 64), 1.0)
    # constant, different: contrast terms C2 / C2 = 1, luminance C1 / (1 + C1) at the coarsest scale only
    c1 = 0.01**2
    expected = (c1 / (1 + c1)) ** msssim_weights(3)[2]
    assert msssim_distance(black, white).item() == pytest.approx(expected, rel=1e-4)


def test_inputs_clamped_to_range() -> None:
    """Raw generator outputs beyond [-1, 1] are clamped, as the PNGs the images become would be."""
    g = torch.Generator().manual_seed(14)
    x0 = 1.5 * images(14, 2, 64)
    x1 = x0 + 0.3 * torch.randn(x0.shape, generator=g)
    torch.testing.assert_close(
        msssim_distance(x0, x1), msssim_distance(x0.clamp(-1, 1), x1.clamp(-1, 1)), rtol=0, atol=0
    )
    assert msssim_distance(x0, x1).min() > 0.1  # not clamped to 0 by the library's relu


def test_near_copy_scores_higher_than_independent_noise() -> None:
    g = torch.Generator().manual_seed(6)
    x = images(6, 1, 64)
    near = x + 0.05 * torch.randn(x.shape, generator=g)
    other = torch.rand(x.shape, generator=g) * 2 - 1
    similar, independent = msssim_distance(x, near).item(), msssim_distance(x, other).item()
    assert 0.0 <= independent < 0.3 < 0.8 < similar < 1.0


def test_one_and_three_channels() -> None:
    x0, x1 = images(7, 2, 64), images(8, 2, 64)
    grey = msssim_distance(x0, x1)
    rgb = msssim_distance(x0.expand(-1, 3, -1, -1), x1.expand(-1, 3, -1, -1))
    torch.testing.assert_close(rgb, grey, rtol=0, atol=1e-6)  # channels are averaged after MS-SSIM
    colour = images(9, 2, 64, channels=3)
    assert msssim_distance(colour, colour.flip(0)).shape == (2,)
    with pytest.raises(ValueError, match=r"got \(2, 2, 64, 64\) and \(2, 2, 64, 64\)"):
        msssim_distance(torch.zeros(2, 2, 64, 64), torch.zeros(2, 2, 64, 64))
    with pytest.raises(ValueError, match=r"got size 8"):
        msssim_distance(torch.zeros(1, 1, 8, 64), torch.zeros(1, 1, 8, 64))


def test_diversity_means_pairs_within_groups_then_groups() -> None:
    groups = [images(10, 4, 48), images(11, 2, 48, noise=0.2)]
    per_group = [
        np.mean(
            [
                msssim_distance(g[a : a + 1], g[b : b + 1]).item()
                for a, b in itertools.combinations(range(len(g)), 2)
            ]
        )
        for g in groups
    ]
    value, count = msssim_diversity(iter(groups))
    assert count == 2
    assert value == pytest.approx(np.mean(per_group), abs=1e-7)
    pooled = (per_group[0] * 6 + per_group[1]) / 7
    assert abs(value - pooled) > 1e-3  # not one pooled mean over all pairs
    with pytest.raises(
        ValueError, match=r"group 1 must be \(K, C, H, W\) with K >= 2, got shape \(1, 1, 48, 48\)"
    ):
        msssim_diversity([groups[0], groups[1][:1]])
    with pytest.raises(ValueError, match="msssim_diversity got no groups"):
        msssim_diversity([])


class _MsssimAsLpips:
    """Stands in for an LpipsModel so that lpips_pairs' own drawing runs with MS-SSIM."""

    def distance(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return msssim_distance(x0, x1)


def test_pairs_are_lpips_pairs_and_brute_force() -> None:
    x = images(12, 6, 48, noise=0.3)
    value, count = msssim_pairs(x, num_pairs=25, seed=3, batch_size=4)
    assert count == 25
    assert value == pytest.approx(lpips_pairs(_MsssimAsLpips(), x, num_pairs=25, seed=3)[0], abs=1e-7)
    # brute force: every ordered pair once, then the drawn i, j
    table = np.array(
        [[msssim_distance(x[a : a + 1], x[b : b + 1]).item() for b in range(6)] for a in range(6)]
    )
    rng = np.random.default_rng(3)
    i = rng.integers(0, 6, 25)
    j = (i + rng.integers(1, 6, 25)) % 6
    assert (i != j).all()
    assert value == pytest.approx(table[i, j].mean(), abs=1e-6)
    assert abs(value - msssim_pairs(x, num_pairs=25, seed=4)[0]) > 1e-4  # the seed picks the pairs
    with pytest.raises(ValueError, match="need N >= 2 samples and num_pairs >= 1, got N=1, num_pairs=5"):
        msssim_pairs(x[:1], num_pairs=5)


def test_pinned_value() -> None:
    x = images(13, 5, 48)
    value, _ = msssim_pairs(x, num_pairs=7, seed=1)
    assert value == pytest.approx(PINNED, abs=1e-6)


PINNED = 0.098548  # computed once with pytorch-msssim 1.0.0, torch on CPU
