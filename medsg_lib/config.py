"""Frozen configuration dataclasses, one per stage, and the named profiles.

Every stage reads one config and writes ``asdict(cfg)`` (as JSON, see :func:`to_jsonable`) next to its outputs.
Override fields with :func:`dataclasses.replace`; validation happens in ``__post_init__`` and names the field and
the allowed values.

Profiles (``get_profile(name)``):
- ``smoke``: seconds; tests and the committed notebooks (nbval) use it.
- ``cpu``: the embedded default (phantoms, small images, narrow widths) sized for a 2-core CPU.
- ``paper``: the paper's hyper-parameters at 256 px, batch 8, 100k iterations, grayscale, no flips.
- ``paper-faithful``: the authors' exact run: RGB, flips, random resized crop, batch 2, evaluation at 5,000.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Canonical class order used everywhere (labels 0, 1, 2). Slugs name folders of generated images.
CLASS_NAMES: tuple[str, ...] = ("COVID-19", "Non-COVID", "Normal")
CLASS_SLUGS: tuple[str, ...] = ("covid", "non_covid", "normal")

PROFILE_NAMES: tuple[str, ...] = ("smoke", "cpu", "paper", "paper-faithful")


def _check_choice(obj: object, name: str, allowed: tuple[Any, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(
            f"{type(obj).__name__}.{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name}={value!r} must be > 0")


def _check_power_of_two(obj: object, name: str, low: int, high: int) -> None:
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
        _check_positive(self, "img_size", "num_train", "num_val", "num_test")


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
        _check_choice(self, "layout", ("phantoms", "covidqu", "folders"))
        _check_choice(self, "subset", ("lung", "infection"))
        _check_choice(self, "channels", (1, 3))
        _check_choice(self, "on_bad", ("error", "skip"))
        _check_power_of_two(self, "img_size", 16, 1024)
        if self.layout != "phantoms" and self.root is None:
            raise ValueError(
                f"DataConfig.root must be set for layout={self.layout!r} (the folder you unpacked)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one model (Med-StyleGAN2, DCGAN or the vanilla GAN)."""

    model: Literal["medsg", "dcgan", "gan"] = "medsg"
    target_class: str = "all"  # "all" or one of CLASS_NAMES (baselines only: one model per class)
    img_size: int = 64  # pixels, square
    channels: int = 1  # X-rays are grayscale; 3 only in the paper-faithful profile
    batch_size: int = 8
    iterations: int = 100_000
    seed: int = 0
    # Med-StyleGAN2 (StarGAN v2 architecture, PAPER.md)
    base_width: int | None = None  # None: 2**14 // img_size (the paper's)
    max_width: int = 512
    latent_dim: int = 16
    style_dim: int = 64
    mapping_hidden: int = 512
    w_hpf: float = 0.0  # high-pass filter weight; only 0 is supported (needs a face-landmark network)
    lambda_reg: float = 1.0  # R1 on reals
    lambda_sty: float = 1.0  # style reconstruction
    lambda_ds: float = 2.0  # diversity-sensitive (paper)
    lambda_cyc: float = 1.0  # cycle consistency
    ds_decay_iters: int = 100_000  # lambda_ds decays linearly to 0 over this many iterations
    lr: float = 1e-4  # generator, style encoder, discriminator
    f_lr: float = 1e-6  # mapping network
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_beta: float = 0.999
    # Baselines (DCGAN: Radford et al. 2015; GAN: Goodfellow et al. 2014)
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    gan_hidden: int = 1024
    baseline_lr: float = 2e-4
    baseline_beta1: float = 0.5
    # Loop
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 1000
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: Literal["off", "bf16"] = "off"  # bf16 autocast on CUDA
    channels_last: bool = False

    def __post_init__(self) -> None:
        _check_choice(self, "model", ("medsg", "dcgan", "gan"))
        _check_choice(self, "target_class", ("all", *CLASS_NAMES))
        _check_choice(self, "channels", (1, 3))
        _check_choice(self, "amp", ("off", "bf16"))
        _check_power_of_two(self, "img_size", 16, 512)
        _check_positive(
            self, "batch_size", "iterations", "log_every", "sample_every", "ckpt_every", "ds_decay_iters"
        )
        if self.w_hpf != 0:
            raise ValueError(
                f"TrainConfig.w_hpf={self.w_hpf!r} is not supported: w_hpf > 0 needs StarGAN v2's face-landmark "
                "network, which is meaningless for chest X-rays; the paper uses w_hpf = 0"
            )
        if self.model == "medsg" and self.target_class != "all":
            raise ValueError(
                "TrainConfig.target_class must be 'all' for model='medsg' (one multi-domain model covers all "
                f"classes); got {self.target_class!r}"
            )

    @property
    def resolved_base_width(self) -> int:
        return self.base_width if self.base_width is not None else 2**14 // self.img_size


@dataclass(frozen=True)
class GenerateConfig:
    """Images written from a checkpoint, per class."""

    num_per_class: int = 8_000
    num_latents_per_source: int = 10  # StarGAN v2 protocol: ten random codes per source image
    mode: Literal["latent", "reference"] = "latent"
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice(self, "mode", ("latent", "reference"))
        _check_positive(self, "num_per_class", "num_latents_per_source", "batch_size")


@dataclass(frozen=True)
class MetricsConfig:
    """Which metrics to compute and how."""

    fid_protocols: tuple[str, ...] = ("pytorch-fid", "paper")
    batch_size: int = 50
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    bootstrap: int = 200  # resamples for the FID confidence interval
    allow_random_weights: bool = False  # tests only; every record is labelled when True


@dataclass(frozen=True)
class ClassifierConfig:
    """Three-class chest X-ray classifier (Figure 1, domain features, utility of synthetic data)."""

    arch: Literal["resnet18"] = "resnet18"
    img_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    # "auto": ImageNet weights (resnet18-f37072fd.pth) when found offline, else scratch; the choice is recorded
    init: Literal["auto", "imagenet", "scratch"] = "auto"
    augment: bool = True  # small affine (rotation +-5 deg, shift, scale) and brightness/contrast; never flips
    device: str = "auto"  # auto | cpu | cuda | mps

    def __post_init__(self) -> None:
        _check_choice(self, "arch", ("resnet18",))
        _check_choice(self, "init", ("auto", "imagenet", "scratch"))
        _check_power_of_two(self, "img_size", 16, 1024)
        _check_positive(self, "epochs", "batch_size", "lr")


@dataclass(frozen=True)
class Profile:
    """A named bundle of stage configs."""

    name: str
    phantoms: PhantomConfig = field(default_factory=PhantomConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # Med-StyleGAN2's
    # fields that differ for the DCGAN and GAN baselines (applied to `train` by train_config)
    baseline_train: tuple[tuple[str, Any], ...] = ()
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def train_config(self, model: str, target_class: str = "all") -> TrainConfig:
        """The training config of ``model`` (medsg, dcgan, gan) for ``target_class`` in this profile."""
        changes = dict(self.baseline_train) if model != "medsg" else {}
        return dataclasses.replace(self.train, model=model, target_class=target_class, **changes)


def _build_profiles() -> dict[str, Profile]:
    smoke = Profile(
        name="smoke",
        phantoms=PhantomConfig(
            root=Path("data/phantoms-smoke"), img_size=64, num_train=8, num_val=4, num_test=4
        ),
        data=DataConfig(img_size=32, subset="infection"),
        train=TrainConfig(
            img_size=32,
            batch_size=4,
            iterations=4,
            base_width=8,
            max_width=32,
            mapping_hidden=32,
            ngf=8,
            ndf=8,
            gan_hidden=64,
            ds_decay_iters=4,
            ema_beta=0.5,
            log_every=1,
            sample_every=2,
            ckpt_every=2,
        ),
        generate=GenerateConfig(num_per_class=8, num_latents_per_source=2, batch_size=8),
        metrics=MetricsConfig(kid_subsets=10, kid_subset_size=4, bootstrap=10),
        classifier=ClassifierConfig(img_size=32, epochs=1, batch_size=8),
    )
    # Sized for a 2-core CPU (see README "Measured"): Med-StyleGAN2 ~0.5 s/iteration, DCGAN ~0.1 s, GAN ~0.03 s.
    cpu = Profile(
        name="cpu",
        phantoms=PhantomConfig(num_train=200, num_val=32, num_test=32),
        data=DataConfig(img_size=64, subset="infection"),
        train=TrainConfig(
            img_size=64,
            batch_size=8,
            iterations=1000,
            base_width=8,
            max_width=64,
            mapping_hidden=64,
            ngf=32,
            ndf=32,
            gan_hidden=512,
            ds_decay_iters=1000,
            # EMA horizon ~1/(1-beta) iterations: the paper's 0.999 suits 100k iterations; after 1,000 it would
            # still hold 37% of the random initial weights (measured: noise-like samples at step 300).
            ema_beta=0.99,
            log_every=10,
            sample_every=250,
            ckpt_every=250,
        ),
        baseline_train=(("batch_size", 32), ("iterations", 500), ("sample_every", 250), ("ckpt_every", 250)),
        generate=GenerateConfig(num_per_class=160, batch_size=32),
        metrics=MetricsConfig(kid_subsets=50, kid_subset_size=100, bootstrap=100),
        classifier=ClassifierConfig(img_size=64, epochs=8, batch_size=32),
    )
    paper = Profile(
        name="paper",
        phantoms=PhantomConfig(),
        data=DataConfig(layout="covidqu", root=Path("data/COVID-QU-Ex"), img_size=256),
        train=TrainConfig(img_size=256, batch_size=8, iterations=100_000, sample_every=5000, ckpt_every=5000),
        # authors' DCGAN: 64 px, batch 128, 100 epochs of 33,920 images = 26,500 iterations
        baseline_train=(("img_size", 64), ("batch_size", 128), ("iterations", 26_500)),
        generate=GenerateConfig(num_per_class=8_000),
        metrics=MetricsConfig(),
        classifier=ClassifierConfig(img_size=256, epochs=20),
    )
    faithful = Profile(
        name="paper-faithful",
        phantoms=PhantomConfig(),
        data=DataConfig(
            layout="covidqu", root=Path("data/COVID-QU-Ex"), img_size=256, channels=3, faithful_augment=True
        ),
        train=TrainConfig(
            img_size=256, channels=3, batch_size=2, iterations=5_000, sample_every=1000, ckpt_every=1000
        ),
        baseline_train=(("img_size", 64), ("batch_size", 128), ("iterations", 26_500)),
        generate=GenerateConfig(num_per_class=8_000),
        metrics=MetricsConfig(fid_protocols=("paper", "pytorch-fid")),
        classifier=ClassifierConfig(img_size=256, epochs=20),
    )
    return {p.name: p for p in (smoke, cpu, paper, faithful)}


PROFILES: dict[str, Profile] = _build_profiles()


def get_profile(name: str) -> Profile:
    """Return the named profile; unknown names raise with the list of known ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


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
    """Inverse of :func:`to_jsonable` for a flat stage config (lists back to tuples)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)
