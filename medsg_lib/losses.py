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

Baselines of the translation and relativistic comparisons (last section), one line per model:

- StarGAN (Choi et al., CVPR 2018): WGAN-GP ``D: -E[D(x)] + E[D(G(x, c))] + l_cls CE + l_gp E[(|grad D(x^)| - 1)^2]``,
  ``G: -E[D(G(x, c))] + l_cls CE + l_rec E[|x - G(G(x, c), c')|_1]``.
- CycleGAN (Zhu et al., ICCV 2017): least squares GAN ``E[(D(x) - t)^2]`` per direction, cycle
  ``l_cyc E[|G_ba(G_ab(a)) - a|_1]`` both ways, identity ``l_cyc l_idt E[|G_ab(b) - b|_1]``; fakes via an image pool.
- RSGAN (Jolicoeur-Martineau, ICLR 2019): relativistic standard GAN ``D: E[softplus(-(C(x_r) - C(x_f)))]``,
  ``G: E[softplus(-(C(x_f) - C(x_r)))]``.
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


# ---------------------------------------------------------------- translators and relativistic baselines
# StarGAN (WGAN-GP), CycleGAN (LSGAN + cycle + identity, image pool) and RSGAN; see the module docstring.


def interpolates(x_real: Tensor, x_fake: Tensor, alpha: Tensor) -> Tensor:
    """WGAN-GP sample ``x^ = alpha * x_real + (1 - alpha) * x_fake`` on the line from a fake to a real image.

    Both images (and ``alpha``) enter detached, as the penalty trains the critic only, so the result is a leaf
    with ``requires_grad`` ready for :func:`gradient_penalty`.

    Args:
        x_real: ``(B, C, H, W)`` in [-1, 1].
        x_fake: ``(B, C, H, W)`` in [-1, 1].
        alpha: ``(B, 1, 1, 1)`` per-sample weights, uniform in [0, 1] (the caller draws them from the step's
            generator).

    Returns:
        ``(B, C, H, W)`` with ``requires_grad``: ``x_fake`` at alpha 0, ``x_real`` at alpha 1.
    """
    if x_real.shape != x_fake.shape:
        raise ValueError(f"x_real {tuple(x_real.shape)} and x_fake {tuple(x_fake.shape)} must have one shape")
    if alpha.shape != (x_real.shape[0], 1, 1, 1):
        raise ValueError(f"alpha must be (B, 1, 1, 1) with B={x_real.shape[0]}; got {tuple(alpha.shape)}")
    alpha = alpha.detach()
    x_hat = alpha * x_real.detach() + (1 - alpha) * x_fake.detach()
    return x_hat.requires_grad_(True)


def gradient_penalty(critic_out: Tensor, x_hat: Tensor) -> Tensor:
    """WGAN-GP penalty ``mean_b (|grad_{x^} D(x^)_b|_2 - 1)^2`` (Gulrajani et al. 2017, eq. 3).

    ``critic_out`` may be one score per sample ``(B,)`` or a PatchGAN map ``(B, 1, h, w)``: as in StarGAN it
    is differentiated with ones as output gradient (the gradient of its sum), and each sample's gradient is
    flattened over ``(C, H, W)`` before its L2 norm. The graph is kept (``create_graph=True``) so the penalty
    can be back-propagated into the critic.

    Args:
        critic_out: critic scores computed from ``x_hat``, batch dimension first.
        x_hat: ``(B, C, H, W)`` with ``requires_grad`` (see :func:`interpolates`).

    Returns:
        Scalar ``>= 0``. For ``D(x) = <w, x>`` it equals ``(|w|_2 - 1)^2`` exactly.
    """
    (grad,) = torch.autograd.grad(
        outputs=critic_out, inputs=x_hat, grad_outputs=torch.ones_like(critic_out), create_graph=True
    )
    # vector_norm's backward is 0 where a sample's gradient vanishes; sqrt(sum(g^2)) would give NaN there
    grad_norm = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), ord=2, dim=1)  # (B,)
    return torch.mean((grad_norm - 1) ** 2)


def stargan_d_loss(
    discriminator: nn.Module,
    generator: nn.Module,
    x_real: Tensor,
    c_org_idx: Tensor,
    c_trg: Tensor,
    alpha: Tensor,
    lambda_cls: float = 1.0,
    lambda_gp: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """StarGAN discriminator objective ``real + fake + lambda_cls * cls + lambda_gp * gp`` (Choi et al. 2018).

    ``real = -mean D_src(x)``, ``fake = mean D_src(G(x, c_trg))`` with the fake made under ``torch.no_grad()``
    (only D receives gradients), ``cls = CE(D_cls(x), c_org_idx)`` (the multi-class domain loss of StarGAN's
    RaFD setting) and ``gp`` = :func:`gradient_penalty` at :func:`interpolates` ``(x, G(x, c_trg), alpha)``.

    Args:
        discriminator: ``D(x) -> (out_src (B, 1, h, w), out_cls (B, c_dim))``.
        generator: ``G(x, c) -> (B, C, H, W)`` for a float one-hot ``c`` ``(B, c_dim)``.
        x_real: ``(B, C, H, W)`` in [-1, 1].
        c_org_idx: ``(B,)`` int64 domains of ``x_real``.
        c_trg: ``(B, c_dim)`` float one-hot target domains.
        alpha: ``(B, 1, 1, 1)`` uniform interpolation weights of the penalty.
        lambda_cls: domain classification weight.
        lambda_gp: gradient penalty weight.

    Returns:
        ``(loss, {"real", "fake", "cls", "gp"})`` with unweighted term values.
    """
    out_src, out_cls = discriminator(x_real)  # (B, 1, h, w), (B, c_dim)
    loss_real = -torch.mean(out_src)
    loss_cls = F.cross_entropy(out_cls, c_org_idx)

    with torch.no_grad():
        x_fake = generator(x_real, c_trg)  # (B, C, H, W)
    out_src, _ = discriminator(x_fake)
    loss_fake = torch.mean(out_src)

    x_hat = interpolates(x_real, x_fake, alpha)
    out_src, _ = discriminator(x_hat)
    loss_gp = gradient_penalty(out_src, x_hat)

    loss = loss_real + loss_fake + lambda_cls * loss_cls + lambda_gp * loss_gp
    return loss, _detached(real=loss_real, fake=loss_fake, cls=loss_cls, gp=loss_gp)


def stargan_g_loss(
    discriminator: nn.Module,
    generator: nn.Module,
    x_real: Tensor,
    c_org: Tensor,
    c_trg: Tensor,
    c_trg_idx: Tensor,
    lambda_cls: float = 1.0,
    lambda_rec: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """StarGAN generator objective ``adv + lambda_cls * cls + lambda_rec * rec`` (Choi et al. 2018).

    With ``x~ = G(x, c_trg)``: ``adv = -mean D_src(x~)``, ``cls = CE(D_cls(x~), c_trg_idx)`` and the
    reconstruction ``rec = mean |x - G(x~, c_org)|``. Gradients also reach D's parameters: step only the
    generator's optimiser.

    Args:
        discriminator: ``D(x) -> (out_src (B, 1, h, w), out_cls (B, c_dim))``.
        generator: ``G(x, c) -> (B, C, H, W)`` for a float one-hot ``c`` ``(B, c_dim)``.
        x_real: ``(B, C, H, W)`` in [-1, 1].
        c_org: ``(B, c_dim)`` float one-hot domains of ``x_real``.
        c_trg: ``(B, c_dim)`` float one-hot target domains.
        c_trg_idx: ``(B,)`` int64 target domains (the indices of ``c_trg``).
        lambda_cls: domain classification weight.
        lambda_rec: reconstruction weight.

    Returns:
        ``(loss, {"adv", "cls", "rec"})`` with unweighted term values.
    """
    x_fake = generator(x_real, c_trg)  # (B, C, H, W)
    out_src, out_cls = discriminator(x_fake)
    loss_adv = -torch.mean(out_src)
    loss_cls = F.cross_entropy(out_cls, c_trg_idx)

    x_rec = generator(x_fake, c_org)  # back to the source domain
    loss_rec = cycle_loss(x_rec, x_real)

    loss = loss_adv + lambda_rec * loss_rec + lambda_cls * loss_cls
    return loss, _detached(adv=loss_adv, cls=loss_cls, rec=loss_rec)


def lsgan_loss(pred: Tensor, target: float) -> Tensor:
    """Least squares GAN loss ``mean (pred - target)^2`` (Mao et al. 2017; CycleGAN's ``gan_mode="lsgan"``).

    Args:
        pred: discriminator outputs of any shape (a PatchGAN gives ``(B, 1, h, w)``).
        target: 1.0 for "real", 0.0 for "fake".

    Returns:
        Scalar ``>= 0``.
    """
    return F.mse_loss(pred, torch.full_like(pred, float(target)))


def cyclegan_g_loss(
    g_ab: nn.Module,
    g_ba: nn.Module,
    d_a: nn.Module,
    d_b: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    lambda_cyc: float = 10.0,
    lambda_idt: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """CycleGAN generator objective, the sum of six terms (Zhu et al. 2017; the reference's ``backward_G``).

    ``d_a`` judges domain A and ``d_b`` domain B. With ``fake_b = g_ab(x_a)`` and ``fake_a = g_ba(x_b)``:

    - ``adv_a = mean (d_b(fake_b) - 1)^2`` and ``adv_b = mean (d_a(fake_a) - 1)^2`` (LSGAN, eq. 1);
    - ``cyc_a = lambda_cyc * mean |g_ba(fake_b) - x_a|`` and ``cyc_b = lambda_cyc * mean |g_ab(fake_a) - x_b|``
      (eq. 2);
    - ``idt_a = lambda_cyc * lambda_idt * mean |g_ab(x_b) - x_b|`` and ``idt_b = lambda_cyc * lambda_idt *
      mean |g_ba(x_a) - x_a|`` (Section 5.2); with ``lambda_idt == 0`` these passes are skipped and both are 0.

    Unlike the other loss dicts of this module, the parts are already WEIGHTED, as the reference's
    ``loss_G_A, loss_cycle_A, loss_idt_A, ...`` are (``_a`` names the terms of ``g_ab`` and of the cycle from
    A, ``_b`` those of ``g_ba``), so ``loss`` is their plain sum. Gradients also reach the discriminators'
    parameters: step only the generators' optimiser.

    Args:
        g_ab: generator A -> B; g_ba: generator B -> A.
        d_a: discriminator of domain A; d_b: discriminator of domain B.
        x_a: ``(B, C, H, W)`` real images of domain A in [-1, 1]; x_b: the same for domain B.
        lambda_cyc: cycle weight (the reference's ``lambda_A = lambda_B``).
        lambda_idt: identity weight relative to ``lambda_cyc`` (the reference's ``lambda_identity``), ``>= 0``.

    Returns:
        ``(loss, {"adv_a", "adv_b", "cyc_a", "cyc_b", "idt_a", "idt_b"}, fake_b, fake_a)`` with the fakes
        ``(B, C, H, W)`` detached, for :func:`pool_query` and the discriminators' step.
    """
    if lambda_idt < 0:
        raise ValueError(f"lambda_idt={lambda_idt!r} must be >= 0")
    fake_b = g_ab(x_a)  # (B, C, H, W), domain B
    rec_a = g_ba(fake_b)
    fake_a = g_ba(x_b)  # (B, C, H, W), domain A
    rec_b = g_ab(fake_a)

    loss_adv_a = lsgan_loss(d_b(fake_b), 1.0)
    loss_adv_b = lsgan_loss(d_a(fake_a), 1.0)
    loss_cyc_a = lambda_cyc * cycle_loss(rec_a, x_a)
    loss_cyc_b = lambda_cyc * cycle_loss(rec_b, x_b)
    if lambda_idt > 0:
        # a generator fed an image of its target domain should leave it unchanged
        loss_idt_a = lambda_cyc * lambda_idt * cycle_loss(g_ab(x_b), x_b)
        loss_idt_b = lambda_cyc * lambda_idt * cycle_loss(g_ba(x_a), x_a)
    else:
        loss_idt_a = loss_idt_b = x_a.new_zeros(())

    loss = loss_adv_a + loss_adv_b + loss_cyc_a + loss_cyc_b + loss_idt_a + loss_idt_b
    parts = _detached(
        adv_a=loss_adv_a,
        adv_b=loss_adv_b,
        cyc_a=loss_cyc_a,
        cyc_b=loss_cyc_b,
        idt_a=loss_idt_a,
        idt_b=loss_idt_b,
    )
    return loss, parts, fake_b.detach(), fake_a.detach()


def cyclegan_d_loss(disc: nn.Module, x_real: Tensor, x_fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """CycleGAN discriminator loss ``0.5 * (mean (D(x_real) - 1)^2 + mean D(x_fake)^2)`` (``backward_D_basic``).

    Halving slows D relative to G (Zhu et al. 2017, Section 4). ``x_fake`` is detached here, so a fake from
    :func:`cyclegan_g_loss` or :func:`pool_query` sends no gradient to a generator.

    Args:
        disc: discriminator of the domain of ``x_real``; x_real: ``(B, C, H, W)`` in [-1, 1].
        x_fake: ``(B', C, H, W)`` fakes of that domain (normally from :func:`pool_query`).

    Returns:
        ``(loss, {"real", "fake"})`` with the unweighted LSGAN terms (``loss = 0.5 * (real + fake)``).
    """
    loss_real = lsgan_loss(disc(x_real), 1.0)
    loss_fake = lsgan_loss(disc(x_fake.detach()), 0.0)
    return 0.5 * (loss_real + loss_fake), _detached(real=loss_real, fake=loss_fake)


def pool_query(pool: list[Tensor], images: Tensor, pool_size: int, gen: torch.Generator) -> Tensor:
    """CycleGAN's history of fakes (Shrivastava et al. 2017): the fakes its discriminator is shown.

    Image by image: while ``pool`` holds fewer than ``pool_size`` images the image is stored and returned;
    then, if ``u > 0.5`` for ``u = torch.rand((), generator=gen)``, a stored image at
    ``torch.randint(pool_size, (), generator=gen)`` is returned and replaced by the new one, else the new image
    is returned. Every draw comes from ``gen`` (no draw while the pool fills), so one pool and one generator
    state give one answer. ``pool`` is mutated in place and holds detached copies ``(C, H, W)`` on the images'
    device.

    Args:
        pool: the stored images; starts empty and is kept by the caller between steps.
        images: ``(B, C, H, W)`` new fakes.
        pool_size: capacity ``>= 0``; 0 returns ``images`` itself and touches neither ``pool`` nor ``gen``.
        gen: the step's generator (on any device; the draws are made on its device).

    Returns:
        ``(B, C, H, W)`` detached, on the images' device; each image is the new one or a previously stored one.
    """
    if pool_size < 0:
        raise ValueError(f"pool_size={pool_size!r} must be >= 0")
    if pool_size == 0:
        return images
    out = []
    for image in images.detach():  # (C, H, W)
        if len(pool) < pool_size:
            pool.append(image.clone())
            out.append(image)
        elif torch.rand((), generator=gen, device=gen.device).item() > 0.5:
            idx = int(torch.randint(pool_size, (), generator=gen, device=gen.device).item())
            out.append(pool[idx])
            pool[idx] = image.clone()
        else:
            out.append(image)
    return torch.stack(out)


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
    return loss, _detached(real_minus_fake=diff.mean())


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
    return loss_adv, _detached(adv=loss_adv)
