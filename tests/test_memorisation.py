"""Memorisation audit: pixel nearest neighbours against a brute-force loop, planted copies found, C_T,
authenticity and re-identification on seeded synthetic "anatomy" images and Gaussian features."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsg_lib.memorisation import (
    COPY_KINDS,
    authentic_mask,
    authenticity,
    authenticity_from_distances,
    copy_threshold,
    data_copying,
    feature_nn,
    flag_copies,
    mann_whitney_z,
    pixel_distance_pairs,
    pixel_nn,
    pixel_source_distances,
    plant_copies,
    reidentification,
)


def anatomy(n: int, seed: int, size: int = 64) -> torch.Tensor:
    """(n, 1, size, size) in [-0.85, 0.85]: a shared chest-like template plus a smooth random field each."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    lungs = torch.exp(-((((xx.abs() - 0.45) / 0.25) ** 2 + (yy / 0.6) ** 2) ** 2))
    template = 0.5 - 0.9 * lungs - 0.2 * yy
    k = torch.exp(-(torch.arange(-8, 9.0) ** 2) / (2 * 3.0**2))
    k = k / k.sum()
    noise = torch.randn(n, 1, size + 16, size + 16, generator=gen)
    field = F.conv2d(F.conv2d(noise, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))  # separable Gaussian blur
    field = field / field.std(dim=(1, 2, 3), keepdim=True)
    return (template + 0.25 * field).clamp(-0.85, 0.85)


@pytest.fixture(scope="module")
def sets() -> tuple[torch.Tensor, torch.Tensor]:
    x = anatomy(400, seed=0)
    return x[:200], x[200:]  # train, held-out


def brute_pixel_distance(a: torch.Tensor, b: torch.Tensor, max_shift: int) -> float:
    """The definition of pixel_nn's distance, one pair and one shift at a time, in float64."""
    a, b = a.double(), b.double()
    a, b = (a - a.mean()) / (a.std(unbiased=False) + 1e-6), (b - b.mean()) / (b.std(unbiased=False) + 1e-6)
    _, h, w = a.shape
    m = max_shift
    crop = a[:, m : h - m, m : w - m]
    return min(
        float(((crop - b[:, m + dy : h - m + dy, m + dx : w - m + dx]) ** 2).mean().sqrt())
        for dy, dx in itertools.product(range(-m, m + 1), repeat=2)
    )


# pixel distance -------------------------------------------------------------------------------------


def test_pixel_nn_equals_brute_force_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    q, r = torch.rand(5, 3, 12, 12, generator=gen) * 2 - 1, torch.rand(7, 3, 12, 12, generator=gen) * 2 - 1
    dist, index = pixel_nn(q, r, max_shift=1)
    brute = np.array([[brute_pixel_distance(qi, rj, 1) for rj in r] for qi in q])
    np.testing.assert_allclose(dist, brute.min(1), atol=1e-5)
    np.testing.assert_array_equal(index, brute.argmin(1))
    np.testing.assert_allclose(pixel_distance_pairs(q, r[:5], max_shift=1), np.diag(brute), atol=1e-5)
    # leave-one-out within one set: the diagonal (distance 0) is ignored
    dist, index = pixel_nn(r, r, max_shift=1, exclude_self=True)
    brute = np.array([[brute_pixel_distance(a, b, 1) for b in r] for a in r])
    np.fill_diagonal(brute, np.inf)
    np.testing.assert_allclose(dist, brute.min(1), atol=1e-5)
    np.testing.assert_array_equal(index, brute.argmin(1))
    assert (dist > 0.5).all()


def test_pixel_nn_chunking_changes_nothing(sets) -> None:
    train, held = sets
    whole = pixel_nn(held[:40], train[:90], chunk=1000)
    for chunk in (3, 7, 32):
        dist, index = pixel_nn(held[:40], train[:90], chunk=chunk)
        np.testing.assert_array_equal(index, whole[1])
        np.testing.assert_allclose(dist, whole[0], rtol=1e-6)
    twice = torch.cat([train[:10], train[:10]])  # exact ties across chunks go to the lowest index
    np.testing.assert_array_equal(pixel_nn(train[:10], twice, chunk=4)[1], np.arange(10))
    loo = pixel_nn(train[:50], train[:50], exclude_self=True, chunk=1000)
    chunked = pixel_nn(train[:50], train[:50], exclude_self=True, chunk=8)
    np.testing.assert_array_equal(chunked[1], loo[1])
    assert (loo[1] != np.arange(50)).all()


def test_pixel_nn_ignores_small_shift_and_brightness(sets) -> None:
    train, _ = sets
    shifted = torch.roll(train[[17]], shifts=(1, -2), dims=(2, 3))  # within max_shift=2
    brighter = train[[42]] * 0.8 + 0.1  # brightness and contrast, no clamping
    dist, index = pixel_nn(torch.cat([shifted, brighter]), train, max_shift=2)
    np.testing.assert_array_equal(index, [17, 42])
    assert (dist < 2e-3).all()
    plain_dist, _ = pixel_nn(shifted, train, max_shift=0)  # without the shift search it is no copy
    assert plain_dist[0] > 0.3


# planted copies against held-out calibration --------------------------------------------------------


def test_planted_copies_flagged_and_heldout_not(sets) -> None:
    train, held = sets
    copies, kinds, source = plant_copies(train, 200, seed=3)
    assert kinds[:4] == list(COPY_KINDS) and len(set(source.tolist())) == 200
    gen_dist, gen_index = pixel_nn(copies, train)
    held_dist, _ = pixel_nn(held, train)
    threshold = copy_threshold(held_dist[:100], percentile=1.0)  # calibrate on one half of held-out
    flagged = flag_copies(gen_dist, threshold)
    for kind in COPY_KINDS:
        is_kind = np.array(kinds) == kind
        assert flagged[is_kind].mean() >= 0.95, kind
        assert (gen_index[is_kind] == source[is_kind]).all(), kind
    assert flagged.mean() == 1.0
    assert flag_copies(held_dist[100:], threshold).mean() <= 0.05  # the other half: false alarms
    # the audit is not trivially passing: fresh images are not flagged either
    fresh_dist, _ = pixel_nn(anatomy(100, seed=9), train)
    assert flag_copies(fresh_dist, threshold).mean() <= 0.05


def test_plant_copies_kinds_are_what_they_say(sets) -> None:
    train, _ = sets
    copies, kinds, source = plant_copies(train[:8], 8, seed=0)
    ref = train[:8][torch.as_tensor(source)]
    diff = [float((c - r).abs().max()) for c, r in zip(copies, ref, strict=True)]
    assert diff[0] == 0.0 and diff[4] == 0.0  # exact
    assert 0.1 < diff[1] < 0.3  # noise std 0.05
    assert torch.allclose(copies[3], ref[3] + 0.1)  # brightness, values < 0.9 never clamp
    h = w = 64  # shift: the interior equals the source moved by (+-2, +-2) pixels, for one choice of signs
    matches = [
        torch.equal(copies[2][:, 2:-2, 2:-2], ref[2][:, 2 - dy : h - 2 - dy, 2 - dx : w - 2 - dx])
        for dy, dx in itertools.product((-2, 2), repeat=2)
    ]
    assert sum(matches) == 1 and not torch.equal(copies[2], ref[2])
    again, _, _ = plant_copies(train[:8], 8, seed=0)
    assert torch.equal(copies, again)


# data-copying C_T ------------------------------------------------------------------------------------


def test_mann_whitney_z_counts_pairs_with_ties() -> None:
    gen, test = np.array([1.0, 2.0, 2.0, 5.0]), np.array([2.0, 3.0, 0.5])
    u = sum((g > t) + 0.5 * (g == t) for g in gen for t in test)  # 1 + 2 * 1.5 + 3 = 7
    assert u == 7.0
    assert mann_whitney_z(gen, test) == pytest.approx((7.0 - 6.0) / np.sqrt(12 * 8 / 12))


def test_data_copying_ct_detects_copies() -> None:
    rng = np.random.default_rng(0)
    train, test, fresh = (rng.normal(size=(400, 8)) for _ in range(3))
    copies = train[rng.choice(400, 400, replace=False)] + rng.normal(scale=0.01, size=(400, 8))
    c_copies = data_copying(train, test, copies, num_cells=5).c_t
    c_fresh = data_copying(train, test, fresh, num_cells=5).c_t
    c_wide = data_copying(train, test, 1.5 * fresh, num_cells=5).c_t  # underfitting: too far from train
    assert c_copies < -3
    assert abs(c_fresh) < 2
    assert c_wide > 3
    result = data_copying(train, test, copies, num_cells=5)
    assert result.c_t == c_copies and result.used.all() and result.pi_test.sum() == pytest.approx(1.0)
    assert (result.z < -3).all()
    assert data_copying(torch.as_tensor(train), test, copies, num_cells=5).c_t == c_copies  # torch input


def test_data_copying_needs_enough_generated_per_cell() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    with pytest.raises(ValueError) as err:
        data_copying(x, x, x[:10], num_cells=2, min_gen_per_cell=20)
    assert str(err.value).startswith(
        "no cell has >= 20 generated points and a test point (generated per cell: ["
    )
    assert str(err.value).endswith(
        "use fewer cells (num_cells), more generated images or a smaller min_gen_per_cell"
    )


# authenticity --------------------------------------------------------------------------------------


def test_authenticity_by_hand_in_one_dimension() -> None:
    train = np.array([[0.0], [1.0], [3.0]])  # leave-one-out distances 1, 1, 2
    gen = np.array(
        [[0.2], [2.5], [5.5], [-1.0]]
    )  # d to nearest train: 0.2 (<1), 0.5 (<2), 2.5 (>=2), 1 (>=1)
    assert authenticity(train, gen) == 0.5
    np.testing.assert_array_equal(
        authentic_mask(np.array([0.2, 0.5, 2.5, 1.0]), np.array([0, 2, 2, 0]), np.array([1.0, 1.0, 2.0])),
        [False, False, True, True],
    )


def test_authenticity_copies_versus_fresh() -> None:
    rng = np.random.default_rng(2)
    train, fresh = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    copies = train[:300] + rng.normal(scale=0.01, size=(300, 6))
    assert authenticity(train, copies) == 0.0
    assert authenticity(train, fresh) > 0.3


def test_authenticity_with_pixel_distances(sets) -> None:
    train, held = sets
    copies, _, _ = plant_copies(train, 40, seed=5)
    loo, _ = pixel_nn(train, train, exclude_self=True)
    copy_share = authenticity_from_distances(*pixel_nn(copies, train), loo)
    fresh_share = authenticity_from_distances(*pixel_nn(held[:40], train), loo)
    assert copy_share == 0.0 and fresh_share > 0.3


# re-identification -----------------------------------------------------------------------------------


def test_reidentification_of_translated_sources(sets) -> None:
    train, held = sets
    gen = torch.Generator().manual_seed(4)
    source = torch.randperm(200, generator=gen)[:60].numpy()
    outputs = (train[torch.as_tensor(source)] + 0.03 * torch.randn(60, 1, 64, 64, generator=gen)).clamp(-1, 1)
    close = reidentification(*pixel_source_distances(outputs, train, source))
    chunked = pixel_source_distances(outputs, train, source, chunk=7)
    np.testing.assert_allclose(
        chunked[0], pixel_distance_pairs(outputs, train[torch.as_tensor(source)]), rtol=1e-6
    )
    assert close.share == 1.0 and (close.ratio < 0.5).all()
    unrelated = reidentification(*pixel_source_distances(held[:60], train, source))
    assert unrelated.share <= 0.05  # chance is 1 / 200
    assert np.median(unrelated.ratio) > 1.1


# bad inputs ------------------------------------------------------------------------------------------


def test_bad_inputs_have_clear_messages() -> None:
    a = torch.zeros(2, 1, 16, 16)
    cases = [
        (
            lambda: pixel_nn(a, torch.zeros(3, 3, 16, 16)),
            "queries and references must share (C, H, W), got (1, 16, 16) and (3, 16, 16); resize both to the evaluation size and channels first",
        ),  # fmt: skip
        (
            lambda: pixel_nn(a, torch.zeros(3, 1, 8, 8)),
            "queries and references must share (C, H, W), got (1, 16, 16) and (1, 8, 8); resize both to the evaluation size and channels first",
        ),  # fmt: skip
        (
            lambda: pixel_nn(a, a, max_shift=8),
            "max_shift=8 leaves no central crop of a 16x16 image; use 0 <= max_shift <= 7",
        ),  # fmt: skip
        (lambda: pixel_nn(a[0], a), "queries must be (N, C, H, W), got shape (1, 16, 16)"),
        (
            lambda: pixel_nn(a, torch.zeros(3, 1, 16, 16), exclude_self=True),
            "exclude_self needs queries and references to be one set, got 2 and 3 images",
        ),  # fmt: skip
        (
            lambda: pixel_distance_pairs(a, torch.zeros(3, 1, 16, 16)),
            "pairs need as many images in a as in b, got 2 and 3",
        ),  # fmt: skip
        (
            lambda: feature_nn(np.zeros((2, 3)), np.zeros((4, 5))),
            "q and r must share the feature dimension D, got (2, 3) and (4, 5)",
        ),  # fmt: skip
        (
            lambda: feature_nn(np.zeros((2, 3, 4)), np.zeros((4, 5))),
            "q must be (N, D) features, got shape (2, 3, 4); flatten images with x.reshape(N, -1)",
        ),  # fmt: skip
        (
            lambda: copy_threshold(np.ones(5), 101),
            "percentile=101 must be in [0, 100] (1.0 means the 1st percentile)",
        ),  # fmt: skip
        (
            lambda: reidentification(np.ones(3), np.ones(4)),
            "own_dist and other_dist must be (Ng,) each, got (3,) and (4,)",
        ),  # fmt: skip
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == message
