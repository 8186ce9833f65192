"""StarGAN (Choi et al., CVPR 2018): one generator for every class, the target label as input channels.

Networks: :mod:`medsg_lib.models.stargan` (the reference code's, yunjey/stargan). Objective (WGAN-GP with a domain
classifier, :func:`medsg_lib.losses.stargan_d_loss` / :func:`~medsg_lib.losses.stargan_g_loss`):
``L_D = -D_src(x) + D_src(G(x, c)) + lambda_cls * CE(D_cls(x), c') + lambda_gp * GP`` and
``L_G = -D_src(G(x, c)) + lambda_cls * CE(D_cls(G(x, c)), c) + lambda_rec * |x - G(G(x, c), c')|_1``, the penalty on
per-sample interpolates of real and fake images. Reference settings: conv_dim 64, 6 residual blocks, 6 strided
convolutions in D, lambda_cls 1, lambda_rec 10, lambda_gp 10, n_critic 5, Adam 1e-4 betas (0.5, 0.999).

One of OUR iterations is one generator update after ``n_critic`` discriminator updates, each on its own batch of
real images (the reference counts discriminator updates: its 200,000 iterations are 40,000 of ours). The reference
decays both learning rates linearly over its last 100,000 iterations; we keep them constant (a run here is far
shorter). Target labels are a random permutation of the batch's own labels, as in the reference.

Generation: StarGAN is a deterministic translator (no latent): for a target class, each VALIDATION image of the
other classes (in :func:`medsg_lib.families.medsg.source_order`, round-robin over the source classes) is
translated once, up to ``num_per_class`` images; its diversity is therefore measured over random pairs of outputs
(of different sources). The generator runs with instance statistics (train-mode instance norm) in samples and
generation, as the reference's test code, which never switches it to eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsg_lib import losses
from medsg_lib.config import CLASS_NAMES, check_positive
from medsg_lib.devices import AutocastModule, autocast, broadcast_state
from medsg_lib.families.base import (
    NUM_DOMAINS,
    Batch,
    ModelFamily,
    SampleInputs,
    StepContext,
    StepPlan,
    TrainState,
    draw,
    frozen,
    item_seeds,
    optimise,
    record_terms,
)
from medsg_lib.families.medsg import sample_sources, source_order, stack_sources
from medsg_lib.manifest import GeneratedItem, class_index, item_seed
from medsg_lib.models.stargan import StarGANDiscriminator, StarGANGenerator

if TYPE_CHECKING:
    from medsg_lib.config import GenerateConfig, TrainConfig
    from medsg_lib.data import XrayRecord

TRANSLATION_MODE = "translation"  # the manifest's mode of a deterministic translation


@dataclass(frozen=True)
class StarGANConfig:
    """StarGAN's own fields (defaults: the reference code's)."""

    conv_dim: int = 64  # width of G's first convolution and of D's first
    g_repeat_num: int = 6  # residual blocks in G
    d_repeat_num: int = 6  # strided convolutions in D (img_size must be divisible by 2**d_repeat_num)
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    n_critic: int = 5  # discriminator updates per generator update (one of our iterations)
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def __post_init__(self) -> None:
        check_positive(self, "conv_dim", "d_repeat_num", "n_critic", "g_lr", "d_lr")
        if self.g_repeat_num < 0:
            raise ValueError(f"StarGANConfig.g_repeat_num={self.g_repeat_num!r} must be >= 0")


def one_hot(y: Tensor) -> Tensor:
    """``(B,)`` int64 classes -> ``(B, NUM_DOMAINS)`` float one-hot labels (G's input channels)."""
    return F.one_hot(y, NUM_DOMAINS).float()


def plan_stargan_step(gen: torch.Generator, labels: Tensor, batch: int, n_critic: int) -> StepPlan:
    """``n_critic`` batches of ``batch`` uniform images (with replacement); each batch's target labels a random
    permutation of its own labels; one interpolation weight per image (the gradient penalty)."""
    idx = draw(torch.arange(len(labels)), n_critic * batch, gen)
    y_org = labels[idx]
    y_trg = torch.cat(
        [y_org[k * batch : (k + 1) * batch][torch.randperm(batch, generator=gen)] for k in range(n_critic)]
    )
    alpha = torch.rand(n_critic * batch, 1, 1, 1, generator=gen)
    items = list(zip(idx.tolist(), item_seeds(len(idx), gen), strict=True))
    return StepPlan(items=items, z=[alpha], labels=[y_trg])


class StarGAN(ModelFamily):
    name = "stargan"
    label = "StarGAN"
    paper_row = "StarGAN"
    config_cls = StarGANConfig
    translates = True
    deterministic = True
    class_conditional = True
    reproduce_targets = ("all",)
    profile_nets = {
        "smoke": StarGANConfig(conv_dim=8, g_repeat_num=1, d_repeat_num=5, n_critic=2),
        # narrow for a 2-core CPU: the reference's depth at an eighth of its width (docs/performance.md)
        "cpu": StarGANConfig(conv_dim=8, g_repeat_num=6, d_repeat_num=6),
    }
    # NCHW: channels_last measured slower for this model (0.31 against 0.28 s/iteration)
    profile_loops = {
        "cpu": {
            "batch_size": 8,
            "iterations": 200,
            "sample_every": 100,
            "ckpt_every": 100,
            "channels_last": False,
        }
    }

    def check_config(self, cfg: TrainConfig) -> None:
        net: StarGANConfig = cfg.net
        if cfg.target_class != "all":
            raise ValueError(
                "TrainConfig.target_class must be 'all' for model='stargan' (one generator covers all classes); "
                f"got {cfg.target_class!r}"
            )
        if cfg.img_size % 2**net.d_repeat_num:
            raise ValueError(
                f"TrainConfig.img_size={cfg.img_size} must be divisible by 2**StarGANConfig.d_repeat_num = "
                f"{2**net.d_repeat_num} (D's strided convolutions); lower d_repeat_num"
            )

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: StarGANConfig = cfg.net
        return {
            "generator": StarGANGenerator(
                conv_dim=net.conv_dim,
                c_dim=num_domains,
                repeat_num=net.g_repeat_num,
                img_channels=cfg.channels,
            ),
            "discriminator": StarGANDiscriminator(
                img_size=cfg.img_size,
                conv_dim=net.conv_dim,
                c_dim=num_domains,
                repeat_num=net.d_repeat_num,
                img_channels=cfg.channels,
            ),
        }

    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        net: StarGANConfig = cfg.net
        lrs = {"generator": net.g_lr, "discriminator": net.d_lr}
        return {
            name: torch.optim.Adam(
                module.parameters(), lr=lrs[name], betas=(net.beta1, net.beta2), foreach=True
            )
            for name, module in nets.items()
        }

    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        if len(labels.unique()) < 2:
            raise ValueError(
                f"StarGAN needs images of at least 2 classes; the data has {labels.unique().tolist()}"
            )
        return lambda gen: plan_stargan_step(gen, labels, batch, cfg.net.n_critic)

    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        return Batch(x_real=x, y_org=y, y_trg=plan.labels[0], z=tuple(plan.z))

    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        """``n_critic`` discriminator updates (one batch each; G in bf16 under autocast, D and its gradient
        penalty in fp32), then one generator update on the last batch."""
        net: StarGANConfig = cfg.net
        gen, disc = state.nets["generator"], state.nets["discriminator"]
        g_fake = AutocastModule(gen, ctx.device, cfg.amp) if cfg.amp == "bf16" else gen
        b = len(batch.x_real) // net.n_critic
        d_terms: list[dict[str, Tensor | float]] = []
        for k in range(net.n_critic):
            part = slice(k * b, (k + 1) * b)
            with frozen(gen):
                loss, parts = losses.stargan_d_loss(
                    disc,
                    g_fake,
                    batch.x_real[part],
                    batch.y_org[part],
                    one_hot(batch.y_trg[part]),
                    batch.z[0][part],
                    lambda_cls=net.lambda_cls,
                    lambda_gp=net.lambda_gp,
                )
            d_terms.append({})
            record_terms(d_terms[-1], "d", loss, parts)
            optimise(loss, [disc], [state.optimizers["discriminator"]], ctx.info)
        terms: dict[str, Tensor | float] = {
            k: torch.stack([t[k] for t in d_terms]).mean()
            for k in d_terms[0]  # means over the D updates
        }
        last = slice((net.n_critic - 1) * b, net.n_critic * b)
        y_org, y_trg = batch.y_org[last], batch.y_trg[last]
        with frozen(disc):
            with autocast(ctx.device, cfg.amp):
                loss, parts = losses.stargan_g_loss(
                    disc,
                    gen,
                    batch.x_real[last],
                    one_hot(y_org),
                    one_hot(y_trg),
                    y_trg,
                    lambda_cls=net.lambda_cls,
                    lambda_rec=net.lambda_rec,
                )
            record_terms(terms, "g", loss, parts)
            optimise(loss, [gen], [state.optimizers["generator"]], ctx.info)
        # buffers (instance-norm statistics, image pools) from rank 0, so that the ranks' states stay equal
        broadcast_state(state.nets.values(), ctx.info.world_size, buffers_only=True)
        return terms

    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        return sample_sources(cfg, dataset, labels, latent_dim=1)

    @torch.no_grad()
    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        """One row per source image (:data:`~medsg_lib.families.medsg.SOURCES_PER_DOMAIN` per class): the source
        and its translation to each class."""
        x_src = inputs.x_src.to(device)
        gen = state.nets["generator"]
        columns = [x_src]
        with kept_buffers(gen):  # rank 0 alone draws samples: its running statistics must not move
            for d in range(NUM_DOMAINS):
                y = torch.full((len(x_src),), d, dtype=torch.int64, device=device)
                columns.append(gen(x_src, one_hot(y)))
        grid = torch.stack(columns, dim=1)  # (N, 1 + num_domains, C, H, W)
        return grid.flatten(0, 1).float().cpu(), 1 + NUM_DOMAINS

    def targets(self, cfg: TrainConfig) -> tuple[str, ...]:
        return CLASS_NAMES

    def plan_items(
        self,
        cfg: TrainConfig,
        gen_cfg: GenerateConfig,
        target_class: str,
        sources: Sequence[XrayRecord] | None,
    ) -> list[GeneratedItem]:
        return translation_items(self.label, gen_cfg, target_class, sources, source_order)

    def generate(
        self,
        nets: Mapping[str, nn.Module],
        cfg: TrainConfig,
        items: Sequence[GeneratedItem],
        lookup: Mapping[str, Tensor] | None,
        device: torch.device,
    ) -> Tensor:
        """``G(x_src, c_trg)``, unclamped, with instance statistics (module docstring)."""
        x_src = stack_sources(lookup, [it.source_image for it in items], device, self.label)
        y_trg = torch.tensor([class_index(it.target_class) for it in items], device=device)  # (B,)
        gen = nets["generator"]
        mode = gen.training
        gen.train()  # instance norm with instance statistics, as the reference's test
        try:
            with kept_buffers(gen):
                return gen(x_src, one_hot(y_trg))
        finally:
            gen.train(mode)


@contextmanager
def kept_buffers(module: nn.Module) -> Iterator[None]:
    """Run the block with ``module``'s buffers (e.g. running statistics of a train-mode norm) restored after."""
    saved = [b.detach().clone() for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(module.buffers(), saved, strict=True):
                b.copy_(value)


def translation_items(
    label: str,
    gen_cfg: GenerateConfig,
    target_class: str,
    sources: Sequence[XrayRecord] | None,
    order: Callable[[Sequence[XrayRecord], str, int], list[XrayRecord]],
) -> list[GeneratedItem]:
    """One item per source image of ``order(sources, target_class, seed)``, at most ``gen_cfg.num_per_class``
    (a deterministic translator gives a source's output once: repeating it would add copies, not samples)."""
    if sources is None:
        raise ValueError(
            f"{label} translates source images: pass sources (the validation records, e.g. "
            "build_dataset(data_cfg, 'val', phantoms, train=False).records)"
        )
    chosen = order(sources, target_class, gen_cfg.seed)[: gen_cfg.num_per_class]
    if not chosen:
        raise ValueError(
            f"{label}: no source image for target {target_class!r} among the {len(sources)} records given: the "
            "validation split needs images of the source classes"
        )
    return [
        GeneratedItem(
            item_seed(gen_cfg.seed, target_class, i),
            target_class,
            str(record.image_path),
            CLASS_NAMES[record.label],
            TRANSLATION_MODE,
            None,
        )
        for i, record in enumerate(chosen)
    ]


__all__ = [
    "StarGAN",
    "StarGANConfig",
    "TRANSLATION_MODE",
    "one_hot",
    "translation_items",
]
