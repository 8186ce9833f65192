"""The three-class chest X-ray classifier: torchvision's ResNet-18 with a one-channel stem.

Two stems (:data:`STEMS`): ``"torchvision"`` is torchvision's (7x7 stride-2 conv, then a stride-2 max-pool: the
stages run at H/4 .. H/32); ``"fine"`` keeps the same 7x7 conv at stride 1 and drops the max-pool, the usual
change for small inputs, so every stage is 4x finer (``layer3`` 16x16 and ``layer4`` 8x8 at 64 px, against 4x4
and 2x2) at about 16x the compute. The weights are the same tensors, so ImageNet initialisation works for both.

Used for Figure 1 (Grad-CAM), for the "domain" feature space of the metrics
(:func:`classifier_features`, 512-d penultimate features; distances there are *not* FID) and for the utility
of synthetic data.

ImageNet weights are optional: :func:`find_imagenet_weights` looks for torchvision's ``resnet18-f37072fd.pth``
offline (explicit path, ``$MEDSG_WEIGHTS_DIR``, torch.hub's cache) and never downloads. Without them the
network is trained from scratch, and every output says which (``"init": "imagenet" | "scratch"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet, resnet18

from medsg_lib.metrics.weights import WEIGHTS_DIR_ENV, MissingWeightsError, cached_sha256, hub_checkpoints_dir

IMAGENET_RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1
IMAGENET_RESNET18_SHA256_PREFIX = "f37072fd"  # torchvision's file-name convention: sha256 prefix
IMAGENET_RESNET18_URL = f"https://download.pytorch.org/models/{IMAGENET_RESNET18_FILE}"
FEATURE_DIM = 512  # ResNet-18 penultimate width
# down-sampling of each stage's output relative to the input, per stem
STAGE_STRIDES: dict[str, dict[str, int]] = {
    "torchvision": {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32},
    "fine": {"layer1": 1, "layer2": 2, "layer3": 4, "layer4": 8},
}
STEMS: tuple[str, ...] = tuple(STAGE_STRIDES)


def find_imagenet_weights(path: Path | None = None) -> Path | None:
    """The local ImageNet ResNet-18 file, or None when absent (nothing is downloaded).

    Args:
        path: an explicit file, or a folder holding ``resnet18-f37072fd.pth``; when given, its absence raises.
            Otherwise ``$MEDSG_WEIGHTS_DIR/<file>``, then ``<torch.hub.get_dir()>/checkpoints/<file>``.

    Raises:
        MissingWeightsError: an explicit ``path`` that does not exist.
    """
    if path is not None:
        path = Path(path)
        explicit = path / IMAGENET_RESNET18_FILE if path.is_dir() else path
        if not explicit.is_file():
            raise MissingWeightsError(
                f"ImageNet ResNet-18 weights not found at {explicit}; download {IMAGENET_RESNET18_URL} "
                f"(sha256 prefix {IMAGENET_RESNET18_SHA256_PREFIX}) or train from scratch (init='scratch')"
            )
        return explicit
    candidates = [hub_checkpoints_dir() / IMAGENET_RESNET18_FILE]
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir:
        candidates.insert(0, Path(env_dir) / IMAGENET_RESNET18_FILE)
    return next((p for p in candidates if p.is_file()), None)


def is_published_imagenet_file(path: Path) -> bool:
    """True when ``path``'s sha256 starts with torchvision's published prefix ``f37072fd``."""
    return cached_sha256(Path(path)).startswith(IMAGENET_RESNET18_SHA256_PREFIX)


def adapt_conv1_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB stem kernel ``(64, 3, 7, 7)`` for ``in_channels`` inputs.

    One channel: the sum over RGB, so that a gray image repeated to RGB gives the same response. Three
    channels: unchanged. Returns ``(64, in_channels, 7, 7)``.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected an RGB conv1 weight of shape (out, 3, k, k); got {tuple(weight.shape)}")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if in_channels == 3:
        return weight.clone()
    raise ValueError(f"in_channels={in_channels!r} is not supported; choose 1 (grayscale) or 3 (RGB)")


def _load_imagenet_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "conv1.weight" not in state or "fc.weight" not in state:
        raise ValueError(
            f"{path} is not a torchvision ResNet-18 state_dict (no 'conv1.weight' / 'fc.weight')"
        )
    return state


def build_classifier(
    arch: str = "resnet18",
    in_channels: int = 1,
    num_classes: int = 3,
    pretrained_path: Path | None = None,
    stem: str = "torchvision",
) -> ResNet:
    """torchvision ResNet-18 with a ``in_channels`` stem and a ``num_classes`` head (CPU, train mode).

    Input ``(B, in_channels, H, W)`` in [-1, 1], any ``H, W >= 32`` (the network down-samples by 32, or by 8 with
    ``stem="fine"``, and pools adaptively); output ``(B, num_classes)`` logits. ``stem``: one of :data:`STEMS`
    (module docstring). With ``pretrained_path`` the ImageNet weights are loaded
    (strictly) and conv1 is adapted by :func:`adapt_conv1_weight`; the head is always freshly initialised, so
    seed torch before calling for reproducible weights.
    """
    if arch != "resnet18":
        raise ValueError(f"arch={arch!r} is not supported; choose 'resnet18'")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels!r} is not supported; choose 1 (grayscale) or 3 (RGB)")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be >= 2")
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r} is not supported; choose one of {', '.join(map(repr, STEMS))}")
    model = resnet18(weights=None)
    if pretrained_path is not None:
        model.load_state_dict(_load_imagenet_state(pretrained_path))
    rgb_weight = model.conv1.weight.detach()
    stride = 2 if stem == "torchvision" else 1
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=stride, padding=3, bias=False)
    if stem == "fine":
        model.maxpool = nn.Identity()
    if pretrained_path is not None:
        with torch.no_grad():
            model.conv1.weight.copy_(adapt_conv1_weight(rgb_weight, in_channels))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def classifier_features(model: ResNet, x: torch.Tensor) -> torch.Tensor:
    """Penultimate (average-pooled ``layer4``) features ``(B, 512)`` of ``x`` ``(B, C, H, W)`` in [-1, 1].

    The "domain" feature space of the metrics (Fréchet distance / KID in it are never called FID). Runs the
    model as it is (put it in eval mode, and under ``torch.no_grad()`` for metrics).
    """
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def as_model_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` with its gray channel repeated when ``model``'s stem takes three channels and ``x``
    has one (X-rays are gray: RGB copies of them are the gray image three times); otherwise ``x`` itself."""
    conv1 = getattr(model, "conv1", None)
    channels = conv1.in_channels if isinstance(conv1, nn.Conv2d) else x.shape[1]
    return x.repeat(1, channels, 1, 1) if x.shape[1] == 1 and channels == 3 else x


def stem_of(model: ResNet) -> str:
    """Which of :data:`STEMS` ``model`` was built with (read from its conv1 stride)."""
    return "torchvision" if model.conv1.stride[0] == 2 else "fine"


def stage_map_size(model: ResNet, name: str, img_size: int) -> int:
    """Side in pixels of stage ``name``'s output map for ``img_size`` inputs (e.g. 4 for ``layer3`` at 64 px
    with the torchvision stem, 16 with the fine stem): the resolution of a Grad-CAM map before upsampling."""
    _check_stage(name)
    return -(-img_size // STAGE_STRIDES[stem_of(model)][name])


def target_layer(model: ResNet, name: str = "layer4") -> nn.Module:
    """The Grad-CAM layer: the last block of ``name`` (default ``layer4[-1]``, the usual choice).

    With the torchvision stem ``layer4`` maps are H/32 x W/32 (2x2 at 64 px, 8x8 at 256 px) and ``layer3`` is
    H/16; the fine stem makes both 4x finer (:func:`stage_map_size`).
    """
    _check_stage(name)
    return getattr(model, name)[-1]


def _check_stage(name: str) -> None:
    if name not in STAGE_STRIDES["torchvision"]:  # the same four stages for every stem
        raise ValueError(f"name={name!r} is not a ResNet stage; choose one of 'layer1'..'layer4'")
