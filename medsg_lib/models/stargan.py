"""StarGAN (Choi et al., CVPR 2018): one generator translates an image to any target domain given as a label.

Generator: the one-hot target label ``c (B, c_dim)`` is replicated over the image and concatenated to it as
``c_dim`` extra input channels; then a 7x7 stem (C + c_dim -> conv_dim), two 4x4 stride-2 down convolutions
doubling the width (to 4 conv_dim at ``S / 4``), ``repeat_num`` residual blocks, two 4x4 stride-2 transposed
convolutions halving it back, and a 7x7 convolution to ``C`` channels with tanh. Every hidden convolution is
followed by InstanceNorm2d(affine=True, track_running_stats=True) and ReLU, so convolutions have no bias.
As in the reference, ``eval()`` switches instance norm to its running averages; ``train()`` uses each image's
own statistics.

Discriminator: ``repeat_num`` 4x4 stride-2 convolutions (with bias) + LeakyReLU(0.01), the first to conv_dim,
each later one doubling the width, take ``S`` to ``h = S / 2^repeat_num``. Two bias-free heads read that
map: a 3x3 convolution gives real/fake patch logits ``(B, 1, h, h)`` and a convolution with kernel ``h``
(valid) gives the domain logits ``(B, c_dim)``; no normalisation. At the reference's 128 px and repeat_num 6
the map is 2x2.

At 64 px with repeat_num 6 the trunk ends at 1x1 with 64 * 2^5 = 2048 channels: the classification kernel is
1, a linear layer on the 2048-d feature, and the 3x3 patch head on a 1x1 map uses only its centre tap (8 of
its 9 weights see zero padding), so the "patch" head is a single global logit.

Initialisation: PyTorch's defaults, as in the reference. Parameter counts equal the reference's (RGB, c_dim 3,
conv_dim 64, repeat_num 6): G 8,424,256; D 44,727,232 / 44,745,664 / 44,819,392 at 64 / 128 / 256 px.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _instance_norm(num_features: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(num_features, affine=True, track_running_stats=True)


class ResidualBlock(nn.Module):
    """``x + (conv3x3 -> IN -> ReLU -> conv3x3 -> IN)(x)`` at constant width and resolution."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
            _instance_norm(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
            _instance_norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, dim, H, W)`` -> ``(B, dim, H, W)``."""
        return x + self.main(x)


class StarGANGenerator(nn.Module):
    """``(x, c) -> x_fake``: image ``x (B, C, S, S)`` in [-1, 1] and target labels ``c (B, c_dim)``.

    ``S`` must be divisible by 4 for the output to have the input's size (two stride-2 stages).
    """

    def __init__(
        self, conv_dim: int = 64, c_dim: int = 3, repeat_num: int = 6, img_channels: int = 1
    ) -> None:
        super().__init__()
        if repeat_num < 0:
            raise ValueError(f"repeat_num={repeat_num!r} must be >= 0 (number of residual blocks)")
        self.c_dim = c_dim
        width = conv_dim
        layers: list[nn.Module] = [
            nn.Conv2d(img_channels + c_dim, width, 7, 1, 3, bias=False),
            _instance_norm(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(2):  # S -> S / 4, conv_dim -> 4 conv_dim
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                _instance_norm(width * 2),
                nn.ReLU(inplace=True),
            ]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(repeat_num)]
        for _ in range(2):  # S / 4 -> S, 4 conv_dim -> conv_dim
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                _instance_norm(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.Conv2d(width, img_channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` in [-1, 1]; c: ``(B, c_dim)`` one-hot targets -> ``x_fake`` like ``x``."""
        c_map = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])  # (B, c_dim, S, S)
        return self.main(torch.cat([x, c_map], dim=1))


class StarGANDiscriminator(nn.Module):
    """``x (B, C, img_size, img_size)`` in [-1, 1] -> ``(out_src, out_cls)``, both logits (no sigmoid).

    ``out_src (B, 1, h, h)`` real/fake patch logits and ``out_cls (B, c_dim)`` domain logits, with
    ``h = img_size / 2^repeat_num``. The input must be ``img_size`` pixels wide: the classification kernel is
    ``h``.
    """

    def __init__(
        self,
        img_size: int = 128,
        conv_dim: int = 64,
        c_dim: int = 3,
        repeat_num: int = 6,
        img_channels: int = 1,
    ) -> None:
        super().__init__()
        if repeat_num < 1:
            raise ValueError(f"repeat_num={repeat_num!r} must be >= 1 (number of stride-2 convolutions)")
        if img_size <= 0 or img_size % 2**repeat_num != 0:
            raise ValueError(
                f"img_size={img_size!r} must be a positive multiple of 2**repeat_num={2**repeat_num} "
                f"(repeat_num={repeat_num}): the classification kernel is img_size // 2**repeat_num"
            )
        width = conv_dim
        layers: list[nn.Module] = [nn.Conv2d(img_channels, width, 4, 2, 1), nn.LeakyReLU(0.01)]
        for _ in range(repeat_num - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            width *= 2
        self.main = nn.Sequential(*layers)
        self.conv_src = nn.Conv2d(width, 1, 3, 1, 1, bias=False)
        self.conv_cls = nn.Conv2d(width, c_dim, img_size // 2**repeat_num, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: ``(B, C, img_size, img_size)`` -> ``(out_src (B, 1, h, h), out_cls (B, c_dim))`` logits."""
        h = self.main(x)  # (B, conv_dim * 2^(repeat_num - 1), h, h)
        out_src = self.conv_src(h)  # (B, 1, h, h)
        out_cls = self.conv_cls(h)  # (B, c_dim, 1, 1)
        return out_src, out_cls.reshape(out_cls.shape[0], out_cls.shape[1])
