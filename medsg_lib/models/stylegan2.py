"""Class-conditional StyleGAN2 (Karras et al., CVPR 2020) as NVIDIA's StyleGAN2-ADA code defines it, in plain
PyTorch (no custom CUDA kernels: the reference's own generic fallbacks, which give the same numbers).

Generator: a mapping network turns ``z`` (normalised) concatenated with an embedding of the class (normalised)
into ``w`` through ``map_layers`` fully connected layers at a learning-rate multiplier of 0.01, tracking the
average ``w`` for truncation; the synthesis network starts from a learnt 4x4 constant and doubles the resolution
block by block, each block two modulated and demodulated 3x3 convolutions (the first upsampling) with per-pixel
noise, and a 'skip' output: a ToRGB at every resolution, summed after upsampling. Discriminator: 'resnet' blocks
(two 3x3 convolutions, the second downsampling, plus a 1x1 skip, summed with gain sqrt(1/2)), a minibatch
standard deviation feature, and projection conditioning through its own label mapping network (8 layers).
Layers (:mod:`medsg_lib.models.stylegan2_layers`) have equalised learning rate: weights drawn from N(0, 1) and scaled at run time by
``lr_multiplier / sqrt(fan_in)``. Resampling uses the [1, 3, 3, 1] low-pass filter.

Channels per resolution: ``min(channel_base // res, channel_max)``. The reference's 'auto' configuration at 64 px
is ``channel_base=16384, channel_max=512, map_layers=2``; 'paper256' is the same with ``map_layers=8``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from medsg_lib.models.stylegan2_layers import (
    Conv2dLayer,
    FullyConnected,
    bias_act,
    modulated_conv2d,
    normalize_2nd_moment,
    resample_filter,
    upsample2d,
)


class MappingNetwork(nn.Module):
    """``(z (B, z_dim), c (B, c_dim) one-hot) -> w`` (``(B, num_ws, w_dim)``, or ``(B, w_dim)`` when ``num_ws``
    is None). ``z_dim`` 0: the label alone (the discriminator's label mapping). Tracks the average ``w``
    (``w_avg``, decay ``w_avg_beta``) in training mode, for truncation."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = (
            z_dim,
            c_dim,
            w_dim,
            num_ws,
            w_avg_beta,
        )
        embed_features = w_dim if c_dim > 0 else 0
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.embed = FullyConnected(c_dim, embed_features) if c_dim > 0 else None
        self.layers = nn.ModuleList(
            FullyConnected(features[i], features[i + 1], lrelu=True, lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self, z: Tensor | None, c: Tensor, truncation_psi: float = 1.0, update_w_avg: bool = True
    ) -> Tensor:
        parts = []
        if self.z_dim > 0:
            assert z is not None
            parts.append(normalize_2nd_moment(z.float()))
        if self.embed is not None:
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None and self.num_ws is not None and self.training and update_w_avg:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """A modulated 3x3 convolution (optionally upsampling 2x), per-pixel noise, bias, leaky ReLU, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", resample_filter())
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random") -> Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, self.resample_filter, up=self.up)
        if noise_mode == "random":
            noise = torch.randn(
                x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype
            )
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, lrelu=True, clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """A modulated 1x1 convolution to the image channels, without demodulation."""

    def __init__(
        self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", resample_filter())
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, self.resample_filter, demodulate=False)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' synthesis network: (the 4x4 constant or an upsampling layer), a layer, and
    a ToRGB added to the upsampled image of the previous block. Uses ``num_conv + 1`` of the ``w``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", resample_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(
        self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str
    ) -> tuple[Tensor, Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        if self.conv0 is None:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            assert x is not None
            x = self.conv0(x, next(w_iter), noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode)
        y = self.torgb(x, next(w_iter)).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


def channels_per_resolution(resolutions: list[int], channel_base: int, channel_max: int) -> dict[int, int]:
    """``{res: min(channel_base // res, channel_max)}``."""
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def _log2(img_size: int) -> int:
    if img_size < 8 or img_size & (img_size - 1):
        raise ValueError(f"img_size={img_size!r} must be a power of two >= 8 (StyleGAN2 starts from 4x4)")
    return int(math.log2(img_size))


class SynthesisNetwork(nn.Module):
    """``ws (B, num_ws, w_dim) -> img (B, img_channels, img_size, img_size)`` (not clamped; about [-1, 1])."""

    def __init__(
        self,
        w_dim: int,
        img_size: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.resolutions = [2**i for i in range(2, _log2(img_size) + 1)]
        channels = channels_per_resolution(self.resolutions, channel_base, channel_max)
        self.blocks = nn.ModuleList(
            SynthesisBlock(
                channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels, conv_clamp
            )
            for res in self.resolutions
        )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws.narrow(1, index, block.num_conv + 1), noise_mode)
            index += block.num_conv
        assert img is not None
        return img


class StyleGAN2Generator(nn.Module):
    """``(z (B, z_dim), c (B, num_classes) one-hot) -> (B, img_channels, img_size, img_size)``; the mapping and
    synthesis networks are its ``mapping`` and ``synthesis`` (style mixing and path-length regularisation call
    them apart)."""

    def __init__(
        self,
        num_classes: int = 3,
        img_size: int = 64,
        img_channels: int = 1,
        z_dim: int = 512,
        w_dim: int = 512,
        map_layers: int = 2,
        channel_base: int = 16384,
        channel_max: int = 512,
        conv_clamp: float | None = 256,
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.synthesis = SynthesisNetwork(
            w_dim, img_size, img_channels, channel_base, channel_max, conv_clamp
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, num_classes, w_dim, self.num_ws, num_layers=map_layers)

    def forward(
        self, z: Tensor, c: Tensor, truncation_psi: float = 1.0, noise_mode: str = "random"
    ) -> Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode)


class MinibatchStd(nn.Module):
    """Appends the standard deviation over groups of ``group_size`` images (averaged over channels and
    pixels) as ``num_channels`` extra feature maps."""

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch of {n} is not a multiple of the group size {g} (MinibatchStd)")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        return torch.cat([x, y.repeat(g, 1, h, w)], dim=1)


class DiscriminatorBlock(nn.Module):
    """A 'resnet' block: (fromRGB in the first), 3x3, 3x3 downsampling, plus a 1x1 downsampling skip; the sum
    scaled by sqrt(1/2)."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.fromrgb = (
            Conv2dLayer(img_channels, tmp_channels, 1, lrelu=True, conv_clamp=conv_clamp)
            if in_channels == 0
            else None
        )
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, lrelu=True, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, lrelu=True, down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor | None, img: Tensor) -> Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        assert x is not None
        y = self.skip(x, gain=np.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=np.sqrt(0.5))
        return y + x


class StyleGAN2Discriminator(nn.Module):
    """``(img (B, img_channels, S, S), c (B, num_classes) one-hot) -> (B, 1)`` logits, projection-conditioned:
    the 4x4 epilogue's ``cmap_dim`` outputs dotted with the label mapping's, over sqrt(cmap_dim)."""

    def __init__(
        self,
        num_classes: int = 3,
        img_size: int = 64,
        img_channels: int = 1,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mapping_layers: int = 8,
        conv_clamp: float | None = 256,
    ) -> None:
        super().__init__()
        resolutions = [2**i for i in range(_log2(img_size), 2, -1)]
        channels = channels_per_resolution([*resolutions, 4], channel_base, channel_max)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(
                channels[res] if res < img_size else 0,
                channels[res],
                channels[res // 2],
                img_channels,
                conv_clamp,
            )
            for res in resolutions
        )
        self.cmap_dim = channels[4]
        self.mapping = MappingNetwork(
            0, num_classes, self.cmap_dim, None, num_layers=mapping_layers, w_avg_beta=None
        )
        c4 = channels[4]
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.conv = Conv2dLayer(c4 + 1, c4, 3, lrelu=True, conv_clamp=conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, lrelu=True)
        self.out = FullyConnected(c4, self.cmap_dim)

    def forward(self, img: Tensor, c: Tensor) -> Tensor:
        x = None
        for block in self.blocks:
            x = block(x, img)
        assert x is not None
        x = self.conv(self.mbstd(x.float()))
        x = self.out(self.fc(x.flatten(1)))
        cmap = self.mapping(None, c)
        return (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
