"""The layers of StyleGAN2 (:mod:`medsg_lib.models.stylegan2`), in plain PyTorch: equalised-learning-rate fully
connected and convolution layers, resampling through the [1, 3, 3, 1] low-pass filter (the reference's
``upfirdn2d`` and ``conv2d_resample`` generic paths) and the modulated convolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through a leaky ReLU
RESAMPLE_TAPS = (1.0, 3.0, 3.0, 1.0)


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x`` divided by the root mean square over ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def resample_filter(taps: tuple[float, ...] = RESAMPLE_TAPS) -> Tensor:
    """The 2-D low-pass filter: the outer product of ``taps`` with itself, summing to 1, ``(k, k)``."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), gain: float = 1
) -> Tensor:
    """Upsample by inserting zeros, pad (``pad`` = before, after, on both axes), filter with ``f * gain``
    (symmetric, so correlation = convolution), keep every ``down``-th pixel. ``x`` is ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = (f * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x upsampling with the low-pass filter (gain 4 keeps the mean), ``(B, C, H, W) -> (B, C, 2H, 2W)``."""
    k = f.shape[-1]
    return upfirdn2d(x, f, up=2, pad=((k + 1) // 2, (k - 2) // 2), gain=4)


def conv2d_resample(x: Tensor, w: Tensor, f: Tensor, up: int = 1, down: int = 1) -> Tensor:
    """A ``same``-size convolution with weight ``w`` ``(O, I, k, k)`` and optional 2x up- or downsampling
    through the low-pass filter ``f``: filter then strided convolution when downsampling, zero-insertion and
    filtering then convolution when upsampling (the reference's paddings)."""
    k, fk = w.shape[-1], f.shape[-1]
    pad = k // 2
    if up > 1:
        x = upfirdn2d(x, f, up=up, pad=(pad + (fk + up - 1) // 2, pad + (fk - up) // 2), gain=up * up)
        return F.conv2d(x, w)
    if down > 1:
        x = upfirdn2d(x, f, pad=(pad + (fk - down + 1) // 2, pad + (fk - down) // 2))
        return F.conv2d(x, w, stride=down)
    return F.conv2d(x, w, padding=pad)


def bias_act(
    x: Tensor, b: Tensor | None, lrelu: bool, gain: float = 1.0, clamp: float | None = None
) -> Tensor:
    """Add the bias (per channel, dim 1), apply the leaky ReLU with its gain sqrt(2) (``lrelu``) and ``gain``,
    clamp to ``+-clamp``."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if lrelu:
        x = F.leaky_relu(x, LRELU_SLOPE) * (LRELU_GAIN * gain)
    elif gain != 1:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


class FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer, ``(B, in) -> (B, out)``, with an optional leaky ReLU."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lrelu: bool = False,
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        return bias_act(x.matmul(w.t()), self.bias * self.bias_gain, self.lrelu)


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional 2x down/upsampling, bias and leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        lrelu: bool = False,
        down: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.lrelu, self.down, self.conv_clamp = lrelu, down, conv_clamp
        self.register_buffer("resample_filter", resample_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, down=self.down)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.lrelu, gain, clamp)


def modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, f: Tensor, up: int = 1, demodulate: bool = True
) -> Tensor:
    """StyleGAN2's modulated convolution: input channels scaled by ``styles`` ``(B, I)``, then (``demodulate``)
    each output channel scaled to unit expected second moment. Computed by scaling the activations around one
    shared convolution (the reference's non-fused path: the same numbers)."""
    batch = x.shape[0]
    out_channels, in_channels = weight.shape[:2]
    x = x * styles.to(x.dtype).reshape(batch, in_channels, 1, 1)
    y = conv2d_resample(x, weight.to(x.dtype), f, up=up)
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # (B, O, I, k, k)
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (B, O)
        y = y * dcoefs.to(y.dtype).reshape(batch, out_channels, 1, 1)
    return y
