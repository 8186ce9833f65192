"""The named profiles: one bundle of stage configs per use.

- ``smoke``: seconds; tests and the committed notebooks (nbval) use it.
- ``cpu``: the embedded default (phantoms, small images, narrow widths) sized for a 2-core CPU.
- ``paper``: the paper's hyper-parameters at 256 px, batch 8, 100k iterations, grayscale, no flips.
- ``paper-faithful``: the authors' exact run: RGB, flips, random resized crop, batch 2, evaluation at 5,000.

A profile holds the loop settings shared by the models (``train``). Each family sizes itself per profile
(:meth:`ModelFamily.sizes`: its config and the loop fields that differ for it); a profile may override either
(``nets``, ``loop_overrides``), so that adding a model needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsg_lib.config import (
    ClassifierConfig,
    CurveConfig,
    DataConfig,
    GenerateConfig,
    MetricsConfig,
    PhantomConfig,
    TrainConfig,
)
from medsg_lib.families import get_family, resolve

PROFILE_NAMES: tuple[str, ...] = ("smoke", "cpu", "paper", "paper-faithful")
Fields = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Profile:
    """A named bundle of stage configs."""

    name: str
    phantoms: PhantomConfig = field(default_factory=PhantomConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # loop settings; its `net` is replaced per model
    # overrides of the families' own sizes (ModelFamily.sizes) for this profile
    nets: tuple[tuple[str, Any], ...] = ()  # (model, its config)
    loop_overrides: tuple[tuple[str, Fields], ...] = ()  # (model, ((loop field, value), ...))
    # (model, target classes): the runs `reproduce` trains of that model in this profile, where they differ
    # from its family's ``reproduce_targets``
    reproduce_overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    # Figure 1's classifier where the main one's Grad-CAM maps are too coarse (layer3 is H/16: 4x4 at 64 px);
    # None: the main classifier serves Figure 1 too
    cam_classifier: ClassifierConfig | None = None
    # Figure 1's maps (method, layer, target): the paper's Grad-CAM of the class logit at layer3 unless the
    # methods comparison on the phantoms (notebook 10, docs/figure1.md) chose another for this profile
    cam_method: tuple[str, str, str] = ("gradcam", "layer3", "class")
    # epochs of the utility experiment's classifiers (0: the main classifier's); it trains one on real images and
    # two per class-conditional generator
    utility_epochs: int = 0
    # learning curves (notebook 09) computed by default in this profile; None: drawn from existing records
    # only (a long run is asked for explicitly, e.g. `-p factor 10`)
    curves: CurveConfig | None = None

    def train_config(self, model: str, target_class: str = "all") -> TrainConfig:
        """The resolved training config of ``model`` for ``target_class`` in this profile: the profile's loop,
        the family's sizes for this profile, then the profile's own overrides of them."""
        net, changes = get_family(model).sizes(self.name)
        net = dict(self.nets).get(model, net)
        changes.update(dict(self.loop_overrides).get(model, ()))
        return resolve(self.train.for_model(model, net, target_class=target_class, **changes))

    def reproduce_targets(self, model: str) -> tuple[str, ...]:
        """The target classes whose runs of ``model`` ``reproduce`` trains in this profile."""
        return dict(self.reproduce_overrides).get(model, get_family(model).reproduce_targets)


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
            log_every=1,
            sample_every=2,
            ckpt_every=2,
        ),
        generate=GenerateConfig(num_per_class=8, num_latents_per_source=2, batch_size=8),
        metrics=MetricsConfig(kid_subsets=10, kid_subset_size=4, bootstrap=10),
        classifier=ClassifierConfig(img_size=32, epochs=1, batch_size=8),
        cam_classifier=ClassifierConfig(
            img_size=32, epochs=1, batch_size=8, stem="fine", phantoms_per_class=12, phantom_epochs=1
        ),
        # as the cpu profile's, so that its path is tested
        cam_method=("gradcam", "layer3", "class - Normal"),
        curves=CurveConfig(factor=2, num_checkpoints=2, num_per_class=8),
    )
    # Sized for a 2-core CPU (docs/performance.md); each family's own widths and loop: ModelFamily.sizes
    cpu = Profile(
        name="cpu",
        phantoms=PhantomConfig(num_train=200, num_val=32, num_test=32),
        data=DataConfig(img_size=64, subset="infection"),
        train=TrainConfig(
            img_size=64,
            batch_size=8,
            iterations=1000,
            log_every=10,
            sample_every=250,
            ckpt_every=250,
            # NHWC tensors: 1.3x faster steps on CPU for Med-StyleGAN2 and DCGAN (oneDNN's convolutions run
            # without layout conversions; measured, docs/performance.md); results differ from NCHW in rounding
            channels_last=True,
            # bf16 autocast where the CPU has bf16 units (AMX / AVX512-BF16), else fp32: DCGAN 1.9x, Med-
            # StyleGAN2 1.15x faster steps on an AMX Xeon (docs/performance.md); R1 stays fp32
            amp="auto",
        ),
        generate=GenerateConfig(num_per_class=160, batch_size=32),
        metrics=MetricsConfig(kid_subsets=50, kid_subset_size=100, bootstrap=100),
        # training in bf16 autocast and NHWC where the CPU has bf16 units (evaluation, features and Grad-CAM
        # stay fp32): 1.3x (stock stem) and 3.5x (fine stem) faster steps on an AMX Xeon
        classifier=ClassifierConfig(img_size=64, epochs=8, batch_size=32, amp="auto", channels_last=True),
        # the fine stem: layer3 16x16 at 64 px (the main classifier's is 4x4); 16x the compute, so fewer epochs
        # on the phantoms: one pass over 4,000 rendered phantoms per class (375 steps; the lesions are found far
        # more often than after 4 passes over the 600 written ones, docs/figure1.md); a real set: 4 epochs
        cam_classifier=ClassifierConfig(
            img_size=64,
            epochs=4,
            batch_size=32,
            stem="fine",
            amp="auto",
            channels_last=True,
            phantoms_per_class=4000,
            phantom_epochs=1,
        ),
        # chosen by notebook 10 over 3 classifier seeds: the best worst-class pointing game (docs/figure1.md)
        cam_method=("gradcam", "layer3", "class - Normal"),
        # 7 classifiers (real; synthetic and real + synthetic for each of 3 generators): half the main one's
        # epochs keeps the embedded-default reproduce within its time
        utility_epochs=4,
        # RSGAN on the whole set only, beside DCGAN's whole-set run (the same networks: the row that isolates
        # the relativistic loss); its three per-class runs would add about 150 s of training, generation and
        # radiomics to the embedded-default reproduce (docs/performance.md). `train --model rsgan
        # --target-class <class>` trains them; the other profiles do.
        reproduce_overrides=(("rsgan", ("all",)),),
    )
    paper = Profile(
        name="paper",
        phantoms=PhantomConfig(),
        data=DataConfig(layout="covidqu", root=Path("data/COVID-QU-Ex"), img_size=256),
        train=TrainConfig(img_size=256, batch_size=8, iterations=100_000, sample_every=5000, ckpt_every=5000),
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
