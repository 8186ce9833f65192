"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel.

k(x, y) = (x . y / D + 1)^3. For each of ``num_subsets`` subsets, m real and m fake features are drawn without
replacement and the unbiased estimate

    MMD^2 = [sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)] / (m (m - 1)) - 2 mean_{i, j} k(x_i, y_j)

is computed; KID is the mean over subsets (reported with the standard deviation over subsets), as in
clean-fid and torch-fidelity. Unlike FID it is unbiased in the number of samples.
"""

from __future__ import annotations

import warnings

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x . y / D + 1)^3 for x (N, D), y (M, D) -> (N, M) float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between x (m, D) and y (m, D) with :func:`polynomial_kernel`."""
    m = x.shape[0]
    if m < 2 or y.shape[0] != m:
        raise ValueError(f"need two sets of equal size >= 2, got {x.shape[0]} and {y.shape[0]}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.mean())


def kid_subset_size(n_real: int, n_fake: int, subset_size: int) -> int:
    """The subset size actually used: ``min(subset_size, n_real, n_fake)`` (record it next to the KID)."""
    return min(subset_size, n_real, n_fake)


def kid(
    f_real: np.ndarray, f_fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``num_subsets`` random subsets; features (N1, D) and (N2, D).

    ``subset_size`` is clipped to the smaller set (with a warning); see :func:`kid_subset_size`.
    """
    f_real, f_fake = np.asarray(f_real, dtype=np.float64), np.asarray(f_fake, dtype=np.float64)
    if f_real.ndim != 2 or f_fake.ndim != 2 or f_real.shape[1] != f_fake.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {f_real.shape} and {f_fake.shape}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets={num_subsets} must be >= 1")
    m = kid_subset_size(len(f_real), len(f_fake), subset_size)
    if m < subset_size:
        warnings.warn(
            f"KID: subset_size {subset_size} clipped to {m} (n_real={len(f_real)}, n_fake={len(f_fake)})",
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(
            f_real[rng.choice(len(f_real), m, replace=False)],
            f_fake[rng.choice(len(f_fake), m, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
