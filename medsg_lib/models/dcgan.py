"""DCGAN baseline (Radford et al., 2015): transposed-convolution generator, strided-convolution discriminator.

At 64 px (the paper's) the generator projects ``z`` to ``4 x 4 x 8 ngf`` and doubles the resolution four
times (8 ngf -> 4 ngf -> 2 ngf -> ngf -> C), the discriminator mirrors it (C -> ndf -> ... -> 8 ndf) and a
4x4 valid convolution gives one logit. Other sizes change the number of doubling layers: ``log2(S) - 2``.
Convolutions have no bias (batch norm follows them); weights are N(0, 0.02), batch-norm scales N(1, 0.02).
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def _num_doublings(img_size: int) -> int:
    """``log2(img_size) - 2``: layers between 4x4 and ``img_size``; power of two >= 16 required."""
    if img_size < 16 or 2 ** int(round(math.log2(img_size))) != img_size:
        raise ValueError(f"img_size={img_size!r} must be a power of two >= 16 (DCGAN starts from 4x4)")
    return int(round(math.log2(img_size))) - 2


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation in place: conv weights N(0, 0.02); batch-norm weight N(1, 0.02), bias 0.

    Use as ``net.apply(dcgan_init_)``; other modules are left unchanged.
    """
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """``z (B, nz) -> x (B, img_channels, img_size, img_size)`` in [-1, 1] (tanh).

    Layers: ConvT(nz, ngf * 2^(n-1), 4, 1, 0) + BN + ReLU to 4x4, then ``n - 1`` ConvT(4, 2, 1) + BN + ReLU
    halving the channels, then ConvT(ngf, C, 4, 2, 1) + tanh, with ``n = log2(img_size) - 2``.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, img_channels: int = 1, img_size: int = 64) -> None:
        super().__init__()
        n = _num_doublings(img_size)
        self.nz = nz
        width = ngf * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, z: Tensor) -> Tensor:
        """z: ``(B, nz)`` -> ``(B, C, S, S)`` in [-1, 1]."""
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class DCGANDiscriminator(nn.Module):
    """``x (B, C, S, S) in [-1, 1] -> (B,)`` real/fake logits (no sigmoid; use BCE-with-logits).

    Layers: Conv(C, ndf, 4, 2, 1) + LeakyReLU(0.2) (no batch norm on the first layer), then ``n - 1``
    Conv(4, 2, 1) + BN + LeakyReLU(0.2) doubling the channels, then Conv(ndf * 2^(n-1), 1, 4, 1, 0).
    """

    def __init__(self, ndf: int = 64, img_channels: int = 1, img_size: int = 64) -> None:
        super().__init__()
        n = _num_doublings(img_size)
        width = ndf
        layers: list[nn.Module] = [
            nn.Conv2d(img_channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` -> logits ``(B,)``."""
        return self.main(x).reshape(x.shape[0])
