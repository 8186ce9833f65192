"""Memorisation and privacy audit of generated images: nearest neighbours, data-copying, authenticity, copies.

Pure functions on images ``(N, C, H, W)`` in [-1, 1] (torch, at the evaluation size) or features ``(N, D)``
(numpy or torch). Distances come back as float64 numpy arrays, indices as int64 numpy arrays.

* :func:`pixel_nn`: nearest neighbours under a pixel distance that ignores brightness/contrast (per-image
  standardisation) and translations of up to ``max_shift`` pixels (a shift search over a central crop), in the
  spirit of the "near-copy" searches of Carlini et al., "Extracting Training Data from Diffusion Models" (2023).
* :func:`data_copying`: the C_T test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020).
* :func:`authenticity`: the authenticity of Alaa et al., "How Faithful is your Synthetic Data?" (ICML 2022).
* :func:`copy_threshold` / :func:`flag_copies`: near-copy flags calibrated on held-out real images.
* :func:`reidentification`: does a translated image give away its own source patient?
* :func:`plant_copies`: exact and lightly altered training copies, to prove that the audit can fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.cluster import KMeans

Features = np.ndarray | torch.Tensor  # (N, D)
COPY_KINDS = ("exact", "noise", "shift", "brightness")  # the cycle of plant_copies


def _check_images(queries: torch.Tensor, references: torch.Tensor, max_shift: int) -> None:
    for name, x in (("queries", queries), ("references", references)):
        if x.ndim != 4:
            raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(x.shape)}")
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(
            f"queries and references must share (C, H, W), got {tuple(queries.shape[1:])} and "
            f"{tuple(references.shape[1:])}; resize both to the evaluation size and channels first"
        )
    h, w = queries.shape[2:]
    if not 0 <= max_shift <= (min(h, w) - 1) // 2:
        raise ValueError(
            f"max_shift={max_shift} leaves no central crop of a {h}x{w} image; "
            f"use 0 <= max_shift <= {(min(h, w) - 1) // 2}"
        )


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image minus its mean, divided by its std + 1e-6 (over C, H, W); (N, C, H, W) -> float32."""
    x = x.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / (std + 1e-6)


def _shifts(max_shift: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]


def _crop(x: torch.Tensor, m: int, dy: int, dx: int) -> torch.Tensor:
    """The (H - 2m, W - 2m) crop moved by (dy, dx) from the centre, flattened to (N, D)."""
    h, w = x.shape[2:]
    return x[:, :, m + dy : h - m + dy, m + dx : w - m + dx].reshape(len(x), -1)


def pixel_nn(
    queries: torch.Tensor,
    references: torch.Tensor,
    max_shift: int = 2,
    chunk: int = 256,
    exclude_self: bool = False,
    exclude_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference of each query under the shift- and brightness-robust pixel distance.

    d(a, b) = min over integer (dy, dx) in [-max_shift, max_shift]^2 of the RMS difference between the central
    (H - 2 max_shift, W - 2 max_shift) crop of standardise(a) and the crop of standardise(b) moved by (dy, dx).
    Not exactly symmetric (the query's crop is fixed). Each shift is one matrix product on flattened crops,
    ||a||^2 + ||b||^2 - 2 a.b, so memory is O(chunk * C * H * W + chunk^2), whatever the set sizes.

    queries (Nq, C, H, W), references (Nr, C, H, W) in [-1, 1]; computed on ``queries.device``.
    ``exclude_self``: queries are the references, the diagonal is ignored (leave-one-out).
    ``exclude_index`` (Nq,): reference index ignored for each query (e.g. its own source image).
    Returns (dist (Nq,) float64, index (Nq,) int64); ties go to the lowest reference index. Computed in
    float32: an exact copy comes out at ~1e-3, not 0.
    """
    _check_images(queries, references, max_shift)
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    num_q, num_r = len(queries), len(references)
    if exclude_self:
        if queries.shape != references.shape:
            raise ValueError(
                f"exclude_self needs queries and references to be one set, got {num_q} and {num_r} images"
            )
        exclude_index = np.arange(num_q)
    if exclude_index is not None:
        exclude_index = np.asarray(exclude_index, dtype=np.int64)
        if exclude_index.shape != (num_q,) or num_r < 2:
            raise ValueError(
                f"exclude_index must be ({num_q},) with at least 2 references, "
                f"got {exclude_index.shape} and {num_r} references"
            )
    device, m = queries.device, max_shift
    num_pixels = queries.shape[1] * (queries.shape[2] - 2 * m) * (queries.shape[3] - 2 * m)
    best_d2 = torch.full((num_q,), float("inf"), device=device)
    best_idx = torch.zeros(num_q, dtype=torch.long, device=device)
    excl = None if exclude_index is None else torch.as_tensor(exclude_index, device=device)
    for q0 in range(0, num_q, chunk):
        q = _crop(standardise(queries[q0 : q0 + chunk].to(device)), m, 0, 0)
        q_sq = (q * q).sum(1, keepdim=True)
        for r0 in range(0, num_r, chunk):
            r_img = standardise(references[r0 : r0 + chunk].to(device))
            d2 = torch.full((len(q), len(r_img)), float("inf"), device=device)
            for dy, dx in _shifts(m):
                r = _crop(r_img, m, dy, dx)
                d2 = torch.minimum(d2, q_sq + (r * r).sum(1)[None, :] - 2.0 * q @ r.T)
            if excl is not None:
                cols = torch.arange(r0, r0 + len(r_img), device=device)
                d2[excl[q0 : q0 + len(q), None] == cols[None, :]] = float("inf")  # leave-one-out
            block_min, block_idx = d2.min(dim=1)
            rows = slice(q0, q0 + len(q))
            better = block_min < best_d2[rows]  # strict: earlier chunks win ties
            best_d2[rows] = torch.where(better, block_min, best_d2[rows])
            best_idx[rows] = torch.where(better, block_idx + r0, best_idx[rows])
    dist = (best_d2.clamp_min(0) / num_pixels).sqrt()  # RMS over the C * h * w crop pixels
    return dist.double().cpu().numpy(), best_idx.cpu().numpy()


def pixel_distance_pairs(
    a: torch.Tensor, b: torch.Tensor, max_shift: int = 2, chunk: int = 256
) -> np.ndarray:
    """d(a_i, b_i) of :func:`pixel_nn` for aligned pairs a (N, C, H, W), b (N, C, H, W) -> (N,) float64."""
    _check_images(a, b, max_shift)
    if len(a) != len(b):
        raise ValueError(f"pairs need as many images in a as in b, got {len(a)} and {len(b)}")
    out = []
    for i0 in range(0, len(a), chunk):
        qa = _crop(standardise(a[i0 : i0 + chunk]), max_shift, 0, 0)
        sb = standardise(b[i0 : i0 + chunk].to(a.device))
        d2 = torch.stack(
            [((qa - _crop(sb, max_shift, dy, dx)) ** 2).mean(1) for dy, dx in _shifts(max_shift)]
        )
        out.append(d2.min(0).values.sqrt())
    return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)


def _features(x: Features, name: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be (N, D) features, got shape {x.shape}; flatten images with x.reshape(N, -1)"
        )
    return x.astype(np.float64)


def feature_nn(
    q: Features, r: Features, exclude_self: bool = False, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest neighbour in r (Nr, D) of each row of q (Nq, D) -> (dist (Nq,), index (Nq,)).

    ``exclude_self``: q is r and each point's own row is ignored (leave-one-out).
    """
    q, r = _features(q, "q"), _features(r, "r")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"q and r must share the feature dimension D, got {q.shape} and {r.shape}")
    if exclude_self and (q.shape != r.shape or len(r) < 2):
        raise ValueError(
            f"exclude_self needs q and r to be one set of >= 2 points, got {q.shape} and {r.shape}"
        )
    r_sq = (r * r).sum(1)
    dists, idx = [], []
    for i0 in range(0, len(q), chunk):
        qc = q[i0 : i0 + chunk]
        d2 = (qc * qc).sum(1)[:, None] + r_sq[None, :] - 2.0 * qc @ r.T
        if exclude_self:
            d2[np.arange(len(qc)), np.arange(i0, i0 + len(qc))] = np.inf
        j = d2.argmin(1)
        idx.append(j)
        dists.append(np.sqrt(np.maximum(d2[np.arange(len(qc)), j], 0.0)))
    return np.concatenate(dists), np.concatenate(idx).astype(np.int64)


def mann_whitney_z(gen_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """Z_U = (U - mn/2) / sqrt(mn(m + n + 1)/12), U = #pairs with gen > test distance (ties count 1/2).

    m = len(gen_dist), n = len(test_dist); no continuity or tie correction (Meehan et al. 2020, Sec. 3).
    """
    g, t = np.asarray(gen_dist, dtype=np.float64), np.asarray(test_dist, dtype=np.float64)
    m, n = len(g), len(t)
    if m == 0 or n == 0:
        raise ValueError(f"Mann-Whitney U needs both samples non-empty, got m={m} generated and n={n} test")
    u = rankdata(np.concatenate([g, t]))[:m].sum() - m * (m + 1) / 2  # average ranks count ties 1/2
    return (u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12)


@dataclass(frozen=True)
class DataCopying:
    """C_T and its per-cell parts; z is NaN where a cell is left out (``used`` False)."""

    c_t: float
    z: np.ndarray  # (K,) Z_U per cell
    pi_test: np.ndarray  # (K,) share of test points in each cell
    num_gen: np.ndarray  # (K,) generated points per cell
    used: np.ndarray  # (K,) bool: num_gen >= min_gen_per_cell and a test point present


def data_copying(
    train_feats: Features,
    test_feats: Features,
    gen_feats: Features,
    num_cells: int = 10,
    seed: int = 0,
    min_gen_per_cell: int = 20,
) -> DataCopying:
    """The data-copying test of Meehan, Chaudhuri & Dasgupta, AISTATS 2020, with its per-cell breakdown.

    Cells: k-means (``num_cells``, n_init=10, ``random_state=seed``) on the training points; test and generated
    points go to their nearest centre. In cell pi, L(x) = distance of x to its nearest training point of the
    same cell (as in the authors' code, ``T_pi``), and Z_U(pi) = :func:`mann_whitney_z` (generated vs test).
    C_T = sum_{pi in Pi_tau} P_n(pi) Z_U(pi) / sum_{pi in Pi_tau} P_n(pi), where P_n(pi) is the share of test
    points in pi and Pi_tau the cells with >= ``min_gen_per_cell`` generated points (the paper's tau = 20/m).
    C_T << 0: generated points are closer to the training set than held-out ones (data-copying); ~ 0: no
    evidence; >> 0: underfitting. Under no copying, each Z_U is about N(0, 1), so |C_T| < 2 is typical.
    """
    train, test = _features(train_feats, "train_feats"), _features(test_feats, "test_feats")
    gen = _features(gen_feats, "gen_feats")
    if not train.shape[1] == test.shape[1] == gen.shape[1]:
        raise ValueError(
            f"features must share D, got train {train.shape}, test {test.shape}, gen {gen.shape}"
        )
    if not 1 <= num_cells <= len(train):
        raise ValueError(
            f"num_cells={num_cells} must be between 1 and the number of training points {len(train)}"
        )
    kmeans = KMeans(n_clusters=num_cells, n_init=10, random_state=seed).fit(train)
    cell_train, cell_test, cell_gen = kmeans.labels_, kmeans.predict(test), kmeans.predict(gen)
    z = np.full(num_cells, np.nan)
    pi_test = np.bincount(cell_test, minlength=num_cells) / len(test)
    num_gen = np.bincount(cell_gen, minlength=num_cells)
    used = (num_gen >= min_gen_per_cell) & (pi_test > 0)
    for k in np.flatnonzero(used):
        t_k = train[cell_train == k]
        z[k] = mann_whitney_z(
            feature_nn(gen[cell_gen == k], t_k)[0], feature_nn(test[cell_test == k], t_k)[0]
        )
    if not used.any():
        raise ValueError(
            f"no cell has >= {min_gen_per_cell} generated points and a test point (generated per cell: "
            f"{num_gen.tolist()}); use fewer cells (num_cells), more generated images or a smaller min_gen_per_cell"
        )
    c_t = float((pi_test[used] * z[used]).sum() / pi_test[used].sum())
    return DataCopying(c_t=c_t, z=z, pi_test=pi_test, num_gen=num_gen, used=used)


def authentic_mask(
    gen_nn_dist: np.ndarray, gen_nn_index: np.ndarray, train_loo_dist: np.ndarray
) -> np.ndarray:
    """Authenticity per generated sample (Alaa et al., ICML 2022, Sec. 3.3), from precomputed distances.

    g with nearest training point x* = train[gen_nn_index] is NOT authentic when d(g, x*) < d(x*, its nearest
    other training point) = train_loo_dist[gen_nn_index]: g is then closer to x* than any real sample is.
    Works with any distance (e.g. :func:`pixel_nn` with ``exclude_self=True`` for ``train_loo_dist``).
    """
    gen_nn_dist, train_loo_dist = np.asarray(gen_nn_dist), np.asarray(train_loo_dist)
    return ~(gen_nn_dist < train_loo_dist[np.asarray(gen_nn_index)])


def authenticity_from_distances(
    gen_nn_dist: np.ndarray, gen_nn_index: np.ndarray, train_loo_dist: np.ndarray
) -> float:
    """Share of authentic generated samples (mean of :func:`authentic_mask`)."""
    return float(authentic_mask(gen_nn_dist, gen_nn_index, train_loo_dist).mean())


def authenticity(train_feats: Features, gen_feats: Features) -> float:
    """Share of authentic generated samples in a Euclidean feature space (Alaa et al., ICML 2022)."""
    gen_dist, gen_index = feature_nn(gen_feats, train_feats)
    return authenticity_from_distances(
        gen_dist, gen_index, feature_nn(train_feats, train_feats, exclude_self=True)[0]
    )


def copy_threshold(heldout_nn_dist: np.ndarray, percentile: float = 1.0) -> float:
    """Near-copy threshold: the ``percentile`` (0-100) of held-out real images' nearest-training distances."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile={percentile} must be in [0, 100] (1.0 means the 1st percentile)")
    if len(heldout_nn_dist) == 0:
        raise ValueError("heldout_nn_dist is empty; compute pixel_nn(heldout, train) first")
    return float(np.percentile(np.asarray(heldout_nn_dist, dtype=np.float64), percentile))


def flag_copies(gen_nn_dist: np.ndarray, threshold: float) -> np.ndarray:
    """True where a generated image is strictly closer to the training set than ``threshold``."""
    return np.asarray(gen_nn_dist) < threshold


@dataclass(frozen=True)
class Reidentification:
    """``share`` of outputs closer to their own source than to any other training image; ratio = own / other."""

    share: float
    ratio: np.ndarray  # (Ng,) < 1 means the output re-identifies its source


def reidentification(own_dist: np.ndarray, other_dist: np.ndarray) -> Reidentification:
    """Re-identification by an image-to-image model: output i is a translation of training image source[i].

    own_dist (Ng,): d(output, own source); other_dist (Ng,): d(output, nearest other training image). Outputs
    unrelated to their sources give a share near 1 / num_train (chance); see :func:`pixel_source_distances`.
    """
    own, other = np.asarray(own_dist, dtype=np.float64), np.asarray(other_dist, dtype=np.float64)
    if own.shape != other.shape or own.ndim != 1:
        raise ValueError(f"own_dist and other_dist must be (Ng,) each, got {own.shape} and {other.shape}")
    ratio = np.divide(own, other, out=np.full_like(own, np.inf), where=other > 0)
    return Reidentification(share=float((own < other).mean()), ratio=ratio)


def pixel_source_distances(
    outputs: torch.Tensor, train: torch.Tensor, source_index: np.ndarray, max_shift: int = 2, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(own_dist, other_dist) for :func:`reidentification` under the pixel distance of :func:`pixel_nn`."""
    source_index = np.asarray(source_index, dtype=np.int64)
    if source_index.shape != (len(outputs),):
        raise ValueError(f"source_index must be ({len(outputs)},), one per output, got {source_index.shape}")
    own = np.concatenate(  # source images gathered one chunk at a time
        [np.zeros(0)]
        + [
            pixel_distance_pairs(outputs[i : i + chunk], train[source_index[i : i + chunk]], max_shift, chunk)
            for i in range(0, len(outputs), chunk)
        ]
    )
    other, _ = pixel_nn(outputs, train, max_shift, chunk, exclude_index=source_index)
    return own, other


def plant_copies(train: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """n copies of training images (N, C, H, W) in [-1, 1], cycling :data:`COPY_KINDS`.

    "exact"; "noise": + N(0, 0.05^2), clamped; "shift": moved by 2 px in y and x (random signs), edges
    replicated; "brightness": + 0.1, clamped. Sources are drawn without replacement while n <= N.
    Returns (images (n, C, H, W), kinds (n,), source_index (n,)).
    """
    if train.ndim != 4 or len(train) == 0:
        raise ValueError(f"train must be (N, C, H, W) with N >= 1, got shape {tuple(train.shape)}")
    gen = torch.Generator().manual_seed(seed)
    if n <= len(train):
        source = torch.randperm(len(train), generator=gen)[:n]
    else:
        source = torch.randint(len(train), (n,), generator=gen)
    kinds = [COPY_KINDS[i % len(COPY_KINDS)] for i in range(n)]
    out = train[source].float().cpu()  # indexing copies
    h, w = train.shape[2:]
    for i, kind in enumerate(kinds):
        if kind == "noise":
            out[i] = (out[i] + 0.05 * torch.randn(out[i].shape, generator=gen)).clamp(-1, 1)
        elif kind == "shift":
            dy, dx = (2 * (2 * torch.randint(2, (2,), generator=gen) - 1)).tolist()
            rows = (torch.arange(h) - dy).clamp(0, h - 1)  # out[y] = x[y - dy]: content moves by +dy
            cols = (torch.arange(w) - dx).clamp(0, w - 1)
            out[i] = out[i][:, rows][:, :, cols]
        elif kind == "brightness":
            out[i] = (out[i] + 0.1).clamp(-1, 1)
    return out, kinds, source.numpy()
