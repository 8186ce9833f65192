"""The one resumable trainer for Med-StyleGAN2, DCGAN and the vanilla GAN: ``train(cfg, data_cfg, run_dir)``.

A run directory holds everything a run writes::

    config.json                  {"train": TrainConfig, "data": DataConfig} as JSON
    log.jsonl                    one line per ``log_every`` steps: step, every loss term (means over the
                                 window), lambda_ds, images_per_s, seconds
    samples/step_{t:07d}.png     fixed-input sample grids every ``sample_every`` steps and at the end
    checkpoints/step_{t:07d}.pt  every ``ckpt_every`` steps and at the end (:mod:`medsg_lib.checkpoint`)

Steps are counted from 1; ``step_{t}`` is the state after ``t`` completed iterations.

Randomness and resume: every random choice of step ``t`` (batch indices, reference images, target domains,
latents, and the seed of each item's augmentation) comes from a ``torch.Generator`` seeded with
:func:`step_seed` ``(cfg.seed, t, rank)``. A run resumed from a checkpoint therefore continues bit-exactly as
the uninterrupted run would have (on CPU; cuDNN autotuning makes GPU runs close but not bit-exact). Initial
weights come from ``torch.manual_seed(cfg.seed)``. Batches are drawn with replacement per step, so
``iterations`` are counted in steps, not epochs.

Med-StyleGAN2 iteration (StarGAN v2, ``paper/PAPER.md``): two discriminator steps (latent-guided, then
reference-guided fake), then a latent-guided generator step that updates G, F (mapping network) and E (style
encoder), then a reference-guided one that updates G only (as in the authors' StarGAN v2-based code), then the
EMA update of G, F and E with ``cfg.ema_beta``. ``lambda_ds`` decays linearly over ``cfg.ds_decay_iters``
(iteration ``t`` uses ``lambda_ds_at(t - 1, ...)``). Domains are sampled in balance (uniform domain, then a
uniform image of it); the target domain of a step is that of its reference images. Baselines (GAN, DCGAN): one
BCE discriminator step and one non-saturating generator step with the same latents, Adam(``baseline_lr``,
betas ``(baseline_beta1, 0.999)``), no EMA (as in the DCGAN reference recipe); ``target_class`` keeps one
class.

Data parallelism (torchrun): ``cfg.batch_size`` is the GLOBAL batch, split evenly over ranks (it must be
divisible by the world size); each rank draws its own batch with the rank in its seed, gradients are averaged
by hand (:func:`medsg_lib.devices.all_reduce_grads`, which explains why not DDP) and BatchNorm buffers are
broadcast from rank 0 after each step. Every rank reads the same checkpoint; rank 0 alone writes the log,
samples and checkpoints; at each checkpoint all ranks compare fingerprints of their states and stop if they
have diverged (the fingerprints are stored in the checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.utils import save_image
from tqdm.auto import tqdm

from medsg_lib import losses
from medsg_lib.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from medsg_lib.config import CLASS_NAMES, DataConfig, PhantomConfig, TrainConfig, from_jsonable, to_jsonable
from medsg_lib.devices import (
    AutocastModule,
    DistInfo,
    all_reduce_grads,
    autocast,
    broadcast_state,
    configure_backend,
    gather_fingerprints,
    init_distributed,
)
from medsg_lib.models import build_models

CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
SAMPLES_DIR = "samples"
NUM_DOMAINS = len(CLASS_NAMES)
SOURCES_PER_DOMAIN = 2  # rows of the Med-StyleGAN2 sample grid per present domain
NUM_BASELINE_SAMPLES = 16  # 4 x 4 grid of fixed-z baseline samples
# fields that may change when a run is resumed (they do not change what is computed)
RESUMABLE_FIELDS: dict[str, frozenset[str]] = {
    "train": frozenset({"iterations", "log_every", "sample_every", "ckpt_every", "num_workers", "device"}),
    "data": frozenset({"cache_dir", "on_bad"}),
}
EMA_NETS = ("generator", "mapping_network", "style_encoder")


@dataclass
class TrainState:
    """Everything training changes; all of it goes into the checkpoint (see :func:`checkpoint_state`)."""

    nets: dict[str, nn.Module]  # online networks, train mode
    ema: dict[str, nn.Module]  # EMA copies of G, F, E (Med-StyleGAN2), eval mode; {} for baselines
    optimizers: dict[str, torch.optim.Optimizer]
    step: int = 0  # completed iterations


@dataclass
class StepPlan:
    """The random choices of one step on one rank (all drawn from :func:`step_generator`)."""

    items: list[tuple[int, int]]  # (dataset index, augmentation seed): real batch, then references
    z: list[Tensor] = field(default_factory=list)  # latents, each (B, latent_dim or nz) ~ N(0, I), on CPU


# ----------------------------------------------------------------------------------------------------------
# Randomness and data


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for ``(seed, step, rank)``: SHA-256 of the tuple, so nearby steps are unrelated."""
    digest = hashlib.sha256(f"medsg:{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))


def _draw(pool: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` elements of the 1-D ``pool`` uniformly with replacement."""
    return pool[torch.randint(len(pool), (n,), generator=gen)]


def _item_seeds(n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(2**62, (n,), generator=gen).tolist()


def plan_medsg_step(
    gen: torch.Generator, by_domain: dict[int, Tensor], batch: int, latent_dim: int
) -> StepPlan:
    """Balanced domains: for the real batch and for the target domains, a uniform domain among those present,
    then a uniform image of it; two references of each target domain; two latents ``(batch, latent_dim)``."""
    domains = torch.tensor(sorted(by_domain))

    def images_of(domain_ids: Tensor) -> list[int]:
        return [int(_draw(by_domain[int(d)], 1, gen)) for d in domain_ids]

    idx_real = images_of(_draw(domains, batch, gen))
    y_trg = _draw(domains, batch, gen)
    idx_ref, idx_ref2 = images_of(y_trg), images_of(y_trg)
    z = [torch.randn(batch, latent_dim, generator=gen) for _ in range(2)]
    indices = idx_real + idx_ref + idx_ref2
    return StepPlan(items=list(zip(indices, _item_seeds(len(indices), gen), strict=True)), z=z)


def plan_baseline_step(gen: torch.Generator, pool: Tensor, batch: int, nz: int) -> StepPlan:
    """``batch`` images of ``pool`` uniformly with replacement and one latent ``(batch, nz)``."""
    indices = _draw(pool, batch, gen).tolist()
    z = [torch.randn(batch, nz, generator=gen)]
    return StepPlan(items=list(zip(indices, _item_seeds(batch, gen), strict=True)), z=z)


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


class StepSampler:
    """Batch sampler yielding the plan's items of steps ``start + 1 .. stop``."""

    def __init__(self, plan_fn: Callable[[int], StepPlan], start: int, stop: int) -> None:
        self.plan_fn, self.start, self.stop = plan_fn, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for t in range(self.start + 1, self.stop + 1):
            yield self.plan_fn(t).items

    def __len__(self) -> int:
        return self.stop - self.start


def dataset_labels(dataset: Dataset) -> Tensor:
    """The int64 ``(N,)`` labels of ``dataset`` (its ``labels`` attribute)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} has no `labels` attribute (int64 (N,) class of each item)")
    return torch.as_tensor(labels, dtype=torch.int64)


def _indices_by_domain(labels: Tensor) -> dict[int, Tensor]:
    return {d: (labels == d).nonzero().flatten() for d in range(NUM_DOMAINS) if bool((labels == d).any())}


def make_plan_fn(cfg: TrainConfig, labels: Tensor, batch: int, rank: int) -> Callable[[int], StepPlan]:
    """``plan_fn(t)``: the :class:`StepPlan` of step ``t`` on ``rank`` with a per-rank ``batch``."""
    if cfg.model == "medsg":
        by_domain = _indices_by_domain(labels)
        if len(by_domain) < 2:
            raise ValueError(
                f"Med-StyleGAN2 needs images of at least 2 classes; the data has {sorted(by_domain)}"
            )
        return lambda t: plan_medsg_step(step_generator(cfg.seed, t, rank), by_domain, batch, cfg.latent_dim)
    pool = torch.arange(len(labels))
    if cfg.target_class != "all":
        pool = (labels == CLASS_NAMES.index(cfg.target_class)).nonzero().flatten()
        if len(pool) == 0:
            raise ValueError(f"TrainConfig.target_class={cfg.target_class!r} but the data has no such image")
    return lambda t: plan_baseline_step(step_generator(cfg.seed, t, rank), pool, batch, cfg.nz)


def _check_dataset(dataset: Dataset, cfg: TrainConfig) -> Tensor:
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
    plan_fn: Callable[[int], StepPlan],
    start: int,
    stop: int,
    cfg: TrainConfig,
    device: torch.device,
) -> DataLoader:
    """One pass over steps ``start + 1 .. stop``; each batch stacks the ``(x, y)`` of a step's plan items."""
    return DataLoader(
        SeededItems(dataset),
        batch_sampler=StepSampler(plan_fn, start, stop),
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )


# ----------------------------------------------------------------------------------------------------------
# Networks, optimisers, EMA


def build_train_state(cfg: TrainConfig, device: torch.device) -> TrainState:
    """Fresh networks (seeded with ``cfg.seed``), EMA copies (Med-StyleGAN2) and Adam, on ``device``."""
    torch.manual_seed(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    nets = {
        name: net.to(device, memory_format=memory_format).train() for name, net in build_models(cfg).items()
    }
    if cfg.model == "medsg":
        ema = {name: deepcopy(nets[name]).eval().requires_grad_(False) for name in EMA_NETS}
        adam = {"betas": (cfg.beta1, cfg.beta2), "weight_decay": cfg.weight_decay}
        optimizers = {
            name: torch.optim.Adam(
                net.parameters(), lr=cfg.f_lr if name == "mapping_network" else cfg.lr, **adam
            )
            for name, net in nets.items()
        }
    else:
        ema = {}
        optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=cfg.baseline_lr, betas=(cfg.baseline_beta1, 0.999))
            for name, net in nets.items()
        }
    return TrainState(nets=nets, ema=ema, optimizers=optimizers)


@torch.no_grad()
def update_ema(ema: dict[str, nn.Module], nets: dict[str, nn.Module], beta: float) -> None:
    """``ema <- beta * ema + (1 - beta) * online`` for parameters; buffers are copied."""
    for name, ema_net in ema.items():
        online = nets[name]
        for p_ema, p in zip(ema_net.parameters(), online.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - beta)
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
    all_reduce_grads((p for m in modules for p in m.parameters()), info.world_size)
    for opt in optimizers:
        opt.step()


def _record(terms: dict[str, float], prefix: str, loss: Tensor, parts: dict[str, float]) -> None:
    terms[f"{prefix}_total"] = float(loss.detach().item())
    terms.update({f"{prefix}_{k}": float(v) for k, v in parts.items()})


# ----------------------------------------------------------------------------------------------------------
# One iteration


@dataclass
class Batch:
    """One step's tensors on the device."""

    x_real: Tensor  # (B, C, H, W) in [-1, 1]
    y_org: Tensor  # (B,) int64
    x_refs: tuple[Tensor, ...] = ()  # Med-StyleGAN2: two (B, C, H, W) references of domains y_trg
    y_trg: Tensor | None = None  # (B,) int64
    z: tuple[Tensor, ...] = ()  # latents (B, latent_dim) x 2 (Med-StyleGAN2) or (B, nz) x 1


def to_batch(x: Tensor, y: Tensor, plan: StepPlan, cfg: TrainConfig, device: torch.device) -> Batch:
    """Split the loader's stacked ``(x, y)`` (real batch, then references) and move it to ``device``."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    y = y.to(device, non_blocking=True)
    z = tuple(zi.to(device, non_blocking=True) for zi in plan.z)
    if cfg.model != "medsg":
        return Batch(x_real=x, y_org=y, z=z)
    b = len(plan.z[0])
    return Batch(x_real=x[:b], y_org=y[:b], x_refs=(x[b : 2 * b], x[2 * b :]), y_trg=y[b : 2 * b], z=z)


def _d_step_nets(nets: dict[str, nn.Module], device: torch.device, amp: str) -> dict[str, nn.Module]:
    """The nets for the discriminator loss: with bf16, G/F/E under autocast and D (and so R1) in fp32."""
    if amp != "bf16" or device.type != "cuda":
        return nets
    return {
        name: net if name == "discriminator" else AutocastModule(net, device, amp)
        for name, net in nets.items()
    }


def medsg_step(
    state: TrainState, batch: Batch, cfg: TrainConfig, device: torch.device, info: DistInfo
) -> dict[str, float]:
    """One Med-StyleGAN2 iteration (2 D steps, 2 G steps, EMA); returns every loss term and ``lambda_ds``."""
    nets, opt = state.nets, state.optimizers
    gen, mapping, style_enc, disc = (
        nets[k] for k in ("generator", "mapping_network", "style_encoder", "discriminator")
    )
    lambda_ds = losses.lambda_ds_at(state.step, cfg.lambda_ds, cfg.ds_decay_iters)
    args = (batch.x_real, batch.y_org, batch.y_trg)
    terms: dict[str, float] = {}
    d_nets = _d_step_nets(nets, device, cfg.amp)
    for mode, guide in (("latent", {"z_trg": batch.z[0]}), ("ref", {"x_ref": batch.x_refs[0]})):
        # the fakes are made under no_grad inside the loss, so only D gets gradients
        loss, parts = losses.medsg_d_loss(d_nets, *args, lambda_reg=cfg.lambda_reg, **guide)
        _record(terms, f"d_{mode}", loss, parts)
        optimise(loss, [disc], [opt["discriminator"]], info)
    weights = {"lambda_sty": cfg.lambda_sty, "lambda_ds": lambda_ds, "lambda_cyc": cfg.lambda_cyc}
    with frozen(disc), autocast(device, cfg.amp):
        loss, parts = losses.medsg_g_loss(nets, *args, z_trgs=batch.z, **weights)
        _record(terms, "g_latent", loss, parts)
        optimise(loss, [gen, mapping, style_enc], [opt[k] for k in EMA_NETS], info)
        with frozen(mapping, style_enc):
            loss, parts = losses.medsg_g_loss(nets, *args, x_refs=batch.x_refs, **weights)
            _record(terms, "g_ref", loss, parts)
            optimise(loss, [gen], [opt["generator"]], info)
    update_ema(state.ema, nets, cfg.ema_beta)
    terms["lambda_ds"] = lambda_ds
    return terms


def baseline_step(
    state: TrainState, batch: Batch, cfg: TrainConfig, device: torch.device, info: DistInfo
) -> dict[str, float]:
    """One GAN/DCGAN iteration: a BCE discriminator step, then a non-saturating generator step (same z)."""
    gen, disc = state.nets["generator"], state.nets["discriminator"]
    terms: dict[str, float] = {}
    with autocast(device, cfg.amp):
        with frozen(gen):
            loss, parts = losses.baseline_d_loss(disc, gen, batch.x_real, batch.z[0])
            _record(terms, "d", loss, parts)
            optimise(loss, [disc], [state.optimizers["discriminator"]], info)
        with frozen(disc):
            loss, parts = losses.baseline_g_loss(disc, gen, batch.z[0])
            _record(terms, "g", loss, parts)
            optimise(loss, [gen], [state.optimizers["generator"]], info)
    broadcast_state(state.nets.values(), info.world_size, buffers_only=True)
    return terms


def run_steps(
    state: TrainState,
    cfg: TrainConfig,
    dataset: Dataset,
    labels: Tensor,
    stop: int,
    device: torch.device,
    info: DistInfo,
) -> Iterator[dict[str, float]]:
    """Train from ``state.step`` to ``stop``; yields each step's loss terms once ``state.step`` is updated."""
    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"TrainConfig.batch_size={cfg.batch_size} (the global batch) must be divisible by the world size "
            f"{info.world_size}"
        )
    plan_fn = make_plan_fn(cfg, labels, cfg.batch_size // info.world_size, info.rank)
    step_fn = medsg_step if cfg.model == "medsg" else baseline_step
    for t, (x, y) in enumerate(
        make_loader(dataset, plan_fn, state.step, stop, cfg, device), start=state.step + 1
    ):
        batch = to_batch(x, y, plan_fn(t), cfg, device)
        terms = step_fn(state, batch, cfg, device, info)
        state.step = t
        yield terms


# ----------------------------------------------------------------------------------------------------------
# Run directory: config, log, samples, checkpoints


def _config_json(cfg: TrainConfig, data_cfg: DataConfig) -> dict[str, Any]:
    return {"train": to_jsonable(cfg), "data": to_jsonable(data_cfg)}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"stage.field: old -> new"`` for every field that differs, except :data:`RESUMABLE_FIELDS`."""
    diffs = []
    for stage in ("train", "data"):
        before, after = old.get(stage, {}), new.get(stage, {})
        for name in sorted(set(before) | set(after)):
            if name not in RESUMABLE_FIELDS[stage] and before.get(name) != after.get(name):
                diffs.append(f"{stage}.{name}: {before.get(name)!r} -> {after.get(name)!r}")
    return diffs


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_resumable(run_dir: Path, config: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``run_dir/config.json`` exists with a different config (naming the fields)."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return
    diffs = config_differences(json.loads(path.read_text(encoding="utf-8")), config)
    if diffs:
        raise ValueError(
            f"cannot resume {run_dir}: its {CONFIG_NAME} differs from this run's config in "
            f"{'; '.join(diffs)}. Use a new run_dir, or resume=False to start over in this one "
            "(which deletes its checkpoints, log and samples)."
        )


def clear_run(run_dir: Path) -> None:
    """Delete what :func:`train` wrote in ``run_dir`` (checkpoints, log, samples, config) and nothing else."""
    patterns = [f"{CHECKPOINT_DIR}/step_*.pt", f"{SAMPLES_DIR}/step_*.png", LOG_NAME, CONFIG_NAME]
    for pattern in patterns:
        for path in run_dir.glob(pattern):
            path.unlink()


def truncate_log(log_path: Path, last_step: int) -> None:
    """Drop log lines of steps after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not log_path.is_file():
        return
    lines = log_path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= last_step]
    if len(kept) != len(lines):
        log_path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


class LogWindow:
    """Means of the loss terms since the last log line, and the images per second over that window."""

    def __init__(self, images_per_step: int) -> None:
        self.images_per_step = images_per_step
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, terms: dict[str, float]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def flush(self, step: int) -> dict[str, Any]:
        seconds = time.perf_counter() - self.t0
        record = {"step": step, **{k: v / self.count for k, v in self.sums.items()}}
        record["images_per_s"] = self.images_per_step * self.count / max(seconds, 1e-9)
        record["seconds"] = seconds
        self._reset()
        return record


def check_finite(terms: dict[str, float], step: int, run_dir: Path) -> None:
    """Raise ``FloatingPointError`` naming the step, the first non-finite term and the last checkpoint."""
    for name, value in terms.items():
        if not math.isfinite(value):
            last = latest_checkpoint(run_dir)
            raise FloatingPointError(
                f"training diverged at step {step}: loss term {name!r} is {value} (run dir {run_dir}); "
                f"the last good checkpoint is {last if last is not None else 'none (no checkpoint yet)'}"
            )


@dataclass(frozen=True)
class SampleInputs:
    """Fixed inputs of the sample grids, chosen once with ``cfg.seed``."""

    z: Tensor  # (N, latent_dim) or (N, nz), CPU
    x_src: Tensor | None = None  # (N, C, H, W) in [-1, 1], CPU (Med-StyleGAN2)


def fixed_sample_inputs(cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
    """Med-StyleGAN2: :data:`SOURCES_PER_DOMAIN` source images of each present domain and one latent each;
    baselines: :data:`NUM_BASELINE_SAMPLES` latents."""
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.model != "medsg":
        return SampleInputs(z=torch.randn(NUM_BASELINE_SAMPLES, cfg.nz, generator=gen))
    by_domain = _indices_by_domain(labels)
    indices = [
        int(i)
        for d in sorted(by_domain)
        for i in by_domain[d][torch.randperm(len(by_domain[d]), generator=gen)[:SOURCES_PER_DOMAIN]]
    ]  # distinct images, fewer if a domain has fewer
    items = SeededItems(dataset)
    x_src = torch.stack(
        [items[(i, s)][0] for i, s in zip(indices, _item_seeds(len(indices), gen), strict=True)]
    )
    return SampleInputs(z=torch.randn(len(indices), cfg.latent_dim, generator=gen), x_src=x_src)


@torch.no_grad()
def sample_grid(
    state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
) -> tuple[Tensor, int]:
    """``(images (N, C, H, W) in [-1, 1], images per row)`` of the sample grid.

    Med-StyleGAN2 (EMA nets): one row per source image, its columns the source and its translations to each
    domain with the row's latent. Baselines: the generator in eval mode (BatchNorm running statistics) on the
    fixed latents.
    """
    z = inputs.z.to(device)
    if cfg.model != "medsg":
        gen = state.nets["generator"]
        gen.eval()
        try:
            return gen(z).float().cpu(), int(math.isqrt(len(z)))
        finally:
            gen.train()
    x_src = inputs.x_src.to(device)
    columns = [x_src]
    for d in range(NUM_DOMAINS):
        y = torch.full((len(z),), d, dtype=torch.int64, device=device)
        columns.append(state.ema["generator"](x_src, state.ema["mapping_network"](z, y)))
    grid = torch.stack(columns, dim=1)  # (N, 1 + num_domains, C, H, W)
    return grid.flatten(0, 1).float().cpu(), 1 + NUM_DOMAINS


def save_samples(
    state: TrainState, cfg: TrainConfig, inputs: SampleInputs, run_dir: Path, device: torch.device
) -> Path:
    """Write ``run_dir/samples/step_{t:07d}.png`` (see :func:`sample_grid`) and return its path."""
    images, nrow = sample_grid(state, cfg, inputs, device)
    path = run_dir / SAMPLES_DIR / f"step_{state.step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1))
    return path


def _tensors_of(state: TrainState) -> list[tuple[str, Tensor]]:
    named = [(f"nets.{n}.{k}", v) for n, net in state.nets.items() for k, v in net.state_dict().items()]
    named += [(f"ema.{n}.{k}", v) for n, net in state.ema.items() for k, v in net.state_dict().items()]
    for n, opt in state.optimizers.items():
        for i, per_param in opt.state_dict()["state"].items():
            named += [(f"optimizers.{n}.{i}.{k}", v) for k, v in per_param.items() if isinstance(v, Tensor)]
    return named


def state_fingerprint(state: TrainState) -> tuple[list[str], Tensor]:
    """Names and a float64 ``(2 * num_tensors,)`` vector (sum and sum of absolute values of every tensor)."""
    named = _tensors_of(state)
    values = [torch.stack([v.double().sum(), v.double().abs().sum()]) for _, v in named]
    return [n for n, _ in named], torch.cat(values)


def check_ranks_agree(state: TrainState, info: DistInfo) -> Tensor:
    """All ranks' fingerprints ``(world_size, 2 * num_tensors)``; ``RuntimeError`` if ranks diverged."""
    names, fingerprint = state_fingerprint(state)
    gathered = gather_fingerprints(fingerprint, info.world_size)
    for rank, other in enumerate(gathered[1:], start=1):
        if not torch.equal(other, gathered[0]):
            first = int((other != gathered[0]).nonzero()[0]) // 2
            raise RuntimeError(
                f"data-parallel ranks diverged at step {state.step}: rank {rank} differs from rank 0 "
                f"first in {names[first]}"
            )
    return torch.stack(gathered).cpu()


def checkpoint_state(
    state: TrainState, config: dict[str, Any], fingerprints: Tensor | None = None
) -> dict[str, Any]:
    """The plain dict for :func:`medsg_lib.checkpoint.save_checkpoint` (layout: its module docstring)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    ckpt = {
        "step": state.step,
        "config": config,
        "nets": {n: net.state_dict() for n, net in state.nets.items()},
        "ema": {n: net.state_dict() for n, net in state.ema.items()},
        "optimizers": {n: opt.state_dict() for n, opt in state.optimizers.items()},
        "rng": rng,
    }
    if fingerprints is not None:
        ckpt["ddp"] = {"world_size": len(fingerprints), "fingerprints": fingerprints}
    return ckpt


def restore_state(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Load a checkpoint's networks, EMA, optimisers, step and RNG states into ``state`` (in place)."""
    for name, net in state.nets.items():
        net.load_state_dict(ckpt["nets"][name])
    for name, net in state.ema.items():
        net.load_state_dict(ckpt["ema"][name])
    for name, opt in state.optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    state.step = int(ckpt["step"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"].cpu())  # the checkpoint may have been mapped to a GPU
    random.setstate(rng["python"])
    cuda_states = rng.get("cuda")
    if (
        cuda_states is not None
        and torch.cuda.is_available()
        and len(cuda_states) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def _prepare_run_dir(run_dir: Path, config: dict[str, Any], resume: bool, info: DistInfo) -> None:
    """Check (every rank) and write (rank 0) ``config.json``; ``resume=False`` first clears the run."""
    if resume:
        check_resumable(run_dir, config)
    _barrier(info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            clear_run(run_dir)
        _write_json_atomic(run_dir / CONFIG_NAME, config)
    _barrier(info)


def _resume(state: TrainState, run_dir: Path, device: torch.device, info: DistInfo) -> None:
    ckpt_path = latest_checkpoint(run_dir)
    if ckpt_path is None:
        return
    restore_state(state, load_checkpoint(ckpt_path, map_location=device))
    if info.is_main:
        truncate_log(run_dir / LOG_NAME, state.step)


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    keys = [k for k in record if k.endswith("_total")] + ["images_per_s"]
    return {k.removesuffix("_total"): f"{record[k]:.3g}" for k in keys}


# ----------------------------------------------------------------------------------------------------------
# Entry point


def train(
    cfg: TrainConfig,
    data_cfg: DataConfig,
    run_dir: Path,
    *,
    phantoms: PhantomConfig | None = None,
    dataset: Dataset | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train ``cfg.model`` on the train split of ``data_cfg`` (or on ``dataset``) into ``run_dir``; return it.

    Writes ``config.json``, ``log.jsonl``, ``samples/step_*.png`` and ``checkpoints/step_*.pt`` (module
    docstring). With ``resume`` (default) it continues from the latest checkpoint of ``run_dir``, refusing a
    run dir whose config differs except in :data:`RESUMABLE_FIELDS`; ``resume=False`` starts over, deleting
    the run's previous checkpoints, log and samples. ``stop_at`` stops after that step, having written a
    checkpoint, as if the run was killed then (tests). Under torchrun, trains data-parallel (module
    docstring).

    Raises:
        FloatingPointError: a loss term became NaN or infinite (the message names the step, the term, the
            run dir and the last good checkpoint).
        ValueError: config mismatch on resume; data that does not fit ``cfg``.
    """
    run_dir = Path(run_dir)
    config = _config_json(cfg, data_cfg)
    with init_distributed(cfg.device) as (info, device):
        configure_backend(device)
        _prepare_run_dir(run_dir, config, resume, info)
        if dataset is None:
            from medsg_lib.data import build_dataset

            dataset = build_dataset(
                data_cfg, "train", phantoms, train=True, progress=progress and info.is_main
            )
        labels = _check_dataset(dataset, cfg)
        state = build_train_state(cfg, device)
        if resume:
            _resume(state, run_dir, device, info)
        broadcast_state([*state.nets.values(), *state.ema.values()], info.world_size)
        stop = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
        _train_loop(state, cfg, dataset, labels, stop, run_dir, config, device, info, progress)
    return run_dir


def _train_loop(
    state: TrainState,
    cfg: TrainConfig,
    dataset: Dataset,
    labels: Tensor,
    stop: int,
    run_dir: Path,
    config: dict[str, Any],
    device: torch.device,
    info: DistInfo,
    progress: bool,
) -> None:
    """Steps ``state.step + 1 .. stop`` with logging, samples and checkpoints (rank 0 writes)."""
    if state.step >= stop:
        return
    inputs = fixed_sample_inputs(cfg, dataset, labels)
    window = LogWindow(cfg.batch_size)
    bar = tqdm(
        total=cfg.iterations,
        initial=state.step,
        desc=f"train {cfg.model}",
        disable=not (progress and info.is_main),
    )
    with bar:
        for terms in run_steps(state, cfg, dataset, labels, stop, device, info):
            t = state.step
            check_finite(terms, t, run_dir)
            window.add(terms)
            bar.update(1)
            if t % cfg.log_every == 0 or t == cfg.iterations:
                record = window.flush(t)
                bar.set_postfix(_postfix(record), refresh=False)
                if info.is_main:
                    with open(run_dir / LOG_NAME, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
            if info.is_main and (t % cfg.sample_every == 0 or t == cfg.iterations):
                save_samples(state, cfg, inputs, run_dir, device)
            if t % cfg.ckpt_every == 0 or t == stop:
                fingerprints = check_ranks_agree(state, info) if info.distributed else None
                if info.is_main:
                    save_checkpoint(
                        checkpoint_path(run_dir, t), checkpoint_state(state, config, fingerprints)
                    )
                _barrier(info)


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/log.jsonl`` in order (empty list when the run has not logged yet)."""
    path = Path(run_dir) / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def latest_samples(run_dir: Path) -> Path | None:
    """The newest ``samples/step_*.png`` of ``run_dir`` (None when there is none)."""
    grids = sorted((Path(run_dir) / SAMPLES_DIR).glob("step_*.png"))
    return grids[-1] if grids else None


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One row describing a finished run: model, class, size, steps, parameters per net, logged training
    seconds, mean images/s and the last logged value of each total loss (for ``results/training_runs.csv``)."""
    from medsg_lib.models import build_models, count_parameters

    run_dir = Path(run_dir)
    config = json.loads((run_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    cfg = from_jsonable(TrainConfig, config["train"])
    log = read_log(run_dir)
    last = log[-1] if log else {}
    row: dict[str, Any] = {
        "run": run_dir.name,
        "model": cfg.model,
        "target_class": cfg.target_class,
        "img_size": cfg.img_size,
        "batch_size": cfg.batch_size,
        "steps": last.get("step", 0),
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in log), 1),
        "images_per_s": round(sum(r.get("images_per_s", 0.0) for r in log) / max(len(log), 1), 2),
    }
    row.update({f"params_{k}": count_parameters(m) for k, m in build_models(cfg).items()})
    row.update({k: round(v, 4) for k, v in last.items() if k.endswith("_total")})
    return row
