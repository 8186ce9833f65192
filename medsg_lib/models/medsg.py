"""Med-StyleGAN2 networks: the StarGAN v2 architecture (Choi et al., CVPR 2020) with ``w_hpf = 0``.

Written from the layer description in ``docs/paper.md``; with 3 image channels, 3
domains and the default widths the parameter counts equal the reference table there.

- :class:`Generator` ``G(x, s)``: encoder of instance-normalised residual blocks, decoder of AdaIN residual
  blocks driven by the style code ``s``.
- :class:`MappingNetwork` ``F(z, y)``: latent code -> style code of domain ``y`` (one head per domain).
- :class:`StyleEncoder` ``E(x, y)``: image -> style code of domain ``y``.
- :class:`Discriminator` ``D(x, y)``: the real/fake logit of domain ``y``.

Widths: the first conv has ``base_width`` channels (``2**14 // img_size`` in the paper), doubling per
down-sampling stage up to ``max_width`` (512). Narrower widths are for CPU profiles and tests.
Weights use He initialisation with zero biases (StarGAN v2 paper, appendix); with the ``(1 + gamma)`` form of
AdaIN this equals its "AdaIN scale biases set to one".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _log2_size(img_size: int, minimum: int = 16) -> int:
    """``log2(img_size)``, checking that ``img_size`` is a power of two >= ``minimum``."""
    if img_size < minimum or 2 ** int(round(math.log2(img_size))) != img_size:
        raise ValueError(f"img_size={img_size!r} must be a power of two >= {minimum}")
    return int(round(math.log2(img_size)))


def _resolve_base_width(img_size: int, base_width: int | None) -> int:
    """The first conv's width: ``2**14 // img_size`` (paper) unless given."""
    width = 2**14 // img_size if base_width is None else base_width
    if width <= 0:
        raise ValueError(f"base_width={base_width!r} must be > 0")
    return width


def he_init_(module: nn.Module) -> None:
    """He (Kaiming-normal, fan-in) weights and zero biases for Conv2d and Linear layers; in place.

    Use as ``net.apply(he_init_)``; other modules are left unchanged.
    """
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResBlk(nn.Module):
    """Pre-activation residual block of the generator's encoder, the style encoder and the discriminator.

    residual: ``[IN] -> lrelu -> conv3x3(c_in, c_in) -> [avgpool 2] -> [IN] -> lrelu -> conv3x3(c_in,
    c_out)``; shortcut: ``[conv1x1 no bias, if c_in != c_out] -> [avgpool 2]``; output
    ``(shortcut + residual) / sqrt(2)``.
    ``IN`` is ``InstanceNorm2d(c_in, affine=True)`` when ``normalize``.

    Shapes: ``(B, c_in, H, W) -> (B, c_out, H', W')`` with ``H' = H / 2`` when ``downsample`` else ``H``.
    """

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False) -> None:
        super().__init__()
        self.normalize = normalize
        self.downsample = downsample
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def shortcut(self, x: Tensor) -> Tensor:
        """Shortcut branch: optional learned 1x1 projection, then optional 2x average pooling."""
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x

    def residual(self, x: Tensor) -> Tensor:
        """Residual branch (pre-activation, pooling between the two convs)."""
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, LRELU_SLOPE))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, LRELU_SLOPE))

    def forward(self, x: Tensor) -> Tensor:
        # unit-variance merge of the two branches
        return (self.shortcut(x) + self.residual(x)) * _INV_SQRT2


class AdaIN(nn.Module):
    """Adaptive instance norm ``(1 + gamma) * IN(x) + beta``, ``[gamma, beta] = Linear(style_dim, 2c)(s)``.

    Shapes: x ``(B, c, H, W)``, s ``(B, style_dim)`` -> ``(B, c, H, W)``. With a zero Linear it is plain IN.
    """

    def __init__(self, style_dim: int, num_features: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        h = self.fc(s).reshape(s.shape[0], -1, 1, 1)  # (B, 2c, 1, 1)
        gamma, beta = torch.chunk(h, chunks=2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder residual block driven by the style code (``w_hpf = 0``).

    residual: ``AdaIN(c_in) -> lrelu -> [nearest up 2] -> conv3x3(c_in, c_out) -> AdaIN(c_out) -> lrelu ->
    conv3x3(c_out, c_out)``; shortcut: ``[nearest up 2] -> [conv1x1 no bias, if c_in != c_out]``;
    output ``(residual + shortcut) / sqrt(2)``.

    Shapes: x ``(B, c_in, H, W)``, s ``(B, style_dim)`` -> ``(B, c_out, 2H, 2W)`` (``upsample``) or
    ``(B, c_out, H, W)``.
    """

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def shortcut(self, x: Tensor) -> Tensor:
        """Shortcut branch: optional nearest 2x up-sampling, then optional learned 1x1 projection."""
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        return x

    def residual(self, x: Tensor, s: Tensor) -> Tensor:
        """Residual branch, style-modulated by AdaIN."""
        x = F.leaky_relu(self.norm1(x, s), LRELU_SLOPE)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        x = F.leaky_relu(self.norm2(x, s), LRELU_SLOPE)
        return self.conv2(x)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        # w_hpf = 0: the shortcut is always added, unit-variance merge
        return (self.residual(x, s) + self.shortcut(x)) * _INV_SQRT2


class Generator(nn.Module):
    """``G(x, s)``: translate images ``x`` to the style ``s``.

    ``from_rgb`` conv3x3(C, c0); ``log2(img_size) - 4`` down-sampling encoder blocks (c -> min(2c, max_width))
    and 2 bottleneck blocks; the decoder mirrors them with AdaIN blocks; ``to_rgb``: IN(c0, affine) ->
    lrelu -> conv1x1(c0, C). There is no output activation: images are about, not strictly, in [-1, 1].

    Args:
        img_size: power of two >= 16; base_width: c0 (None: ``2**14 // img_size``); max_width: width cap.
        w_hpf: must be 0 (the face-landmark high-pass path is not implemented).
    """

    def __init__(
        self,
        img_size: int = 256,
        img_channels: int = 1,
        base_width: int | None = None,
        max_width: int = 512,
        style_dim: int = 64,
        w_hpf: float = 0.0,
    ) -> None:
        super().__init__()
        if w_hpf != 0:
            raise ValueError(
                f"w_hpf={w_hpf!r} is not supported: w_hpf > 0 needs StarGAN v2's face-landmark network "
                "(FAN) for its high-pass masks, which is meaningless for chest X-rays; the paper uses "
                "w_hpf = 0"
            )
        num_stages = _log2_size(img_size) - 4
        width = _resolve_base_width(img_size, base_width)
        self.img_size = img_size
        self.style_dim = style_dim
        self.from_rgb = nn.Conv2d(img_channels, width, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(
            nn.InstanceNorm2d(width, affine=True),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(width, img_channels, 1, 1, 0),
        )
        for _ in range(num_stages):
            width_out = min(width * 2, max_width)
            self.encode.append(ResBlk(width, width_out, normalize=True, downsample=True))
            # the decoder runs in reverse order of construction
            self.decode.insert(0, AdainResBlk(width_out, width, style_dim, upsample=True))
            width = width_out
        for _ in range(2):  # bottleneck
            self.encode.append(ResBlk(width, width, normalize=True))
            self.decode.insert(0, AdainResBlk(width, width, style_dim))
        self.apply(he_init_)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        """x: ``(B, C, H, W)`` in [-1, 1]; s: ``(B, style_dim)`` -> ``(B, C, H, W)`` (unbounded, ~[-1, 1])."""
        x = self.from_rgb(x)
        for block in self.encode:
            x = block(x)
        for block in self.decode:
            x = block(x, s)
        return self.to_rgb(x)


class MappingNetwork(nn.Module):
    """``F(z, y)``: latent ``z`` -> style code of domain ``y``.

    Shared: Linear(latent_dim, hidden) + ReLU and 3 x (Linear(hidden, hidden) + ReLU); per domain:
    3 x (Linear(hidden, hidden) + ReLU) and Linear(hidden, style_dim). Every head is evaluated and the one of
    ``y`` is picked, so other domains' heads do not affect the output.
    """

    def __init__(
        self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 3, hidden_dim: int = 512
    ):
        super().__init__()
        shared: list[nn.Module] = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            shared += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*shared)
        self.unshared = nn.ModuleList()
        for _ in range(num_domains):
            head: list[nn.Module] = []
            for _ in range(3):
                head += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
            head.append(nn.Linear(hidden_dim, style_dim))
            self.unshared.append(nn.Sequential(*head))
        self.apply(he_init_)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """z: ``(B, latent_dim)`` ~ N(0, I); y: ``(B,)`` int64 domains -> s ``(B, style_dim)``."""
        h = self.shared(z)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # (B, num_domains, style_dim)
        return out[torch.arange(y.shape[0], device=y.device), y]


def _down_trunk(
    img_size: int, img_channels: int, base_width: int | None, max_width: int
) -> tuple[nn.Module, int]:
    """Shared trunk of E and D: conv3x3(C, c0), ``log2(img_size) - 2`` down-sampling blocks (no norm),
    lrelu, conv4x4 valid, lrelu. Maps ``(B, C, S, S)`` to ``(B, c, 1, 1)``; returns the module and ``c``."""
    num_blocks = _log2_size(img_size) - 2
    width = _resolve_base_width(img_size, base_width)
    layers: list[nn.Module] = [nn.Conv2d(img_channels, width, 3, 1, 1)]
    for _ in range(num_blocks):
        width_out = min(width * 2, max_width)
        layers.append(ResBlk(width, width_out, downsample=True))
        width = width_out
    layers += [
        nn.LeakyReLU(LRELU_SLOPE),
        nn.Conv2d(width, width, 4, 1, 0),  # 4x4 -> 1x1
        nn.LeakyReLU(LRELU_SLOPE),
    ]
    return nn.Sequential(*layers), width


class StyleEncoder(nn.Module):
    """``E(x, y)``: image -> style code of domain ``y`` (shared trunk, per-domain Linear(c, style_dim))."""

    def __init__(
        self,
        img_size: int = 256,
        img_channels: int = 1,
        base_width: int | None = None,
        max_width: int = 512,
        style_dim: int = 64,
        num_domains: int = 3,
    ) -> None:
        super().__init__()
        self.shared, width = _down_trunk(img_size, img_channels, base_width, max_width)
        self.unshared = nn.ModuleList(nn.Linear(width, style_dim) for _ in range(num_domains))
        self.apply(he_init_)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` in [-1, 1]; y: ``(B,)`` int64 -> s ``(B, style_dim)``."""
        h = self.shared(x).reshape(x.shape[0], -1)  # (B, c)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # (B, num_domains, style_dim)
        return out[torch.arange(y.shape[0], device=y.device), y]


class Discriminator(nn.Module):
    """``D(x, y)``: real/fake logit of domain ``y`` (shared trunk, conv1x1(c, num_domains))."""

    def __init__(
        self,
        img_size: int = 256,
        img_channels: int = 1,
        base_width: int | None = None,
        max_width: int = 512,
        num_domains: int = 3,
    ) -> None:
        super().__init__()
        trunk, width = _down_trunk(img_size, img_channels, base_width, max_width)
        self.main = nn.Sequential(*trunk, nn.Conv2d(width, num_domains, 1, 1, 0))
        self.apply(he_init_)

    def all_logits(self, x: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` in [-1, 1] -> logits of every domain ``(B, num_domains)``."""
        return self.main(x).reshape(x.shape[0], -1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` in [-1, 1]; y: ``(B,)`` int64 -> ``(B,)`` the logit of each image's domain."""
        out = self.all_logits(x)
        return out[torch.arange(y.shape[0], device=y.device), y]
