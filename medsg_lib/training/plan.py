"""Step planning and the loader: which images and latents each step uses, as a function of (seed, step).

Every random choice of step ``t`` (batch indices, reference images, target domains, latents, and the seed of
each item's augmentation) comes from a ``torch.Generator`` seeded with :func:`step_seed` ``(cfg.seed, t, 0)``
and handed to the model family's step planner, for the global batch; under torchrun each rank takes its share
(:meth:`~medsg_lib.families.base.StepPlan.for_rank`). A run resumed from a checkpoint therefore continues
bit-exactly as the uninterrupted run would have (on CPU). Batches are drawn with replacement per step, so
``iterations`` are counted in steps, not epochs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from medsg_lib.config import TrainConfig
from medsg_lib.data import dataset_labels
from medsg_lib.families import family_of, resolve
from medsg_lib.families.base import ModelFamily, SeededItems, StepPlan


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for ``(seed, step, rank)``: SHA-256 of the tuple, so nearby steps are unrelated."""
    digest = hashlib.sha256(f"medsg:{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))


def make_plan_fn(
    cfg: TrainConfig,
    labels: Tensor,
    batch: int,
    rank: int = 0,
    family: ModelFamily | None = None,
    world_size: int = 1,
) -> Callable[[int], StepPlan]:
    """``plan_fn(t)``: the :class:`StepPlan` of step ``t`` for the global ``batch``, drawn from the step's
    generator (the same on every rank), and ``rank``'s share of it (:meth:`StepPlan.for_rank`): the ranks of a
    data-parallel run together see what one process sees. ``family``: the resolved family of ``cfg``; None
    resolves it here."""
    if family is None:
        cfg = resolve(cfg)
        family = family_of(cfg)
    planner = family.step_planner(cfg, labels, batch)
    return lambda t: planner(step_generator(cfg.seed, t, 0)).for_rank(rank, world_size, batch)


class StepPlans:
    """Each step's plan, made once: the loader's sampler asks for a step's items (:meth:`items`), the trainer
    then takes the same plan's latents (:meth:`take`). Holds only the plans the loader has run ahead by."""

    def __init__(self, plan_fn: Callable[[int], StepPlan]) -> None:
        self.plan_fn = plan_fn
        self._plans: dict[int, StepPlan] = {}

    def items(self, step: int) -> list[tuple[int, int]]:
        self._plans[step] = self.plan_fn(step)
        return self._plans[step].items

    def take(self, step: int) -> StepPlan:
        """The plan of ``step`` (made by :meth:`items`, or now), forgotten afterwards."""
        plan = self._plans.pop(step, None)
        return plan if plan is not None else self.plan_fn(step)


class StepSampler:
    """Batch sampler yielding the plan's items of steps ``start + 1 .. stop``."""

    def __init__(self, plans: StepPlans, start: int, stop: int) -> None:
        self.plans, self.start, self.stop = plans, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for t in range(self.start + 1, self.stop + 1):
            yield self.plans.items(t)

    def __len__(self) -> int:
        return self.stop - self.start


def check_dataset(dataset: Dataset, cfg: TrainConfig) -> Tensor:
    """The dataset's int64 ``(N,)`` labels, after checking that its images have the run's shape."""
    labels = dataset_labels(dataset)
    x, _ = dataset[0]
    expected = (cfg.channels, cfg.img_size, cfg.img_size)
    if tuple(x.shape) != expected:
        raise ValueError(
            f"dataset images are {tuple(x.shape)} but TrainConfig wants (channels, img_size, img_size) = "
            f"{expected}; make DataConfig.img_size/channels equal TrainConfig's"
        )
    return labels


def make_loader(
    dataset: Dataset,
    plans: StepPlans,
    start: int,
    stop: int,
    cfg: TrainConfig,
    device: torch.device,
) -> DataLoader:
    """One pass over steps ``start + 1 .. stop``; each batch stacks the ``(x, y)`` of a step's plan items."""
    return DataLoader(
        SeededItems(dataset),
        batch_sampler=StepSampler(plans, start, stop),
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
