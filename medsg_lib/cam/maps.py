"""Class activation maps: :func:`compute_cams` returns maps normalised per image to [0, 1] at the image's size,
by Grad-CAM (the paper's) or another method of the ``grad-cam`` package (:data:`CAM_METHODS`: Grad-CAM++,
HiResCAM, LayerCAM, Score-CAM, Ablation-CAM), or by occlusion (:func:`occlusion_maps`: the drop of the class score
when a patch is replaced by the image's mean, no layer involved). For gradient methods the backward pass stops at
the explained layer."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from medsg_lib.models.classifier import as_model_input, target_layer

_FLAT = 1e-12  # a map whose range is below this carries no location: it becomes all zeros
# method name -> grad-cam class; "occlusion" is :func:`occlusion_maps`
CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}
OCCLUSION = "occlusion"


def normalise_cams(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of ``maps`` ``(B, H, W)`` to [0, 1] (float32).

    A flat map (range < 1e-12, e.g. all zeros when ReLU removed every positive contribution) or a non-finite
    one becomes all zeros rather than NaN; every other map has minimum exactly 0 and maximum exactly 1.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W); got shape {maps.shape}")
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    ok = np.isfinite(span) & (span >= _FLAT)
    out = np.where(ok, (maps - low) / np.where(ok, span, 1.0), 0.0)
    return out.astype(np.float32)


@contextmanager
def _grads_from(model: nn.Module, layer: nn.Module) -> Iterator[bool]:
    """Inside the ``with``, only ``layer``'s parameters require grad, so the backward pass of Grad-CAM stops
    at ``layer`` (the gradient it needs) instead of running on to every earlier weight and the input: the same
    maps, a fraction of the work (the fine stem's early stages are the costly ones). Yields whether the input
    must require grad instead (a ``layer`` without parameters). Every flag is restored on exit."""
    flags = {p: p.requires_grad for p in model.parameters()}
    own = list(layer.parameters())
    try:
        for p in flags:
            p.requires_grad_(False)
        for p in own:
            p.requires_grad_(True)
        yield not own
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 32,
    versus: int | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """Class activation maps ``(B, H, W)`` float32 in [0, 1] of ``x`` ``(B, C, H, W)`` in [-1, 1].

    Args:
        targets: the class explained for each image (``B`` ints); None explains the predicted class.
        layer: the layer whose activations are weighted; default ``target_layer(model)`` (``layer4[-1]``,
            a H/32 x W/32 map, i.e. 2x2 at 64 px: coarse; ``target_layer(model, "layer3")`` is H/16).
        versus: explain each target's logit minus class ``versus``'s (:class:`ContrastTarget`, a diagnostic:
            evidence that raises both logits alike cancels) instead of the target's logit (the paper's maps).
        method: a key of :data:`CAM_METHODS` (default Grad-CAM, the paper's) or ``"occlusion"`` (``layer`` is
            then not used).

    The maps are upsampled to ``H x W`` by grad-cam (bilinear) and normalised per image by
    :func:`normalise_cams` (flat maps are all zeros; a ``UserWarning`` when every map is flat). ``model`` is
    left in its previous train/eval mode with no stored gradients.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W); got shape {tuple(x.shape)}")
    if targets is not None and len(targets) != x.shape[0]:
        raise ValueError(f"targets has {len(targets)} entries for {x.shape[0]} images")
    if method == OCCLUSION:
        return _checked(normalise_cams(occlusion_maps(model, x, targets, versus=versus)), x)
    if method not in CAM_METHODS:
        allowed = ", ".join(map(repr, [*CAM_METHODS, OCCLUSION]))
        raise ValueError(f"method={method!r} is not a CAM method; choose one of {allowed}")
    layer = target_layer(model) if layer is None else layer
    was_training = model.training
    device = next(model.parameters()).device
    maps = []
    try:
        with (
            CAM_METHODS[method](model=model, target_layers=[layer]) as cam,
            torch.enable_grad(),
            _grads_from(model, layer) as via_input,
        ):
            for start in range(0, x.shape[0], batch_size):
                x_batch = as_model_input(x[start : start + batch_size].detach().to(device).float(), model)
                x_batch.requires_grad_(via_input)
                batch_targets = None
                if targets is not None:
                    batch_targets = [
                        ClassifierOutputTarget(int(t)) if versus is None else ContrastTarget(int(t), versus)
                        for t in targets[start : start + batch_size]
                    ]
                maps.append(cam(input_tensor=x_batch, targets=batch_targets))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return _checked(normalise_cams(np.concatenate(maps, axis=0)), x)


def _checked(cams: np.ndarray, x: torch.Tensor) -> np.ndarray:
    """``cams``, with a warning when every map is flat."""
    if not cams.any():
        warnings.warn(
            "every Grad-CAM map is flat (all zeros): the layer's activation may be 1x1 at this image size "
            f"({x.shape[-2]}x{x.shape[-1]}; ResNet-18's layer4 is H/32 with the torchvision stem, H/8 with the fine "
            "one), or no class evidence is positive; try target_layer(model, 'layer3'), stem='fine' or larger images",
            stacklevel=3,
        )
    return cams


@torch.no_grad()
def occlusion_maps(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | None,
    patch: int | None = None,
    versus: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion sensitivity ``(B, H, W)`` float64, not normalised: for a ``patch`` x ``patch`` square (default
    H / 8) slid with stride ``patch / 2``, the drop of the target's logit (minus ``versus``'s) when the square
    is replaced by the image's mean, averaged over the squares covering each pixel; rises count as 0.
    ``targets`` None: the predicted class. ``model`` is left in its previous mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    b, _, h, w = x.shape
    size = patch or max(1, h // 8)
    stride = max(1, size // 2)
    corners = [(i, j) for i in range(0, h - size + 1, stride) for j in range(0, w - size + 1, stride)]
    out = np.zeros((b, h, w))
    try:
        for k in range(b):
            image = as_model_input(x[k : k + 1].to(device).float(), model)
            logits = model(image)[0]
            label = int(logits.argmax()) if targets is None else int(targets[k])
            base = float(_score(logits[None], label, versus))
            drops, cover = np.zeros((h, w)), np.zeros((h, w))
            for start in range(0, len(corners), batch_size):
                chunk = corners[start : start + batch_size]
                copies = image.repeat(len(chunk), 1, 1, 1)
                for n, (i, j) in enumerate(chunk):
                    copies[n, :, i : i + size, j : j + size] = image.mean()
                for (i, j), value in zip(chunk, _score(model(copies), label, versus).tolist(), strict=True):
                    drops[i : i + size, j : j + size] += max(base - value, 0.0)
                    cover[i : i + size, j : j + size] += 1
            out[k] = drops / np.maximum(cover, 1)
    finally:
        model.train(was_training)
    return out


def _score(logits: torch.Tensor, label: int, versus: int | None) -> torch.Tensor:
    """``(N,)``: the ``label`` logit of each row, minus the ``versus`` logit when given."""
    return logits[:, label] - (logits[:, versus] if versus is not None else 0)


class ContrastTarget:
    """A Grad-CAM target: class ``label``'s logit minus class ``versus``'s (e.g. COVID-19 against Normal), so
    evidence that raises both logits alike cancels. A diagnostic beside the paper's class-score maps."""

    def __init__(self, label: int, versus: int) -> None:
        self.label, self.versus = label, versus

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., self.label] - logits[..., self.versus]
