"""Networks: shapes, exact reference parameter counts, and analytic checks of the building blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medsg_lib.config import TrainConfig
from medsg_lib.families import get_family, resolve
from medsg_lib.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    Discriminator,
    Generator,
    MappingNetwork,
    MLPDiscriminator,
    MLPGenerator,
    StyleEncoder,
    count_parameters,
)
from medsg_lib.models.medsg import AdaIN, AdainResBlk, ResBlk
from medsg_lib.profiles import get_profile

NARROW = {"base_width": 8, "max_width": 32}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("img_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_medsg_shapes(img_size: int, channels: int) -> None:
    g = Generator(img_size, channels, **NARROW, style_dim=16)
    f = MappingNetwork(latent_dim=8, style_dim=16, num_domains=3, hidden_dim=32)
    e = StyleEncoder(img_size, channels, **NARROW, style_dim=16, num_domains=3)
    d = Discriminator(img_size, channels, **NARROW, num_domains=3)
    x = torch.rand(2, channels, img_size, img_size) * 2 - 1  # (B, C, H, W) in [-1, 1]
    y = torch.tensor([0, 2])
    s = f(torch.randn(2, 8), y)
    assert s.shape == (2, 16)
    assert g(x, s).shape == x.shape
    assert e(x, y).shape == (2, 16)
    assert d(x, y).shape == (2,)


@pytest.mark.parametrize(("img_size", "num_down"), [(16, 0), (32, 1), (64, 2), (256, 4)])
def test_generator_number_of_downsampling_stages(img_size: int, num_down: int) -> None:
    g = Generator(img_size, 1, base_width=4, max_width=8, style_dim=4)
    assert sum(block.downsample for block in g.encode) == num_down
    assert sum(block.upsample for block in g.decode) == num_down
    assert len(g.encode) == len(g.decode) == num_down + 2  # + 2 bottleneck blocks each
    # the decoder starts with the bottleneck and ends with up-sampling blocks
    assert not g.decode[0].upsample and (num_down == 0 or g.decode[-1].upsample)


def test_generator_has_no_batch_coupling() -> None:
    """Instance norm only: an image's translation does not depend on the rest of the batch."""
    g = Generator(32, 1, **NARROW, style_dim=16)
    x, s = torch.randn(3, 1, 32, 32), torch.randn(3, 16)
    torch.testing.assert_close(g(x, s)[1:2], g(x[1:2], s[1:2]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- parameter counts (docs/paper.md reference table)


@pytest.mark.parametrize(
    ("img_size", "n_g", "n_e", "n_d"),
    [(256, 33_892_995, 20_949_760, 20_852_803), (64, 32_634_883, 20_360_640, 20_263_683)],
)
def test_reference_parameter_counts(img_size: int, n_g: int, n_e: int, n_d: int) -> None:
    assert count_parameters(Generator(img_size, 3)) == n_g
    assert count_parameters(StyleEncoder(img_size, 3, num_domains=3)) == n_e
    assert count_parameters(Discriminator(img_size, 3, num_domains=3)) == n_d
    assert count_parameters(MappingNetwork(num_domains=3)) == 3_259_072


def test_medsg_family_builds_the_reference_counts() -> None:
    cfg = resolve(TrainConfig(model="medsg", img_size=64, channels=3))
    nets = get_family(cfg.model).build(cfg)
    counts = {name: count_parameters(net) for name, net in nets.items()}
    assert counts == {
        "generator": 32_634_883,
        "mapping_network": 3_259_072,
        "style_encoder": 20_360_640,
        "discriminator": 20_263_683,
    }


def test_dcgan_parameter_counts_match_the_standard_64px_dcgan() -> None:
    """nz 100, ngf = ndf = 64, RGB, 64 px: the well-known DCGAN sizes (bias-free convs + batch norm)."""
    assert count_parameters(DCGANGenerator(100, 64, 3, 64)) == 3_576_704
    assert count_parameters(DCGANDiscriminator(64, 3, 64)) == 2_765_568


def test_mlp_gan_parameter_counts() -> None:
    nz, h, pixels = 100, 64, 1 * 32 * 32
    g_layers = [(nz, h // 4), (h // 4, h // 2), (h // 2, h), (h, pixels)]
    d_layers = [(pixels, h), (h, h // 2), (h // 2, 1)]
    assert count_parameters(MLPGenerator(nz, h, 32, 1)) == sum(a * b + b for a, b in g_layers)
    assert count_parameters(MLPDiscriminator(h, 32, 1)) == sum(a * b + b for a, b in d_layers)


# ---------------------------------------------------------------- bad inputs


def test_generator_refuses_w_hpf() -> None:
    with pytest.raises(
        ValueError, match=r"w_hpf=1\.0 is not supported: w_hpf > 0 needs StarGAN v2's face-landmark"
    ):
        Generator(32, 1, **NARROW, w_hpf=1.0)


@pytest.mark.parametrize("img_size", [8, 48])
def test_bad_img_size(img_size: int) -> None:
    with pytest.raises(ValueError, match=rf"img_size={img_size} must be a power of two >= 16"):
        Discriminator(img_size, 1, **NARROW)
    with pytest.raises(ValueError, match=rf"img_size={img_size} must be a power of two >= 16"):
        DCGANGenerator(img_size=img_size)


# ---------------------------------------------------------------- residual blocks and AdaIN


def test_resblk_identity_shortcut_is_scaled_by_inv_sqrt2() -> None:
    block = ResBlk(4, 4, normalize=True)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)  # residual == 0
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(block(x), x / math.sqrt(2))


def test_resblk_downsampling_shortcut_is_projection_then_avgpool() -> None:
    block = ResBlk(2, 4, downsample=True)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    with torch.no_grad():
        block.conv1x1.weight.zero_()
        block.conv1x1.weight[:2, :2, 0, 0] = torch.eye(2)  # copy the 2 channels, 2 zero channels
    x = torch.randn(2, 2, 8, 8)
    expected = torch.cat([F.avg_pool2d(x, 2), torch.zeros(2, 2, 4, 4)], dim=1) / math.sqrt(2)
    torch.testing.assert_close(block(x), expected)
    assert block.conv1x1.bias is None


def test_resblk_equals_functional_definition() -> None:
    """(shortcut + residual) / sqrt(2) with the layer order of docs/paper.md, written out with functional ops."""
    block = ResBlk(3, 5, normalize=True, downsample=True)
    with torch.no_grad():  # non-trivial affine instance-norm parameters
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 8, 8)

    def norm(h: torch.Tensor, m: torch.nn.InstanceNorm2d) -> torch.Tensor:
        return F.instance_norm(h, weight=m.weight, bias=m.bias, eps=1e-5)

    h = F.conv2d(F.leaky_relu(norm(x, block.norm1), 0.2), block.conv1.weight, block.conv1.bias, padding=1)
    h = F.leaky_relu(norm(F.avg_pool2d(h, 2), block.norm2), 0.2)
    residual = F.conv2d(h, block.conv2.weight, block.conv2.bias, padding=1)
    shortcut = F.avg_pool2d(F.conv2d(x, block.conv1x1.weight), 2)
    torch.testing.assert_close(block(x), (shortcut + residual) / math.sqrt(2), rtol=1e-5, atol=1e-5)


def test_adain_with_zero_style_weights_is_instance_norm() -> None:
    adain = AdaIN(style_dim=6, num_features=4)
    torch.nn.init.zeros_(adain.fc.weight)
    torch.nn.init.zeros_(adain.fc.bias)
    x, s = torch.randn(2, 4, 5, 5) * 3 + 1, torch.randn(2, 6)
    torch.testing.assert_close(adain(x, s), F.instance_norm(x, eps=1e-5))


def test_adain_scale_and_shift_from_the_style() -> None:
    adain = AdaIN(style_dim=6, num_features=4)
    torch.nn.init.zeros_(adain.fc.weight)
    with torch.no_grad():
        adain.fc.bias.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0]))  # gamma 1, beta -2
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(adain(x, torch.randn(2, 6)), 2 * F.instance_norm(x, eps=1e-5) - 2)


def test_adain_resblk_upsampling_shortcut() -> None:
    block = AdainResBlk(4, 4, style_dim=6, upsample=True)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 4, 4, 4)
    out = block(x, torch.randn(2, 6))
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=2, mode="nearest") / math.sqrt(2))
    assert out.shape == (2, 4, 8, 8)


# ---------------------------------------------------------------- domain heads


def test_mapping_network_uses_only_the_head_of_y() -> None:
    f = MappingNetwork(latent_dim=8, style_dim=16, num_domains=3, hidden_dim=32)
    z, y = torch.randn(4, 8), torch.tensor([1, 1, 2, 0])
    before = f(z, y)
    with torch.no_grad():
        for p in f.unshared[0].parameters():
            p.add_(1.0)
    after = f(z, y)
    torch.testing.assert_close(after[:3], before[:3])  # domains 1, 2 unchanged
    assert not torch.allclose(after[3], before[3])  # domain 0 changed
    torch.testing.assert_close(after[2], f.unshared[2](f.shared(z[2:3]))[0])


def test_style_encoder_uses_only_the_head_of_y() -> None:
    e = StyleEncoder(32, 1, **NARROW, style_dim=5, num_domains=3)
    with torch.no_grad():
        for k, head in enumerate(e.unshared):
            head.weight.zero_()
            head.bias.fill_(float(k))
    y = torch.tensor([2, 0, 1])
    s = e(torch.randn(3, 1, 32, 32), y)
    torch.testing.assert_close(s, y.float()[:, None].expand(3, 5))


def test_discriminator_returns_the_logit_of_domain_y() -> None:
    d = Discriminator(32, 1, **NARROW, num_domains=3)
    x = torch.randn(4, 1, 32, 32)
    y = torch.tensor([2, 0, 1, 2])
    all_logits = d.all_logits(x)
    assert all_logits.shape == (4, 3)
    torch.testing.assert_close(d(x, y), all_logits[torch.arange(4), y])
    last = d.main[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(d(x, y), y.float())


# ---------------------------------------------------------------- baselines


@pytest.mark.parametrize("img_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes_and_range(img_size: int, channels: int) -> None:
    g = DCGANGenerator(nz=16, ngf=4, img_channels=channels, img_size=img_size)
    d = DCGANDiscriminator(ndf=4, img_channels=channels, img_size=img_size)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, img_size, img_size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


def test_dcgan_layers_and_init() -> None:
    g, d = DCGANGenerator(img_size=64), DCGANDiscriminator(img_size=64)
    # 4 up-sampling layers from 4x4 (+ the projection), batch norm everywhere in G but the output layer
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules()) == 5
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) == 4
    # no batch norm after D's first conv
    assert isinstance(d.main[1], torch.nn.LeakyReLU) and d.main[1].negative_slope == 0.2
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 3
    w = g.main[0].weight  # 819,200 samples of N(0, 0.02)
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    bn = g.main[1].weight
    assert abs(bn.mean().item() - 1.0) < 0.01 and abs(bn.std().item() - 0.02) < 0.01
    assert torch.all(g.main[1].bias == 0)


@pytest.mark.parametrize("channels", [1, 3])
def test_mlp_gan_shapes_and_range(channels: int) -> None:
    g = MLPGenerator(nz=16, hidden=64, img_size=32, img_channels=channels)
    d = MLPDiscriminator(hidden=64, img_size=32, img_channels=channels)
    x = g(torch.randn(3, 16) * 10)
    assert x.shape == (3, channels, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


# ---------------------------------------------------------------- families build their networks


@pytest.mark.parametrize(
    ("model", "keys"),
    [
        ("medsg", {"generator", "mapping_network", "style_encoder", "discriminator"}),
        ("dcgan", {"generator", "discriminator"}),
        ("gan", {"generator", "discriminator"}),
    ],
)
def test_families_build_from_the_smoke_profile(model: str, keys: set[str]) -> None:
    cfg = get_profile("smoke").train_config(model)
    nets = get_family(model).build(cfg)
    assert set(nets) == keys
    x = torch.rand(2, cfg.channels, cfg.img_size, cfg.img_size) * 2 - 1
    y = torch.tensor([0, 2])
    if model == "medsg":
        s = nets["mapping_network"](torch.randn(2, cfg.net.latent_dim), y)
        assert s.shape == (2, cfg.net.style_dim)
        assert nets["generator"](x, s).shape == x.shape
        assert nets["style_encoder"](x, y).shape == (2, cfg.net.style_dim)
        assert nets["discriminator"](x, y).shape == (2,)
        assert nets["generator"].from_rgb.out_channels == cfg.net.width_for(cfg.img_size)
    else:
        assert nets["generator"](torch.randn(2, cfg.net.nz)).shape == x.shape
        assert nets["discriminator"](x).shape == (2,)
