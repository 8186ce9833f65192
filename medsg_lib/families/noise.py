"""Noise-to-image GANs (the paper's baselines): what DCGAN and the vanilla GAN share.

One model per training class (``TrainConfig.target_class``; ``"all"`` trains on every image and generates
unlabelled samples). Iteration: one BCE discriminator step and one non-saturating generator step with the same
latents, Adam(``lr``, betas ``(beta1, 0.999)``), no EMA (as in the DCGAN reference recipe). Generation draws one
latent per item from its seed; samples and generation use the generator in eval mode (BatchNorm running
statistics), so an image does not depend on the batch it was made in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsg_lib import losses
from medsg_lib.config import CLASS_NAMES, check_positive
from medsg_lib.devices import autocast, broadcast_state
from medsg_lib.families.base import (
    Batch,
    ModelFamily,
    SampleInputs,
    StepContext,
    StepPlan,
    TrainState,
    draw,
    eval_mode,
    frozen,
    item_seeds,
    optimise,
    record_terms,
)
from medsg_lib.manifest import GeneratedItem, item_latent, item_seed

if TYPE_CHECKING:
    from medsg_lib.config import GenerateConfig, TrainConfig
    from medsg_lib.data import XrayRecord

NUM_SAMPLES = 16  # 4 x 4 grid of fixed-latent samples

# The noise baselines' loop per profile (a profile's own loop_overrides win). cpu: sized for a 2-core CPU
# (docs/performance.md); paper and paper-faithful: the authors' DCGAN, 64 px, batch 128, 100 epochs of 33,920 images =
# 26,500 iterations.
_PAPER_LOOP = {"img_size": 64, "batch_size": 128, "iterations": 26_500}
NOISE_LOOPS: dict[str, dict[str, Any]] = {
    "cpu": {"batch_size": 32, "iterations": 500, "sample_every": 250, "ckpt_every": 250},
    "paper": _PAPER_LOOP,
    "paper-faithful": _PAPER_LOOP,
}


@dataclass(frozen=True)
class NoiseConfig:
    """What every noise-to-image GAN's config has (the DCGAN reference recipe's optimiser)."""

    nz: int = 100  # latent size
    lr: float = 2e-4  # Adam, generator and discriminator
    beta1: float = 0.5  # Adam beta1 (beta2 is 0.999)

    def __post_init__(self) -> None:
        check_positive(self, *(f.name for f in fields(self) if f.name != "beta1"))


def plan_noise_step(gen: torch.Generator, pool: Tensor, batch: int, nz: int) -> StepPlan:
    """``batch`` images of ``pool`` uniformly with replacement and one latent ``(batch, nz)``."""
    indices = draw(pool, batch, gen).tolist()
    z = [torch.randn(batch, nz, generator=gen)]
    return StepPlan(items=list(zip(indices, item_seeds(batch, gen), strict=True)), z=z)


def noise_items(gen_cfg: GenerateConfig, target_class: str) -> list[GeneratedItem]:
    """The items of a noise-to-image model: ``num_per_class`` latents of ``target_class``, one per item seed."""
    return [
        GeneratedItem(item_seed(gen_cfg.seed, target_class, i), target_class, None, None, "noise", None)
        for i in range(gen_cfg.num_per_class)
    ]


class NoiseGAN(ModelFamily):
    """A generator of latents ``(B, nz)`` and a discriminator of one logit; its config is a
    :class:`NoiseConfig`. Subclasses build the two networks."""

    reproduce_targets = ("all", *CLASS_NAMES)
    compile_nets = ("generator", "discriminator")
    profile_loops = NOISE_LOOPS

    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {
            name: torch.optim.Adam(
                module.parameters(), lr=cfg.net.lr, betas=(cfg.net.beta1, 0.999), foreach=True
            )
            for name, module in nets.items()
        }

    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        pool = torch.arange(len(labels))
        if cfg.target_class != "all":
            pool = (labels == CLASS_NAMES.index(cfg.target_class)).nonzero().flatten()
            if len(pool) == 0:
                raise ValueError(
                    f"TrainConfig.target_class={cfg.target_class!r} but the data has no such image"
                )
        return lambda gen: plan_noise_step(gen, pool, batch, cfg.net.nz)

    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        return Batch(x_real=x, y_org=y, z=tuple(plan.z))

    def d_loss(self, disc: nn.Module, gen: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The discriminator's loss and its parts: BCE on real and on ``G(z)`` (a subclass may change it)."""
        return losses.baseline_d_loss(disc, gen, batch.x_real, batch.z[0])

    def g_loss(self, disc: nn.Module, gen: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator's loss and its parts: non-saturating BCE (a subclass may change it)."""
        return losses.baseline_g_loss(disc, gen, batch.z[0])

    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        """A discriminator step (:meth:`d_loss`), then a generator step (:meth:`g_loss`) with the same z."""
        gen, disc = state.nets["generator"], state.nets["discriminator"]
        terms: dict[str, Tensor | float] = {}
        # one autocast region per loss, the update outside it (autocast caches bf16 weight copies per region)
        with frozen(gen):
            with autocast(ctx.device, cfg.amp):
                loss, parts = self.d_loss(disc, gen, batch)
            record_terms(terms, "d", loss, parts)
            optimise(loss, [disc], [state.optimizers["discriminator"]], ctx.info)
        with frozen(disc):
            with autocast(ctx.device, cfg.amp):
                loss, parts = self.g_loss(disc, gen, batch)
            record_terms(terms, "g", loss, parts)
            optimise(loss, [gen], [state.optimizers["generator"]], ctx.info)
        broadcast_state(state.nets.values(), ctx.info.world_size, buffers_only=True)
        return terms

    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        return SampleInputs(
            z=torch.randn(NUM_SAMPLES, cfg.net.nz, generator=torch.Generator().manual_seed(cfg.seed))
        )

    @torch.no_grad()
    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        z = inputs.z.to(device)
        with eval_mode({"generator": state.nets["generator"]}):
            return state.nets["generator"](z).float().cpu(), int(math.isqrt(len(z)))

    def plan_items(
        self,
        cfg: TrainConfig,
        gen_cfg: GenerateConfig,
        target_class: str,
        sources: Sequence[XrayRecord] | None,
    ) -> list[GeneratedItem]:
        return noise_items(gen_cfg, target_class)

    def generate(
        self,
        nets: Mapping[str, nn.Module],
        cfg: TrainConfig,
        items: Sequence[GeneratedItem],
        lookup: Mapping[str, Tensor] | None,
        device: torch.device,
    ) -> Tensor:
        z = torch.stack([item_latent(it.seed, cfg.net.nz) for it in items]).to(device)  # (B, nz)
        return nets["generator"](z)
