"""StyleGAN2 networks: the reference's parameter counts (NVlabs/stylegan2-ada-pytorch, class-conditional with 3
classes), shapes, the resampling and modulation against independent computations, truncation and w_avg."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medsg_lib.models import count_parameters
from medsg_lib.models.stylegan2 import (
    MappingNetwork,
    MinibatchStd,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
)
from medsg_lib.models.stylegan2_layers import (
    conv2d_resample,
    modulated_conv2d,
    normalize_2nd_moment,
    resample_filter,
    upsample2d,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------- parameter counts: the reference's, for the same arguments


@pytest.mark.parametrize(
    ("channels", "generator", "mapping", "discriminator"),
    [(1, 22_503_182, 789_504, 25_772_288), (3, 22_507_800, 789_504, 25_772_800)],
)
def test_auto_config_at_64_px_has_the_reference_parameter_counts(
    channels: int, generator: int, mapping: int, discriminator: int
) -> None:
    """cfg 'auto' at 64 px: channel_base 16384, channel_max 512, 2 mapping layers (D's label mapping: 8)."""
    g = StyleGAN2Generator(3, 64, channels, map_layers=2, channel_base=16384, channel_max=512)
    assert (count_parameters(g), count_parameters(g.mapping)) == (generator, mapping)
    assert count_parameters(g.synthesis) == generator - mapping
    assert g.num_ws == 10  # 1 + 2 * 4 convolutions and the last ToRGB
    d = StyleGAN2Discriminator(3, 64, channels, channel_base=16384, channel_max=512, mapping_layers=8)
    assert count_parameters(d) == discriminator


def test_paper256_config_has_the_reference_parameter_counts() -> None:
    g = StyleGAN2Generator(3, 256, 1, map_layers=8, channel_base=16384, channel_max=512)
    assert (count_parameters(g), count_parameters(g.mapping)) == (25_026_644, 2_365_440)
    assert (
        count_parameters(StyleGAN2Discriminator(3, 256, 1, channel_base=16384, channel_max=512)) == 26_366_400
    )


def test_shapes_and_bad_sizes() -> None:
    g = StyleGAN2Generator(3, 32, 1, z_dim=16, w_dim=16, channel_base=256, channel_max=32)
    d = StyleGAN2Discriminator(3, 32, 1, channel_base=256, channel_max=32, mbstd_group_size=2)
    z, c = torch.randn(4, 16), torch.eye(3)[[0, 1, 2, 0]]
    x = g(z, c)
    assert x.shape == (4, 1, 32, 32) and x.dtype == torch.float32
    assert d(x, c).shape == (4, 1)
    with pytest.raises(ValueError, match=r"img_size=48 must be a power of two >= 8"):
        StyleGAN2Generator(3, 48)
    with pytest.raises(ValueError, match=r"minibatch of 3 is not a multiple of the group size 2"):
        d(x[:3], c[:3])


# ---------------------------------------------------------------- building blocks against hand computations


def test_resample_filter_and_up_down_sampling_keep_a_constant() -> None:
    f = resample_filter()
    assert torch.allclose(f, torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64)
    x = torch.full((1, 2, 8, 8), 0.7)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full((1, 2, 12, 12), 0.7))  # away from the border
    w = torch.zeros(3, 2, 3, 3)
    w[:, :, 1, 1] = 1.0  # a centred delta: the convolution sums the two channels
    down = conv2d_resample(x, w, f, down=2)
    assert down.shape == (1, 3, 4, 4)
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full((1, 3, 2, 2), 1.4))
    upc = conv2d_resample(x, w, f, up=2)
    assert upc.shape == (1, 3, 16, 16)
    torch.testing.assert_close(upc[:, :, 3:-3, 3:-3], torch.full((1, 3, 10, 10), 1.4))


def test_modulated_convolution_equals_per_sample_weights() -> None:
    """The reference's fused path, written independently: per-sample modulated, demodulated weights in a grouped
    convolution."""
    x, weight, styles = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    ours = modulated_conv2d(x, weight, styles, resample_filter())
    w = weight[None] * styles[:, None, :, None, None]  # (B, O, I, 3, 3)
    w = w / (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).sqrt()
    fused = F.conv2d(x.reshape(1, 12, 8, 8), w.reshape(15, 4, 3, 3), padding=1, groups=3).reshape(3, 5, 8, 8)
    torch.testing.assert_close(ours, fused, rtol=1e-5, atol=1e-5)
    plain = modulated_conv2d(x, weight, styles, resample_filter(), demodulate=False)
    unnormalised = weight[None] * styles[:, None, :, None, None]
    expected = F.conv2d(x.reshape(1, 12, 8, 8), unnormalised.reshape(15, 4, 3, 3), padding=1, groups=3)
    torch.testing.assert_close(plain, expected.reshape(3, 5, 8, 8), rtol=1e-5, atol=1e-5)


def test_minibatch_std_by_hand() -> None:
    x = torch.randn(4, 6, 2, 2)
    out = MinibatchStd(group_size=2)(x)
    assert out.shape == (4, 7, 2, 2) and torch.equal(out[:, :6], x)
    # groups are images (0, 2) and (1, 3): the reference reshapes (G, n, ...) with G leading
    for group in ((0, 2), (1, 3)):
        pair = x[list(group)]
        expected = (pair.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for i in group:
            torch.testing.assert_close(out[i, 6], torch.full((2, 2), float(expected)))


def test_mapping_normalises_tracks_w_avg_and_truncates() -> None:
    torch.testing.assert_close(
        normalize_2nd_moment(torch.tensor([[3.0, 4.0]])).square().mean(), torch.tensor(1.0)
    )
    m = MappingNetwork(z_dim=8, c_dim=3, w_dim=8, num_ws=5, num_layers=2)
    z, c = torch.randn(6, 8), torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    torch.testing.assert_close(m(z * 10, c), m(z, c))  # z is normalised: its scale does not matter
    assert not torch.equal(m.w_avg, torch.zeros(8))  # training mode updated it
    m.eval()
    before = m.w_avg.clone()
    w = m(z, c)
    assert w.shape == (6, 5, 8) and torch.equal(m.w_avg, before)  # not in eval mode
    assert torch.equal(w[:, 0], w[:, 4])  # one w broadcast to every layer
    torch.testing.assert_close(m(z, c, truncation_psi=0.5), before + 0.5 * (w - before))
    torch.testing.assert_close(m(z, c, truncation_psi=0.0), before.expand(6, 5, 8))
    # equalised learning rate: the weights are N(0, 1) / lr_multiplier, scaled back at run time
    layer = m.layers[0]
    assert abs(float(layer.weight.detach().std()) * 0.01 - 1.0) < 0.1
    assert layer.weight_gain == pytest.approx(0.01 / math.sqrt(16))


def test_a_rank_share_that_is_not_a_multiple_of_the_mbstd_group_is_named() -> None:
    from helpers import tiny_cfg

    from medsg_lib.devices import DistInfo
    from medsg_lib.families import family_of, resolve
    from medsg_lib.families.base import Batch, StepContext
    from medsg_lib.training import build_train_state

    cfg = resolve(tiny_cfg("stylegan2", mbstd_group=2))
    state = build_train_state(cfg, torch.device("cpu"))
    z = torch.zeros(3, cfg.net.z_dim)
    batch = Batch(torch.zeros(3, 1, 32, 32), torch.zeros(3, dtype=torch.int64), z=(z,) * 6, seeds=(0,))
    ctx = StepContext(device=torch.device("cpu"), info=DistInfo(rank=0, world_size=2, local_rank=0))
    with pytest.raises(
        ValueError, match=r"^a batch of 3 per rank is not a multiple of StyleGAN2Config\.mbstd_group=2$"
    ):
        family_of(cfg).train_step(state, batch, cfg, ctx)
