"""What a model family is, and the small toolkit its training steps share.

A *model family* owns everything that differs between models: its config (the model's own fields, nested in
``TrainConfig.net``), its networks, the random choices of one training step, the step itself, the fixed-input
sample grid, which networks generation uses, the plan of the images it generates and generating them. The
trainer (:mod:`medsg_lib.training`), the generator (:mod:`medsg_lib.generate`), checkpoints and the evaluation
only call this interface; none of them knows a model by its name. ``docs/adding-a-model.md`` shows a new one.

Randomness contract (what makes resume bit-exact): the trainer calls the family's step planner with a
``torch.Generator`` seeded for (run seed, step, rank); every random choice of the step (indices, augmentation
seeds, latents) must come from that generator, in a fixed order. Initial weights come from
``torch.manual_seed(cfg.seed)`` right before :meth:`ModelFamily.build`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsg_lib.config import CLASS_NAMES
from medsg_lib.devices import DistInfo, all_reduce_grads

if TYPE_CHECKING:
    from medsg_lib.config import GenerateConfig, TrainConfig
    from medsg_lib.data import XrayRecord
    from medsg_lib.manifest import GeneratedItem

NUM_DOMAINS = len(CLASS_NAMES)


# ----------------------------------------------------------------------------------------------------------
# What flows between the trainer and a family


@dataclass
class TrainState:
    """Everything training changes; all of it goes into the checkpoint."""

    nets: dict[str, nn.Module]  # online networks, train mode
    ema: dict[str, nn.Module]  # EMA copies of ``family.ema_nets``, eval mode ({} when the family has none)
    optimizers: dict[str, torch.optim.Optimizer]
    step: int = 0  # completed iterations


@dataclass
class StepPlan:
    """The random choices of one step (all drawn from the step's generator), for the global batch or, after
    :meth:`for_rank`, one rank's share of it."""

    items: list[tuple[int, int]]  # (dataset index, augmentation seed) of every image the step reads
    z: list[Tensor] = field(default_factory=list)  # latents or other float draws, each (B, ...), on CPU
    labels: list[Tensor] = field(default_factory=list)  # class labels of the fakes, each (B,) int64, on CPU
    seeds: list[int] = field(default_factory=list)  # seeds of draws made inside the step (e.g. an image pool)

    def for_rank(self, rank: int, world_size: int, batch: int) -> StepPlan:
        """Rank ``rank``'s share of a plan drawn for the GLOBAL ``batch``: every list of items and every tensor
        is one or more groups of ``batch`` rows, one after the other (e.g. real images, then references);
        each rank takes its ``batch // world_size`` consecutive rows of every group, so the ranks together
        see exactly what one process sees. ``seeds`` (draws inside the step) are every rank's."""
        if world_size == 1:
            return self
        share = batch // world_size

        def rows(n: int, what: str) -> list[int]:
            if n % batch:
                raise ValueError(
                    f"a step plan's {what} has {n} rows, not groups of the global batch {batch}: a family's "
                    "planner must draw every per-image choice for the global batch (StepPlan.for_rank)"
                )
            return [g * batch + rank * share + i for g in range(n // batch) for i in range(share)]

        return StepPlan(
            items=[self.items[i] for i in rows(len(self.items), "items")],
            z=[t[rows(len(t), "z")] for t in self.z],
            labels=[t[rows(len(t), "labels")] for t in self.labels],
            seeds=self.seeds,
        )

    def to(self, device: torch.device) -> StepPlan:
        """The plan with its tensors on ``device`` (non-blocking)."""
        return StepPlan(
            items=self.items,
            z=[t.to(device, non_blocking=True) for t in self.z],
            labels=[t.to(device, non_blocking=True) for t in self.labels],
            seeds=self.seeds,
        )


@dataclass
class Batch:
    """One step's tensors on the device."""

    x_real: Tensor  # (B, C, H, W) in [-1, 1]
    y_org: Tensor  # (B,) int64
    x_refs: tuple[Tensor, ...] = ()  # reference images (B, C, H, W) of domains y_trg (image-to-image models)
    y_trg: Tensor | None = None  # (B,) int64
    z: tuple[Tensor, ...] = ()  # latents (B, dim)
    y_fake: tuple[Tensor, ...] = ()  # class labels of the fakes (B,) int64 (class-conditional models)
    seeds: tuple[int, ...] = ()  # the plan's seeds of draws made inside the step


@dataclass(frozen=True)
class SampleInputs:
    """Fixed inputs of the sample grids, chosen once with ``cfg.seed``."""

    z: Tensor  # (N, dim), CPU
    x_src: Tensor | None = None  # (N, C, H, W) in [-1, 1], CPU (image-to-image models)
    y_src: Tensor | None = None  # (N,) int64 classes of x_src


@dataclass(frozen=True)
class StepContext:
    """Where a step runs: the device, the data-parallel group and the autocast mode."""

    device: torch.device
    info: DistInfo


# ----------------------------------------------------------------------------------------------------------
# The interface


class ModelFamily(ABC):
    """One model family; subclass it, then add one line to :data:`medsg_lib.families.FAMILIES`."""

    name: ClassVar[str]  # registry key; names runs (``runs/<profile>/<name>``) and records
    label: ClassVar[str]  # shown in tables, figures and the audit, e.g. "Med-StyleGAN2"
    # the row of the paper's Table 1 this family's records fill or stand beside (medsg_lib.table1.PAPER_TABLE1:
    # "GAN", "DCGAN", "Med-StyleGAN2", "StarGAN", ...); None: the paper has no such row
    paper_row: ClassVar[str | None] = None
    # capabilities, which notebooks and tables ask for (never a name): `translates` (image-to-image: generation
    # translates source images), `class_conditional` (one trained model generates every class)
    class_conditional: ClassVar[bool] = False
    # this family's config and loop fields per profile name (a profile's own entries override them); a profile
    # absent here trains the family with its config's defaults (the paper's) and the profile's loop
    profile_nets: ClassVar[Mapping[str, Any]] = {}
    profile_loops: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    config_cls: ClassVar[type]  # the frozen dataclass of the model's own fields (``TrainConfig.net``)
    ema_nets: ClassVar[tuple[str, ...]] = ()  # networks with an EMA copy, updated by the family's step
    inference_nets: ClassVar[tuple[str, ...]] = ("generator",)  # what generation needs (EMA copy if any)
    translates: ClassVar[bool] = False  # image-to-image: generation translates validation images
    # a translator whose output is a function of the source alone (no latent): one output per source and
    # target, and its diversity is measured over random pairs of outputs, not within a source's outputs
    deterministic: ClassVar[bool] = False
    # nets that TrainConfig.compile may torch.compile (not those whose loss needs a double backward, e.g. R1:
    # AOTAutograd, which torch.compile uses for training, does not support it)
    compile_nets: ClassVar[tuple[str, ...]] = ()
    reproduce_targets: ClassVar[tuple[str, ...]] = ("all",)  # runs `reproduce` trains: target classes

    def inference_nets_of(self, cfg: TrainConfig) -> tuple[str, ...]:
        """The networks generation loads for a run of ``cfg`` (default :attr:`inference_nets`; a family whose
        networks depend on its config overrides this)."""
        return self.inference_nets

    def sizes(self, profile: str) -> tuple[Any, dict[str, Any]]:
        """(this family's config, its loop fields) in the named profile: :attr:`profile_nets` and
        :attr:`profile_loops` (None and {} where absent)."""
        return self.profile_nets.get(profile), dict(self.profile_loops.get(profile, {}))

    def check_config(self, cfg: TrainConfig) -> None:  # noqa: B027 (optional hook: no constraint by default)
        """Raise ``ValueError`` (naming the field) if ``cfg`` is not a run this family can train."""

    @abstractmethod
    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        """Freshly initialised networks on CPU in train mode, keyed by role (``generator``, ...)."""

    @abstractmethod
    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per network."""

    @abstractmethod
    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        """``plan(gen)``: the random choices of one step for the global ``batch``, drawn from ``gen`` (each
        per-image choice in groups of ``batch`` rows: :meth:`StepPlan.for_rank` gives each rank its share).

        ``labels``: the int64 ``(N,)`` classes of the training set. Raise ``ValueError`` when the data cannot
        train this model (e.g. too few classes)."""

    @abstractmethod
    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        """Split the loader's stacked images ``x`` and labels ``y`` (in the order of the plan's items) and the
        plan's latents and labels, all already on the device, into a :class:`Batch`."""

    @abstractmethod
    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        """One iteration: update ``state``'s networks, optimisers and EMA (not ``state.step``); return every
        loss term by name, as detached 0-d tensors (or floats, e.g. a scheduled weight): the trainer reads
        them only at log, sample and checkpoint steps, so a step never waits on the device. ``<net>_total``
        terms are shown in the progress bar."""

    @abstractmethod
    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        """The fixed inputs of the sample grids, drawn from ``torch.Generator().manual_seed(cfg.seed)``."""

    @abstractmethod
    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        """``(images (N, C, H, W) in [-1, 1] on CPU, images per row)`` of the sample grid."""

    def targets(self, cfg: TrainConfig) -> tuple[str, ...]:
        """The classes a trained model generates by default (a noise-to-image run: the class it was
        trained on, possibly ``"all"``)."""
        return (cfg.target_class,)

    def check_target(self, cfg: TrainConfig, target_class: str) -> None:
        """Raise ``ValueError`` unless a model trained with ``cfg`` can generate ``target_class``."""
        if target_class not in self.targets(cfg):
            raise ValueError(
                f"this {cfg.model} model was trained on target_class={cfg.target_class!r} and generates only "
                f"that; got target_class={target_class!r}"
            )

    @abstractmethod
    def plan_items(
        self,
        cfg: TrainConfig,
        gen_cfg: GenerateConfig,
        target_class: str,
        sources: Sequence[XrayRecord] | None,
    ) -> list[GeneratedItem]:
        """The ``gen_cfg.num_per_class`` images to generate for ``target_class`` (after :meth:`check_target`).
        ``sources``: the validation records when the family ``translates``, else None."""

    @abstractmethod
    def generate(
        self,
        nets: Mapping[str, nn.Module],
        cfg: TrainConfig,
        items: Sequence[GeneratedItem],
        lookup: Mapping[str, Tensor] | None,
        device: torch.device,
    ) -> Tensor:
        """Images ``(B, C, H, W)``, unclamped, of ``items`` with the inference ``nets`` (eval mode). An item's
        randomness comes only from its seed. ``lookup``: image path -> ``(C, H, W)`` in [-1, 1] (sources)."""


# ----------------------------------------------------------------------------------------------------------
# The toolkit of step planners and steps


def draw(pool: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` elements of the 1-D ``pool`` uniformly with replacement."""
    return pool[torch.randint(len(pool), (n,), generator=gen)]


def item_seeds(n: int, gen: torch.Generator) -> list[int]:
    """``n`` augmentation seeds, one per image a step reads."""
    return torch.randint(2**62, (n,), generator=gen).tolist()


def indices_by_domain(labels: Tensor) -> dict[int, Tensor]:
    """Dataset indices of each class present in ``labels`` (int64 ``(N,)``)."""
    return {d: (labels == d).nonzero().flatten() for d in range(NUM_DOMAINS) if bool((labels == d).any())}


class SeededItems(Dataset):
    """``items[(index, seed)] = dataset[index]`` with torch's global CPU generator seeded first.

    Dataset augmentation (e.g. ``faithful_augment``) draws from the global generator; seeding it per item
    makes it a function of the step's plan, in the main process or in a DataLoader worker alike.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        torch.default_generator.manual_seed(seed)
        return self.dataset[index]


@torch.no_grad()
def update_ema(ema: dict[str, nn.Module], nets: dict[str, nn.Module], beta: float) -> None:
    """``ema <- beta * ema + (1 - beta) * online`` for parameters; buffers are copied."""
    for name, ema_net in ema.items():
        online = nets[name]
        # one multi-tensor lerp per network (same values as a loop of p_ema.lerp_(p, 1 - beta))
        torch._foreach_lerp_(list(ema_net.parameters()), list(online.parameters()), 1.0 - beta)
        for b_ema, b in zip(ema_net.buffers(), online.buffers(), strict=True):
            b_ema.copy_(b)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` get no gradient inside the block; gradients still flow through them."""
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m in modules:
            m.requires_grad_(True)


def optimise(
    loss: Tensor, modules: list[nn.Module], optimizers: list[torch.optim.Optimizer], info: DistInfo
) -> None:
    """Zero ``optimizers``, back-propagate ``loss``, average gradients over ranks, step the optimisers."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if info.distributed:
        all_reduce_grads((p for m in modules for p in m.parameters()), info.world_size)
    for opt in optimizers:
        opt.step()


def record_terms(
    terms: dict[str, Tensor | float], prefix: str, loss: Tensor, parts: Mapping[str, Tensor | float]
) -> None:
    """Add ``<prefix>_total`` and ``<prefix>_<part>`` of one loss to ``terms``, as detached tensors (no host
    synchronisation: the trainer reads them once per log interval)."""
    terms[f"{prefix}_total"] = loss.detach()
    terms.update({f"{prefix}_{k}": v.detach() if isinstance(v, Tensor) else v for k, v in parts.items()})


@contextmanager
def eval_mode(nets: Mapping[str, nn.Module]) -> Iterator[None]:
    """Put ``nets`` in eval mode (BatchNorm running statistics), restoring each one's mode afterwards."""
    modes = {name: net.training for name, net in nets.items()}
    try:
        for net in nets.values():
            net.eval()
        yield
    finally:
        for name, net in nets.items():
            net.train(modes[name])
