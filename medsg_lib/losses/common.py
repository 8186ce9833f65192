"""Loss pieces every family's objective shares: the non-saturating adversarial loss (softplus form), R1,
and the detached 0-d tensors a step reports."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def adv_loss(logits: Tensor, target: float) -> Tensor:
    """Non-saturating adversarial loss: BCE-with-logits against a constant target, eq. (1).

    Args:
        logits: ``(B,)`` real/fake logits of the discriminator (any real values).
        target: 1.0 for "real", 0.0 for "fake".

    Returns:
        Scalar mean ``-[t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))]``; ``log 2`` at logit 0 for any
        target.
    """
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_reg(d_out: Tensor, x_real: Tensor) -> Tensor:
    """R1 gradient penalty ``0.5 * mean_b sum_pixels (d D(x_b) / d x_b)^2`` (Mescheder et al. 2018).

    The caller must have set ``x_real.requires_grad_(True)`` before computing ``d_out = D(x_real, y)``. The
    graph is kept (``create_graph=True``) so the penalty itself can be back-propagated into D.

    Args:
        d_out: ``(B,)`` discriminator logits computed from ``x_real``.
        x_real: ``(B, C, H, W)`` real images in [-1, 1] with ``requires_grad``.

    Returns:
        Scalar ``>= 0``. For ``D(x) = <w, x>`` it equals ``0.5 * |w|^2`` exactly.
    """
    (grad,) = torch.autograd.grad(outputs=d_out.sum(), inputs=x_real, create_graph=True)
    return 0.5 * grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()


def detached(**terms: Tensor) -> dict[str, Tensor]:
    """The unweighted loss terms for logging: detached 0-d tensors, still on the device (no host sync)."""
    return {name: value.detach() for name, value in terms.items()}


def cycle_loss(x_rec: Tensor, x_real: Tensor) -> Tensor:
    """Cycle consistency ``mean |x_rec - x_real|``, eq. (4). Both ``(B, C, H, W)``; returns a scalar."""
    return torch.mean(torch.abs(x_rec - x_real))
