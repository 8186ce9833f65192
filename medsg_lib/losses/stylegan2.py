"""StyleGAN2's objective (Karras et al., CVPR 2020, as stylegan2-ada-pytorch's ``training/loss.py``).

- Non-saturating logistic loss: ``G: softplus(-D(G(z, c), c))``, ``D: softplus(D(G(z, c), c)) + softplus(-D(x, c))``
  (:func:`medsg_lib.losses.common.adv_loss`), every image through the augmentation pipeline first.
- R1 on augmented real images, ``gamma / 2 * E[|grad_x D(x)|^2]`` (:func:`medsg_lib.losses.common.r1_reg` is the
  ``1/2 E[...]`` part), evaluated every ``r1_interval`` steps and multiplied by it (lazy regularisation).
- Path-length regularisation (:func:`path_length_penalty`), every ``pl_interval`` steps, multiplied by it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def path_length_penalty(
    img: Tensor, ws: Tensor, pl_mean: Tensor, decay: float, noise: Tensor
) -> tuple[Tensor, Tensor]:
    """StyleGAN2's path-length penalty.

    ``J^T y`` for a random image-space direction ``y = noise / sqrt(H W)``: the lengths ``a = sqrt(mean over
    layers of |d <img, y> / d w|^2)`` per image, pulled toward their running mean.

    Args:
        img: ``(B, C, H, W)`` made from ``ws`` ``(B, num_ws, w_dim)`` (which requires grad).
        pl_mean: the running mean of the lengths, a 0-d tensor.
        decay: its exponential decay (the reference: 0.01).
        noise: ``(B, C, H, W)`` standard normal.

    Returns:
        ``(penalty (B,) = (a - new_mean)^2, new_mean)``; the graph is kept for back-propagation into G.
    """
    scale = 1 / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad((img * noise.to(img.dtype) * scale).sum(), ws, create_graph=True)
    lengths = grads.float().square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().detach(), decay)
    return (lengths - new_mean).square(), new_mean


def ema_beta(batch: int, images_seen: int, ema_kimg: float, rampup: float | None) -> float:
    """The generator EMA's decay for one step of ``batch`` images: a half-life of ``ema_kimg`` thousand images,
    shortened to ``rampup * images_seen`` early in training (the reference's ``ema_rampup``)."""
    half_life = ema_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))
