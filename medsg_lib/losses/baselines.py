"""The noise-to-image baselines: GAN/DCGAN (non-saturating BCE) and RSGAN (relativistic standard loss)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsg_lib.losses.common import adv_loss, detached


def baseline_d_loss(
    discriminator: nn.Module, generator: nn.Module, x_real: Tensor, z: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """GAN/DCGAN discriminator loss ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` (Goodfellow et al. 2014).

    Args:
        x_real: ``(B, C, S, S)`` in [-1, 1]; z: ``(B, nz)`` standard normal. ``G(z)`` is made under no_grad.

    Returns:
        ``(loss, {"real", "fake"})``.
    """
    loss_real = adv_loss(discriminator(x_real), 1.0)
    with torch.no_grad():
        x_fake = generator(z)
    loss_fake = adv_loss(discriminator(x_fake), 0.0)
    return loss_real + loss_fake, detached(real=loss_real, fake=loss_fake)


def baseline_g_loss(
    discriminator: nn.Module, generator: nn.Module, z: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Non-saturating generator loss ``BCE(D(G(z)), 1)``; z ``(B, nz)``. Returns ``(loss, {"adv"})``.

    Gradients also reach D's parameters: step only the generator's optimiser.
    """
    loss_adv = adv_loss(discriminator(generator(z)), 1.0)
    return loss_adv, detached(adv=loss_adv)


def _paired_scores(c_real: Tensor, c_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten two critic outputs to ``(N,)`` and require one score per pair (no silent broadcasting)."""
    c_real, c_fake = c_real.reshape(-1), c_fake.reshape(-1)
    if c_real.shape != c_fake.shape:
        raise ValueError(
            f"real and fake critic outputs must pair up; got {c_real.numel()} and {c_fake.numel()} scores"
        )
    return c_real, c_fake


def rsgan_d_loss(
    discriminator: nn.Module, generator: nn.Module, x_real: Tensor, z: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Relativistic standard GAN critic loss ``mean softplus(-(C(x_r) - C(x_f)))`` (Jolicoeur-Martineau 2019).

    That is ``BCE-with-logits(C(x_r) - C(x_f), 1)``: the probability that a real image looks more real than a
    fake one; ``log 2`` at equal scores. ``x_f = G(z)`` is made under ``torch.no_grad()``.

    Args:
        discriminator: critic ``C(x)`` returning logits of any shape with the batch first (flattened).
        generator: ``G(z) -> (B, C, H, W)``.
        x_real: ``(B, C, H, W)`` in [-1, 1]; z: ``(B, nz)`` standard normal (the same B: scores pair up).

    Returns:
        ``(loss, {"real_minus_fake"})``, the latter the mean score difference ``mean C(x_r) - C(x_f)``.
    """
    with torch.no_grad():
        x_fake = generator(z)
    c_real, c_fake = _paired_scores(discriminator(x_real), discriminator(x_fake))
    diff = c_real - c_fake  # (B,)
    loss = adv_loss(diff, 1.0)  # = mean softplus(-diff)
    return loss, detached(real_minus_fake=diff.mean())


def rsgan_g_loss(
    discriminator: nn.Module, generator: nn.Module, x_real: Tensor, z: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Relativistic standard GAN generator loss ``mean softplus(-(C(G(z)) - C(x_r)))`` (Jolicoeur-Martineau 2019).

    The real scores carry no gradient to G, so they are computed under ``torch.no_grad()`` (same value and
    G-gradient as the reference, without keeping D's activations on real images). Gradients reach G and also
    D's parameters through the fake scores: step only the generator's optimiser.

    Args:
        discriminator: critic ``C(x)`` returning logits of any shape with the batch first (flattened).
        generator: ``G(z) -> (B, C, H, W)``.
        x_real: ``(B, C, H, W)`` in [-1, 1]; z: ``(B, nz)`` standard normal (the same B: scores pair up).

    Returns:
        ``(loss, {"adv"})``.
    """
    with torch.no_grad():
        c_real = discriminator(x_real)
    c_real, c_fake = _paired_scores(c_real, discriminator(generator(z)))
    loss_adv = adv_loss(c_fake - c_real, 1.0)  # = mean softplus(-(C(x_f) - C(x_r)))
    return loss_adv, detached(adv=loss_adv)
