"""CycleGAN (Zhu et al., ICCV 2017) for three classes: two two-domain CycleGANs that share the Normal class.

CycleGAN maps two domains. To give every class generated images, one run trains the PAIRS of ``CycleGANConfig.pairs``
(default Normal <-> COVID-19 and Normal <-> Non-COVID) side by side, each with its own two generators, two
discriminators, image pools and optimisers. Networks: :mod:`medsg_lib.models.cyclegan` (the reference code's,
junyanz/pytorch-CycleGAN-and-pix2pix: ResNet generator with reflection padding, instance norm without affine, so
every convolution has a bias, transposed-convolution upsampling; 70x70 PatchGAN; N(0, 0.02) init). Objective
(:func:`medsg_lib.losses.cyclegan_g_loss`, :func:`~medsg_lib.losses.cyclegan_d_loss`): LSGAN, cycle 10, identity
0.5, image pool 50, Adam 2e-4 betas (0.5, 0.999) (one optimiser for a pair's two generators, one for its two
discriminators, as the reference). An iteration updates, for each pair in turn, the generators and then the
discriminators on the pooled fakes. The reference decays the learning rate linearly over its second half of
epochs; we keep it constant (a run here is far shorter).

Network names (``a`` is the pair's first class, Normal by default; ``b`` its second, e.g. COVID-19): for the pair of
slug ``p`` = the slug of b (``covid``), ``p_g_ab`` (a -> b), ``p_g_ba`` (b -> a), ``p_d_a`` and ``p_d_b`` (the
discriminators of a and b images); ``image_pools`` holds every pool as buffers, so that pools go into checkpoints
and a resumed run continues bit-exactly.

Generation: a deterministic translator (no latent). A target class is generated from the VALIDATION images of its
partner classes (COVID-19 and Non-COVID from Normal images; Normal from COVID-19 and Non-COVID images, round-robin),
one output per source image, at most ``num_per_class``. Its diversity column is therefore measured over random
pairs of outputs (of different sources): a deterministic translator has no within-source diversity (zero).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsg_lib import losses
from medsg_lib.config import CLASS_NAMES, CLASS_SLUGS, check_positive
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
    frozen,
    item_seeds,
    optimise,
    record_terms,
)
from medsg_lib.families.medsg import sample_sources, source_order, stack_sources
from medsg_lib.families.stargan import translation_items
from medsg_lib.manifest import GeneratedItem
from medsg_lib.models.cyclegan import PatchDiscriminator, ResnetGenerator

if TYPE_CHECKING:
    from medsg_lib.config import GenerateConfig, TrainConfig
    from medsg_lib.data import XrayRecord

POOLS_NET = "image_pools"


@dataclass(frozen=True)
class CycleGANConfig:
    """CycleGAN's own fields (defaults: the reference code's ``--model cycle_gan`` at 256 px)."""

    pairs: tuple[tuple[str, str], ...] = (("Normal", "COVID-19"), ("Normal", "Non-COVID"))  # (a, b) per pair
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    n_blocks: int = 9  # ResNet blocks (the reference: 9 at 256 px, 6 at 128 px)
    n_layers_d: int = 3  # PatchGAN layers (3: 70x70 receptive field)
    lambda_cyc: float = 10.0  # the reference's lambda_A = lambda_B
    lambda_idt: float = 0.5  # identity, relative to lambda_cyc
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        check_positive(self, "ngf", "ndf", "n_layers_d", "lr")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(CLASS_NAMES):
                raise ValueError(
                    f"CycleGANConfig.pairs has {pair!r}; each pair is two different classes of "
                    f"{', '.join(map(repr, CLASS_NAMES))}"
                )
        if len({p[1] for p in self.pairs}) != len(self.pairs):
            raise ValueError(f"CycleGANConfig.pairs={self.pairs!r}: each pair needs its own second class")
        missing = set(CLASS_NAMES) - {c for p in self.pairs for c in p}
        if missing:
            raise ValueError(
                f"CycleGANConfig.pairs={self.pairs!r} leave {sorted(missing)} without generated images; "
                "every class must be in a pair"
            )
        if self.n_blocks < 0 or self.pool_size < 0 or self.lambda_idt < 0:
            raise ValueError("CycleGANConfig.n_blocks, pool_size and lambda_idt must be >= 0")


def pair_prefix(pair: tuple[str, str]) -> str:
    """The networks' name prefix of ``pair``: the slug of its second class (``covid``)."""
    return CLASS_SLUGS[CLASS_NAMES.index(pair[1])]


def translator_of(pairs: Sequence[tuple[str, str]], source: str, target: str) -> str | None:
    """The generator that maps ``source`` to ``target`` (``<p>_g_ab`` or ``<p>_g_ba``), None if no pair does."""
    for a, b in pairs:
        if (source, target) == (a, b):
            return f"{pair_prefix((a, b))}_g_ab"
        if (source, target) == (b, a):
            return f"{pair_prefix((a, b))}_g_ba"
    return None


class ImagePools(nn.Module):
    """The image pools of every pair and domain as buffers ``<name>_images (pool_size, C, H, W)`` and
    ``<name>_count ()`` (checkpointed with the networks; no parameters)."""

    def __init__(self, names: Sequence[str], pool_size: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.pool_size = pool_size
        for name in names:
            self.register_buffer(f"{name}_images", torch.zeros(pool_size, *shape))
            self.register_buffer(f"{name}_count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def query(self, name: str, images: Tensor, gen: torch.Generator) -> Tensor:
        """:func:`medsg_lib.losses.pool_query` on pool ``name`` (its draws from ``gen``); updates the buffers."""
        stored, count = getattr(self, f"{name}_images"), getattr(self, f"{name}_count")
        pool = list(stored[: int(count)])
        out = losses.pool_query(pool, images.float(), self.pool_size, gen)
        if pool:
            stored[: len(pool)] = torch.stack(pool)
        count.fill_(len(pool))
        return out


def plan_cyclegan_step(gen: torch.Generator, pools: Sequence[tuple[Tensor, Tensor]], batch: int) -> StepPlan:
    """For each pair ``(pool_a, pool_b)`` of dataset indices, ``batch`` uniform images of a then of b (unaligned,
    with replacement); one seed for the step's image-pool draws."""
    indices = [
        i for pool_a, pool_b in pools for pool in (pool_a, pool_b) for i in draw(pool, batch, gen).tolist()
    ]
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return StepPlan(items=list(zip(indices, item_seeds(len(indices), gen), strict=True)), seeds=[seed])


class CycleGAN(ModelFamily):
    name = "cyclegan"
    label = "CycleGAN"
    paper_row = "CycleGAN"
    config_cls = CycleGANConfig
    translates = True
    deterministic = True
    class_conditional = True
    reproduce_targets = ("all",)
    profile_nets = {
        "smoke": CycleGANConfig(ngf=4, ndf=4, n_blocks=1, pool_size=4),
        # narrow for a 2-core CPU: an eighth of the width, the reference's 6 blocks for small images
        "cpu": CycleGANConfig(ngf=8, ndf=8, n_blocks=6),
    }
    profile_loops = {"cpu": {"batch_size": 4, "iterations": 200, "sample_every": 100, "ckpt_every": 100}}

    def inference_nets_of(self, cfg: TrainConfig) -> tuple[str, ...]:
        return tuple(f"{pair_prefix(p)}_{g}" for p in cfg.net.pairs for g in ("g_ab", "g_ba"))

    def check_config(self, cfg: TrainConfig) -> None:
        if cfg.target_class != "all":
            raise ValueError(
                "TrainConfig.target_class must be 'all' for model='cyclegan' (its pairs cover all classes); got "
                f"{cfg.target_class!r}"
            )
        if cfg.img_size % 4:
            raise ValueError(
                f"TrainConfig.img_size={cfg.img_size} must be divisible by 4 (two stride-2 stages)"
            )

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: CycleGANConfig = cfg.net
        nets: dict[str, nn.Module] = {}
        for pair in net.pairs:
            p = pair_prefix(pair)
            for g in ("g_ab", "g_ba"):
                nets[f"{p}_{g}"] = ResnetGenerator(
                    img_channels=cfg.channels, ngf=net.ngf, n_blocks=net.n_blocks
                )
            for d in ("d_a", "d_b"):
                nets[f"{p}_{d}"] = PatchDiscriminator(
                    img_channels=cfg.channels, ndf=net.ndf, n_layers=net.n_layers_d
                )
        names = [f"{pair_prefix(pair)}_{side}" for pair in net.pairs for side in ("a", "b")]
        nets[POOLS_NET] = ImagePools(names, net.pool_size, (cfg.channels, cfg.img_size, cfg.img_size))
        return nets

    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        net: CycleGANConfig = cfg.net
        opts = {}
        for pair in net.pairs:
            p = pair_prefix(pair)
            for role, (x, y) in (("g", ("g_ab", "g_ba")), ("d", ("d_a", "d_b"))):
                params = itertools.chain(nets[f"{p}_{x}"].parameters(), nets[f"{p}_{y}"].parameters())
                opts[f"{p}_{role}"] = torch.optim.Adam(
                    params, lr=net.lr, betas=(net.beta1, 0.999), foreach=True
                )
        return opts

    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        pools = []
        for pair in cfg.net.pairs:
            pool_pair = tuple((labels == CLASS_NAMES.index(c)).nonzero().flatten() for c in pair)
            empty = [c for c, pool in zip(pair, pool_pair, strict=True) if len(pool) == 0]
            if empty:
                raise ValueError(f"CycleGAN pair {pair} needs images of {empty}; the training data has none")
            pools.append(pool_pair)
        return lambda gen: plan_cyclegan_step(gen, pools, batch)

    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        return Batch(x_real=x, y_org=y, seeds=tuple(plan.seeds))

    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        """For each pair: the generators' update (D frozen), then the discriminators' on pooled fakes."""
        net: CycleGANConfig = cfg.net
        nets, opt = state.nets, state.optimizers
        pools: ImagePools = nets[POOLS_NET]  # type: ignore[assignment]
        gen = torch.Generator().manual_seed(batch.seeds[0])  # the pools' draws (CPU)
        chunks = batch.x_real.chunk(2 * len(net.pairs))
        terms: dict[str, Tensor | float] = {}
        for k, pair in enumerate(net.pairs):
            p = pair_prefix(pair)
            g_ab, g_ba, d_a, d_b = (nets[f"{p}_{n}"] for n in ("g_ab", "g_ba", "d_a", "d_b"))
            x_a, x_b = chunks[2 * k], chunks[2 * k + 1]
            with frozen(d_a, d_b):
                with autocast(ctx.device, cfg.amp):
                    loss, parts, fake_b, fake_a = losses.cyclegan_g_loss(
                        g_ab, g_ba, d_a, d_b, x_a, x_b, lambda_cyc=net.lambda_cyc, lambda_idt=net.lambda_idt
                    )
                record_terms(terms, f"{p}_g", loss, parts)
                optimise(loss, [g_ab, g_ba], [opt[f"{p}_g"]], ctx.info)
            fake_b = pools.query(f"{p}_b", fake_b, gen).to(x_b.dtype)
            fake_a = pools.query(f"{p}_a", fake_a, gen).to(x_a.dtype)
            with autocast(ctx.device, cfg.amp):
                loss_b, parts_b = losses.cyclegan_d_loss(d_b, x_b, fake_b)
                loss_a, parts_a = losses.cyclegan_d_loss(d_a, x_a, fake_a)
            parts = {**{f"b_{k}": v for k, v in parts_b.items()}, **{f"a_{k}": v for k, v in parts_a.items()}}
            record_terms(terms, f"{p}_d", loss_a + loss_b, parts)
            optimise(loss_a + loss_b, [d_a, d_b], [opt[f"{p}_d"]], ctx.info)
        # buffers (instance-norm statistics, image pools) from rank 0, so that the ranks' states stay equal
        broadcast_state(state.nets.values(), ctx.info.world_size, buffers_only=True)
        return terms

    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        return sample_sources(cfg, dataset, labels, latent_dim=1)

    @torch.no_grad()
    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        """One row per source image: the source, then its translation to each class where a pair maps it there
        (the source itself where none does, e.g. to its own class)."""
        x_src = inputs.x_src.to(device)
        y_src = self._sample_labels(inputs, len(x_src))
        columns = [x_src]
        for target in CLASS_NAMES:
            out = x_src.clone()
            for source in CLASS_NAMES:
                name = translator_of(cfg.net.pairs, source, target)
                rows = [i for i, c in enumerate(y_src) if c == source]
                if name is not None and rows:
                    out[rows] = state.nets[name](x_src[rows]).to(out.dtype)
            columns.append(out)
        grid = torch.stack(columns, dim=1)  # (N, 1 + num_domains, C, H, W)
        return grid.flatten(0, 1).float().cpu(), 1 + NUM_DOMAINS

    @staticmethod
    def _sample_labels(inputs: SampleInputs, n: int) -> list[str]:
        if inputs.y_src is None:
            raise ValueError("CycleGAN's sample inputs need the sources' classes (SampleInputs.y_src)")
        return [CLASS_NAMES[int(c)] for c in inputs.y_src[:n]]

    def targets(self, cfg: TrainConfig) -> tuple[str, ...]:
        return CLASS_NAMES

    def plan_items(
        self,
        cfg: TrainConfig,
        gen_cfg: GenerateConfig,
        target_class: str,
        sources: Sequence[XrayRecord] | None,
    ) -> list[GeneratedItem]:
        pairs = cfg.net.pairs

        def partner_order(records: Sequence[XrayRecord], target: str, seed: int) -> list[XrayRecord]:
            return [
                r
                for r in source_order(records, target, seed)
                if translator_of(pairs, CLASS_NAMES[r.label], target) is not None
            ]

        return translation_items(self.label, gen_cfg, target_class, sources, partner_order)

    def generate(
        self,
        nets: Mapping[str, nn.Module],
        cfg: TrainConfig,
        items: Sequence[GeneratedItem],
        lookup: Mapping[str, Tensor] | None,
        device: torch.device,
    ) -> Tensor:
        """Each item through the generator of its (source class, target class), unclamped."""
        x_src = stack_sources(lookup, [it.source_image for it in items], device, self.label)
        out = torch.empty_like(x_src)
        by_net: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            name = translator_of(cfg.net.pairs, it.source_class or "", it.target_class)
            if name is None:
                raise ValueError(f"CycleGAN has no generator from {it.source_class!r} to {it.target_class!r}")
            by_net.setdefault(name, []).append(i)
        for name, rows in by_net.items():
            out[rows] = nets[name](x_src[rows]).to(out.dtype)
        return out


__all__ = ["CycleGAN", "CycleGANConfig", "ImagePools", "pair_prefix", "translator_of"]
