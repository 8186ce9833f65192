"""LPIPS diversity (Zhang et al. 2018) with ``lpips.LPIPS(net="alex", version="0.1")``.

The paper's (StarGAN v2's) protocol: a source image is translated ten times with ten random latent codes;
LPIPS is averaged over all unordered pairs of those outputs, then over source images
(:func:`lpips_diversity`). For unconditional models (GAN, DCGAN) :func:`lpips_pairs` averages LPIPS over
random pairs of distinct samples. Inputs are used as given, in [-1, 1] and not clamped (StarGAN v2 feeds the
generator's raw outputs); one-channel images are repeated to three channels at the network input only.

Weights: lpips ships its linear layers (``lpips/weights/v0.1/alex.pth``); the AlexNet trunk comes from
torchvision's ImageNet file ``alexnet-owt-7be5be79.pth``, which lpips would fetch through torchvision. We find
and check that file with ``resolve_weights`` first (offline: a clear message), build LPIPS with
``pnet_rand=True`` (no download attempt) and load the trunk from the file with strict key checking: the
trunk's slices keep torchvision's ``features`` indices, so ``features.<i>.*`` maps to ``slice<k>.<i>.*``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import lpips
import numpy as np
import torch

from medsg_lib.metrics.features import load_weights

LPIPS_GROUP_PROTOCOL = "lpips-alex-v0.1: mean over all unordered pairs within each group, then over groups"
LPIPS_PAIRS_PROTOCOL = "lpips-alex-v0.1: mean over random pairs of distinct samples"


@dataclass
class LpipsModel:
    """An LPIPS network and the provenance label of its AlexNet trunk."""

    net: lpips.LPIPS
    weights: str  # weights_label of the AlexNet file (UNVERIFIED for random weights)
    device: torch.device
    feature_net: str = "lpips 0.1.4 LPIPS(net='alex', version='0.1')"

    @torch.no_grad()
    def distance(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS (P,) between image pairs x0, x1 (P, C, H, W) in [-1, 1], C = 1 or 3."""
        return self.net(_to_rgb(x0).to(self.device), _to_rgb(x1).to(self.device)).flatten().cpu()


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    return x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()


def _trunk_state(net: lpips.LPIPS, alexnet_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision AlexNet ``features.<i>.<p>`` entries to lpips' ``slice<k>.<i>.<p>``."""
    mapped = {}
    for key in net.net.state_dict():
        _slice, index, param = key.split(".")
        source = f"features.{index}.{param}"
        if source not in alexnet_state:
            raise KeyError(f"AlexNet file has no {source!r}: not torchvision's alexnet state dict")
        mapped[key] = alexnet_state[source]
    return mapped


def build_lpips(
    device: str | torch.device = "cpu",
    allow_random_weights: bool = False,
    weights_path: Path | None = None,
    verify: bool = True,
    download: bool | None = None,
    seed: int = 0,
) -> LpipsModel:
    """LPIPS(alex, v0.1) with the AlexNet trunk from ``resolve_weights("alexnet")`` (see the module
    docstring).

    ``allow_random_weights=True`` (tests only) gives a seeded random trunk, labelled UNVERIFIED; the linear
    layers are always lpips' shipped v0.1 weights.
    """
    state, label = load_weights("alexnet", weights_path, allow_random_weights, verify, download, seed)
    with (
        warnings.catch_warnings()
    ):  # pnet_rand makes lpips call torchvision's deprecated alexnet(pretrained=False)
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    net.net.load_state_dict(_trunk_state(net, state), strict=True)
    device = torch.device(device)
    return LpipsModel(net.to(device).eval(), label, device)


def pair_indices(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All unordered pairs i < j of range(k) as two index tensors of length k (k - 1) / 2."""
    i, j = torch.triu_indices(k, k, offset=1)
    return i, j


Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (P, C, H, W) x 2 -> (P,)


def group_mean(distance: Distance, groups: Iterable[torch.Tensor], name: str) -> tuple[float, int]:
    """(mean distance, number of groups): mean over all unordered pairs within each group, then over groups.

    Each group is (K, C, H, W) in [-1, 1] with K >= 2: the K outputs of one source image (paper: K = 10).
    ``name`` names the caller in the error for no groups.
    """
    means = []
    for g, x in enumerate(groups):
        if x.ndim != 4 or x.shape[0] < 2:
            raise ValueError(f"group {g} must be (K, C, H, W) with K >= 2, got shape {tuple(x.shape)}")
        i, j = pair_indices(x.shape[0])
        means.append(distance(x[i], x[j]).double().mean().item())
    if not means:
        raise ValueError(f"{name} got no groups")
    return float(np.mean(means)), len(means)


def random_pairs_mean(
    distance: Distance, x: torch.Tensor, num_pairs: int = 1000, seed: int = 0, batch_size: int = 50
) -> tuple[float, int]:
    """(mean distance, num_pairs) over ``num_pairs`` random pairs of distinct samples of x (N, C, H, W).

    Pairs are drawn with replacement among the N (N - 1) ordered pairs i != j (the distances are symmetric),
    seeded: the same pairs for every distance at the same N and seed.
    """
    n = x.shape[0]
    if n < 2 or num_pairs < 1:
        raise ValueError(f"need N >= 2 samples and num_pairs >= 1, got N={n}, num_pairs={num_pairs}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, num_pairs)
    j = (i + rng.integers(1, n, num_pairs)) % n  # uniform over the others
    values = [
        distance(x[i[s : s + batch_size]], x[j[s : s + batch_size]]).cpu()
        for s in range(0, num_pairs, batch_size)
    ]
    return float(torch.cat(values).double().mean()), num_pairs


def lpips_diversity(model: LpipsModel, groups: Iterable[torch.Tensor]) -> tuple[float, int]:
    """(mean LPIPS, number of groups): :func:`group_mean` of LPIPS (all pairs within each group, then over
    groups)."""
    return group_mean(model.distance, groups, "lpips_diversity")


def lpips_pairs(
    model: LpipsModel, x: torch.Tensor, num_pairs: int = 1000, seed: int = 0, batch_size: int = 50
) -> tuple[float, int]:
    """(mean LPIPS, num_pairs) over random pairs of distinct samples of x (N, C, H, W) in [-1, 1]
    (:func:`random_pairs_mean`)."""
    return random_pairs_mean(model.distance, x, num_pairs, seed, batch_size)
