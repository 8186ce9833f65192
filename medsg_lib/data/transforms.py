"""Decoding, preprocessing and augmentation of chest X-rays.

Decoding (:func:`load_image`) turns any common PNG/JPEG into uint8, explicitly per Pillow mode:

- ``L`` as is; ``1`` to 0/255.
- 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, and ``I`` with values in 0..65535) is scaled by the
  full 16-bit range: ``v8 = round(v16 * 255 / 65535)`` (0 -> 0, 65535 -> 255, 257 k -> k), not by the image's
  min/max, so that the grey levels of different files stay comparable.
- ``RGB`` to grey with ITU-R BT.601 luma, ``Y = 0.299 R + 0.587 G + 0.114 B``, with Pillow's fixed-point
  rounding (``(19595 R + 38470 G + 7471 B + 32768) >> 16``, identical to ``Image.convert("L")``; grey pixels
  stay exact).
- Alpha (``LA``, ``RGBA``, ``PA``, transparent ``P``) is composited on black, ``c' = round(c * a / 255)``,
  then dropped: a transparent pixel carries no signal. (The authors' ``.convert("RGB")`` drops alpha without
  compositing; the two agree for the usual fully opaque X-ray.)
- Palette (``P``) images are expanded to RGB(A) first; ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX`` are
  converted to RGB by Pillow. Other modes (e.g. float ``F``) raise :class:`BadFileError`.
- The EXIF orientation tag, if any, is applied (``ImageOps.exif_transpose``) so the image is upright as
  viewers show it.

``channels=3`` keeps RGB sources in colour and repeats grey ones, like the authors' ``.convert("RGB")``.

Preprocessing (:func:`preprocess`) resizes to a square ``img_size`` with Pillow's Lanczos filter, which widens
its kernel by the down-scaling factor (anti-aliased). Non-square images are stretched, as the authors'
``transforms.Resize([size, size])`` does; COVID-QU-Ex images are already square (256 x 256).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from medsg_lib.data.records import BadFileError, DataError

SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Degenerate and hostile images (docs/reliability.md). Refused before decoding: more pixels than an 8000 x 8000
# radiograph (a decompression bomb announces its size in the header; Pillow itself only warns below 179 Mpx).
MAX_PIXELS = 64_000_000
# Refused as training or evaluation images (:func:`check_radiograph`): longer side over 3x the shorter (chest
# X-rays are 1:1 to 1.5:1, and every image is stretched to a square), shorter side under half the training size
# (more than 2x upsampling invents the detail it shows), and images with one grey level (no content).
MAX_ASPECT = 3.0
MAX_UPSCALE = 2.0
PILLOW_TO_RGB_MODES: frozenset[str] = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"})


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 ``(H, W, 3)`` -> uint8 ``(H, W)``, bit-identical to Pillow's ``"L"``."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).astype(np.uint8)


def composite_on_black(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round(color * alpha / 255)``: uint8 ``color`` (H, W) or (H, W, C), ``alpha`` (H, W) -> uint8."""
    a = alpha.astype(np.uint32)
    if color.ndim == 3:
        a = a[..., None]
    return ((color.astype(np.uint32) * a + 127) // 255).astype(np.uint8)


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """Integer array in 0..65535 -> uint8 ``round(v * 255 / 65535)`` (the full 16-bit range, not min/max)."""
    v = values.astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _decode_pixels(im: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
    """Pillow image -> (uint8 array, is_color): grey ``(H, W)`` or RGB ``(H, W, 3)``, alpha composited."""
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise BadFileError(
                path,
                f"32-bit integer image with values in {values.min()}..{values.max()}, outside 0..65535; "
                "save it as an 8- or 16-bit PNG",
            )
        return scale_16_to_8(values), False
    if mode == "1":
        return np.asarray(im.convert("L")), False
    if mode == "L":
        return np.asarray(im), False
    if mode == "LA":
        la = np.asarray(im)
        return composite_on_black(la[..., 0], la[..., 1]), False
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return _decode_pixels(im.convert("RGBA" if has_alpha else "RGB"), path)
    if mode == "RGB":
        return np.asarray(im), True
    if mode == "RGBA":
        rgba = np.asarray(im)
        return composite_on_black(rgba[..., :3], rgba[..., 3]), True
    if mode in PILLOW_TO_RGB_MODES:
        return np.asarray(im.convert("RGB")), True
    raise BadFileError(path, f"unsupported image mode {mode!r}; save it as an 8-bit grey or RGB PNG/JPEG")


def load_image(path: Path, channels: int = 1) -> np.ndarray:
    """Decode an image file fully to uint8: ``(H, W)`` for ``channels=1``, ``(H, W, 3)`` for ``channels=3``.

    Decoding is complete (``Image.load``), so truncated files fail here. See the module docstring for the
    conversion of each Pillow mode. Raises :class:`BadFileError` (a :class:`DataError`) naming the file.
    """
    if channels not in (1, 3):
        raise DataError(f"channels={channels!r} is not allowed; choose 1 or 3")
    path = Path(path)
    try:
        with Image.open(path) as opened:
            check_pixel_count(opened.size, path)
            opened.load()
            im = ImageOps.exif_transpose(opened)
    except BadFileError:
        raise
    except FileNotFoundError:
        raise BadFileError(path, "file does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadFileError(
            path, f"cannot decode ({exc}); the file is truncated or not an image: replace it"
        ) from exc
    pixels, is_color = _decode_pixels(im, path)
    if channels == 1:
        return rgb_to_gray(pixels) if is_color else pixels
    return pixels if is_color else np.repeat(pixels[..., None], 3, axis=2)


def check_pixel_count(size: tuple[int, int], path: Path) -> None:
    """Raise :class:`BadFileError` when a header announces more than :data:`MAX_PIXELS` pixels (or none), before
    anything is decoded."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise BadFileError(
            path,
            f"its header says {width}x{height} = {width * height:,} px, over the {MAX_PIXELS:,} px limit "
            "(transforms.MAX_PIXELS): a decompression bomb or not a radiograph; refused before decoding",
        )
    if width < 1 or height < 1:
        raise BadFileError(path, f"its header says {width}x{height} px: an image without pixels; replace it")


def check_radiograph(img: np.ndarray, img_size: int, path: Path) -> None:
    """Raise :class:`BadFileError` naming ``path`` when a decoded image (``(H, W)`` or ``(H, W, 3)``) is not usable
    as a ``img_size`` px training or evaluation X-ray: an aspect ratio over :data:`MAX_ASPECT`, a shorter side
    under ``img_size / MAX_UPSCALE``, or a single grey level."""
    height, width = img.shape[:2]
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        raise BadFileError(
            path,
            f"{width}x{height} px is {ratio:.1f}:1, over {MAX_ASPECT:g}:1 (transforms.MAX_ASPECT): a chest X-ray "
            "is near square and every image is stretched to a square; crop it to the chest or remove it",
        )
    if min(width, height) * MAX_UPSCALE < img_size:
        raise BadFileError(
            path,
            f"{width}x{height} px is too small for {img_size} px images: its shorter side would be upsampled "
            f"{img_size / min(width, height):.1f}x, over {MAX_UPSCALE:g}x (transforms.MAX_UPSCALE); use a smaller "
            "img_size or remove it",
        )
    if img.min() == img.max():
        raise BadFileError(path, f"every pixel is {int(img.min())}: a blank image shows nothing; remove it")


def preprocess(img: np.ndarray, img_size: int) -> np.ndarray:
    """Resize a uint8 ``(H, W)`` or ``(H, W, 3)`` image to ``(img_size, img_size[, 3])`` with Lanczos (uint8).

    Pillow's Lanczos widens its kernel by the down-scaling factor, so down-sizing is anti-aliased. Non-square
    inputs are stretched (the authors' ``Resize([size, size])``). Images already at the size are returned as
    is.
    """
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"preprocess expects a uint8 (H, W) or (H, W, 3) array, got {img.dtype} {img.shape}")
    if img_size <= 0:
        raise ValueError(f"img_size={img_size!r} must be > 0")
    if img.shape[:2] == (img_size, img_size):
        return img
    resized = Image.fromarray(img).resize((img_size, img_size), Image.Resampling.LANCZOS)
    return np.asarray(resized)


def normalize_u8(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 tensor (any shape) in 0..255 -> float32 in [-1, 1]: ``x / 127.5 - 1`` (0 -> -1, 255 -> 1)."""
    return x_u8.to(torch.float32) / 127.5 - 1.0


def to_tensor(img_u8: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W)`` or ``(H, W, C)`` array -> float32 ``(C, H, W)`` tensor in [-1, 1]."""
    if img_u8.dtype != np.uint8 or img_u8.ndim not in (2, 3):
        raise ValueError(
            f"to_tensor expects a uint8 (H, W) or (H, W, C) array, got {img_u8.dtype} {img_u8.shape}"
        )
    chw = img_u8[None] if img_u8.ndim == 2 else img_u8.transpose(2, 0, 1)
    return normalize_u8(torch.from_numpy(chw.copy()))  # copy: contiguous, writable


def load_mask(path: Path, img_size: int) -> np.ndarray:
    """Read a segmentation mask as bool ``(img_size, img_size)``, resized with nearest neighbour.

    Masks are decoded like images (:func:`load_image`, grey); a pixel is inside when its grey value is >= 128
    (masks are stored as 0/255), or > 0 for masks stored as 0/1.
    """
    return mask_at_size(load_image(path, channels=1), img_size)


def mask_at_size(gray: np.ndarray, img_size: int) -> np.ndarray:
    """A uint8 ``(H, W)`` mask (0/255 or 0/1) as bool ``(img_size, img_size)``: resized with nearest neighbour,
    inside where the grey value is >= 128 (> 0 for 0/1 masks); :func:`load_mask` after decoding."""
    if gray.shape != (img_size, img_size):
        gray = np.asarray(Image.fromarray(gray).resize((img_size, img_size), Image.Resampling.NEAREST))
    threshold = 1 if gray.max(initial=0) <= 1 else 128
    return gray >= threshold


def faithful_augment(img_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The authors' training augmentation on a uint8 ``(C, H, W)`` tensor of side ``img_size``.

    With probability 0.5 a ``RandomResizedCrop(img_size, scale=(0.8, 1.0), ratio=(0.9, 1.1))``, then a random
    horizontal flip (p = 0.5). Flips put the heart on the wrong side, so this runs only with
    ``DataConfig.faithful_augment=True``. The crop is taken from the cached, already resized image (the
    authors crop the full-resolution file, then resize). Uses torch's global random state.
    """
    from torchvision import transforms as T

    crop = T.RandomResizedCrop(img_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True)
    return T.Compose([T.RandomApply([crop], p=0.5), T.RandomHorizontalFlip(p=0.5)])
