"""Losses of Med-StyleGAN2 (StarGAN v2 objective) and of the GAN/DCGAN baselines.

Small pure functions first, then the two per-step objectives that compose them. Equation numbers refer to
StarGAN v2 (Choi et al., CVPR 2020), Section 2.2, as summarised in ``docs/paper.md``:

- (1) adversarial, non-saturating: ``L_adv = E[log D_y(x)] + E[log(1 - D_y~(G(x, s~)))]``
- (2) style reconstruction: ``L_sty = E[|s~ - E_y~(G(x, s~))|_1]``
- (3) diversity sensitive: ``L_ds = E[|G(x, s~1) - G(x, s~2)|_1]`` (maximised, so subtracted)
- (4) cycle consistency: ``L_cyc = E[|x - G(G(x, s~), s^)|_1]`` with ``s^ = E_y(x)``
- R1 (Mescheder et al. 2018): ``R1 = 0.5 * E[|grad_x D_y(x)|^2]`` on real images.

``nets`` is a mapping with the keys ``"generator"``, ``"mapping_network"``, ``"style_encoder"`` and
``"discriminator"`` (see :func:`medsg_lib.models.build_models`). Loss dicts hold detached 0-d tensors: the
trainer turns them into numbers once per log interval, so a step never waits for the device to report a loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def style_recon_loss(s_pred: Tensor, s_trg: Tensor) -> Tensor:
    """Style reconstruction ``mean |s_pred - s_trg|``, eq. (2). Both ``(B, style_dim)``; returns a scalar."""
    return torch.mean(torch.abs(s_pred - s_trg))


def diversity_loss(x_fake: Tensor, x_fake2: Tensor) -> Tensor:
    """Diversity-sensitive term ``mean |x_fake - x_fake2|``, eq. (3); the generator loss SUBTRACTS it.

    Both ``(B, C, H, W)`` in about [-1, 1]; ``x_fake2`` is normally detached. Returns a scalar ``>= 0``.
    """
    return torch.mean(torch.abs(x_fake - x_fake2))


def cycle_loss(x_rec: Tensor, x_real: Tensor) -> Tensor:
    """Cycle consistency ``mean |x_rec - x_real|``, eq. (4). Both ``(B, C, H, W)``; returns a scalar."""
    return torch.mean(torch.abs(x_rec - x_real))


def lambda_ds_at(step: int, initial: float, decay_iters: int) -> float:
    """Diversity weight at ``step``: linear decay from ``initial`` (step 0) to 0 at ``decay_iters``, then 0.

    ``lambda_ds(t) = initial * max(0, 1 - t / decay_iters)`` (StarGAN v2 decays it over 100k iterations).
    """
    if decay_iters <= 0:
        raise ValueError(f"decay_iters={decay_iters!r} must be > 0")
    return float(initial) * max(0.0, 1.0 - step / decay_iters)


def _detached(**terms: Tensor) -> dict[str, Tensor]:
    """The unweighted loss terms for logging: detached 0-d tensors, still on the device (no host sync)."""
    return {name: value.detach() for name, value in terms.items()}


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
    return loss, _detached(real=loss_real, fake=loss_fake, reg=loss_reg)


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
    return loss, _detached(adv=loss_adv, sty=loss_sty, ds=loss_ds, cyc=loss_cyc)


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
    return loss_real + loss_fake, _detached(real=loss_real, fake=loss_fake)


def baseline_g_loss(
    discriminator: nn.Module, generator: nn.Module, z: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Non-saturating generator loss ``BCE(D(G(z)), 1)``; z ``(B, nz)``. Returns ``(loss, {"adv"})``.

    Gradients also reach D's parameters: step only the generator's optimiser.
    """
    loss_adv = adv_loss(discriminator(generator(z)), 1.0)
    return loss_adv, _detached(adv=loss_adv)
