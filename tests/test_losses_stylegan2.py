"""StyleGAN2-ADA's training pieces by hand: the path-length penalty, the EMA schedule, ADA's p update and its
augmentations, style mixing, the family's settings and its generation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_cfg

from medsg_lib.config import CLASS_NAMES, GenerateConfig
from medsg_lib.families import StyleGAN2Config, get_family, resolve
from medsg_lib.families.stylegan2 import mixed_ws, one_hot
from medsg_lib.generate import generate_batches
from medsg_lib.losses import ema_beta, path_length_penalty
from medsg_lib.models.ada import ADA_STRENGTHS, AugmentPipe, ada_adjust
from medsg_lib.models.stylegan2 import StyleGAN2Generator


def test_path_length_penalty_of_a_linear_generator_by_hand() -> None:
    """img = ws M: the gradient of <img, y> / sqrt(HW) w.r.t. ws is y M^T / sqrt(HW), for each image."""
    gen = torch.Generator().manual_seed(0)
    ws = torch.randn(2, 3, 4, generator=gen, requires_grad=True)  # (B, num_ws, w_dim)
    m = torch.randn(12, 6, generator=gen)
    img = (ws.flatten(1) @ m).reshape(2, 1, 2, 3)
    noise = torch.randn(2, 1, 2, 3, generator=gen)
    penalty, new_mean = path_length_penalty(img, ws, torch.tensor(0.5), 0.01, noise)
    grads = (noise.flatten(1) / math.sqrt(6)) @ m.T  # (B, 12)
    lengths = grads.reshape(2, 3, 4).square().sum(2).mean(1).sqrt()
    expected_mean = 0.5 + 0.01 * (lengths.mean() - 0.5)
    torch.testing.assert_close(new_mean, expected_mean)
    torch.testing.assert_close(penalty, (lengths - expected_mean).square())
    curved = torch.tanh(ws.flatten(1) @ m).reshape(2, 1, 2, 3)  # a non-linear G: the penalty reaches ws
    path_length_penalty(curved, ws, torch.tensor(0.5), 0.01, noise)[0].sum().backward()
    assert ws.grad is not None and float(ws.grad.abs().sum()) > 0


def test_ema_half_life_and_rampup() -> None:
    assert ema_beta(16, 10**6, 5.0, 0.05) == pytest.approx(0.5 ** (16 / 5000))  # the half-life: 5k images
    assert ema_beta(16, 16, 5.0, 0.05) == pytest.approx(0.5 ** (16 / 0.8))  # ramp: 5% of the 16 images seen
    assert ema_beta(16, 16, 5.0, None) == pytest.approx(0.5 ** (16 / 5000))
    cfg = StyleGAN2Config()
    assert cfg.ema_kimg_for(16) == 5.0 and cfg.gamma_for(64, 16) == pytest.approx(0.0512)
    assert StyleGAN2Config(r1_gamma=1.0, ema_kimg=20).gamma_for(64, 16) == 1.0


def test_ada_p_moves_one_step_toward_the_target_and_stays_in_0_1() -> None:
    step = 16 * 4 / 500_000
    assert ada_adjust(0.5, 0.7, 0.6, 16, 4, 500) == pytest.approx(
        0.5 + step
    )  # over-fitting: more augmentation
    assert ada_adjust(0.5, 0.2, 0.6, 16, 4, 500) == pytest.approx(0.5 - step)
    assert ada_adjust(0.5, 0.6, 0.6, 16, 4, 500) == 0.5
    assert ada_adjust(0.0, -1.0, 0.6, 16, 4, 500) == 0.0 and ada_adjust(1.0, 1.0, 0.6, 16, 4, 500) == 1.0
    assert ada_adjust(0.3, float("nan"), 0.6, 16, 4, 500) == 0.3
    pipe = AugmentPipe()
    pipe.record_signs(torch.tensor([2.0, 1.0, -3.0, 0.5]))  # mean sign 0.5 < 0.6
    pipe.p.fill_(0.2)
    assert pipe.adjust(0.6, 4, 1, 1.0) == 0.5
    assert float(pipe.p) == pytest.approx(0.2 - 4 / 1000) and float(pipe.sign_count) == 0


def test_augmentations_at_p_0_change_nothing_and_draw_the_same_count_of_numbers() -> None:
    x = torch.randn(4, 1, 16, 16)
    pipe = AugmentPipe()
    assert pipe(x, torch.Generator().manual_seed(0)) is x  # p = 0
    states = []
    for p in (0.01, 0.99):
        gen = torch.Generator().manual_seed(0)
        pipe.draw(4, p, gen)
        states.append(torch.rand(1, generator=gen))
    assert torch.equal(*states)  # the draws after it do not depend on p: a step is a function of its plan
    with pytest.raises(ValueError, match=r"unknown augmentation\(s\) \['xflip'\]"):
        AugmentPipe(("xint", "xflip"))


def test_brightness_and_contrast_by_hand_and_gradients_flow() -> None:
    x = torch.randn(8, 1, 16, 16, requires_grad=True)
    pipe = AugmentPipe(("brightness", "contrast"), initial_p=1.0)
    params = pipe.draw(8, 1.0, torch.Generator().manual_seed(3))
    out = pipe.apply(x, params)
    expected = x * params["contrast"][:, None, None, None] + params["brightness"][:, None, None, None]
    torch.testing.assert_close(out, expected)
    assert (params["scale"] == 1).all() and (params["xint"] == 0).all()  # not chosen: identity
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_geometric_augmentations_keep_chests_upright_and_unmirrored() -> None:
    """A left-to-right ramp (the heart's side is a left-right asymmetry) stays increasing left to right and top
    rows stay on top: no flip, no quarter turn; with p = 1 every image moved."""
    ramp_x = torch.linspace(-1, 1, 32).repeat(32, 1)  # (H, W), increasing with x
    ramp_y = ramp_x.T
    x = torch.stack([ramp_x, ramp_y])[:, None].repeat(32, 1, 1, 1)  # 64 images: 32 x-ramps, 32 y-ramps
    geometric = ("xint", "scale", "rotate", "aniso", "xfrac")
    out = AugmentPipe(geometric, initial_p=1.0)(x, torch.Generator().manual_seed(1))
    centred = lambda t: t - t.mean(dim=(-1, -2), keepdim=True)  # noqa: E731
    corr_x = (centred(out[0::2, 0]) * centred(ramp_x)).sum(dim=(-1, -2))
    corr_y = (centred(out[1::2, 0]) * centred(ramp_y)).sum(dim=(-1, -2))
    assert (corr_x > 0).all() and (corr_y > 0).all()
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 1e-3).all()
    assert ADA_STRENGTHS["rotate"] == 10.0


def test_style_mixing_takes_the_second_latents_w_from_the_cutoff_on() -> None:
    g = StyleGAN2Generator(3, 16, 1, z_dim=8, w_dim=8, channel_base=64, channel_max=8)
    z, z_mix, c = torch.randn(2, 8), torch.randn(2, 8), one_hot(torch.tensor([0, 2]))
    g.eval()  # no w_avg update, so the two calls below see the same mapping
    plain = g.mapping(z, c)
    assert torch.equal(mixed_ws(g, z, z_mix, c, 0.0, torch.Generator().manual_seed(0)), plain)
    mixed = mixed_ws(g, z, z_mix, c, 1.0, torch.Generator().manual_seed(0))
    other = g.mapping(z_mix, c)
    same = (mixed == plain).all(dim=(0, 2))
    assert same[0] and not same.all()  # layer 0 always keeps z's w
    cutoff = int(same.logical_not().nonzero()[0])
    assert same[:cutoff].all() and torch.equal(mixed[:, cutoff:], other[:, cutoff:])


def test_config_checks_and_the_family_settings() -> None:
    with pytest.raises(ValueError, match=r"StyleGAN2Config.truncation_psi=0 must be in \(0, 1\]"):
        StyleGAN2Config(truncation_psi=0)
    with pytest.raises(ValueError, match=r"StyleGAN2Config.style_mixing=1.5 must be in \[0, 1\]"):
        StyleGAN2Config(style_mixing=1.5)
    with pytest.raises(ValueError, match="target_class must be 'all' for model='stylegan2'"):
        resolve(tiny_cfg("stylegan2", target_class="Normal"))
    with pytest.raises(ValueError, match=r"batch_size=6 must be a multiple of StyleGAN2Config.mbstd_group=4"):
        resolve(tiny_cfg("stylegan2", batch_size=6, mbstd_group=4))
    family = get_family("stylegan2")
    cfg = tiny_cfg("stylegan2")
    opts = family.optimizers(cfg, family.build(cfg))
    g, d = opts["generator"].param_groups[0], opts["discriminator"].param_groups[0]
    assert g["lr"] == pytest.approx(0.0025 * 2 / 3) and d["lr"] == pytest.approx(
        0.0025 * 2 / 3
    )  # intervals 2
    assert g["betas"] == pytest.approx((0.0, 0.99 ** (2 / 3)))
    assert family.targets(cfg) == CLASS_NAMES and family.class_conditional


def test_generation_is_the_same_image_whatever_the_batch_and_truncation_pulls_to_the_average() -> None:
    cfg = tiny_cfg("stylegan2")
    family = get_family("stylegan2")
    torch.manual_seed(0)
    nets = {"generator": family.build(cfg)["generator"]}
    nets["generator"].mapping.w_avg.normal_()  # as after training
    items = [
        it for c in CLASS_NAMES for it in family.plan_items(cfg, GenerateConfig(num_per_class=3), c, None)
    ]
    one = torch.cat([x for _, x in generate_batches(nets, cfg, items, batch_size=1)])
    four = torch.cat([x for _, x in generate_batches(nets, cfg, items, batch_size=4)])
    assert one.shape == (9, 1, 32, 32)
    torch.testing.assert_close(one, four, atol=1e-5, rtol=0)
    truncated = tiny_cfg("stylegan2", truncation_psi=0.01)
    near_avg = torch.cat([x for _, x in generate_batches(nets, truncated, items, batch_size=9)])
    same_class = near_avg[0:3]  # one class: almost the image of the average w
    assert float((same_class - same_class[0]).abs().max()) < float((one[0:3] - one[0]).abs().max()) / 10
