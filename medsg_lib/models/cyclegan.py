"""CycleGAN (Zhu et al., ICCV 2017): a ResNet generator per direction and a 70x70 PatchGAN discriminator.

Generator (Johnson et al.'s transformation network): ReflectionPad(3) + 7x7 conv (C -> ngf), two 3x3 stride-2
convolutions doubling the width (to 4 ngf at ``S / 4``), ``n_blocks`` residual blocks with reflection
padding, two 3x3 stride-2 transposed convolutions (output_padding 1) halving it back, and ReflectionPad(3) +
7x7 conv to ``C`` channels with tanh. Every hidden convolution is followed by InstanceNorm2d(affine=False,
track_running_stats=False) and ReLU; the norm has no parameters, so every convolution has a bias. No dropout.
The paper uses 9 blocks at 256 px and 6 at 128 px.

Discriminator (PatchGAN): ``n_layers`` 4x4 stride-2 convolutions
``C -> ndf -> 2 ndf -> ... -> ndf * min(2^(n_layers-1), 8)`` (instance norm after all but the first), then a
4x4 stride-1 convolution to ``ndf * min(2^n_layers, 8)`` + IN and a 4x4 stride-1 convolution to one channel,
all with LeakyReLU(0.2) between. With ``n_layers = 3`` each
output logit sees a 70x70 patch; the map is ``S / 2^n_layers - 2`` pixels wide (30x30 at 256 px). Logits, no
sigmoid (CycleGAN trains it with the least-squares loss).

Initialisation: :func:`cyclegan_init_` (the reference's ``init_type='normal'``, gain 0.02). Parameter counts
equal the reference's (RGB, ngf = ndf = 64): resnet_9blocks 11,378,179, resnet_6blocks 7,837,699, PatchGAN
(n_layers 3) 2,764,737.
"""

from __future__ import annotations

from torch import Tensor, nn


def _instance_norm(num_features: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)


def cyclegan_init_(module: nn.Module) -> None:
    """CycleGAN initialisation in place: Conv2d / ConvTranspose2d weights N(0, 0.02), biases 0.

    Use as ``net.apply(cyclegan_init_)``; other modules are left unchanged (these nets have no others with
    parameters).
    """
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResnetBlock(nn.Module):
    """``x + (pad -> conv3x3 -> IN -> ReLU -> pad -> conv3x3 -> IN)(x)``, reflection padding, same size."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            _instance_norm(dim),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            _instance_norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, dim, H, W)`` -> ``(B, dim, H, W)``."""
        return x + self.main(x)


class ResnetGenerator(nn.Module):
    """``x (B, C, S, S)`` in [-1, 1] -> ``(B, C, S, S)`` in [-1, 1] (tanh).

    ``S`` must be divisible by 4 for the output to have the input's size, and the ``S / 4`` bottleneck must be
    at least 2 pixels wide for reflection padding.
    """

    def __init__(self, img_channels: int = 1, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks={n_blocks!r} must be >= 0 (number of residual blocks)")
        width = ngf
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(img_channels, width, 7),
            _instance_norm(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(2):  # S -> S / 4, ngf -> 4 ngf
            layers += [nn.Conv2d(width, width * 2, 3, 2, 1), _instance_norm(width * 2), nn.ReLU(inplace=True)]
            width *= 2
        layers += [ResnetBlock(width) for _ in range(n_blocks)]
        for _ in range(2):  # S / 4 -> S, 4 ngf -> ngf
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, 2, 1, output_padding=1),
                _instance_norm(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, img_channels, 7), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(cyclegan_init_)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` in [-1, 1] -> ``(B, C, S, S)`` in [-1, 1]."""
        return self.main(x)


class PatchDiscriminator(nn.Module):
    """``x (B, C, S, S)`` in [-1, 1] -> patch logits ``(B, 1, S / 2^n_layers - 2, S / 2^n_layers - 2)``."""

    def __init__(self, img_channels: int = 1, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers={n_layers!r} must be >= 1 (number of stride-2 convolutions)")
        layers: list[nn.Module] = [nn.Conv2d(img_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for n in range(1, n_layers):
            out = ndf * min(2**n, 8)
            layers += [nn.Conv2d(width, out, 4, 2, 1), _instance_norm(out), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        out = ndf * min(2**n_layers, 8)
        layers += [nn.Conv2d(width, out, 4, 1, 1), _instance_norm(out), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(out, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(cyclegan_init_)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` -> logits ``(B, 1, h, h)``, one per (70x70 for n_layers 3) patch."""
        return self.main(x)
