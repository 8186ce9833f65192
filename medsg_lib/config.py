"""Frozen configuration dataclasses, one per stage (the named profiles are in :mod:`medsg_lib.profiles`).

Every stage reads one config and writes ``asdict(cfg)`` (as JSON, see :func:`to_jsonable`) next to its outputs.
Override fields with :func:`dataclasses.replace`; validation happens in ``__post_init__`` and names the field and
the allowed values. A model's own fields live in its family's config (``medsg_lib.families``), nested in
``TrainConfig.net``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Canonical class order used everywhere (labels 0, 1, 2). Slugs name folders of generated images.
CLASS_NAMES: tuple[str, ...] = ("COVID-19", "Non-COVID", "Normal")
CLASS_SLUGS: tuple[str, ...] = ("covid", "non_covid", "normal")


# autocast precisions: "auto" is bf16 where the device has bf16 units, else off (medsg_lib.devices.resolve_amp)
AMP_CHOICES: tuple[str, ...] = ("off", "bf16", "auto")


def check_choice(obj: object, name: str, allowed: tuple[Any, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(
            f"{type(obj).__name__}.{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )


def check_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name}={value!r} must be > 0")


def check_power_of_two(obj: object, name: str, low: int, high: int) -> None:
    value = getattr(obj, name)
    if not (low <= value <= high) or 2 ** int(round(math.log2(value))) != value:
        raise ValueError(
            f"{type(obj).__name__}.{name}={value!r} must be a power of two between {low} and {high}"
        )


@dataclass(frozen=True)
class PhantomConfig:
    """Synthetic chest radiographs written in the COVID-QU-Ex layout (the offline default data)."""

    root: Path = Path("data/phantoms")  # where the COVID-QU-Ex-shaped tree is written
    img_size: int = 128  # pixels of the written PNGs (square)
    num_train: int = 64  # images per class in Train
    num_val: int = 16  # images per class in Val
    num_test: int = 16  # images per class in Test
    seed: int = 0  # the same seed gives byte-identical files

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        check_positive(self, "img_size", "num_train", "num_val", "num_test")


@dataclass(frozen=True)
class DataConfig:
    """Which chest X-ray set to read and how to preprocess it."""

    layout: Literal["phantoms", "covidqu", "folders"] = "phantoms"
    root: Path | None = None  # None with layout="phantoms": PhantomConfig.root
    subset: Literal["lung", "infection"] = "lung"  # COVID-QU-Ex subset (phantoms use the same layout)
    img_size: int = 64  # pixels, square
    channels: int = 1  # 1: grayscale (default); 3: RGB as in the authors' pipeline
    faithful_augment: bool = False  # authors' pipeline: random resized crop p=0.5 + horizontal flips
    # folder name -> canonical class name, for class-folder sets (e.g. ../shared/data/cxr-real)
    class_map: tuple[tuple[str, str], ...] = (
        ("covid", "COVID-19"),
        ("non_covid_infection", "Non-COVID"),
        ("normal", "Normal"),
        ("COVID", "COVID-19"),
        ("Lung_Opacity", "Non-COVID"),
        ("Viral Pneumonia", "Non-COVID"),
        ("Normal", "Normal"),
        ("COVID-19", "COVID-19"),
        ("Non-COVID", "Non-COVID"),
    )
    on_bad: Literal["error", "skip"] = "error"  # bad files stop the run unless "skip" (then reported)
    cache_dir: Path = Path("cache")  # preprocessed uint8 tensors per (source, split, size, channels)

    def __post_init__(self) -> None:
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        check_choice(self, "layout", ("phantoms", "covidqu", "folders"))
        check_choice(self, "subset", ("lung", "infection"))
        check_choice(self, "channels", (1, 3))
        check_choice(self, "on_bad", ("error", "skip"))
        check_power_of_two(self, "img_size", 16, 1024)
        if self.layout != "phantoms" and self.root is None:
            raise ValueError(
                f"DataConfig.root must be set for layout={self.layout!r} (the folder you unpacked)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the loop's fields, and the model's own fields nested in ``net``.

    ``net`` is the config dataclass of ``model``'s family (``medsg_lib.families``: ``MedSGConfig``,
    ``DCGANConfig``, ...); ``None`` means that family's defaults (the paper's). A config is *resolved* by the
    registry (:func:`medsg_lib.families.resolve`), which every entry point (training, generation, profiles,
    checkpoints) calls. Resuming compares the loop fields and ``net``, so a field of another model can never
    block a run.
    """

    model: str = "medsg"  # a key of medsg_lib.families.FAMILIES
    target_class: str = "all"  # "all" or one of CLASS_NAMES (noise-to-image models: one model per class)
    img_size: int = 64  # pixels, square
    channels: int = 1  # X-rays are grayscale; 3 only in the paper-faithful profile
    batch_size: int = 8  # the global batch (split over data-parallel ranks)
    iterations: int = 100_000
    seed: int = 0
    net: Any = None  # the model's own config (None: its family's defaults)
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 1000
    # checkpoints kept on disk, the newest (0: every one; learning curves read them all); a corrupt newest one
    # is skipped on resume, so keep at least 2
    keep_checkpoints: int = 0
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    # bf16 autocast (CUDA, or a CPU with bf16 units); "auto": bf16 where the device has bf16 units, else off,
    # resolved when a run starts and recorded resolved (medsg_lib.devices.resolve_amp)
    amp: Literal["off", "bf16", "auto"] = "off"
    channels_last: bool = False
    compile: bool = False  # torch.compile the family's compilable nets (eager where unavailable)

    def __post_init__(self) -> None:
        # `model` and `net` are checked by the registry, which resolves a config (``medsg_lib.families.resolve``:
        # `net` None or a JSON dict -> the family's config dataclass, then the family's own checks); this module
        # imports no model code
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(
                f"TrainConfig.model={self.model!r} must be the name of a registered model family"
            )
        check_choice(self, "target_class", ("all", *CLASS_NAMES))
        check_choice(self, "channels", (1, 3))
        check_choice(self, "amp", AMP_CHOICES)
        check_power_of_two(self, "img_size", 16, 512)
        check_positive(self, "batch_size", "iterations", "log_every", "sample_every", "ckpt_every")
        if self.keep_checkpoints < 0:
            raise ValueError(
                f"TrainConfig.keep_checkpoints={self.keep_checkpoints!r} must be >= 0 (0: keep all)"
            )

    def for_model(self, model: str, net: Any = None, **changes: Any) -> TrainConfig:
        """This run's loop settings for another ``model`` with its ``net`` config (None: its defaults)."""
        return dataclasses.replace(self, model=model, net=net, **changes)


@dataclass(frozen=True)
class GenerateConfig:
    """Images written from a checkpoint, per class."""

    num_per_class: int = 8_000
    num_latents_per_source: int = 10  # StarGAN v2 protocol: ten random codes per source image
    mode: Literal["latent", "reference"] = "latent"
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self, "mode", ("latent", "reference"))
        check_positive(self, "num_per_class", "num_latents_per_source", "batch_size")


@dataclass(frozen=True)
class MetricsConfig:
    """Which metrics to compute and how."""

    fid_protocols: tuple[str, ...] = ("pytorch-fid", "paper")
    batch_size: int = 50
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    bootstrap: int = 200  # resamples for the FID confidence interval
    allow_random_weights: bool = False  # tests only; every record is labelled when True
    frd_workers: int = 0  # processes for radiomic feature extraction (0: every core)
    frd_masks: bool = False  # also FRD inside lung masks (real images' own; translations use their source's)


@dataclass(frozen=True)
class ClassifierConfig:
    """Three-class chest X-ray classifier (Figure 1, domain features, utility of synthetic data)."""

    arch: Literal["resnet18"] = "resnet18"
    # "torchvision": its ResNet stem (stride-2 conv1, max-pool); "fine": stride-1 conv1 and no max-pool, 4x
    # finer maps for Grad-CAM at small sizes (16x the compute; medsg_lib.models.classifier)
    stem: Literal["torchvision", "fine"] = "torchvision"
    img_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    # "auto": ImageNet weights (resnet18-f37072fd.pth) when found offline, else scratch; the choice is recorded
    init: Literal["auto", "imagenet", "scratch"] = "auto"
    augment: bool = True  # small affine (rotation +-5 deg, shift, scale) and brightness/contrast; never flips
    device: str = "auto"  # auto | cpu | cuda | mps
    # training only (evaluation, features and Grad-CAM run in fp32 on contiguous tensors): bf16 autocast as in
    # TrainConfig.amp ("auto" resolved at the start of training and recorded), NHWC tensors and weights
    amp: Literal["off", "bf16", "auto"] = "off"
    channels_last: bool = False
    # > 0: on the phantoms, train on this many rendered training phantoms per class (the written Train split's
    # images first, then new patients from the same seed stream; never a Val or Test phantom) instead of the
    # written split; a real data set cannot be rendered, so other layouts train on their split and say so
    phantoms_per_class: int = 0
    # passes over those rendered phantoms (``epochs`` counts passes over a data set's split, so that a real set
    # in the same profile keeps its own)
    phantom_epochs: int = 1
    # BatchNorm's statistics are re-estimated after each epoch on at most this many training images (a fixed
    # seeded subset of larger sets; smaller sets whole)
    bn_images: int = 4096

    def __post_init__(self) -> None:
        check_choice(self, "arch", ("resnet18",))
        check_choice(self, "amp", AMP_CHOICES)
        check_choice(self, "stem", ("torchvision", "fine"))
        check_choice(self, "init", ("auto", "imagenet", "scratch"))
        check_power_of_two(self, "img_size", 16, 1024)
        check_positive(self, "epochs", "batch_size", "lr", "bn_images", "phantom_epochs")
        if not isinstance(self.phantoms_per_class, int) or self.phantoms_per_class < 0:
            raise ValueError(
                f"ClassifierConfig.phantoms_per_class={self.phantoms_per_class!r} must be an int >= 0"
            )


@dataclass(frozen=True)
class CurveConfig:
    """Learning curves (:mod:`medsg_lib.curves`): each model trained ``factor`` times its profile's
    iterations, ``num_checkpoints`` evenly spaced checkpoints measured, ``num_per_class`` images per class at
    each."""

    factor: int = 10
    num_checkpoints: int = 10
    num_per_class: int = 160

    def __post_init__(self) -> None:
        for name in ("factor", "num_checkpoints", "num_per_class"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CurveConfig.{name}={value!r} must be an int >= 1")


def to_jsonable(obj: Any) -> Any:
    """``asdict`` for configs, with ``Path`` as ``str`` and tuples as lists (JSON-safe, round-trips by hand)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def from_jsonable(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of :func:`to_jsonable` for a stage config (lists back to tuples; ``TrainConfig.net`` stays a
    dict, which ``TrainConfig`` turns into its family's config)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)
