"""Med-StyleGAN2's objective (StarGAN v2, Choi et al. 2020, Section 2.2): the pure terms (2)-(4) and the
discriminator's and generator's per-step losses that compose them with (1) and R1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from medsg_lib.losses.common import adv_loss, cycle_loss, detached, r1_reg


def style_recon_loss(s_pred: Tensor, s_trg: Tensor) -> Tensor:
    """Style reconstruction ``mean |s_pred - s_trg|``, eq. (2). Both ``(B, style_dim)``; returns a scalar."""
    return torch.mean(torch.abs(s_pred - s_trg))


def diversity_loss(x_fake: Tensor, x_fake2: Tensor) -> Tensor:
    """Diversity-sensitive term ``mean |x_fake - x_fake2|``, eq. (3); the generator loss SUBTRACTS it.

    Both ``(B, C, H, W)`` in about [-1, 1]; ``x_fake2`` is normally detached. Returns a scalar ``>= 0``.
    """
    return torch.mean(torch.abs(x_fake - x_fake2))


def lambda_ds_at(step: int, initial: float, decay_iters: int) -> float:
    """Diversity weight at ``step``: linear decay from ``initial`` (step 0) to 0 at ``decay_iters``, then 0.

    ``lambda_ds(t) = initial * max(0, 1 - t / decay_iters)`` (StarGAN v2 decays it over 100k iterations).
    """
    if decay_iters <= 0:
        raise ValueError(f"decay_iters={decay_iters!r} must be > 0")
    return float(initial) * max(0.0, 1.0 - step / decay_iters)


def _exactly_one(name_a: str, a: object, name_b: str, b: object) -> None:
    if (a is None) == (b is None):
        raise ValueError(f"give exactly one of {name_a} (latent-guided) or {name_b} (reference-guided)")


def _target_style(
    nets: Mapping[str, nn.Module], y_trg: Tensor, z_trg: Tensor | None, x_ref: Tensor | None
) -> Tensor:
    """Style code ``(B, style_dim)`` of domain ``y_trg``: F(z, y) if ``z_trg`` is given, else E(x_ref, y)."""
    if z_trg is not None:
        return nets["mapping_network"](z_trg, y_trg)
    assert x_ref is not None
    return nets["style_encoder"](x_ref, y_trg)


def medsg_d_loss(
    nets: Mapping[str, nn.Module],
    x_real: Tensor,
    y_org: Tensor,
    y_trg: Tensor,
    *,
    z_trg: Tensor | None = None,
    x_ref: Tensor | None = None,
    lambda_reg: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Discriminator objective of one step: ``adv(D(x), 1) + lambda_reg * R1 + adv(D(G(x, s~)), 0)``.

    Exactly one of ``z_trg`` (latent-guided: ``s~ = F(z_trg, y_trg)``) or ``x_ref`` (reference-guided:
    ``s~ = E(x_ref, y_trg)``) must be given. The fake image is made under ``torch.no_grad()``, so only the
    discriminator receives gradients. ``x_real`` is not modified (a detached copy gets ``requires_grad``).

    Args:
        nets: ``generator``, ``mapping_network``, ``style_encoder``, ``discriminator``.
        x_real: ``(B, C, H, W)`` in [-1, 1]; y_org: ``(B,)`` int64, its domains.
        y_trg: ``(B,)`` int64 target domains.
        z_trg: ``(B, latent_dim)`` standard normal latents, or None.
        x_ref: ``(B, C, H, W)`` reference images of domains ``y_trg`` in [-1, 1], or None.
        lambda_reg: R1 weight.

    Returns:
        ``(loss, {"real", "fake", "reg"})``; ``"reg"`` is the unweighted R1 value.
    """
    _exactly_one("z_trg", z_trg, "x_ref", x_ref)
    discriminator = nets["discriminator"]

    # real images: eq. (1) first term + R1
    x_real = x_real.detach().requires_grad_(True)
    out_real = discriminator(x_real, y_org)  # (B,)
    loss_real = adv_loss(out_real, 1.0)
    loss_reg = r1_reg(out_real, x_real)

    # fake images: eq. (1) second term; no gradients into G, F, E
    with torch.no_grad():
        s_trg = _target_style(nets, y_trg, z_trg, x_ref)  # (B, style_dim)
        x_fake = nets["generator"](x_real, s_trg)  # (B, C, H, W)
    out_fake = discriminator(x_fake, y_trg)
    loss_fake = adv_loss(out_fake, 0.0)

    loss = loss_real + loss_fake + lambda_reg * loss_reg
    return loss, detached(real=loss_real, fake=loss_fake, reg=loss_reg)


def medsg_g_loss(
    nets: Mapping[str, nn.Module],
    x_real: Tensor,
    y_org: Tensor,
    y_trg: Tensor,
    *,
    z_trgs: Sequence[Tensor] | None = None,
    x_refs: Sequence[Tensor] | None = None,
    lambda_sty: float = 1.0,
    lambda_ds: float = 2.0,
    lambda_cyc: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Generator objective ``adv + lambda_sty * L_sty - lambda_ds * L_ds + lambda_cyc * L_cyc``, eqs. (1)-(4).

    Exactly one of ``z_trgs`` (two latents ``(B, latent_dim)``) or ``x_refs`` (two reference batches
    ``(B, C, H, W)`` of domains ``y_trg``) must be given; the first gives ``s~``, the second ``s~2`` for the
    diversity term (whose second image is detached). Gradients reach the generator, the mapping network
    (latent-guided) and the style encoder; they also reach the discriminator's parameters, so the caller must
    only step the G/F/E optimisers (and zero D's gradients before its own step).

    Args:
        nets: ``generator``, ``mapping_network``, ``style_encoder``, ``discriminator``.
        x_real: ``(B, C, H, W)`` in [-1, 1]; y_org: ``(B,)`` int64, its domains.
        y_trg: ``(B,)`` int64 target domains.
        lambda_sty, lambda_ds, lambda_cyc: weights (``lambda_ds`` normally from :func:`lambda_ds_at`).

    Returns:
        ``(loss, {"adv", "sty", "ds", "cyc"})`` with unweighted term values.
    """
    _exactly_one("z_trgs", z_trgs, "x_refs", x_refs)
    pair = z_trgs if z_trgs is not None else x_refs
    assert pair is not None
    if len(pair) != 2:
        raise ValueError(f"z_trgs / x_refs must be a pair (two latents or two references); got {len(pair)}")
    guided_by_z = z_trgs is not None
    generator, style_encoder = nets["generator"], nets["style_encoder"]

    def style_of(i: int) -> Tensor:
        return _target_style(nets, y_trg, pair[i] if guided_by_z else None, None if guided_by_z else pair[i])

    # eq. (1): fool D with the translated image
    s_trg = style_of(0)  # (B, style_dim)
    x_fake = generator(x_real, s_trg)  # (B, C, H, W)
    loss_adv = adv_loss(nets["discriminator"](x_fake, y_trg), 1.0)

    # eq. (2): the style encoder recovers the target style from the fake
    loss_sty = style_recon_loss(style_encoder(x_fake, y_trg), s_trg)

    # eq. (3): two styles of the same domain give different images (second image detached)
    # the second image only enters detached: made without a graph (same values, no saved activations)
    with torch.no_grad():
        x_fake2 = generator(x_real, style_of(1))
    loss_ds = diversity_loss(x_fake, x_fake2)

    # eq. (4): translating back with the source image's own style recovers it
    s_org = style_encoder(x_real, y_org)
    x_rec = generator(x_fake, s_org)
    loss_cyc = cycle_loss(x_rec, x_real)

    loss = loss_adv + lambda_sty * loss_sty - lambda_ds * loss_ds + lambda_cyc * loss_cyc
    return loss, detached(adv=loss_adv, sty=loss_sty, ds=loss_ds, cyc=loss_cyc)
