"""Checkpoints: a plain dict of state_dicts, optimiser states, EMA, step, config and RNG states.

A checkpoint written by :func:`save_checkpoint` is a ``torch.save`` of::

    {"format": "medsg-ckpt-v1", "step": int, "config": {"train": {...}, "data": {...}},
     "nets": {name: state_dict}, "ema": {name: state_dict} (Med-StyleGAN2 only, else {}),
     "optimizers": {name: state_dict}, "rng": {"torch": ByteTensor, "cuda": [ByteTensor], "python": tuple},
     "ddp": {"world_size": int, "fingerprints": (world_size, n) float64 tensor}}

It holds no pickled code, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` and
refuses anything else. :func:`export_generator` writes the inference weights (EMA generator, mapping network
and style encoder for Med-StyleGAN2; the generator for the baselines) as ``.safetensors`` with the config as
metadata; :func:`load_nets_for_inference` rebuilds the networks from either file.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from medsg_lib.config import TrainConfig
from medsg_lib.families import get_family, load_train_config
from medsg_lib.files import CHECKPOINT_DIR, write_atomic

CHECKPOINT_FORMAT = "medsg-ckpt-v1"
EXPORT_FORMAT = "medsg-export-v1"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint or export that cannot be loaded (unsafe, truncated or of another format)."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """``run_dir/checkpoints/step_{step:07d}.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def save_checkpoint(path: Path, state: dict[str, Any], *, fmt: str = CHECKPOINT_FORMAT) -> None:
    """Write ``state`` with ``state["format"] = fmt`` to ``path`` atomically and fsynced
    (:func:`medsg_lib.files.write_atomic`).

    A crash while writing leaves the previous file (if any) intact and no partial ``path``. Parent folders are
    created. ``fmt`` names the layout (training runs: ``medsg-ckpt-v1``; the classifier has its own).
    """
    write_atomic(Path(path), lambda f: torch.save({**state, "format": fmt}, f), fsync=True)


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", *, fmt: str = CHECKPOINT_FORMAT
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file holds pickled Python objects (a saved ``nn.Module``, any class), which is
            refused for safety; or it is unreadable; or its ``format`` is not ``fmt``.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is refused for safety: it holds pickled Python objects that weights_only loading "
            "does not allow (only tensors and plain containers are loaded); write checkpoints with "
            "medsg_lib.checkpoint.save_checkpoint"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} could not be read as a torch checkpoint (truncated?): {err}") from err
    found = state.get("format") if isinstance(state, dict) else None
    if found != fmt:
        raise CheckpointError(f"{path} is not a {fmt} checkpoint: format {found!r}, expected {fmt!r}")
    return state


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest step in ``run_dir/checkpoints/step_*.pt``, or None if there is none."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return None
    steps = {}
    for p in ckpt_dir.iterdir():
        match = _STEP_RE.match(p.name)
        if match and p.is_file():
            steps[int(match.group(1))] = p
    return steps[max(steps)] if steps else None


def train_config_of(state: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint's ``"config"`` (``{"train": ..., "data": ...}``)."""
    return load_train_config(state["config"]["train"])


def inference_state_dicts(state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The state_dicts of the family's ``inference_nets``: the EMA copy of a network that has one."""
    cfg = train_config_of(state)
    family = get_family(cfg.model)
    return {
        name: (state["ema"] if name in family.ema_nets else state["nets"])[name]
        for name in family.inference_nets_of(cfg)
    }


def export_generator(ckpt_path: Path, out_path: Path) -> Path:
    """Write the inference weights of ``ckpt_path`` to ``out_path`` (``.safetensors``) and return it.

    Tensors are named ``"{net}.{parameter}"`` (nets: EMA ``generator``, ``mapping_network``, ``style_encoder``
    for Med-StyleGAN2; ``generator`` for the baselines). Metadata: ``format`` (``medsg-export-v1``),
    ``config`` (the checkpoint's config as a JSON string), ``step``, ``nets`` (JSON list), ``source``
    (``ema``/``online``).
    """
    state = load_checkpoint(ckpt_path)
    cfg = train_config_of(state)
    family = get_family(cfg.model)
    tensors = {
        f"{net}.{key}": value.detach().contiguous()
        for net, sd in inference_state_dicts(state).items()
        for key, value in sd.items()
    }
    metadata = {
        "format": EXPORT_FORMAT,
        "config": json.dumps(state["config"]),
        "step": str(state["step"]),
        "nets": json.dumps(list(family.inference_nets_of(cfg))),
        "source": "ema" if set(family.inference_nets_of(cfg)) & set(family.ema_nets) else "online",
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata=metadata)
    return out_path


def _read_export(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """``({net: state_dict}, config)`` of a ``.safetensors`` export."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != EXPORT_FORMAT:
            raise CheckpointError(
                f"{path} is not a medsg export: format {metadata.get('format')!r}, expected {EXPORT_FORMAT!r}"
            )
        state_dicts: dict[str, dict[str, torch.Tensor]] = {}
        for key in f.keys():
            net, _, param = key.partition(".")
            state_dicts.setdefault(net, {})[param] = f.get_tensor(key)
    return state_dicts, json.loads(metadata["config"])


def load_nets_for_inference(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, nn.Module], TrainConfig]:
    """Networks for generation from a ``.pt`` checkpoint or a ``.safetensors`` export, in eval mode on
    ``device``.

    Returns:
        ``({name: network} of the family's ``inference_nets``, cfg)``; Med-StyleGAN2: the EMA generator,
        mapping network and style encoder; DCGAN / GAN: the generator.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state_dicts, config = _read_export(path)
    else:
        state = load_checkpoint(path)
        state_dicts, config = inference_state_dicts(state), state["config"]
    cfg = load_train_config(config["train"])
    family = get_family(cfg.model)
    built = family.build(cfg)
    nets = {}
    for name in family.inference_nets_of(cfg):
        net = built[name]
        net.load_state_dict(state_dicts[name])
        nets[name] = net.to(device).eval()
    return nets, cfg
