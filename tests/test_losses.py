"""Losses: hand-computed values, the composition of the per-step objectives, and where gradients go."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medsg_lib.families import get_family
from medsg_lib.losses import (
    adv_loss,
    baseline_d_loss,
    baseline_g_loss,
    cycle_loss,
    diversity_loss,
    lambda_ds_at,
    medsg_d_loss,
    medsg_g_loss,
    r1_reg,
    style_recon_loss,
)
from medsg_lib.models import MLPDiscriminator, MLPGenerator
from medsg_lib.profiles import get_profile

B, S = 4, 32


@pytest.fixture
def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return get_family("medsg").build(get_profile("smoke").train_config("medsg"))  # 32 px, widths 8..32


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    cfg = get_profile("smoke").train_config("medsg")
    return {
        "x_real": torch.rand(B, 1, S, S, generator=gen) * 2 - 1,  # (B, 1, 32, 32) in [-1, 1]
        "y_org": torch.tensor([0, 1, 2, 0]),
        "y_trg": torch.tensor([1, 2, 0, 2]),
        "z1": torch.randn(B, cfg.net.latent_dim, generator=gen),
        "z2": torch.randn(B, cfg.net.latent_dim, generator=gen),
        "x_ref1": torch.rand(B, 1, S, S, generator=gen) * 2 - 1,
        "x_ref2": torch.rand(B, 1, S, S, generator=gen) * 2 - 1,
    }


def _grad_norm(net: nn.Module) -> float:
    return sum(p.grad.abs().sum().item() for p in net.parameters() if p.grad is not None)


def _has_grad(net: nn.Module) -> bool:
    return any(p.grad is not None for p in net.parameters())


# ---------------------------------------------------------------- small pure functions


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_adv_loss_at_logit_zero_is_log2(target: float) -> None:
    assert adv_loss(torch.zeros(5), target).item() == pytest.approx(math.log(2), abs=1e-7)


def test_adv_loss_values() -> None:
    assert adv_loss(torch.full((3,), 40.0), 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert adv_loss(torch.full((3,), 40.0), 0.0).item() == pytest.approx(40.0, rel=1e-6)
    # sigmoid(log 3) = 3/4: -log(3/4) for target 1 and -log(1/4) for target 0; mean over the batch
    logits = torch.tensor([math.log(3), math.log(3)], dtype=torch.float64)
    assert adv_loss(logits, 1.0).item() == pytest.approx(math.log(4 / 3), rel=1e-12)
    assert adv_loss(logits, 0.0).item() == pytest.approx(math.log(4), rel=1e-12)


def test_r1_of_a_linear_discriminator_is_half_squared_weight_norm() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=gen).requires_grad_(True)
    d_out = (x * w).sum(dim=(1, 2, 3))  # D(x) = <w, x>, (B,)
    r1 = r1_reg(d_out, x)
    assert r1.item() == pytest.approx(0.5 * w.pow(2).sum().item(), rel=1e-12)
    r1.backward()  # create_graph=True: the penalty is differentiable w.r.t. D's weights, d/dw = w
    torch.testing.assert_close(w.grad, w.detach())


def test_r1_of_a_quadratic_discriminator() -> None:
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64).requires_grad_(True)
    d_out = 0.5 * x.pow(2).sum(dim=(1, 2, 3))  # gradient is x itself
    expected = 0.5 * x.detach().pow(2).sum(dim=(1, 2, 3)).mean()
    assert r1_reg(d_out, x).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize(("step", "value"), [(0, 2.0), (50, 1.0), (75, 0.5), (100, 0.0), (250, 0.0)])
def test_lambda_ds_decays_linearly_to_zero(step: int, value: float) -> None:
    assert lambda_ds_at(step, 2.0, 100) == pytest.approx(value, abs=1e-12)


def test_lambda_ds_rejects_zero_decay() -> None:
    with pytest.raises(ValueError, match=r"decay_iters=0 must be > 0"):
        lambda_ds_at(0, 2.0, 0)


def test_l1_terms_on_constant_tensors() -> None:
    assert style_recon_loss(torch.full((2, 8), 3.0), torch.ones(2, 8)).item() == pytest.approx(2.0)
    assert diversity_loss(torch.full((2, 1, 4, 4), 0.5), torch.full((2, 1, 4, 4), -0.25)).item() == 0.75
    assert cycle_loss(torch.full((2, 3, 4, 4), -1.0), torch.ones(2, 3, 4, 4)).item() == 2.0
    half = torch.cat([torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)])  # |.| is 1 on half the entries
    assert cycle_loss(half, torch.zeros(2, 1, 2, 2)).item() == 0.5


# ---------------------------------------------------------------- Med-StyleGAN2 objectives


@pytest.mark.parametrize("mode", ["latent", "reference"])
def test_medsg_d_loss_composition_and_gradients(nets, batch, mode: str) -> None:
    guide = {"z_trg": batch["z1"]} if mode == "latent" else {"x_ref": batch["x_ref1"]}
    x_real = batch["x_real"]
    loss, parts = medsg_d_loss(nets, x_real, batch["y_org"], batch["y_trg"], **guide, lambda_reg=3.0)
    assert all(v.ndim == 0 and not v.requires_grad for v in parts.values())  # logged later, no host sync
    parts = {k: float(v) for k, v in parts.items()}
    assert set(parts) == {"real", "fake", "reg"}
    assert all(math.isfinite(v) for v in parts.values()) and parts["reg"] > 0
    assert loss.item() == pytest.approx(parts["real"] + parts["fake"] + 3.0 * parts["reg"], rel=1e-5)
    assert not x_real.requires_grad  # the caller's tensor is untouched

    # the terms are those of eq. (1) computed by hand
    d = nets["discriminator"]
    with torch.no_grad():
        if mode == "latent":
            s_trg = nets["mapping_network"](batch["z1"], batch["y_trg"])
        else:
            s_trg = nets["style_encoder"](batch["x_ref1"], batch["y_trg"])
        x_fake = nets["generator"](x_real, s_trg)
        assert parts["fake"] == pytest.approx(adv_loss(d(x_fake, batch["y_trg"]), 0.0).item(), rel=1e-5)
        assert parts["real"] == pytest.approx(adv_loss(d(x_real, batch["y_org"]), 1.0).item(), rel=1e-5)

    loss.backward()
    assert _grad_norm(d) > 0
    for name in ("generator", "mapping_network", "style_encoder"):
        assert not _has_grad(nets[name]), name


@pytest.mark.parametrize("mode", ["latent", "reference"])
def test_medsg_g_loss_composition_and_gradients(nets, batch, mode: str) -> None:
    if mode == "latent":
        guide = {"z_trgs": (batch["z1"], batch["z2"])}
    else:
        guide = {"x_refs": (batch["x_ref1"], batch["x_ref2"])}
    args = (nets, batch["x_real"], batch["y_org"], batch["y_trg"])
    loss, parts = medsg_g_loss(*args, **guide, lambda_sty=0.5, lambda_ds=2.0, lambda_cyc=3.0)
    assert all(v.ndim == 0 and not v.requires_grad for v in parts.values())
    parts = {k: float(v) for k, v in parts.items()}
    assert set(parts) == {"adv", "sty", "ds", "cyc"}
    assert all(math.isfinite(v) for v in parts.values()) and parts["ds"] > 0
    expected = parts["adv"] + 0.5 * parts["sty"] - 2.0 * parts["ds"] + 3.0 * parts["cyc"]
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)

    # cycle term by hand: G(G(x, s_trg), E(x, y_org)) vs x
    if mode == "latent":
        with torch.no_grad():
            g, e = nets["generator"], nets["style_encoder"]
            x_fake = g(batch["x_real"], nets["mapping_network"](batch["z1"], batch["y_trg"]))
            x_rec = g(x_fake, e(batch["x_real"], batch["y_org"]))
            assert parts["cyc"] == pytest.approx(cycle_loss(x_rec, batch["x_real"]).item(), rel=1e-5)

    loss.backward()
    assert _grad_norm(nets["generator"]) > 0
    assert _grad_norm(nets["style_encoder"]) > 0
    if mode == "latent":
        assert _grad_norm(nets["mapping_network"]) > 0
    else:
        assert not _has_grad(nets["mapping_network"])


def test_medsg_g_loss_diversity_term_is_subtracted(nets, batch) -> None:
    args = (nets, batch["x_real"], batch["y_org"], batch["y_trg"])
    z_trgs = (batch["z1"], batch["z2"])
    loss0, parts = medsg_g_loss(*args, z_trgs=z_trgs, lambda_ds=0.0)
    loss1, _ = medsg_g_loss(*args, z_trgs=z_trgs, lambda_ds=1.0)
    assert (loss0 - loss1).item() == pytest.approx(float(parts["ds"]), rel=1e-5)
    # the same latent twice: no diversity
    _, same = medsg_g_loss(*args, z_trgs=(batch["z1"], batch["z1"]))
    assert same["ds"] == 0.0


def test_exactly_one_guide(nets, batch) -> None:
    args = (nets, batch["x_real"], batch["y_org"], batch["y_trg"])
    msg = r"give exactly one of z_trg \(latent-guided\) or x_ref \(reference-guided\)"
    with pytest.raises(ValueError, match=msg):
        medsg_d_loss(*args)
    with pytest.raises(ValueError, match=msg):
        medsg_d_loss(*args, z_trg=batch["z1"], x_ref=batch["x_ref1"])
    msg = r"give exactly one of z_trgs \(latent-guided\) or x_refs \(reference-guided\)"
    with pytest.raises(ValueError, match=msg):
        medsg_g_loss(*args)
    with pytest.raises(ValueError, match=msg):
        medsg_g_loss(*args, z_trgs=(batch["z1"], batch["z2"]), x_refs=(batch["x_ref1"], batch["x_ref2"]))
    with pytest.raises(ValueError, match=r"must be a pair \(two latents or two references\); got 1"):
        medsg_g_loss(*args, z_trgs=(batch["z1"],))


def test_one_discriminator_step_lowers_its_loss(nets, batch) -> None:
    args = (nets, batch["x_real"], batch["y_org"], batch["y_trg"])
    d = nets["discriminator"]
    opt = torch.optim.SGD(d.parameters(), lr=1e-3)
    before, _ = medsg_d_loss(*args, z_trg=batch["z1"])
    opt.zero_grad()
    before.backward()
    opt.step()
    after, _ = medsg_d_loss(*args, z_trg=batch["z1"])
    assert after.item() < before.item()


# ---------------------------------------------------------------- baselines


def test_baseline_losses_at_zero_logits_and_gradients() -> None:
    torch.manual_seed(0)
    g = MLPGenerator(nz=8, hidden=32, img_size=16, img_channels=1)
    d = MLPDiscriminator(hidden=32, img_size=16, img_channels=1)
    last = d.main[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)  # every logit is 0
    x_real, z = torch.rand(3, 1, 16, 16) * 2 - 1, torch.randn(3, 8)

    loss, parts = baseline_d_loss(d, g, x_real, z)
    assert set(parts) == {"real", "fake"}
    assert loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    loss.backward()
    assert _grad_norm(d) > 0 and not _has_grad(g)

    d.zero_grad()
    loss, parts = baseline_g_loss(d, g, z)
    assert set(parts) == {"adv"} and parts["adv"] == pytest.approx(math.log(2), rel=1e-6)
    nn.init.constant_(last.weight, 0.01)  # let gradients flow back into G
    loss, _ = baseline_g_loss(d, g, z)
    loss.backward()
    assert _grad_norm(g) > 0
