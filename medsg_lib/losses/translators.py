"""The translation baselines: StarGAN (WGAN-GP with a domain classifier) and CycleGAN (LSGAN, cycle,
identity, image pool)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsg_lib.losses.common import cycle_loss, detached


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
    return loss, detached(real=loss_real, fake=loss_fake, cls=loss_cls, gp=loss_gp)


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
    return loss, detached(adv=loss_adv, cls=loss_cls, rec=loss_rec)


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
    parts = detached(
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
    return 0.5 * (loss_real + loss_fake), detached(real=loss_real, fake=loss_fake)


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
