"""Med-StyleGAN2: the StarGAN v2 architecture trained on chest X-ray classes (``docs/paper.md``).

One multi-domain model covers every class: a generator G translates a source image to a target domain with a
style code from the mapping network F (latent-guided) or the style encoder E (reference-guided); D has one
output per domain.

Training iteration: two discriminator steps (latent-guided, then reference-guided fake), then a latent-guided
generator step that updates G, F and E, then a reference-guided one that updates G only (as in the authors'
StarGAN v2-based code), then the EMA update of G, F and E with ``ema_beta``. ``lambda_ds`` decays linearly over
``ds_decay_iters`` (iteration ``t`` uses ``lambda_ds_at(t - 1, ...)``). Domains are sampled in balance (uniform
domain, then a uniform image of it); the target domain of a step is that of its reference images.

Generation follows the StarGAN v2 evaluation protocol: for a target class every VALIDATION image of each other
class is translated ``num_latents_per_source`` times, each with its own latent (``mode="latent"``) or its own
reference image of the target class (``mode="reference"``). Sources are taken round-robin over the source
classes (each class in a seeded random order), ``num_latents_per_source`` items per source, until
``num_per_class`` items; past one full pass the cycle restarts with the next latent indices. A smaller
``num_per_class`` therefore keeps whole groups of outputs per source (for LPIPS) and balanced source classes.
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
from medsg_lib.config import CLASS_NAMES, check_positive
from medsg_lib.devices import AutocastModule, autocast
from medsg_lib.families.base import (
    NUM_DOMAINS,
    Batch,
    ModelFamily,
    SampleInputs,
    SeededItems,
    StepContext,
    StepPlan,
    TrainState,
    draw,
    frozen,
    indices_by_domain,
    item_seeds,
    optimise,
    record_terms,
    update_ema,
)
from medsg_lib.manifest import GeneratedItem, class_index, item_latent, item_seed
from medsg_lib.models.medsg import Discriminator, Generator, MappingNetwork, StyleEncoder

if TYPE_CHECKING:
    from medsg_lib.config import GenerateConfig, TrainConfig
    from medsg_lib.data import XrayRecord

SOURCES_PER_DOMAIN = 2  # rows of the sample grid per present domain
EMA_NETS = ("generator", "mapping_network", "style_encoder")


@dataclass(frozen=True)
class MedSGConfig:
    """Med-StyleGAN2's own fields (StarGAN v2 architecture and losses; defaults are the paper's)."""

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
    ema_beta: float = 0.999  # EMA of G, F and E

    def __post_init__(self) -> None:
        check_positive(self, "ds_decay_iters", "max_width", "latent_dim", "style_dim", "mapping_hidden")
        if self.w_hpf != 0:
            raise ValueError(
                f"MedSGConfig.w_hpf={self.w_hpf!r} is not supported: w_hpf > 0 needs StarGAN v2's face-landmark "
                "network, which is meaningless for chest X-rays; the paper uses w_hpf = 0"
            )

    def width_for(self, img_size: int) -> int:
        """The first convolution's width: ``base_width`` or the paper's ``2**14 // img_size``."""
        return self.base_width if self.base_width is not None else 2**14 // img_size


def plan_medsg_step(
    gen: torch.Generator, by_domain: dict[int, Tensor], batch: int, latent_dim: int
) -> StepPlan:
    """Balanced domains: for the real batch and for the target domains, a uniform domain among those present,
    then a uniform image of it; two references of each target domain; two latents ``(batch, latent_dim)``."""
    domains = torch.tensor(sorted(by_domain))

    def images_of(domain_ids: Tensor) -> list[int]:
        return [int(draw(by_domain[int(d)], 1, gen)) for d in domain_ids]

    idx_real = images_of(draw(domains, batch, gen))
    y_trg = draw(domains, batch, gen)
    idx_ref, idx_ref2 = images_of(y_trg), images_of(y_trg)
    z = [torch.randn(batch, latent_dim, generator=gen) for _ in range(2)]
    indices = idx_real + idx_ref + idx_ref2
    return StepPlan(items=list(zip(indices, item_seeds(len(indices), gen), strict=True)), z=z)


def source_order(sources: Sequence[XrayRecord], target_class: str, seed: int) -> list[XrayRecord]:
    """Records of every class other than ``target_class``, round-robin over those classes (canonical order).

    Within a class the records are in a random order drawn from ``torch.Generator().manual_seed(seed * 3 +
    label)``, so the order of a class does not depend on the target.
    """
    target_label = class_index(target_class)
    per_class = []
    for label in range(len(CLASS_NAMES)):
        records = [r for r in sources if r.label == label]
        if label == target_label or not records:
            continue
        gen = torch.Generator().manual_seed(seed * len(CLASS_NAMES) + label)
        per_class.append([records[int(i)] for i in torch.randperm(len(records), generator=gen)])
    interleaved = itertools.chain.from_iterable(itertools.zip_longest(*per_class))
    return [r for r in interleaved if r is not None]


def reference_of(seed: int, references: Sequence[XrayRecord]) -> str:
    """The reference image drawn for the item of ``seed`` (uniform over ``references``)."""
    gen = torch.Generator().manual_seed(seed)
    return str(references[int(torch.randint(len(references), (1,), generator=gen))].image_path)


def stack_sources(
    lookup: Mapping[str, Tensor] | None,
    paths: Sequence[str | None],
    device: torch.device,
    label: str = "Med-StyleGAN2",
) -> Tensor:
    """The images of ``paths`` from ``lookup`` stacked ``(B, C, H, W)`` in [-1, 1] on ``device`` (a translator's
    sources or references); ``label`` names the model in the error when they are missing."""
    if lookup is None or any(p is None for p in paths):
        raise ValueError(f"{label} items need source (and reference) images: pass dataset_lookup")
    return torch.stack([lookup[p] for p in paths]).to(device)  # (B, C, H, W) in [-1, 1]


def sample_sources(cfg: TrainConfig, dataset: Dataset, labels: Tensor, latent_dim: int) -> SampleInputs:
    """A translator's fixed sample inputs: :data:`SOURCES_PER_DOMAIN` distinct source images of each present
    domain (fewer if a domain has fewer) and one latent ``(latent_dim,)`` each, from ``cfg.seed``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    by_domain = indices_by_domain(labels)
    indices = [
        int(i)
        for d in sorted(by_domain)
        for i in by_domain[d][torch.randperm(len(by_domain[d]), generator=gen)[:SOURCES_PER_DOMAIN]]
    ]
    items = SeededItems(dataset)
    x_src = torch.stack(
        [items[(i, s)][0] for i, s in zip(indices, item_seeds(len(indices), gen), strict=True)]
    )
    z = torch.randn(len(indices), latent_dim, generator=gen)
    return SampleInputs(z=z, x_src=x_src, y_src=labels[indices].clone())


class MedStyleGAN2(ModelFamily):
    name = "medsg"
    label = "Med-StyleGAN2"
    paper_row = "Med-StyleGAN2"
    class_conditional = True
    config_cls = MedSGConfig
    ema_nets = EMA_NETS
    inference_nets = EMA_NETS
    compile_nets = EMA_NETS  # D stays eager: R1 back-propagates through its input gradient (double backward)
    translates = True
    reproduce_targets = ("all",)
    # EMA horizon ~1/(1-beta) iterations: the paper's 0.999 suits 100k iterations; after the cpu profile's 1,000
    # it would still hold 37% of the random initial weights (measured: noise-like samples at step 300)
    profile_nets = {
        "smoke": MedSGConfig(base_width=8, max_width=32, mapping_hidden=32, ds_decay_iters=4, ema_beta=0.5),
        "cpu": MedSGConfig(base_width=8, max_width=64, mapping_hidden=64, ds_decay_iters=1000, ema_beta=0.99),
    }

    def check_config(self, cfg: TrainConfig) -> None:
        if cfg.target_class != "all":
            raise ValueError(
                "TrainConfig.target_class must be 'all' for model='medsg' (one multi-domain model covers all "
                f"classes); got {cfg.target_class!r}"
            )

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: MedSGConfig = cfg.net
        width = {
            "img_size": cfg.img_size,
            "img_channels": cfg.channels,
            "base_width": net.width_for(cfg.img_size),
        }
        return {
            "generator": Generator(
                **width, max_width=net.max_width, style_dim=net.style_dim, w_hpf=net.w_hpf
            ),
            "mapping_network": MappingNetwork(
                latent_dim=net.latent_dim,
                style_dim=net.style_dim,
                num_domains=num_domains,
                hidden_dim=net.mapping_hidden,
            ),
            "style_encoder": StyleEncoder(
                **width, max_width=net.max_width, style_dim=net.style_dim, num_domains=num_domains
            ),
            "discriminator": Discriminator(**width, max_width=net.max_width, num_domains=num_domains),
        }

    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        net: MedSGConfig = cfg.net
        # foreach: one multi-tensor kernel per update step instead of a loop over parameters; on CPU the
        # result is bit-identical to the loop (tested), fused=True is not
        adam = {"betas": (net.beta1, net.beta2), "weight_decay": net.weight_decay, "foreach": True}
        return {
            name: torch.optim.Adam(
                module.parameters(), lr=net.f_lr if name == "mapping_network" else net.lr, **adam
            )
            for name, module in nets.items()
        }

    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        by_domain = indices_by_domain(labels)
        if len(by_domain) < 2:
            raise ValueError(
                f"Med-StyleGAN2 needs images of at least 2 classes; the data has {sorted(by_domain)}"
            )
        return lambda gen: plan_medsg_step(gen, by_domain, batch, cfg.net.latent_dim)

    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        b = len(plan.z[0])  # the real batch, then two sets of references
        return Batch(
            x_real=x[:b], y_org=y[:b], x_refs=(x[b : 2 * b], x[2 * b :]), y_trg=y[b : 2 * b], z=tuple(plan.z)
        )

    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        """Two D steps, two G steps, EMA; returns every loss term and ``lambda_ds``."""
        net: MedSGConfig = cfg.net
        nets, opt, info = state.nets, state.optimizers, ctx.info
        gen, mapping, style_enc, disc = (nets[k] for k in (*EMA_NETS, "discriminator"))
        lambda_ds = losses.lambda_ds_at(state.step, net.lambda_ds, net.ds_decay_iters)
        args = (batch.x_real, batch.y_org, batch.y_trg)
        terms: dict[str, Tensor | float] = {}
        d_nets = _d_step_nets(nets, ctx.device, cfg.amp)
        for mode, guide in (("latent", {"z_trg": batch.z[0]}), ("ref", {"x_ref": batch.x_refs[0]})):
            # the fakes are made under no_grad inside the loss, so only D gets gradients
            loss, parts = losses.medsg_d_loss(d_nets, *args, lambda_reg=net.lambda_reg, **guide)
            record_terms(terms, f"d_{mode}", loss, parts)
            optimise(loss, [disc], [opt["discriminator"]], info)
        weights = {"lambda_sty": net.lambda_sty, "lambda_ds": lambda_ds, "lambda_cyc": net.lambda_cyc}
        # one autocast region per loss, the update outside it: autocast caches the bf16 copies of the weights
        # for the length of its region, so a region around an update would run the next loss on stale weights
        with frozen(disc):
            with autocast(ctx.device, cfg.amp):
                loss, parts = losses.medsg_g_loss(nets, *args, z_trgs=batch.z, **weights)
            record_terms(terms, "g_latent", loss, parts)
            optimise(loss, [gen, mapping, style_enc], [opt[k] for k in EMA_NETS], info)
            with frozen(mapping, style_enc):
                with autocast(ctx.device, cfg.amp):
                    loss, parts = losses.medsg_g_loss(nets, *args, x_refs=batch.x_refs, **weights)
                record_terms(terms, "g_ref", loss, parts)
                optimise(loss, [gen], [opt["generator"]], info)
        update_ema(state.ema, nets, net.ema_beta)
        terms["lambda_ds"] = lambda_ds
        return terms

    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        """:func:`sample_sources` with one latent each."""
        return sample_sources(cfg, dataset, labels, cfg.net.latent_dim)

    @torch.no_grad()
    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        """EMA nets: one row per source image, its columns the source and its translations to each domain with
        the row's latent."""
        z, x_src = inputs.z.to(device), inputs.x_src.to(device)
        columns = [x_src]
        for d in range(NUM_DOMAINS):
            y = torch.full((len(z),), d, dtype=torch.int64, device=device)
            columns.append(state.ema["generator"](x_src, state.ema["mapping_network"](z, y)))
        grid = torch.stack(columns, dim=1)  # (N, 1 + num_domains, C, H, W)
        return grid.flatten(0, 1).float().cpu(), 1 + NUM_DOMAINS

    def targets(self, cfg: TrainConfig) -> tuple[str, ...]:
        return CLASS_NAMES

    def check_target(self, cfg: TrainConfig, target_class: str) -> None:
        if target_class not in CLASS_NAMES:
            raise ValueError(
                f"Med-StyleGAN2 translates to one of {', '.join(map(repr, CLASS_NAMES))}; got {target_class!r}"
            )

    def plan_items(
        self,
        cfg: TrainConfig,
        gen_cfg: GenerateConfig,
        target_class: str,
        sources: Sequence[XrayRecord] | None,
    ) -> list[GeneratedItem]:
        if sources is None:
            raise ValueError(
                "Med-StyleGAN2 translates source images: pass sources (the validation records, e.g. "
                "build_dataset(data_cfg, 'val', phantoms, train=False).records)"
            )
        order = source_order(sources, target_class, gen_cfg.seed)
        if not order:
            raise ValueError(
                f"no source image of a class other than {target_class!r} among the {len(sources)} records "
                "given: the validation split needs images of the other classes"
            )
        references = [r for r in sources if r.label == class_index(target_class)]
        if gen_cfg.mode == "reference" and not references:
            raise ValueError(
                f"mode='reference' needs validation images of the target class {target_class!r}; none among "
                f"the {len(sources)} records given (use mode='latent')"
            )
        per_source = gen_cfg.num_latents_per_source
        items = []
        for i in range(gen_cfg.num_per_class):
            cycle, rest = divmod(i, len(order) * per_source)
            source_index, k = divmod(rest, per_source)
            record = order[source_index]
            seed = item_seed(gen_cfg.seed, target_class, i)
            items.append(
                GeneratedItem(
                    seed=seed,
                    target_class=target_class,
                    source_image=str(record.image_path),
                    source_class=CLASS_NAMES[record.label],
                    mode=gen_cfg.mode,
                    latent_index=cycle * per_source + k,
                    reference_image=reference_of(seed, references) if gen_cfg.mode == "reference" else None,
                )
            )
        return items

    def generate(
        self,
        nets: Mapping[str, nn.Module],
        cfg: TrainConfig,
        items: Sequence[GeneratedItem],
        lookup: Mapping[str, Tensor] | None,
        device: torch.device,
    ) -> Tensor:
        """``G(x_src, s_trg)`` with ``s_trg = F(z, y_trg)`` or ``E(x_ref, y_trg)``; unclamped."""
        net: MedSGConfig = cfg.net
        x_src = stack_sources(lookup, [it.source_image for it in items], device)  # (B, C, H, W) in [-1, 1]
        y_trg = torch.tensor([class_index(it.target_class) for it in items], device=device)  # (B,)
        s_trg = torch.empty(len(items), net.style_dim, device=device)  # (B, style_dim)
        latent = [i for i, it in enumerate(items) if it.mode == "latent"]
        reference = [i for i, it in enumerate(items) if it.mode == "reference"]
        if len(latent) + len(reference) != len(items):
            raise ValueError(f"Med-StyleGAN2 items have mode 'latent' or 'reference'; got {items[0].mode!r}")
        if latent:
            z_trg = torch.stack([item_latent(items[i].seed, net.latent_dim) for i in latent]).to(device)
            s_trg[latent] = nets["mapping_network"](z_trg, y_trg[latent])
        if reference:
            x_ref = stack_sources(lookup, [items[i].reference_image for i in reference], device)
            s_trg[reference] = nets["style_encoder"](x_ref, y_trg[reference])
        return nets["generator"](x_src, s_trg)


def _d_step_nets(nets: dict[str, nn.Module], device: torch.device, amp: str) -> dict[str, nn.Module]:
    """The nets for the discriminator loss: with bf16, G/F/E under autocast and D (and so R1) in fp32."""
    if amp != "bf16" or device.type not in ("cuda", "cpu"):
        return nets
    return {
        name: net if name == "discriminator" else AutocastModule(net, device, amp)
        for name, net in nets.items()
    }
