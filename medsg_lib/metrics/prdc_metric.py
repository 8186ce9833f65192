"""Precision, recall, density and coverage (Naeem et al. 2020) through the ``prdc`` package.

Precision and density measure fidelity (fake samples inside the real manifold), recall and coverage diversity,
with manifolds estimated by k-nearest-neighbour balls in feature space (``nearest_k = 5`` as in the paper).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from prdc import compute_prdc


def prdc(f_real: np.ndarray, f_fake: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """{"precision", "recall", "density", "coverage"} of features (N1, D) real and (N2, D) fake.

    Needs at least ``nearest_k + 2`` samples in each set: the package takes the k-th neighbour with
    ``np.argpartition(..., k + 1)``, which fails below that. The package's progress print is swallowed.
    """
    f_real, f_fake = np.asarray(f_real), np.asarray(f_fake)
    if f_real.ndim != 2 or f_fake.ndim != 2 or f_real.shape[1] != f_fake.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {f_real.shape} and {f_fake.shape}")
    if min(len(f_real), len(f_fake)) < nearest_k + 2:
        raise ValueError(
            f"PRDC with nearest_k={nearest_k} needs at least {nearest_k + 2} samples per set, "
            f"got n_real={len(f_real)}, n_fake={len(f_fake)}"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        result = compute_prdc(real_features=f_real, fake_features=f_fake, nearest_k=nearest_k)
    return {k: float(v) for k, v in result.items()}
