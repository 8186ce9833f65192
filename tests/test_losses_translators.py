"""Losses of the translation and relativistic baselines (WGAN-GP, StarGAN, CycleGAN, RSGAN).

Stub networks are fixed linear or quadratic maps in float64, so every term has a closed form computed here by
hand (without calling the stub) and compared with the library's value.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsg_lib.losses import (
    cyclegan_d_loss,
    cyclegan_g_loss,
    gradient_penalty,
    interpolates,
    lsgan_loss,
    pool_query,
    rsgan_d_loss,
    rsgan_g_loss,
    stargan_d_loss,
    stargan_g_loss,
)

DT = torch.float64


def _param(value) -> nn.Parameter:
    return nn.Parameter(torch.as_tensor(value, dtype=DT).clone())


def _all_detached_scalars(parts: dict[str, Tensor]) -> bool:
    return all(v.ndim == 0 and not v.requires_grad for v in parts.values())


# ---------------------------------------------------------------- WGAN-GP: interpolates and gradient penalty


def test_interpolates_endpoints_and_mixture() -> None:
    gen = torch.Generator().manual_seed(0)
    x_real = torch.rand(4, 1, 3, 3, dtype=DT, generator=gen) * 2 - 1
    g_param = _param(1.0)
    x_fake = g_param * (torch.rand(4, 1, 3, 3, dtype=DT, generator=gen) * 2 - 1)  # carries G's graph
    alpha = torch.tensor([0.0, 1.0, 0.25, 0.0], dtype=DT).view(4, 1, 1, 1)

    x_hat = interpolates(x_real, x_fake, alpha)
    assert x_hat.shape == (4, 1, 3, 3) and x_hat.requires_grad and x_hat.is_leaf
    torch.testing.assert_close(x_hat[0], x_fake[0].detach(), rtol=0, atol=0)  # alpha 0: the fake
    torch.testing.assert_close(x_hat[1], x_real[1], rtol=0, atol=0)  # alpha 1: the real
    torch.testing.assert_close(x_hat[2], 0.25 * x_real[2] + 0.75 * x_fake[2].detach())
    assert not x_real.requires_grad  # the caller's tensor is untouched
    x_hat.sum().backward()
    assert g_param.grad is None  # the penalty's sample carries no gradient into G


def test_interpolates_rejects_bad_shapes() -> None:
    x = torch.zeros(4, 1, 3, 3)
    with pytest.raises(ValueError, match=r"alpha must be \(B, 1, 1, 1\) with B=4; got \(4,\)"):
        interpolates(x, x, torch.zeros(4))
    with pytest.raises(
        ValueError, match=r"x_real \(4, 1, 3, 3\) and x_fake \(2, 1, 3, 3\) must have one shape"
    ):
        interpolates(x, torch.zeros(2, 1, 3, 3), torch.zeros(4, 1, 1, 1))


def test_gradient_penalty_of_a_linear_critic_is_squared_norm_minus_one() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, 3, 3, dtype=DT, generator=gen).requires_grad_(True)
    x_hat = torch.randn(4, 2, 3, 3, dtype=DT, generator=gen).requires_grad_(True)
    critic_out = (x_hat * w).sum(dim=(1, 2, 3))  # D(x) = <w, x>, (B,)
    gp = gradient_penalty(critic_out, x_hat)
    norm = w.detach().pow(2).sum().sqrt().item()
    assert norm != pytest.approx(1.0, abs=0.1)  # a non-trivial value
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-12)
    gp.backward()  # create_graph=True: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm)


def test_gradient_penalty_of_a_patch_critic() -> None:
    # (B, 1, 2, 2) patch outputs: 2x2 average pooling of <w, x> over channels, so grad = w / 4 everywhere
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(1, 3, 4, 4, dtype=DT, generator=gen)
    x_hat = torch.randn(2, 3, 4, 4, dtype=DT, generator=gen).requires_grad_(True)
    critic_out = F.avg_pool2d((x_hat * w).sum(dim=1, keepdim=True), 2)
    assert critic_out.shape == (2, 1, 2, 2)
    expected = (w.pow(2).sum().sqrt().item() / 4 - 1) ** 2
    assert gradient_penalty(critic_out, x_hat).item() == pytest.approx(expected, rel=1e-12)


def test_gradient_penalty_norm_is_per_sample() -> None:
    # D(x) = 0.5 |x|^2 has gradient x: the penalty averages (|x_b| - 1)^2, not a norm over the batch
    x_hat = torch.tensor([0.6, 0.8, 3.0, 4.0], dtype=DT).view(2, 1, 1, 2).requires_grad_(True)  # norms 1, 5
    critic_out = 0.5 * x_hat.pow(2).sum(dim=(1, 2, 3))
    assert gradient_penalty(critic_out, x_hat).item() == pytest.approx((0.0 + 16.0) / 2, rel=1e-12)


def test_gradient_penalty_is_finite_where_the_gradient_vanishes() -> None:
    w = torch.zeros(1, 1, 2, 2, dtype=DT, requires_grad=True)  # a flat critic: gradient 0, penalty 1
    x_hat = torch.ones(3, 1, 2, 2, dtype=DT, requires_grad=True)
    gp = gradient_penalty((x_hat * w).sum(dim=(1, 2, 3)), x_hat)
    assert gp.item() == 1.0
    gp.backward()
    assert torch.isfinite(w.grad).all()  # sqrt(sum(g^2)) would give NaN here


# ---------------------------------------------------------------- StarGAN

SB, C_DIM = 4, 3  # batch, domains; images (SB, 1, 4, 4)


class StarD(nn.Module):
    """``out_src = avgpool2x2(0.5 (w x)^2)`` ``(B, 1, 2, 2)`` and ``out_cls = x.flatten(1) @ W_cls^T`` ``(B, c_dim)``."""

    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.w_src = _param(torch.randn(1, 1, 4, 4, dtype=DT, generator=gen))
        self.w_cls = _param(torch.randn(C_DIM, 16, dtype=DT, generator=gen) * 0.5)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.avg_pool2d(0.5 * (self.w_src * x) ** 2, 2), x.flatten(1) @ self.w_cls.T


class StarG(nn.Module):
    """``G(x, c) = scale * x + <c, shift>`` (one offset per domain)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = _param(0.5)
        self.shift = _param([0.3, -0.2, 0.7])

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.scale * x + (c @ self.shift).view(-1, 1, 1, 1)


def _ce(logits: Tensor, idx: Tensor) -> Tensor:
    """Cross entropy by hand: mean of ``logsumexp(l) - l[idx]``."""
    return (logits.exp().sum(dim=1).log() - logits[torch.arange(len(idx)), idx]).mean()


@pytest.fixture
def star() -> dict:
    gen = torch.Generator().manual_seed(3)
    c_org_idx, c_trg_idx = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    return {
        "d": StarD(gen),
        "g": StarG(),
        "x_real": torch.rand(SB, 1, 4, 4, dtype=DT, generator=gen) * 2 - 1,
        "c_org_idx": c_org_idx,
        "c_trg_idx": c_trg_idx,
        "c_org": F.one_hot(c_org_idx, C_DIM).to(DT),
        "c_trg": F.one_hot(c_trg_idx, C_DIM).to(DT),
        "alpha": torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=DT).view(SB, 1, 1, 1),
    }


def test_stargan_d_loss_term_by_term(star) -> None:
    d, g, x = star["d"], star["g"], star["x_real"]
    loss, parts = stargan_d_loss(
        d, g, x, star["c_org_idx"], star["c_trg"], star["alpha"], lambda_cls=2.0, lambda_gp=3.0
    )
    assert set(parts) == {"real", "fake", "cls", "gp"} and _all_detached_scalars(parts)

    # by hand; the mean of a 2x2-average-pooled map is the mean of the map
    w, w_cls = d.w_src, d.w_cls
    x_fake = (0.5 * x + g.shift[star["c_trg_idx"]].view(SB, 1, 1, 1)).detach()
    real = -(0.5 * (w * x) ** 2).mean()
    fake = (0.5 * (w * x_fake) ** 2).mean()
    cls = _ce(x.flatten(1) @ w_cls.T, star["c_org_idx"])
    x_hat = star["alpha"] * x + (1 - star["alpha"]) * x_fake
    grad_norm = (w**2 * x_hat / 4).pow(2).sum(dim=(1, 2, 3)).sqrt()  # d/dx sum(out_src) = w^2 x / 4
    gp = ((grad_norm - 1) ** 2).mean()
    for name, value in {"real": real, "fake": fake, "cls": cls, "gp": gp}.items():
        assert parts[name].item() == pytest.approx(value.item(), rel=1e-12), name
    expected = real + fake + 2.0 * cls + 3.0 * gp
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)

    # the same gradients into D (the penalty's graph is kept), none into G (fakes under no_grad)
    got = torch.autograd.grad(loss, (w, w_cls))
    want = torch.autograd.grad(expected, (w, w_cls))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    loss2, _ = stargan_d_loss(d, g, x, star["c_org_idx"], star["c_trg"], star["alpha"])
    loss2.backward()
    assert g.scale.grad is None and g.shift.grad is None


def test_stargan_g_loss_term_by_term(star) -> None:
    d, g, x = star["d"], star["g"], star["x_real"]
    loss, parts = stargan_g_loss(
        d, g, x, star["c_org"], star["c_trg"], star["c_trg_idx"], lambda_cls=2.0, lambda_rec=5.0
    )
    assert set(parts) == {"adv", "cls", "rec"} and _all_detached_scalars(parts)

    s, shift = g.scale, g.shift
    x_fake = s * x + shift[star["c_trg_idx"]].view(SB, 1, 1, 1)
    x_rec = s * x_fake + shift[star["c_org_idx"]].view(SB, 1, 1, 1)  # back with the source domain
    adv = -(0.5 * (d.w_src * x_fake) ** 2).mean()
    cls = _ce(x_fake.flatten(1) @ d.w_cls.T, star["c_trg_idx"])
    rec = (x - x_rec).abs().mean()
    assert rec.item() > 0.1  # G is not the identity: the reconstruction term is non-trivial
    for name, value in {"adv": adv, "cls": cls, "rec": rec}.items():
        assert parts[name].item() == pytest.approx(value.item(), rel=1e-12), name
    expected = adv + 5.0 * rec + 2.0 * cls
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)

    got = torch.autograd.grad(loss, (s, shift))
    want = torch.autograd.grad(expected, (s, shift))
    for a, b in zip(got, want, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- CycleGAN


class Scale(nn.Module):
    """``g(x) = scale * x`` (the identity at scale 1); counts its calls."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = _param(scale)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.scale * x


class Affine(nn.Module):
    """A patch discriminator ``D(x) = a * x + b`` (one score per pixel)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = _param(a), _param(b)

    def forward(self, x: Tensor) -> Tensor:
        return self.a * x + self.b


@pytest.fixture
def xab() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(5)
    return (
        torch.rand(2, 1, 3, 3, dtype=DT, generator=gen) * 2 - 1,
        torch.rand(2, 1, 3, 3, dtype=DT, generator=gen) * 2 - 1,
    )


def test_lsgan_loss_values() -> None:
    pred = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
    assert lsgan_loss(pred, 1.0).item() == pytest.approx((1 + 0 + 1) / 3, rel=1e-12)
    assert lsgan_loss(pred, 0.0).item() == pytest.approx((0 + 1 + 4) / 3, rel=1e-12)
    patches = torch.full((2, 1, 2, 2), 0.5)
    assert lsgan_loss(patches, 1.0).item() == 0.25 and lsgan_loss(patches, 0.0).item() == 0.25


def test_cyclegan_d_loss_is_half_the_sum(xab) -> None:
    x_real, x = xab
    g = Scale(0.5)
    x_fake = g(x)  # still attached to G's graph
    disc = Affine(2.0, 0.25)
    loss, parts = cyclegan_d_loss(disc, x_real, x_fake)
    assert set(parts) == {"real", "fake"} and _all_detached_scalars(parts)
    real = ((2.0 * x_real + 0.25 - 1) ** 2).mean().item()
    fake = ((2.0 * 0.5 * x + 0.25) ** 2).mean().item()
    assert parts["real"].item() == pytest.approx(real, rel=1e-12)
    assert parts["fake"].item() == pytest.approx(fake, rel=1e-12)
    assert loss.item() == pytest.approx(0.5 * (real + fake), rel=1e-12)
    loss.backward()
    assert disc.a.grad.abs() > 0 and g.scale.grad is None  # the fake is detached


def test_cyclegan_g_loss_with_identity_generators(xab) -> None:
    x_a, x_b = xab
    g_ab, g_ba = Scale(1.0), Scale(1.0)
    d_a, d_b = Affine(0.5, 0.0), Affine(2.0, 0.25)
    loss, parts, fake_b, fake_a = cyclegan_g_loss(g_ab, g_ba, d_a, d_b, x_a, x_b)
    assert set(parts) == {"adv_a", "adv_b", "cyc_a", "cyc_b", "idt_a", "idt_b"} and _all_detached_scalars(
        parts
    )
    for name in ("cyc_a", "cyc_b", "idt_a", "idt_b"):
        assert parts[name].item() == 0.0, name
    adv_a = ((2.0 * x_a + 0.25 - 1) ** 2).mean().item()  # d_b judges fake_b = g_ab(x_a) = x_a
    adv_b = ((0.5 * x_b - 1) ** 2).mean().item()  # d_a judges fake_a = g_ba(x_b) = x_b
    assert parts["adv_a"].item() == pytest.approx(adv_a, rel=1e-12)
    assert parts["adv_b"].item() == pytest.approx(adv_b, rel=1e-12)
    assert loss.item() == pytest.approx(adv_a + adv_b, rel=1e-12)
    assert not fake_b.requires_grad and not fake_a.requires_grad
    torch.testing.assert_close(fake_b, x_a, rtol=0, atol=0)
    torch.testing.assert_close(fake_a, x_b, rtol=0, atol=0)


def test_cyclegan_g_loss_weighted_terms_by_hand(xab) -> None:
    x_a, x_b = xab
    g_ab, g_ba = Scale(2.0), Scale(0.25)
    d_a, d_b = Affine(0.5, 0.0), Affine(2.0, 0.25)
    loss, parts, fake_b, fake_a = cyclegan_g_loss(
        g_ab, g_ba, d_a, d_b, x_a, x_b, lambda_cyc=3.0, lambda_idt=0.5
    )
    mean_a, mean_b = x_a.abs().mean().item(), x_b.abs().mean().item()
    expected = {
        "adv_a": ((2.0 * 2.0 * x_a + 0.25 - 1) ** 2).mean().item(),
        "adv_b": ((0.5 * 0.25 * x_b - 1) ** 2).mean().item(),
        "cyc_a": 3.0 * 0.5 * mean_a,  # rec_a = x_a / 2
        "cyc_b": 3.0 * 0.5 * mean_b,  # rec_b = x_b / 2
        "idt_a": 3.0 * 0.5 * mean_b,  # |g_ab(x_b) - x_b| = |x_b|, weighted lambda_cyc * lambda_idt
        "idt_b": 3.0 * 0.5 * 0.75 * mean_a,  # |g_ba(x_a) - x_a| = 3/4 |x_a|
    }
    for name, value in expected.items():
        assert parts[name].item() == pytest.approx(value, rel=1e-12), name
    assert loss.item() == pytest.approx(sum(expected.values()), rel=1e-12)
    assert g_ab.calls == 3 and g_ba.calls == 3  # translate, reconstruct, identity
    torch.testing.assert_close(fake_b, 2.0 * x_a)
    torch.testing.assert_close(fake_a, 0.25 * x_b)
    loss.backward()
    assert g_ab.scale.grad.abs() > 0 and g_ba.scale.grad.abs() > 0


def test_cyclegan_g_loss_without_identity_skips_the_passes(xab) -> None:
    x_a, x_b = xab
    g_ab, g_ba = Scale(2.0), Scale(0.25)
    d_a, d_b = Affine(0.5, 0.0), Affine(2.0, 0.25)
    loss, parts, _, _ = cyclegan_g_loss(g_ab, g_ba, d_a, d_b, x_a, x_b, lambda_cyc=3.0, lambda_idt=0.0)
    assert g_ab.calls == 2 and g_ba.calls == 2
    assert parts["idt_a"].item() == 0.0 and parts["idt_b"].item() == 0.0
    others = parts["adv_a"] + parts["adv_b"] + parts["cyc_a"] + parts["cyc_b"]
    assert loss.item() == pytest.approx(others.item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"lambda_idt=-0.5 must be >= 0"):
        cyclegan_g_loss(g_ab, g_ba, d_a, d_b, x_a, x_b, lambda_idt=-0.5)


# ---------------------------------------------------------------- CycleGAN's image pool


def _ids(images: Tensor) -> list[int]:
    """Image k is filled with the value k: read each image's id back."""
    return [int(im.flatten()[0].item()) for im in images]


def _batch(first_id: int, n: int = 4) -> Tensor:
    return (
        torch.arange(first_id, first_id + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    )


def test_pool_size_zero_passes_through() -> None:
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    images, pool = _batch(0), []
    assert pool_query(pool, images, 0, gen) is images
    assert pool == [] and torch.equal(gen.get_state(), state)
    with pytest.raises(ValueError, match=r"pool_size=-1 must be >= 0"):
        pool_query(pool, images, -1, gen)


def test_pool_fills_first_without_drawing() -> None:
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    pool: list[Tensor] = []
    scale = nn.Parameter(torch.ones(()))
    images = scale * _batch(0, 3)  # attached to a graph
    out = pool_query(pool, images, 5, gen)
    assert _ids(out) == [0, 1, 2] and not out.requires_grad
    assert _ids(torch.stack(pool)) == [0, 1, 2] and all(
        p.shape == (1, 2, 2) and not p.requires_grad for p in pool
    )
    assert torch.equal(gen.get_state(), state)  # no draw while the pool fills
    with torch.no_grad():
        images.add_(100)  # the pool holds copies
    assert _ids(torch.stack(pool)) == [0, 1, 2]
    # the next batch completes the pool (ids 3, 4) and then draws for ids 5 and 6
    out = pool_query(pool, _batch(3), 5, gen)
    assert _ids(out)[:2] == [3, 4] and len(pool) == 5
    assert not torch.equal(gen.get_state(), state)


def _run_pool(seed: int, num_batches: int = 6, pool_size: int = 3) -> tuple[list[list[int]], list[int]]:
    """Query ``num_batches`` batches of 4 fresh images; check each answer against the pool it came from."""
    gen = torch.Generator().manual_seed(seed)
    pool: list[Tensor] = []
    outs = []
    for k in range(num_batches):
        new = _batch(4 * k)
        stored = set(_ids(torch.stack(pool))) if pool else set()
        out = _ids(pool_query(pool, new, pool_size, gen))
        for new_id, got in zip(_ids(new), out, strict=True):  # replay the semantics on the ids
            if len(stored) < pool_size:
                assert got == new_id
                stored.add(new_id)
            elif got != new_id:
                assert got in stored  # a previously stored image comes back and the new one takes its place
                stored.remove(got)
                stored.add(new_id)
        assert set(_ids(torch.stack(pool))) == stored and len(pool) == pool_size
        outs.append(out)
    return outs, _ids(torch.stack(pool))


def test_pool_is_deterministic_under_a_seeded_generator() -> None:
    outs, final = _run_pool(seed=7)
    assert (outs, final) == _run_pool(seed=7)
    assert (outs, final) != _run_pool(seed=8)
    returned = [i for k, out in enumerate(outs) for i in out if i not in range(4 * k, 4 * k + 4)]
    assert returned  # some images came from the pool ...
    assert (
        sum(i in range(4 * k, 4 * k + 4) for k, out in enumerate(outs) for i in out) > 3
    )  # ... some are new


def test_pool_draws_rand_then_randint_from_the_generator() -> None:
    pool_size, gen = 2, torch.Generator().manual_seed(11)
    pool = [torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), -2.0)]  # full: every image draws
    out = _ids(pool_query(pool, _batch(0, 6), pool_size, gen))
    replay, expected, stored = torch.Generator().manual_seed(11), [], [-1, -2]
    for new_id in range(6):
        if torch.rand((), generator=replay).item() > 0.5:
            idx = int(torch.randint(pool_size, (), generator=replay).item())
            expected.append(stored[idx])
            stored[idx] = new_id
        else:
            expected.append(new_id)
    assert out == expected and _ids(torch.stack(pool)) == stored
    assert out != list(range(6))  # the seed swaps at least once


# ---------------------------------------------------------------- RSGAN


class MeanCritic(nn.Module):
    """``C(x) = k * mean(x)`` per image, returned as ``(B, 1)`` logits."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = _param(k)

    def forward(self, x: Tensor) -> Tensor:
        return self.k * x.mean(dim=(1, 2, 3)).unsqueeze(1)


class GainGen(nn.Module):
    """``G(z) = gain * z`` reshaped to ``(B, 1, 2, 2)``; z ``(B, 4)``."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = _param(gain)

    def forward(self, z: Tensor) -> Tensor:
        return (self.gain * z).view(-1, 1, 2, 2)


def test_rsgan_losses_at_equal_scores_are_log2() -> None:
    z = torch.randn(3, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    critic, g = MeanCritic(1.7), GainGen(0.5)
    x_real = (0.5 * z).view(3, 1, 2, 2)  # exactly G(z): equal scores
    loss, parts = rsgan_d_loss(critic, g, x_real, z)
    assert set(parts) == {"real_minus_fake"} and _all_detached_scalars(parts)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-12) and parts["real_minus_fake"].item() == 0.0
    loss, parts = rsgan_g_loss(critic, g, x_real, z)
    assert set(parts) == {"adv"} and _all_detached_scalars(parts)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-12)


def test_rsgan_losses_at_known_score_differences() -> None:
    k = math.log(3)
    critic, g = MeanCritic(k), GainGen(0.5)
    x_real = torch.tensor([1.0, -2.0], dtype=DT).view(2, 1, 1, 1).expand(2, 1, 2, 2)  # scores log 3, -2 log 3
    z = torch.zeros(2, 4, dtype=DT)  # fakes are 0: scores 0
    loss, parts = rsgan_d_loss(critic, g, x_real, z)
    # softplus(-log 3) = log(4/3), softplus(2 log 3) = log 10
    assert loss.item() == pytest.approx(0.5 * (math.log(4 / 3) + math.log(10)), rel=1e-12)
    assert parts["real_minus_fake"].item() == pytest.approx(-0.5 * k, rel=1e-12)
    loss, _ = rsgan_g_loss(critic, g, x_real, z)
    # softplus(log 3) = log 4, softplus(-2 log 3) = log(10/9)
    assert loss.item() == pytest.approx(0.5 * (math.log(4) + math.log(10 / 9)), rel=1e-12)


def test_rsgan_gradients() -> None:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, 4, dtype=DT, generator=gen)
    x_real = torch.rand(3, 1, 2, 2, dtype=DT, generator=gen) * 2 - 1
    critic, g = MeanCritic(1.5), GainGen(0.8)

    loss, _ = rsgan_g_loss(critic, g, x_real, z)
    loss.backward()
    # by hand: d/dgain mean softplus(-(k gain m_b - r_b)) = mean(-sigmoid(-(d_b)) * k * m_b), m_b = mean(z_b)
    m, r = z.mean(dim=1), 1.5 * x_real.mean(dim=(1, 2, 3))
    d = 1.5 * 0.8 * m - r
    expected = (-torch.sigmoid(-d) * 1.5 * m).mean()
    assert g.gain.grad.item() == pytest.approx(expected.item(), rel=1e-10)
    assert expected.abs().item() > 1e-3

    critic.zero_grad()
    g.zero_grad()
    loss, _ = rsgan_d_loss(critic, g, x_real, z)
    loss.backward()
    assert critic.k.grad.abs() > 0 and g.gain.grad is None  # fakes made under no_grad
    with pytest.raises(ValueError, match=r"real and fake critic outputs must pair up; got 3 and 2 scores"):
        rsgan_d_loss(critic, g, x_real, z[:2])
