"""The training state: building it, its checkpoint dict, restoring it, and fingerprints across ranks."""

from __future__ import annotations

import random
import warnings
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor

from medsg_lib.config import TrainConfig
from medsg_lib.devices import DistInfo, compile_module, gather_fingerprints
from medsg_lib.families import family_of, resolve
from medsg_lib.families.base import NUM_DOMAINS, ModelFamily, TrainState


def build_train_state(
    cfg: TrainConfig, device: torch.device, family: ModelFamily | None = None
) -> TrainState:
    """Fresh networks (seeded with ``cfg.seed``), EMA copies of the family's ``ema_nets`` and optimisers, on
    ``device``; with ``cfg.compile`` the family's ``compile_nets`` are compiled in place (the EMA copies, used
    only for samples and generation, stay eager). ``family``: the resolved family of ``cfg`` (the trainer
    resolves it once); None resolves ``cfg`` here."""
    if family is None:
        cfg = resolve(cfg)
        family = family_of(cfg)
    torch.manual_seed(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    nets = {
        name: net.to(device, memory_format=memory_format).train()
        for name, net in family.build(cfg, NUM_DOMAINS).items()
    }
    ema = {name: deepcopy(nets[name]).eval().requires_grad_(False) for name in family.ema_nets}
    if cfg.compile:
        for name in family.compile_nets:
            outcome = compile_module(nets[name], device)
            if outcome != "compiled":
                warnings.warn(f"TrainConfig.compile: {name} runs {outcome}", stacklevel=2)
    return TrainState(nets=nets, ema=ema, optimizers=family.optimizers(cfg, nets))


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
