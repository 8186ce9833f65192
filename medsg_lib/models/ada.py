"""Adaptive discriminator augmentation (ADA; Karras et al., NeurIPS 2020), chosen for chest X-rays.

Every image the StyleGAN2 discriminator sees, real or generated, passes through :class:`AugmentPipe`: each
augmentation below is applied to each image independently with probability ``p``, and ``p`` itself is adjusted
during training (:func:`ada_adjust`) so that the discriminator's sign on real images, ``E[sign D(x)]``, stays
near the target 0.6. Because the augmentations are applied with probability below 1 and their distributions are
invertible, the generator is not pushed to produce augmented images ("non-leaking"), as the ADA paper shows.

The reference's 'bgc' pipeline, minus what makes no sense for a chest radiograph:

- kept: integer translation (up to 1/8 of the image), isotropic scaling (log2-normal, sd 0.2), rotation, anisotropic
  scaling (sd 0.2), fractional translation (sd 1/8), brightness (additive, sd 0.2), contrast (log2-normal, sd 0.5);
- rotation limited to +-10 degrees (the reference: any angle): a patient is positioned upright within a few
  degrees, and a large rotation is a view no radiograph shows;
- left out: horizontal flips and 90-degree rotations (a mirrored chest puts the heart on the wrong side; a
  quarter turn is no chest X-ray), luma flip (inverts the grey scale: bone would be dark), hue and saturation
  (one channel has neither).

Geometry is one affine matrix per image, resampled bilinearly with reflection at the borders (the reference
pads by reflection and resamples with a wavelet filter; bilinear sampling is the plain-PyTorch simplification).
Every draw comes from the ``torch.Generator`` given, so a step is a function of its plan (bit-exact resume).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADA_AUGMENTATIONS: tuple[str, ...] = ("xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast")
ADA_STRENGTHS: dict[str, float] = {
    "xint": 0.125,  # integer translation, fraction of the image size, uniform
    "scale": 0.2,  # sd of log2 of the isotropic scale
    "rotate": 10.0,  # degrees, uniform in +-
    "aniso": 0.2,  # sd of log2 of the anisotropic scale
    "xfrac": 0.125,  # sd of the fractional translation, fraction of the image size
    "brightness": 0.2,  # sd of the added value (images in [-1, 1])
    "contrast": 0.5,  # sd of log2 of the contrast factor
}


def ada_adjust(
    p: float, mean_sign: float, target: float, batch: int, interval: int, speed_kimg: float
) -> float:
    """The next ``p``: one step of ``batch * interval / (speed_kimg * 1000)`` toward more augmentation when the
    discriminator's mean sign on real images is above ``target`` (over-fitting), toward less below it, clamped to
    [0, 1]. ``speed_kimg``: thousands of images for ``p`` to move by 1 (the reference's ``ada_kimg``, 500)."""
    if mean_sign != mean_sign:  # NaN: no statistics this interval
        return p
    step = batch * interval / (speed_kimg * 1000)
    direction = (mean_sign > target) - (mean_sign < target)
    return min(max(p + direction * step, 0.0), 1.0)


class AugmentPipe(nn.Module):
    """``x (B, C, H, W) -> x`` augmented, each of ``augmentations`` with probability :attr:`p` per image.

    Buffers (checkpointed with the networks, so resume is bit-exact): ``p`` and the running sum and count of
    the discriminator's signs on real images since the last adjustment (:meth:`record_signs`, :meth:`adjust`).
    """

    def __init__(self, augmentations: tuple[str, ...] = ADA_AUGMENTATIONS, initial_p: float = 0.0) -> None:
        super().__init__()
        unknown = sorted(set(augmentations) - set(ADA_STRENGTHS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {sorted(ADA_STRENGTHS)}")
        self.augmentations = tuple(augmentations)
        self.register_buffer("p", torch.tensor(float(initial_p)))
        self.register_buffer("sign_sum", torch.zeros([]))
        self.register_buffer("sign_count", torch.zeros([]))

    @torch.no_grad()
    def record_signs(self, real_logits: Tensor, world_size: int = 1) -> None:
        """Add ``sign(D(x_real))`` of a batch to the statistics of the current interval; under torchrun
        (``world_size`` > 1) the sums over every rank's share, so that every rank holds the same statistics."""
        if world_size == 1:
            self.sign_sum += real_logits.detach().float().sign().sum()
            self.sign_count += real_logits.numel()
            return
        import torch.distributed as dist

        step = torch.stack(
            [real_logits.detach().float().sign().sum(), real_logits.new_tensor(real_logits.numel()).float()]
        )
        dist.all_reduce(step)
        self.sign_sum += step[0]
        self.sign_count += step[1]

    @torch.no_grad()
    def adjust(self, target: float, batch: int, interval: int, speed_kimg: float) -> float:
        """Move ``p`` (:func:`ada_adjust`) from this interval's mean sign, reset the statistics; returns the
        mean sign (NaN if there were none)."""
        count = float(self.sign_count)
        mean_sign = float(self.sign_sum) / count if count else float("nan")
        self.p.fill_(ada_adjust(float(self.p), mean_sign, target, batch, interval, speed_kimg))
        self.sign_sum.zero_()
        self.sign_count.zero_()
        return mean_sign

    def forward(self, x: Tensor, gen: torch.Generator) -> Tensor:
        p = float(self.p)
        if p <= 0 or not self.augmentations:
            return x
        params = self.draw(x.shape[0], p, gen)
        return self.apply(x, params)

    def draw(self, batch: int, p: float, gen: torch.Generator) -> dict[str, Tensor]:
        """Per image, per augmentation: the parameter, set to its identity value where the augmentation is not
        applied (probability ``1 - p``). Always the same number of draws, whatever ``p``."""
        out = {}
        for name in ADA_AUGMENTATIONS:  # fixed order and count of draws
            applied = torch.rand(batch, generator=gen) < p
            if name in ("xint", "xfrac"):
                raw = (
                    torch.rand(batch, 2, generator=gen) * 2 - 1
                    if name == "xint"
                    else torch.randn(batch, 2, generator=gen)
                )
                value = raw * ADA_STRENGTHS[name]
                identity = torch.zeros_like(value)
                mask = applied[:, None]
            elif name == "rotate":
                value = (torch.rand(batch, generator=gen) * 2 - 1) * math.radians(ADA_STRENGTHS[name])
                identity, mask = torch.zeros_like(value), applied
            elif name == "brightness":
                value = torch.randn(batch, generator=gen) * ADA_STRENGTHS[name]
                identity, mask = torch.zeros_like(value), applied
            else:  # scale, aniso, contrast: log2-normal factors
                value = torch.exp2(torch.randn(batch, generator=gen) * ADA_STRENGTHS[name])
                identity, mask = torch.ones_like(value), applied
            if name not in self.augmentations:
                mask = torch.zeros_like(mask)
            out[name] = torch.where(mask, value, identity)
        return out

    @staticmethod
    def matrices(params: dict[str, Tensor], size: int) -> Tensor:
        """``(B, 2, 3)`` sampling matrices (output -> input coordinates in [-1, 1]) of the geometric part."""
        shift = torch.round(params["xint"] * size) * (2.0 / size)  # whole pixels
        s, a = params["scale"], params["aniso"]
        m = (
            _translate(shift)
            @ _scale(1 / s, 1 / s)
            @ _rotate(-params["rotate"])
            @ _scale(1 / a, a)
            @ _translate(params["xfrac"] * 2.0)
        )
        return m[:, :2, :]

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``x`` with the drawn parameters applied (geometry, then brightness and contrast)."""
        device, dtype = x.device, x.dtype
        geometric = torch.stack(
            [params[n] != (1.0 if n in ("scale", "aniso") else 0.0) for n in ("scale", "aniso", "rotate")]
            + [(params[n] != 0).any(dim=1) for n in ("xint", "xfrac")]
        ).any(dim=0)
        if bool(geometric.any()):
            theta = self.matrices(params, x.shape[-1]).to(device=device, dtype=torch.float32)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            moved = F.grid_sample(
                x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
            x = torch.where(geometric.to(device)[:, None, None, None], moved.to(dtype), x)
        contrast = params["contrast"].to(device=device, dtype=dtype)[:, None, None, None]
        brightness = params["brightness"].to(device=device, dtype=dtype)[:, None, None, None]
        return x * contrast + brightness


def _translate(t: Tensor) -> Tensor:
    m = torch.eye(3).repeat(t.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = t[:, 0], t[:, 1]
    return m


def _scale(sx: Tensor, sy: Tensor) -> Tensor:
    m = torch.eye(3).repeat(sx.shape[0], 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(angle: Tensor) -> Tensor:
    m = torch.eye(3).repeat(angle.shape[0], 1, 1)
    c, s = torch.cos(angle), torch.sin(angle)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m
