"""Checkpoints: a plain dict of state_dicts, optimiser states, EMA, step, config and RNG states.

A checkpoint written by :func:`save_checkpoint` is a ``torch.save`` of::

    {"format": "medsg-ckpt-v1", "step": int, "config": {"train": {...}, "data": {...}},
     "nets": {name: state_dict}, "ema": {name: state_dict} (Med-StyleGAN2 only, else {}),
     "optimizers": {name: state_dict}, "rng": {"torch": ByteTensor, "cuda": [ByteTensor], "python": tuple},
     "ddp": {"world_size": int, "fingerprints": (world_size, n) float64 tensor}}

plus ``"sha256"``, a digest of everything else in it (:func:`state_digest`). It holds no pickled code, so
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` and refuses anything else, and it
refuses a file whose content no longer matches its digest (a bit flipped on disk: ``torch.load`` itself does not
check). A resume loads :func:`latest_intact_checkpoint`, the newest checkpoint that loads, warning about newer
ones that do not (:func:`set_aside` then renames them). :func:`export_generator` writes the inference weights (EMA generator, mapping network
and style encoder for Med-StyleGAN2; the generator for the baselines) as ``.safetensors`` with the config as
metadata; :func:`load_nets_for_inference` rebuilds the networks from either file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from medsg_lib.config import TrainConfig
from medsg_lib.families import get_family, load_train_config
from medsg_lib.files import CHECKPOINT_DIR, write_torch_atomic

CHECKPOINT_FORMAT = "medsg-ckpt-v1"
EXPORT_FORMAT = "medsg-export-v1"
CHECKSUM_KEY = "sha256"  # the digest of the rest of a checkpoint (state_digest); absent in older files
CORRUPT_SUFFIX = ".corrupt"  # a corrupt checkpoint set aside: step_*.pt.corrupt, never loaded
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
    full = {**state, "format": fmt}
    full[CHECKSUM_KEY] = state_digest(full)
    write_torch_atomic(Path(path), full, fsync=True)


def state_digest(state: Any) -> str:
    """Hex sha256 of a checkpoint's content: every tensor's dtype, shape and bytes and every other value's
    ``repr``, dict keys in sorted order, the :data:`CHECKSUM_KEY` entry left out. The same before saving and after
    loading, whatever the device; a flipped bit anywhere in the data changes it."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(b"{")
        for key in sorted((k for k in obj if k != CHECKSUM_KEY), key=repr):
            digest.update(repr(key).encode())
            _feed(digest, obj[key])
        digest.update(b"}")
    elif isinstance(obj, list | tuple):
        digest.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", *, fmt: str = CHECKPOINT_FORMAT
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    The stored digest (:data:`CHECKSUM_KEY`) is checked and removed from the returned dict.

    Raises:
        CheckpointError: the file holds pickled Python objects (a saved ``nn.Module``, any class), which is
            refused for safety; or it is unreadable (empty, truncated); or its ``format`` is not ``fmt``; or its
            content does not match its digest (corrupt on disk).
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
    stored = state.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != state_digest(state):
        raise CheckpointError(
            f"{path} is corrupt: its content does not match the sha256 stored in it (a changed bit on disk)"
        )
    return state


def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """``{step: path}`` of the files ``run_dir/checkpoints/step_*.pt`` (empty when there are none)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return {}
    found = ((_STEP_RE.match(p.name), p) for p in ckpt_dir.iterdir())
    return {int(match.group(1)): p for match, p in found if match and p.is_file()}


def latest_intact_checkpoint(
    run_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint of ``run_dir`` that loads (:func:`load_checkpoint`), as ``(state, path)``; None when
    there is none. Each newer one that does not load (corrupt, truncated, empty, unsafe) is reported in a
    ``RuntimeWarning`` naming it, the reason and the checkpoint used instead; the caller sets those aside
    (:func:`set_aside`)."""
    failures = []
    for step in sorted(checkpoint_steps(run_dir), reverse=True):
        path = checkpoint_path(run_dir, step)
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as err:
            failures.append(err)
            continue
        for err in failures:
            warnings.warn(f"{err}; resuming from {path} instead", RuntimeWarning, stacklevel=2)
        return state, path
    for err in failures:
        warnings.warn(
            f"{err}; no intact checkpoint is left: starting from step 0", RuntimeWarning, stacklevel=2
        )
    return None


def set_aside(run_dir: Path, after_step: int) -> list[Path]:
    """Rename the checkpoints of ``run_dir`` newer than ``after_step`` to ``step_*.pt.corrupt`` (kept for
    inspection, never loaded) and return the new paths."""
    moved = []
    for step, path in sorted(checkpoint_steps(run_dir).items()):
        if step > after_step:
            moved.append(path.rename(path.with_name(path.name + CORRUPT_SUFFIX)))
    return moved


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints of ``run_dir`` (``keep`` 0: keep every one); returns the
    deleted paths."""
    steps = sorted(checkpoint_steps(run_dir))
    doomed = [checkpoint_path(run_dir, step) for step in steps[:-keep]] if keep > 0 else []
    for path in doomed:
        path.unlink()
    return doomed


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest step in ``run_dir/checkpoints/step_*.pt``, or None if there is none."""
    steps = checkpoint_steps(run_dir)
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
