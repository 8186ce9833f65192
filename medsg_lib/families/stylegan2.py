"""StyleGAN2 with adaptive discriminator augmentation (ADA), class-conditional: the model the name "Med-StyleGAN2"
promises, trained as NVIDIA's stylegan2-ada-pytorch trains it (``training/loss.py``, ``training/training_loop.py``,
``train.py``'s 'auto' configuration).

One model covers every class: the generator makes an image from noise and a class label, so no output starts
from a real patient's X-ray (unlike Med-StyleGAN2, a translator). Networks: :mod:`medsg_lib.models.stylegan2`;
augmentation: :mod:`medsg_lib.models.ada`; losses: :mod:`medsg_lib.losses.stylegan2`.

Iteration ``t`` (0-based, ``state.step``), each phase with its own latents and labels drawn from the step's plan,
every image the discriminator sees augmented with probability ``p``:

1. G main: ``softplus(-D(aug(G(z, c)), c))``, with style mixing (probability 0.9: the ``w`` of a second latent
   from a random layer on);
2. G path length (when ``t % pl_interval == 0``): half the batch, ``pl_weight * pl_interval`` times the penalty;
3. D main: ``softplus(D(aug(G(z, c)), c)) + softplus(-D(aug(x), c))``; the signs of the real logits feed ADA;
4. D R1 (when ``t % r1_interval == 0``): ``r1_gamma / 2 * r1_interval`` times the squared gradient norm on the
   augmented real images;
5. the generator's EMA (half-life ``ema_kimg`` thousand images, ramped up over the first ``ema_rampup`` of
   training), and every ``ada_interval`` steps the ADA update of ``p``.

Adam with betas ``(beta1, beta2)`` and ``lr``, both adjusted for lazy regularisation as the reference does
(``lr * r``, ``beta ** r`` with ``r = interval / (interval + 1)``). The classes of the fakes follow the training
set's (labels of random training images). Generation: one latent per item from its seed, the class label, the
noise inputs fixed (``noise_mode='const'``), truncation ``truncation_psi`` toward the average ``w``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsg_lib import losses
from medsg_lib.config import CLASS_NAMES, check_positive
from medsg_lib.devices import autocast, broadcast_state
from medsg_lib.families.base import (
    NUM_DOMAINS,
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
    update_ema,
)
from medsg_lib.families.noise import noise_items
from medsg_lib.manifest import GeneratedItem, class_index, item_latent
from medsg_lib.models.ada import ADA_AUGMENTATIONS, AugmentPipe
from medsg_lib.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

if TYPE_CHECKING:
    from medsg_lib.config import GenerateConfig, TrainConfig
    from medsg_lib.data import XrayRecord

SAMPLES_PER_CLASS = 4  # the sample grid: one row per class
AUGMENT_NET = "augment_pipe"  # the ADA state (p and its statistics), checkpointed with the networks
PL_NET = "path_length"  # the running mean of the path lengths


@dataclass(frozen=True)
class StyleGAN2Config:
    """StyleGAN2-ADA's fields; defaults are the reference's 'auto' configuration at 64 px where it has one."""

    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 2  # 'auto': 2; 'paper256' and the paper's: 8
    channel_base: int = 16384  # 'auto' below 512 px: 0.5 * 32768
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch std group (the batch per rank must be a multiple)
    conv_clamp: float | None = 256
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float | None = None  # None: the 'auto' heuristic 0.0002 * img_size ** 2 / batch_size
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    ema_kimg: float | None = None  # None: 'auto', batch_size * 10 / 32
    ema_rampup: float | None = 0.05
    augment: tuple[str, ...] = ADA_AUGMENTATIONS  # () trains without augmentation
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500  # thousands of images for p to move by 1
    truncation_psi: float = 1.0  # generation only: 1 = no truncation

    def __post_init__(self) -> None:
        check_positive(
            self, "z_dim", "w_dim", "map_layers", "channel_base", "channel_max", "mbstd_group", "lr",
            "r1_interval", "pl_interval", "pl_batch_shrink", "ada_interval", "ada_kimg",
        )  # fmt: skip
        for name in ("beta1", "beta2", "pl_decay", "style_mixing", "ada_target"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"StyleGAN2Config.{name}={value!r} must be in [0, 1]")
        if not 0 < self.truncation_psi <= 1:
            raise ValueError(f"StyleGAN2Config.truncation_psi={self.truncation_psi!r} must be in (0, 1]")
        AugmentPipe(self.augment)  # names the unknown augmentations

    def gamma_for(self, img_size: int, batch: int) -> float:
        """R1's weight: ``r1_gamma``, or the 'auto' configuration's ``0.0002 * img_size**2 / batch``."""
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * img_size**2 / batch

    def ema_kimg_for(self, batch: int) -> float:
        """The EMA half-life in thousands of images: ``ema_kimg`` or the 'auto' ``batch * 10 / 32``."""
        return self.ema_kimg if self.ema_kimg is not None else batch * 10 / 32


class PathLengthMean(nn.Module):
    """The running mean of the path lengths, a checkpointed buffer ``mean`` (the reference keeps it outside
    its checkpoints, so its resumes restart it from 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros([]))


def plan_stylegan2_step(gen: torch.Generator, labels: Tensor, batch: int, z_dim: int) -> StepPlan:
    """A batch of training images (uniform with replacement) and, for the three phases that make fakes (G main,
    G path length, D main), latents and mixing latents ``(batch, z_dim)`` and classes (those of random training
    images); one seed for the draws inside the step (mixing cut-offs, path-length noise, augmentations)."""
    pool = torch.arange(len(labels))
    indices = draw(pool, batch, gen).tolist()
    z = [torch.randn(batch, z_dim, generator=gen) for _ in range(6)]  # (z, z_mix) per phase
    fake_labels = [labels[draw(pool, batch, gen)] for _ in range(3)]
    return StepPlan(
        items=list(zip(indices, item_seeds(batch, gen), strict=True)),
        z=z,
        labels=fake_labels,
        seeds=[int(torch.randint(2**62, (1,), generator=gen))],
    )


def one_hot(y: Tensor) -> Tensor:
    """``(B,)`` class indices -> ``(B, num_classes)`` float one-hot labels."""
    return F.one_hot(y, NUM_DOMAINS).float()


def mixed_ws(
    generator: StyleGAN2Generator,
    z: Tensor,
    z_mix: Tensor,
    c: Tensor,
    probability: float,
    gen: torch.Generator,
) -> Tensor:
    """The mapping's ``ws`` for ``z`` with style mixing: with ``probability`` (one draw for the batch, as the
    reference), layers from a random cut-off on take the ``w`` of ``z_mix``."""
    ws = generator.mapping(z, c)
    mix, cutoff = torch.rand((), generator=gen), torch.randint(1, ws.shape[1], (), generator=gen)
    if probability > 0 and float(mix) < probability:
        w_mix = generator.mapping(z_mix, c, update_w_avg=False)
        keep = (torch.arange(ws.shape[1], device=ws.device) < int(cutoff))[None, :, None]
        ws = torch.where(keep, ws, w_mix)
    return ws


class StyleGAN2(ModelFamily):
    name = "stylegan2"
    label = "StyleGAN2-ADA"
    class_conditional = True
    config_cls = StyleGAN2Config
    ema_nets = ("generator",)
    inference_nets = ("generator",)
    # D stays eager (R1), G too (the path-length penalty's double backward)
    compile_nets = ()
    profile_nets = {
        "smoke": StyleGAN2Config(z_dim=16, w_dim=16, channel_base=256, channel_max=16, mbstd_group=2),
        # ada_kimg 20: p can move by 0.4 in the 8 kimg of the cpu run (the reference's 500 is sized for 25,000)
        "cpu": StyleGAN2Config(z_dim=64, w_dim=64, channel_base=1024, channel_max=64, ada_kimg=20),
    }
    # 500 x 16 = 8,000 images seen, as many as Med-StyleGAN2's 1,000 x 8 (step times: docs/performance.md)
    profile_loops = {"cpu": {"batch_size": 16, "iterations": 500, "sample_every": 250, "ckpt_every": 250}}

    def check_config(self, cfg: TrainConfig) -> None:
        net: StyleGAN2Config = cfg.net
        if cfg.target_class != "all":
            raise ValueError(
                "TrainConfig.target_class must be 'all' for model='stylegan2' (one class-conditional model "
                f"covers every class); got {cfg.target_class!r}"
            )
        if cfg.batch_size % min(net.mbstd_group, cfg.batch_size):
            raise ValueError(
                f"TrainConfig.batch_size={cfg.batch_size} must be a multiple of StyleGAN2Config.mbstd_group="
                f"{net.mbstd_group} (the minibatch standard deviation groups), or smaller than it"
            )

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: StyleGAN2Config = cfg.net
        widths = {
            "channel_base": net.channel_base,
            "channel_max": net.channel_max,
            "conv_clamp": net.conv_clamp,
        }
        return {
            "generator": StyleGAN2Generator(
                num_domains, cfg.img_size, cfg.channels, net.z_dim, net.w_dim, net.map_layers, **widths
            ),
            "discriminator": StyleGAN2Discriminator(
                num_domains, cfg.img_size, cfg.channels, mbstd_group_size=net.mbstd_group, **widths
            ),
            AUGMENT_NET: AugmentPipe(net.augment),
            PL_NET: PathLengthMean(),
        }

    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        net: StyleGAN2Config = cfg.net
        opts = {}
        for name, interval in (("generator", net.pl_interval), ("discriminator", net.r1_interval)):
            ratio = interval / (interval + 1)  # lazy regularisation: the reference's adjustment
            opts[name] = torch.optim.Adam(
                nets[name].parameters(),
                lr=net.lr * ratio,
                betas=(net.beta1**ratio, net.beta2**ratio),
                eps=1e-8,
                foreach=True,
            )
        return opts

    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        return lambda gen: plan_stylegan2_step(gen, labels, batch, cfg.net.z_dim)

    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        return Batch(x_real=x, y_org=y, z=tuple(plan.z), y_fake=tuple(plan.labels), seeds=tuple(plan.seeds))

    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        """G main, G path length (lazy), D main, D R1 (lazy), EMA, ADA update; returns every loss term and p."""
        net: StyleGAN2Config = cfg.net
        nets, opt, info, t = state.nets, state.optimizers, ctx.info, state.step
        gen, disc = nets["generator"], nets["discriminator"]
        augment: AugmentPipe = nets[AUGMENT_NET]  # type: ignore[assignment]
        draws = torch.Generator().manual_seed(batch.seeds[0])  # mixing, noise and augmentation draws (CPU)
        b = len(batch.x_real)
        if b % min(net.mbstd_group, b):  # this rank's share of the global batch (TrainConfig.batch_size)
            raise ValueError(
                f"a batch of {b} per rank is not a multiple of StyleGAN2Config.mbstd_group={net.mbstd_group}"
            )
        terms: dict[str, Tensor | float] = {}

        def fakes(phase: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
            z, z_mix = batch.z[2 * phase][:n], batch.z[2 * phase + 1][:n]
            c = one_hot(batch.y_fake[phase][:n])
            ws = mixed_ws(gen, z, z_mix, c, net.style_mixing, draws)
            return gen.synthesis(ws), ws, c

        with frozen(disc):
            with autocast(ctx.device, cfg.amp):
                img, _, c = fakes(0, b)
                loss = losses.adv_loss(disc(augment(img, draws), c).flatten(), 1.0)
            record_terms(terms, "g", loss, {"adv": loss})
            optimise(loss, [gen], [opt["generator"]], info)
            if t % net.pl_interval == 0:
                pl: PathLengthMean = nets[PL_NET]  # type: ignore[assignment]
                n = max(b // net.pl_batch_shrink, 1)
                img, ws, _ = fakes(1, n)
                noise = torch.randn(img.shape, generator=draws).to(img.device)
                penalty, new_mean = losses.path_length_penalty(img, ws, pl.mean, net.pl_decay, noise)
                loss = (img[:, 0, 0, 0] * 0 + penalty * net.pl_weight).mean() * net.pl_interval
                optimise(loss, [gen], [opt["generator"]], info)
                pl.mean.copy_(new_mean)
                terms["g_pl"] = penalty.mean().detach()
                terms["pl_mean"] = new_mean.detach()
        with frozen(gen):
            with autocast(ctx.device, cfg.amp):
                with torch.no_grad():
                    img, _, c = fakes(2, b)
                fake_logits = disc(augment(img, draws), c).flatten()
                real_logits = disc(augment(batch.x_real, draws), one_hot(batch.y_org)).flatten()
                loss_fake, loss_real = losses.adv_loss(fake_logits, 0.0), losses.adv_loss(real_logits, 1.0)
                loss = loss_fake + loss_real
            augment.record_signs(real_logits, info.world_size)
            record_terms(terms, "d", loss, {"fake": loss_fake, "real": loss_real})
            optimise(loss, [disc], [opt["discriminator"]], info)
            if t % net.r1_interval == 0:
                x = batch.x_real.detach().requires_grad_(True)
                logits = disc(augment(x, draws), one_hot(batch.y_org)).flatten()  # R1 in float32
                r1 = losses.r1_reg(logits, x)
                loss = (logits * 0).mean() + r1 * net.gamma_for(
                    cfg.img_size, cfg.batch_size
                ) * net.r1_interval
                optimise(loss, [disc], [opt["discriminator"]], info)
                terms["d_r1"] = r1.detach()
        # buffers that follow each rank's share (w_avg, the path-length mean) are rank 0's before EMA copies them;
        # ADA's sign statistics are summed over ranks as they are recorded, so every rank moves p alike
        broadcast_state(state.nets.values(), info.world_size, buffers_only=True)
        images_seen = (t + 1) * cfg.batch_size
        beta = losses.ema_beta(cfg.batch_size, images_seen, net.ema_kimg_for(cfg.batch_size), net.ema_rampup)
        update_ema(state.ema, nets, beta)
        if net.augment and (t + 1) % net.ada_interval == 0:
            augment.adjust(net.ada_target, cfg.batch_size, net.ada_interval, net.ada_kimg)
        terms["ada_p"] = augment.p.detach().clone()
        return terms

    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        gen = torch.Generator().manual_seed(cfg.seed)
        n = SAMPLES_PER_CLASS * NUM_DOMAINS
        return SampleInputs(
            z=torch.randn(n, cfg.net.z_dim, generator=gen),
            y_src=torch.arange(NUM_DOMAINS).repeat_interleave(SAMPLES_PER_CLASS),
        )

    @torch.no_grad()
    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        """The EMA generator: one row per class, constant noise, no truncation."""
        assert inputs.y_src is not None
        g = state.ema["generator"]
        img = g(inputs.z.to(device), one_hot(inputs.y_src.to(device)), noise_mode="const")
        return img.float().cpu(), SAMPLES_PER_CLASS

    def targets(self, cfg: TrainConfig) -> tuple[str, ...]:
        return CLASS_NAMES

    def check_target(self, cfg: TrainConfig, target_class: str) -> None:
        if target_class not in CLASS_NAMES:
            raise ValueError(
                f"StyleGAN2 generates one of {', '.join(map(repr, CLASS_NAMES))}; got {target_class!r}"
            )

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
        """``G(z, c)`` of each item's latent and class, constant noise, truncation ``truncation_psi``."""
        z = torch.stack([item_latent(it.seed, cfg.net.z_dim) for it in items]).to(device)  # (B, z_dim)
        c = one_hot(torch.tensor([class_index(it.target_class) for it in items], device=device))
        with eval_mode(nets):
            return nets["generator"](z, c, truncation_psi=cfg.net.truncation_psi, noise_mode="const")
