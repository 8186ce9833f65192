"""Feature extractors for Fréchet-type metrics (FID, KID, PRDC), one per protocol.

Every image, whether a tensor in memory or a file on disk, takes the same path:

    tensor (B, C, H, W) in [-1, 1] --quantise like torchvision.utils.save_image--> uint8 PIL image
    file (PNG/JPG/...)             --PIL.Image.open-------------------------------> PIL image
    PIL image --protocol's ``prepare``--> network input (3, h, w) --network--> feature (D,) float64

so features of generated tensors equal the features of the PNG files they are saved as. One-channel X-rays
become three channels only inside ``prepare`` (PIL ``convert("RGB")`` repeats the gray level), nowhere else.

Protocols (``build_extractor``):

- ``"pytorch-fid"``: the field's standard FID network, pytorch-fid 0.3.0's ``InceptionV3([3])`` (the
  TF-Inception port, pool3, 2048-d; ``dims`` picks another block as ``python -m pytorch_fid --dims`` does).
  Input exactly as ``python -m pytorch_fid`` reads files: ``convert("RGB")``, ``ToTensor()`` ([0, 1]); the
  network itself resizes to 299 (bilinear, ``align_corners=False``) and maps to [-1, 1]. Weights:
  ``pt_inception``.
- ``"paper"``: the StarGAN v2 protocol the paper's numbers come from (see ``docs/paper.md``): torchvision's
  ImageNet InceptionV3 (weights ``inception_v3_tv``), 2048-d average-pool features. Input as StarGAN v2's
  ``get_eval_loader(imagenet_normalize=True)``: ``convert("RGB")``, PIL bilinear
  ``Resize([img_size, img_size])`` (skipped when ``img_size`` is None), PIL bilinear ``Resize([299, 299])``,
  ``ToTensor()``, ``Normalize`` with the ImageNet mean and std. StarGAN v2 runs the network's blocks one by
  one, which bypasses torchvision's ``transform_input``; we build the network with ``transform_input=False``
  and ``fc = Identity`` so that its forward computes exactly those blocks (dropout is inactive in eval mode).
  Its numbers are not comparable to standard FID.
- ``"domain"``: any ``nn.Module`` mapping (B, C, H, W) in [-1, 1] to (B, D), e.g. the project's chest X-ray
  classifier; records call its distance ``fd_<name>``, never FID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytorch_fid.inception as pfi
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

from medsg_lib.metrics.weights import resolve_weights, weights_label

PROTOCOLS: tuple[str, ...] = ("pytorch-fid", "paper", "domain")
# pytorch_fid.fid_score.IMAGE_EXTENSIONS, compared case-insensitively
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}
)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INCEPTION_SIZE = 299

# What a source of images may be: a folder, a list of files, a tensor, or an iterable of tensor batches (a
# generator's outputs, a DataLoader yielding tensors or (tensor, label, ...) tuples).
ImageSource = (
    Path | str | Sequence[Path | str] | torch.Tensor | Iterable[torch.Tensor | Sequence[torch.Tensor]]
)


@dataclass
class FeatureExtractor:
    """A network plus the exact preprocessing of one protocol. Call it on a list of PIL images."""

    protocol: str  # "pytorch-fid" | "paper" | "domain:<name>"
    metric: str  # name of the Fréchet distance in records: "fid" or "fd_<name>"
    feature_net: str  # human-readable network description
    weights: str  # provenance label (weights_label), says UNVERIFIED for random or unknown files
    net: nn.Module  # network input (B, 3|C, h, w) -> (B, D)
    prepare: Callable[[Image.Image], torch.Tensor]  # PIL image -> network input (3|C, h, w)
    device: torch.device

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Features (B, D) float64 of ``images`` (B PIL images of one size after ``prepare``)."""
        inputs = [self.prepare(img) for img in images]
        shapes = {tuple(t.shape) for t in inputs}
        if len(shapes) > 1:
            raise ValueError(
                f"{self.protocol}: images of one batch differ in size after preprocessing "
                f"({sorted(shapes)}); write all images at one size or pass img_size= to build_extractor"
            )
        feats = self.net(torch.stack(inputs).to(self.device))
        if feats.ndim != 2:
            raise ValueError(
                f"{self.protocol}: the network returned shape {tuple(feats.shape)}, expected (B, D)"
            )
        return feats.double().cpu().numpy()


class _PooledInception(nn.Module):
    """pytorch-fid's InceptionV3 -> (B, D), pooling non-scalar blocks as ``get_activations`` does."""

    def __init__(self, inception: pfi.InceptionV3) -> None:
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W) in [0, 1]
        pred = self.inception(x)[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
        return pred.flatten(1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise (B, C, H, W) in [-1, 1] to uint8 as ``torchvision.utils.save_image`` does after denormalising.

    Values outside [-1, 1] are clipped; levels are round-half-up of ``(x + 1) / 2 * 255``.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {x.dtype}")
    x01 = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return x01.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] -> B PIL images, mode "L" (C = 1) or "RGB" (C = 3), as PNG files would hold."""
    u8 = to_uint8(x).permute(0, 2, 3, 1).numpy()
    if u8.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in u8]
    return [Image.fromarray(a, mode="RGB") for a in u8]


def list_image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively), sorted; extensions as pytorch-fid's, any case."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}")
    return files


def load_pil_image(path: Path) -> Image.Image:
    """Open one image file and read it fully as a PIL image, mode as stored (``prepare`` converts, as
    pytorch-fid does). Not :func:`medsg_lib.data.transforms.load_image`, which decodes to a uint8 array."""
    with Image.open(path) as img:
        img.load()
        return img.copy()


def _first_tensor(item: object) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, list | tuple) and item and isinstance(item[0], torch.Tensor):
        return item[0]  # a DataLoader's (images, labels, ...) tuple
    raise TypeError(
        f"expected a tensor batch (B, C, H, W) or a (tensor, ...) tuple, got {type(item).__name__}"
    )


def iter_image_batches(source: ImageSource, batch_size: int) -> Iterator[list[Image.Image]]:
    """Yield lists of at most ``batch_size`` PIL images from any :data:`ImageSource`, in order, streaming."""
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be > 0")
    if isinstance(source, str | Path):
        source = list_image_files(Path(source))
    if isinstance(source, torch.Tensor):
        source = [source]
    if isinstance(source, Sequence) and source and isinstance(source[0], str | Path):
        files = [Path(p) for p in source]
        for start in range(0, len(files), batch_size):
            yield [load_pil_image(p) for p in files[start : start + batch_size]]
        return
    for item in source:
        x = _first_tensor(item)
        for start in range(0, x.shape[0], batch_size):
            yield tensor_to_pil(x[start : start + batch_size])


def iter_features(
    extractor: FeatureExtractor, source: ImageSource, batch_size: int = 50
) -> Iterator[np.ndarray]:
    """Yield feature batches (b, D) float64 for the images of ``source`` (see :func:`iter_image_batches`)."""
    for images in iter_image_batches(source, batch_size):
        yield extractor(images)


def extract_features(extractor: FeatureExtractor, source: ImageSource, batch_size: int = 50) -> np.ndarray:
    """All features (N, D) float64 of ``source`` (for statistics alone, see ``fid.extract_stats``)."""
    batches = list(iter_features(extractor, source, batch_size))
    if not batches:
        raise ValueError("the image source is empty")
    return np.concatenate(batches, axis=0)


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random state dict with the keys and shapes of the pretrained file ``name`` (tests only).

    ``pt_inception``: torchvision's Inception3 with 1008 classes and no aux head has exactly the parameter
    names and shapes of pytorch-fid's ``fid_inception_v3()`` (its FID blocks subclass torchvision's). Conv and
    linear weights are He-normal (fan-in, ReLU gain), so activations stay of order 1 through the deep nets
    (torchvision's Inception init would grow them to ~1e10). Seeded inside ``fork_rng``: the global random
    state is left alone.
    """
    builders: dict[str, Callable[[], nn.Module]] = {
        "pt_inception": lambda: torchvision.models.inception_v3(
            weights=None, aux_logits=False, num_classes=1008, init_weights=False
        ),
        "inception_v3_tv": lambda: torchvision.models.inception_v3(
            weights=None, aux_logits=True, init_weights=False
        ),
        "alexnet": lambda: torchvision.models.alexnet(weights=None),
    }
    if name not in builders:
        raise KeyError(f"no random state dict for {name!r}; known: {', '.join(builders)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = builders[name]()
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        return net.state_dict()


def load_weights(
    name: str,
    weights_path: Path | None = None,
    allow_random_weights: bool = False,
    verify: bool = True,
    download: bool | None = None,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, provenance label) of the pretrained file ``name``, found by ``resolve_weights``.

    ``allow_random_weights=True`` (tests only) skips the search and returns :func:`random_state_dict`.
    """
    if allow_random_weights:
        return random_state_dict(name, seed), f"{weights_label(name, None)}, seed {seed}"
    path = resolve_weights(name, weights_path, download=download, verify=verify)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, weights_label(name, path)


def _pre_resize(img: Image.Image, img_size: int | None) -> Image.Image:
    return img if img_size is None else TF.resize(img, [img_size, img_size], InterpolationMode.BILINEAR)


def _pytorch_fid_net(state: dict[str, torch.Tensor], dims: int) -> nn.Module:
    if dims not in pfi.InceptionV3.BLOCK_INDEX_BY_DIM:
        raise ValueError(
            f"dims={dims} is not offered by pytorch-fid; "
            f"choose one of {list(pfi.InceptionV3.BLOCK_INDEX_BY_DIM)}"
        )

    def serve(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        if url != pfi.FID_WEIGHTS_URL:
            raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}")
        return state

    # pytorch-fid 0.3.0 takes no local weights file: fid_inception_v3() calls the module-level
    # load_state_dict_from_url(FID_WEIGHTS_URL). We serve the already resolved and verified state dict through
    # that one name while its constructor runs; the network and its loading are pytorch-fid's own.
    with mock.patch.object(pfi, "load_state_dict_from_url", serve):
        inception = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])  # resize + normalise inside
    return _PooledInception(inception)


def _prepare_pytorch_fid(img_size: int | None) -> Callable[[Image.Image], torch.Tensor]:
    def prepare(img: Image.Image) -> torch.Tensor:  # -> (3, H, W) in [0, 1]
        return TF.to_tensor(_pre_resize(img.convert("RGB"), img_size))

    return prepare


def _paper_net(state: dict[str, torch.Tensor]) -> nn.Module:
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=True, transform_input=False, init_weights=False
    )
    net.load_state_dict(state)
    net.fc = nn.Identity()  # 2048-d average-pool features
    return net


def _prepare_paper(img_size: int | None) -> Callable[[Image.Image], torch.Tensor]:
    def prepare(img: Image.Image) -> torch.Tensor:  # -> (3, 299, 299), ImageNet-normalised
        img = _pre_resize(img.convert("RGB"), img_size)
        img = TF.resize(img, [INCEPTION_SIZE, INCEPTION_SIZE], InterpolationMode.BILINEAR)
        return TF.normalize(TF.to_tensor(img), list(IMAGENET_MEAN), list(IMAGENET_STD))

    return prepare


def _prepare_domain(channels: int, img_size: int | None) -> Callable[[Image.Image], torch.Tensor]:
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} must be 1 or 3")
    mode = "L" if channels == 1 else "RGB"

    def prepare(img: Image.Image) -> torch.Tensor:  # -> (C, H, W) in [-1, 1]
        return TF.to_tensor(_pre_resize(img.convert(mode), img_size)) * 2 - 1

    return prepare


def build_extractor(
    protocol: str,
    device: str | torch.device = "cpu",
    weights_path: Path | None = None,
    allow_random_weights: bool = False,
    feature_fn: nn.Module | None = None,
    *,
    name: str | None = None,
    channels: int = 1,
    img_size: int | None = None,
    dims: int = 2048,
    verify: bool = True,
    download: bool | None = None,
    seed: int = 0,
) -> FeatureExtractor:
    """Build the feature extractor of ``protocol`` (see the module docstring for the exact preprocessing).

    Args:
        protocol: "pytorch-fid", "paper" or "domain".
        device: where the network runs.
        weights_path: an explicit pretrained file (else ``resolve_weights`` searches; not used by "domain").
        allow_random_weights: tests only: random initialisation, labelled UNVERIFIED in ``weights``.
        feature_fn: "domain" only: module mapping (B, channels, H, W) in [-1, 1] to (B, D); it is moved to
            ``device`` and put in eval mode (in place).
        name: "domain" only: the feature network's name (records: protocol "domain:<name>", metric
            "fd_<name>").
        channels: "domain" only: 1 (grayscale, default) or 3 channels at the module's input.
        img_size: optional PIL bilinear resize of every image to (img_size, img_size) first (StarGAN v2's
            ``Resize([img_size, img_size])``); None (default) keeps the size, as pytorch-fid does.
        dims: "pytorch-fid" only: 2048 (pool3, standard), 768, 192 or 64, as ``python -m pytorch_fid --dims``.
        verify: check the file's sha256 (``verify=False``: tests with random files; labelled UNVERIFIED).
        download: passed to ``resolve_weights``.
        seed: seed of the random initialisation when ``allow_random_weights``.
    """
    device = torch.device(device)
    if protocol == "pytorch-fid":
        state, label = load_weights(
            "pt_inception", weights_path, allow_random_weights, verify, download, seed
        )
        net = _pytorch_fid_net(state, dims)
        feature_net = f"pytorch-fid {pfi.__name__}.InceptionV3 (TF-Inception port), {dims}-d"
        prepare, metric = _prepare_pytorch_fid(img_size), "fid"
    elif protocol == "paper":
        state, label = load_weights(
            "inception_v3_tv", weights_path, allow_random_weights, verify, download, seed
        )
        net = _paper_net(state)
        feature_net = "torchvision inception_v3 ImageNet, avgpool 2048-d, transform_input=False (StarGAN v2)"
        prepare, metric = _prepare_paper(img_size), "fid"
    elif protocol == "domain":
        if feature_fn is None or not name:
            raise ValueError("protocol='domain' needs feature_fn (an nn.Module) and name (for the records)")
        net, label, feature_net = feature_fn, f"{name} (project module, provenance in its checkpoint)", name
        prepare, metric = _prepare_domain(channels, img_size), f"fd_{name}"
        protocol = f"domain:{name}"
    else:
        raise ValueError(f"unknown feature protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    net = net.to(device).eval()
    return FeatureExtractor(protocol, metric, feature_net, label, net, prepare, device)
