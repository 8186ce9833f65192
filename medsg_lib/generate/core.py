"""Checkpoint -> generated images on disk and a manifest: ``generate(ckpt_path, out_dir, gen_cfg, data_cfg)``.

An output folder holds::

    config.json                      checkpoint, checkpoint_sha256, train, generate, data, phantoms
    manifest.csv                     one row per image: seed, class, file, model, checkpoint,
                                     checkpoint_sha256, source_image, source_class, mode, latent_index,
                                     reference_image
    {class_slug}/{seed:06d}.png      8-bit grayscale (channels 1) or RGB (channels 3); slug "all" for a
                                     baseline trained on every class (its samples carry no label)

What is generated (:func:`plan_items`) is the model family's plan (:mod:`medsg_lib.families`): Med-StyleGAN2
translates every VALIDATION image of the other classes ``num_latents_per_source`` times (the StarGAN v2
protocol, :mod:`medsg_lib.families.medsg`); DCGAN / GAN draw ``num_per_class`` noise samples of the class the
model was trained on (``"all"`` gives unlabelled samples in the folder ``all``).

Seeds: item ``i`` of class index ``c`` (0..2 for ``CLASS_NAMES``, 3 for ``"all"``) has seed
``gen_cfg.seed * 10**6 + c * 10**5 + i`` (:func:`medsg_lib.manifest.item_seed`); ``num_per_class`` is
therefore limited to 10**5. An item's randomness comes only from its seed, so the same seed gives the same
image whatever the batch size or the order of generation.

Resume: images already on disk are kept and counted, not regenerated (each PNG is written through a temporary
file and ``os.replace``, so a file on disk is complete). ``config.json`` guards this: an output folder made
from another checkpoint, generation seed, mode, latent count or data is refused. The manifest is rewritten
atomically every :data:`MANIFEST_EVERY_BATCHES` batches (rows of the images on disk) and at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from medsg_lib.config import DataConfig, GenerateConfig, PhantomConfig, TrainConfig, to_jsonable
from medsg_lib.data import XrayDataset, XrayRecord
from medsg_lib.families import get_family
from medsg_lib.families.base import eval_mode
from medsg_lib.files import (
    CHECKPOINT_DIR,
    CONFIG_NAME,
    MANIFEST_NAME,
    class_slug,
    file_sha256,
    folder_lock,
    read_json,
    write_atomic,
    write_json_atomic,
)
from medsg_lib.heartbeat import Heartbeat
from medsg_lib.manifest import (
    GeneratedItem,
    item_file,
    item_seed,
    manifest_rows,
    read_manifest,
    write_manifest,
)
from medsg_lib.training.rundir import run_code_tags

MANIFEST_EVERY_BATCHES = 50
# fields that may differ when an output folder is resumed (they do not change any image)
_RESUMABLE = {"generate": {"num_per_class", "batch_size"}, "data": {"cache_dir", "on_bad"}}


# ----------------------------------------------------------------------------------------------------------
# Small pure helpers


def to_uint8_array(x: Tensor) -> np.ndarray:
    """Quantise ``x`` in [-1, 1] (any shape) to uint8 of the same shape: ``floor((x + 1) * 127.5 + 0.5)``.

    Values outside [-1, 1] are clipped; -1 -> 0, 0 -> 128, 1 -> 255 (round half up, as
    ``torchvision.utils.save_image`` and :func:`medsg_lib.metrics.features.to_uint8`).
    """
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {x.dtype}")
    levels = (x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return torch.floor(levels + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def to_pil(x: Tensor) -> Image.Image:
    """One image ``(C, H, W)`` in [-1, 1], C = 1 or 3 -> PIL image of mode ``"L"`` or ``"RGB"``."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"an image must be (C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    u8 = to_uint8_array(x).transpose(1, 2, 0)  # (H, W, C)
    return Image.fromarray(u8[..., 0], mode="L") if u8.shape[-1] == 1 else Image.fromarray(u8, mode="RGB")


# ----------------------------------------------------------------------------------------------------------
# Planning


def plan_items(
    train_cfg: TrainConfig,
    gen_cfg: GenerateConfig,
    target_class: str,
    sources: Sequence[XrayRecord] | None = None,
) -> list[GeneratedItem]:
    """The ``gen_cfg.num_per_class`` images to generate for ``target_class`` (module docstring).

    Args:
        sources: Med-StyleGAN2 only: the validation records (their ``label`` and ``image_path`` are used);
            ignored by the baselines.

    Raises:
        ValueError: a target the model cannot generate; no source (or, in reference mode, no reference)
        image; ``num_per_class > 10**5``.
    """
    family = get_family(train_cfg.model)
    family.check_target(train_cfg, target_class)
    item_seed(gen_cfg.seed, target_class, gen_cfg.num_per_class - 1)  # checks the seed room before planning
    return family.plan_items(train_cfg, gen_cfg, target_class, sources if family.translates else None)


# ----------------------------------------------------------------------------------------------------------
# Generation in memory


class SourceImages(Mapping[str, Tensor]):
    """Preprocessed images of a dataset by image path: ``lookup[str(record.image_path)]`` -> ``(C, H, W)`` in
    [-1, 1], exactly ``dataset[i][0]`` (the preprocessing of training). Nothing is copied up front."""

    def __init__(self, dataset: XrayDataset) -> None:
        self.dataset = dataset
        self.index = {str(r.image_path): i for i, r in enumerate(dataset.records)}

    def __getitem__(self, path: str) -> Tensor:
        if path not in self.index:
            raise KeyError(
                f"{path} is not in the source dataset ({len(self.index)} images); plan the items from the "
                "same dataset's records"
            )
        return self.dataset[self.index[path]][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


@torch.no_grad()
def generate_batches(
    nets: Mapping[str, nn.Module],
    train_cfg: TrainConfig,
    items: Sequence[GeneratedItem],
    dataset_lookup: Mapping[str, Tensor] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    *,
    clamp: bool = True,
) -> Iterator[tuple[list[GeneratedItem], Tensor]]:
    """Generate ``items`` in batches: yields ``(batch_items, x_fake)``, ``x_fake`` float32 ``(B, C, H, W)`` on
    ``device``, clamped to [-1, 1] unless ``clamp=False`` (Med-StyleGAN2's generator has no output activation;
    StarGAN v2's LPIPS uses the raw outputs).

    Args:
        nets: Med-StyleGAN2 ``generator``, ``mapping_network`` (latent mode), ``style_encoder`` (reference
            mode); baselines ``generator``. They are put in eval mode while generating and restored after.
        dataset_lookup: image path -> ``(C, H, W)`` in [-1, 1] (:class:`SourceImages`); Med-StyleGAN2 only.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size!r} must be > 0")
    device = torch.device(device)
    family = get_family(train_cfg.model)
    with eval_mode(nets):
        for start in range(0, len(items), batch_size):
            chunk = list(items[start : start + batch_size])
            x_fake = family.generate(nets, train_cfg, chunk, dataset_lookup, device).float()
            yield chunk, (x_fake.clamp(-1, 1) if clamp else x_fake)


# ----------------------------------------------------------------------------------------------------------
# Files: PNGs, manifest, config


def write_png(x: Tensor, path: Path) -> None:
    """Write one image ``(C, H, W)`` in [-1, 1] to ``path`` (8-bit PNG), atomically."""
    image = to_pil(x)
    write_atomic(path, lambda f: image.save(f, format="PNG"))


def _resume_key(info: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of ``config.json`` that fix the images (what must agree to resume an output folder)."""
    key = {"checkpoint_sha256": info.get("checkpoint_sha256")}
    for stage, skip in _RESUMABLE.items():
        key[stage] = {k: v for k, v in (info.get(stage) or {}).items() if k not in skip}
    key["phantoms"] = info.get("phantoms")
    if not get_family((info.get("train") or {}).get("model", "")).translates:  # noise models read no data
        del key["data"], key["phantoms"]
    return key


def _run_code_tags(ckpt_path: Path) -> tuple[str, ...]:
    """The code versions that trained a checkpoint's run (its run folder's ``config.json``: the checkpoint is
    ``<run>/checkpoints/step_*.pt``), or ("unknown",) for a checkpoint outside a run folder."""
    config = ckpt_path.parent.parent / CONFIG_NAME
    if ckpt_path.parent.name != CHECKPOINT_DIR or not config.is_file():
        return ("unknown",)
    return run_code_tags(read_json(config))


def _prepare_out_dir(out_dir: Path, info: dict[str, Any]) -> None:
    """Create ``out_dir`` and write ``config.json``; refuse an ``out_dir`` made by a different run."""
    path = out_dir / CONFIG_NAME
    if path.is_file():
        old = read_json(path)
        before, after = _resume_key(old), _resume_key(info)
        if before != after:
            diffs = [k for k in after if before.get(k) != after[k]]
            raise ValueError(
                f"{out_dir} holds images generated with another {', '.join(diffs)} (see {path}); delete it "
                "or choose another out_dir"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, info)


def _check_no_foreign_files(out_dir: Path, target_class: str, items: Sequence[GeneratedItem]) -> None:
    """Raise if ``out_dir/{slug}`` holds PNGs that are not in the plan (another ``num_per_class`` or run)."""
    class_dir = out_dir / class_slug(target_class)
    if not class_dir.is_dir():
        return
    planned = {Path(item_file(it)).name for it in items}
    foreign = sorted(p.name for p in class_dir.glob("*.png") if p.name not in planned)
    if foreign:
        raise ValueError(
            f"{class_dir} holds {len(foreign)} PNG(s) that this plan does not make (e.g. {foreign[0]}), "
            "from a larger num_per_class or another run: delete them or choose another out_dir"
        )


# ----------------------------------------------------------------------------------------------------------
# Entry point


def resolve_targets(train_cfg: TrainConfig, target_classes: Sequence[str] | None) -> tuple[str, ...]:
    """Targets to generate: ``target_classes`` (checked) or, by default, the family's ``targets`` (every class
    for an image-to-image model; a noise model's own ``target_class``)."""
    family = get_family(train_cfg.model)
    if target_classes is None:
        return family.targets(train_cfg)
    for target in target_classes:
        family.check_target(train_cfg, target)
    return tuple(dict.fromkeys(target_classes))


def _check_checkpoint_path(ckpt_path: Path) -> Path:
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"checkpoint {ckpt_path} does not exist: pass a run's checkpoints/step_*.pt (written by "
            "medsg_lib.training.train) or an exported .safetensors file"
        )
    return ckpt_path


def _load_sources(
    train_cfg: TrainConfig, data_cfg: DataConfig, phantoms: PhantomConfig | None, progress: bool
) -> XrayDataset:
    """The validation split (no augmentation), checked against the model's image size and channels."""
    from medsg_lib.data import build_dataset

    for name in ("img_size", "channels"):
        if getattr(data_cfg, name) != getattr(train_cfg, name):
            raise ValueError(
                f"DataConfig.{name}={getattr(data_cfg, name)!r} differs from the checkpoint's "
                f"TrainConfig.{name}={getattr(train_cfg, name)!r}; use the data config the model was "
                "trained with"
            )
    return build_dataset(data_cfg, "val", phantoms, train=False, progress=progress)


def generate(
    ckpt_path: Path,
    out_dir: Path,
    gen_cfg: GenerateConfig,
    data_cfg: DataConfig,
    *,
    phantoms: PhantomConfig | None = None,
    target_classes: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Generate the images of :func:`plan_items` for each target class from a checkpoint; return ``out_dir``.

    Writes ``out_dir/config.json``, ``out_dir/{class_slug}/{seed:06d}.png`` and ``out_dir/manifest.csv``
    (module docstring). Resumable: PNGs already there are kept. Med-StyleGAN2 (EMA weights) translates the
    validation split of ``data_cfg`` (``phantoms`` for ``layout="phantoms"``); baselines need no data.
    Manifest rows of classes not generated in this call are kept from an earlier manifest.

    Raises:
        FileNotFoundError: ``ckpt_path`` does not exist. ValueError: a target the model cannot generate, data
        of another size or channel count than the model, or an ``out_dir`` from another run.
    """
    from medsg_lib.checkpoint import load_nets_for_inference
    from medsg_lib.devices import select_device

    ckpt_path, out_dir = _check_checkpoint_path(ckpt_path), Path(out_dir)
    torch_device = select_device(device)
    nets, train_cfg = load_nets_for_inference(ckpt_path, torch_device)
    targets = resolve_targets(train_cfg, target_classes)
    sha = file_sha256(ckpt_path)
    info = {
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": sha,
        "train": to_jsonable(train_cfg),
        "train_code": list(_run_code_tags(ckpt_path)),
        "generate": to_jsonable(gen_cfg),
        "data": to_jsonable(data_cfg),
        "phantoms": to_jsonable(phantoms) if phantoms is not None else None,
    }
    lookup, sources = None, None
    if get_family(train_cfg.model).translates:
        dataset = _load_sources(train_cfg, data_cfg, phantoms, progress)
        lookup, sources = SourceImages(dataset), dataset.records
    plan = [it for t in targets for it in plan_items(train_cfg, gen_cfg, t, sources)]
    with folder_lock(out_dir, f"generate from {ckpt_path.name}"):  # one writer per set
        _prepare_out_dir(
            out_dir, info
        )  # after every check of the inputs: a failed call leaves no config.json
        for target in targets:
            _check_no_foreign_files(out_dir, target, [it for it in plan if it.target_class == target])
            (out_dir / class_slug(target)).mkdir(exist_ok=True)
        run = {"model": train_cfg.model, "checkpoint": str(ckpt_path), "checkpoint_sha256": sha[:16]}
        kept = _kept_rows(out_dir, targets)
        done = {it.seed for it in plan if (out_dir / item_file(it)).is_file()}
        todo = [it for it in plan if it.seed not in done]

        def flush() -> None:
            rows = manifest_rows([it for it in plan if it.seed in done], run)
            write_manifest(out_dir, pd.concat([kept, rows], ignore_index=True) if len(kept) else rows)

        batches = generate_batches(nets, train_cfg, todo, lookup, gen_cfg.batch_size, torch_device)
        desc = f"generate {train_cfg.model} -> {out_dir.name}"
        heartbeat = Heartbeat(desc)
        with tqdm(total=len(plan), initial=len(done), desc=desc, unit="img", disable=not progress) as bar:
            for b, (chunk, x_fake) in enumerate(batches, start=1):
                for it, x in zip(chunk, x_fake.cpu(), strict=True):
                    write_png(x, out_dir / item_file(it))
                    done.add(it.seed)
                bar.update(len(chunk))
                heartbeat.beat(f"{len(done)}/{len(plan)} images", force=len(done) == len(plan))
                if b % MANIFEST_EVERY_BATCHES == 0:
                    flush()
        flush()
    return out_dir


def _kept_rows(out_dir: Path, targets: Sequence[str]) -> pd.DataFrame:
    """Rows of an earlier manifest for classes other than ``targets`` (empty if there is none)."""
    if not (out_dir / MANIFEST_NAME).is_file():
        return manifest_rows([], {})
    frame = read_manifest(out_dir)
    return frame[~frame["class"].isin(list(targets))].reset_index(drop=True)
