"""StarGAN and CycleGAN networks: exact reference parameter counts, shapes, behaviour and initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsg_lib.models import (
    PatchDiscriminator,
    ResnetGenerator,
    StarGANDiscriminator,
    StarGANGenerator,
    count_parameters,
    cyclegan_init_,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _x(channels: int, img_size: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, channels, img_size, img_size) * 2 - 1  # (B, C, H, W) in [-1, 1]


# ---------------------------------------------------------------- parameter counts (the references' numbers)


@pytest.mark.parametrize(("channels", "expected"), [(3, 8_424_256), (1, 8_411_712)])
def test_stargan_generator_parameter_count(channels: int, expected: int) -> None:
    """conv_dim 64, c_dim 3, repeat_num 6, as yunjey/stargan's Generator with 3 domains."""
    assert count_parameters(StarGANGenerator(64, 3, 6, img_channels=channels)) == expected


@pytest.mark.parametrize(
    ("img_size", "channels", "expected"),
    [(64, 3, 44_727_232), (128, 3, 44_745_664), (256, 3, 44_819_392), (64, 1, 44_725_184)],
)
def test_stargan_discriminator_parameter_count(img_size: int, channels: int, expected: int) -> None:
    """Only the classification kernel (img_size / 64) changes with the image size."""
    d = StarGANDiscriminator(img_size, 64, 3, 6, img_channels=channels)
    assert count_parameters(d) == expected


@pytest.mark.parametrize(
    ("n_blocks", "channels", "expected"),
    [(9, 3, 11_378_179), (9, 1, 11_365_633), (6, 3, 7_837_699), (6, 1, 7_825_153)],
)
def test_resnet_generator_parameter_count(n_blocks: int, channels: int, expected: int) -> None:
    """resnet_9blocks / resnet_6blocks with ngf 64 and instance norm (so every conv has a bias)."""
    assert count_parameters(ResnetGenerator(channels, 64, n_blocks)) == expected


@pytest.mark.parametrize(("channels", "expected"), [(3, 2_764_737), (1, 2_762_689)])
def test_patch_discriminator_parameter_count(channels: int, expected: int) -> None:
    """The 'basic' 70x70 PatchGAN: ndf 64, n_layers 3, instance norm."""
    assert count_parameters(PatchDiscriminator(channels, 64, 3)) == expected


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("img_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_stargan_shapes(img_size: int, channels: int) -> None:
    g = StarGANGenerator(conv_dim=4, c_dim=3, repeat_num=1, img_channels=channels)
    d = StarGANDiscriminator(img_size, conv_dim=4, c_dim=3, repeat_num=3, img_channels=channels)
    x = _x(channels, img_size)
    c = F.one_hot(torch.tensor([0, 2]), 3).float()  # (B, c_dim) target labels
    x_fake = g(x, c)
    assert x_fake.shape == x.shape
    out_src, out_cls = d(x_fake)
    assert out_src.shape == (2, 1, img_size // 8, img_size // 8)
    assert out_cls.shape == (2, 3)


@pytest.mark.parametrize("img_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_cyclegan_shapes(img_size: int, channels: int) -> None:
    g = ResnetGenerator(channels, ngf=4, n_blocks=1)
    d = PatchDiscriminator(channels, ndf=4, n_layers=3)
    x = _x(channels, img_size)
    assert g(x).shape == x.shape
    h = img_size // 8 - 2  # two 4x4 stride-1 pad-1 convolutions after three stride-2 ones
    assert d(x).shape == (2, 1, h, h)


def test_stargan_discriminator_at_64px_has_a_single_global_patch_logit() -> None:
    """64 px, repeat_num 6: the trunk ends at 1x1, the patch head only uses its 3x3 kernel's centre tap."""
    d = StarGANDiscriminator(64, conv_dim=4, c_dim=3, repeat_num=6, img_channels=1)
    assert d.conv_cls.kernel_size == (1, 1)
    x = _x(1, 64, batch=3)
    out_src, out_cls = d(x)
    assert out_src.shape == (3, 1, 1, 1)
    assert out_cls.shape == (3, 3)
    with torch.no_grad():
        centre = d.conv_src.weight[:, :, 1, 1].clone()
        d.conv_src.weight.normal_()  # the 8 border taps only ever see zero padding
        d.conv_src.weight[:, :, 1, 1] = centre
    torch.testing.assert_close(d(x)[0], out_src)


# ---------------------------------------------------------------- behaviour


def test_stargan_generator_output_depends_on_the_target_label() -> None:
    g = StarGANGenerator(conv_dim=4, c_dim=3, repeat_num=1, img_channels=1)
    x = _x(1, 32, batch=1).expand(3, -1, -1, -1)  # the same image three times
    c = torch.eye(3)  # (3, c_dim): each domain once
    x_fake = g(x, c)  # (3, 1, 32, 32) in [-1, 1]
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert (x_fake[i] - x_fake[j]).abs().max() > 1e-3
    torch.testing.assert_close(g(x[:1], c[1:2]), x_fake[1:2])  # instance norm: no batch coupling in train()


def test_stargan_generator_concatenates_the_label_as_constant_channels() -> None:
    g = StarGANGenerator(conv_dim=4, c_dim=3, repeat_num=0, img_channels=1)
    assert g.main[0].in_channels == 1 + 3
    x, c = _x(1, 16), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    c_map = c[:, :, None, None].expand(-1, -1, 16, 16)  # (B, c_dim, H, W)
    torch.testing.assert_close(g(x, c), g.main(torch.cat([x, c_map], dim=1)))


def test_resnet_generator_output_range() -> None:
    g = ResnetGenerator(1, ngf=8, n_blocks=2)
    x_fake = g(_x(1, 32, batch=3) * 50)  # large inputs: instance norm keeps the stem in range anyway
    assert x_fake.min() >= -1 and x_fake.max() <= 1
    assert x_fake.std() > 0.01  # not a constant image


def test_patch_discriminator_receptive_field_is_70px() -> None:
    """Convolution geometry only: instance norm (whole-image statistics) is swapped for the identity."""
    d = PatchDiscriminator(1, ndf=4, n_layers=3)
    for i, m in enumerate(d.main):
        if isinstance(m, nn.InstanceNorm2d):
            d.main[i] = nn.Identity()
    x = _x(1, 128, batch=1).requires_grad_(True)
    out = d(x)  # (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (70, 70)
    assert rows.min() == 7 * 8 - 23  # output stride 8, total zero padding 1 + 2 + 4 + 8 + 8


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize(
    "build", [lambda: ResnetGenerator(1, ngf=32, n_blocks=2), lambda: PatchDiscriminator(1, ndf=32)]
)
def test_cyclegan_init_statistics(build) -> None:
    net = build()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])  # > 100k samples of N(0, 0.02)
    assert weights.numel() > 100_000
    assert abs(weights.mean().item()) < 5e-4
    assert abs(weights.std().item() - 0.02) < 5e-4
    assert all(m.bias is not None and torch.all(m.bias == 0) for m in convs)  # every conv has a bias
    # instance norm without affine parameters: the convolutions are all there is
    assert count_parameters(net) == sum(count_parameters(m) for m in convs)


def test_cyclegan_init_leaves_other_modules_alone() -> None:
    linear = nn.Linear(4, 4)
    before = [p.detach().clone() for p in linear.parameters()]
    linear.apply(cyclegan_init_)
    for p, q in zip(linear.parameters(), before, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_stargan_uses_pytorch_default_init() -> None:
    """No custom init (as the reference): a conv's weights are U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    g = StarGANGenerator(conv_dim=16, c_dim=3, repeat_num=1, img_channels=1)
    w = g.main[0].weight  # (16, 1 + 3, 7, 7), fan_in 196
    bound = 1 / 196**0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(("img_size", "repeat_num"), [(48, 5), (100, 6), (0, 3)])
def test_stargan_discriminator_bad_img_size(img_size: int, repeat_num: int) -> None:
    factor = 2**repeat_num
    with pytest.raises(
        ValueError,
        match=(
            rf"img_size={img_size} must be a positive multiple of 2\*\*repeat_num={factor} "
            rf"\(repeat_num={repeat_num}\): the classification kernel is img_size // 2\*\*repeat_num"
        ),
    ):
        StarGANDiscriminator(img_size, conv_dim=4, repeat_num=repeat_num)


def test_bad_depths() -> None:
    with pytest.raises(ValueError, match=r"repeat_num=0 must be >= 1 \(number of stride-2 convolutions\)"):
        StarGANDiscriminator(32, conv_dim=4, repeat_num=0)
    with pytest.raises(ValueError, match=r"repeat_num=-1 must be >= 0 \(number of residual blocks\)"):
        StarGANGenerator(conv_dim=4, repeat_num=-1)
    with pytest.raises(ValueError, match=r"n_blocks=-1 must be >= 0 \(number of residual blocks\)"):
        ResnetGenerator(1, ngf=4, n_blocks=-1)
    with pytest.raises(ValueError, match=r"n_layers=0 must be >= 1 \(number of stride-2 convolutions\)"):
        PatchDiscriminator(1, ndf=4, n_layers=0)


# ----------------------------------------------------------------------------------------------------------
# The families build the reference networks at the reference settings (their configs' defaults)


def test_stargan_family_builds_the_reference_counts() -> None:
    from medsg_lib.config import TrainConfig
    from medsg_lib.families import get_family, resolve

    cfg = resolve(TrainConfig(model="stargan", img_size=128, channels=3))
    counts = {k: count_parameters(v) for k, v in get_family("stargan").build(cfg).items()}
    assert counts == {"generator": 8_424_256, "discriminator": 44_745_664}


def test_cyclegan_family_builds_two_reference_cyclegans() -> None:
    from medsg_lib.config import TrainConfig
    from medsg_lib.families import get_family, resolve

    cfg = resolve(TrainConfig(model="cyclegan", img_size=256, channels=3))
    counts = {k: count_parameters(v) for k, v in get_family("cyclegan").build(cfg).items()}
    assert counts == {
        **{f"{p}_g_{d}": 11_378_179 for p in ("covid", "non_covid") for d in ("ab", "ba")},
        **{f"{p}_d_{d}": 2_764_737 for p in ("covid", "non_covid") for d in ("a", "b")},
        "image_pools": 0,
    }


def test_rsgan_uses_the_dcgan_networks() -> None:
    from medsg_lib.config import TrainConfig
    from medsg_lib.families import get_family, resolve

    counts = {
        m: {k: count_parameters(v) for k, v in get_family(m).build(resolve(TrainConfig(model=m))).items()}
        for m in ("dcgan", "rsgan")
    }
    assert counts["rsgan"] == counts["dcgan"]


def test_cyclegan_pairs_must_cover_every_class() -> None:
    from medsg_lib.families import CycleGANConfig

    with pytest.raises(ValueError, match=r"leave \['Non-COVID'\] without generated images; every class"):
        CycleGANConfig(pairs=(("Normal", "COVID-19"),))
    with pytest.raises(ValueError, match=r"CycleGANConfig.pairs has \('Normal', 'Normal'\)"):
        CycleGANConfig(pairs=(("Normal", "Normal"), ("Normal", "COVID-19")))


def test_stargan_refuses_an_image_size_its_discriminator_cannot_classify() -> None:
    from medsg_lib.config import TrainConfig
    from medsg_lib.families import resolve

    with pytest.raises(ValueError, match=r"TrainConfig.img_size=32 must be divisible by 2\*\*StarGANConfig"):
        resolve(TrainConfig(model="stargan", img_size=32))  # 6 strided convolutions need 64 px
