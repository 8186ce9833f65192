"""Checkpoint -> generated images on disk and a manifest: ``generate(ckpt_path, out_dir, gen_cfg, data_cfg)``.

An output folder holds::

    config.json                      checkpoint, checkpoint_sha256, train, generate, data, phantoms
    manifest.csv                     one row per image: seed, class, file, model, checkpoint,
                                     checkpoint_sha256, source_image, source_class, mode, latent_index,
                                     reference_image
    {class_slug}/{seed:06d}.png      8-bit grayscale (channels 1) or RGB (channels 3); slug "all" for a
                                     baseline trained on every class (its samples carry no label)

What is generated (:func:`plan_items`):

- Med-StyleGAN2 follows the StarGAN v2 evaluation protocol (``paper/PAPER.md``): for a target class ``t``
  every VALIDATION image of each other class is translated to ``t`` ``num_latents_per_source`` times, each
  with its own random latent (``mode="latent"``) or its own reference image of class ``t`` drawn from the
  validation set (``mode="reference"``). Sources are taken round-robin over the source classes (each class in
  a seeded random order), ``num_latents_per_source`` items per source, until ``num_per_class`` items; past one
  full pass the cycle restarts with the next latent indices. ``num_per_class`` below the full protocol (number
  of other-class validation images x latents) therefore keeps whole groups of outputs per source (for LPIPS)
  and balanced source classes, and drops the remaining sources.
- DCGAN / GAN draw ``num_per_class`` noise samples of the class the model was trained on (its
  ``TrainConfig.target_class``; ``"all"`` gives unlabelled samples in the folder ``all``).

Seeds: item ``i`` of class index ``c`` (0..2 for ``CLASS_NAMES``, 3 for ``"all"``) has seed
``gen_cfg.seed * 10**6 + c * 10**5 + i``; ``num_per_class`` is therefore limited to 10**5. An item's
randomness (its latent ``z``, its reference choice) comes only from ``torch.Generator().manual_seed(seed)``,
so the same seed gives the same image whatever the batch size or the order of generation.

Resume: images already on disk are kept and counted, not regenerated (each PNG is written through a temporary
file and ``os.replace``, so a file on disk is complete). ``config.json`` guards this: an output folder made
from another checkpoint, generation seed, mode, latent count or data is refused. The manifest is rewritten
atomically every :data:`MANIFEST_EVERY_BATCHES` batches (rows of the images on disk) and at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from medsg_lib.config import (
    CLASS_NAMES,
    CLASS_SLUGS,
    DataConfig,
    GenerateConfig,
    PhantomConfig,
    TrainConfig,
    from_jsonable,
    to_jsonable,
)
from medsg_lib.data import XrayDataset, XrayRecord

ALL_CLASSES = "all"  # target_class / folder of a baseline trained on every class
SEED_RUN_STRIDE = 10**6  # seed = gen_cfg.seed * SEED_RUN_STRIDE + class_index * SEED_CLASS_STRIDE + item
SEED_CLASS_STRIDE = 10**5  # hence at most 10**5 items per class
MANIFEST_NAME = "manifest.csv"
CONFIG_NAME = "config.json"
MANIFEST_EVERY_BATCHES = 50
MANIFEST_COLUMNS: tuple[str, ...] = (
    "seed",
    "class",
    "file",
    "model",
    "checkpoint",
    "checkpoint_sha256",
    "source_image",
    "source_class",
    "mode",
    "latent_index",
    "reference_image",
)
_TEXT_COLUMNS = tuple(c for c in MANIFEST_COLUMNS if c not in ("seed", "latent_index"))
# fields that may differ when an output folder is resumed (they do not change any image)
_RESUMABLE = {"generate": {"num_per_class", "batch_size"}, "data": {"cache_dir", "on_bad"}}


@dataclass(frozen=True)
class GeneratedItem:
    """One planned image.

    ``mode``: ``"latent"`` or ``"reference"`` (Med-StyleGAN2), ``"noise"`` (baselines). ``source_image`` /
    ``source_class``: the translated validation image and its class (None for baselines). ``latent_index``:
    which of the source's draws this is (0 .. ``num_latents_per_source - 1`` in the first pass; None for
    baselines). ``reference_image``: the reference of class ``target_class`` (``mode="reference"`` only).
    """

    seed: int
    target_class: str
    source_image: str | None
    source_class: str | None
    mode: str
    latent_index: int | None
    reference_image: str | None = None


# ----------------------------------------------------------------------------------------------------------
# Small pure helpers


def class_index(target_class: str) -> int:
    """Index of ``target_class`` in ``CLASS_NAMES``, or ``len(CLASS_NAMES)`` (3) for ``"all"``."""
    if target_class == ALL_CLASSES:
        return len(CLASS_NAMES)
    if target_class not in CLASS_NAMES:
        raise ValueError(f"unknown class {target_class!r}; choose one of {', '.join(map(repr, CLASS_NAMES))}")
    return CLASS_NAMES.index(target_class)


def class_slug(target_class: str) -> str:
    """Folder name of a class: ``CLASS_SLUGS`` (``covid``, ``non_covid``, ``normal``) or ``all``."""
    return ALL_CLASSES if target_class == ALL_CLASSES else CLASS_SLUGS[class_index(target_class)]


def item_seed(gen_seed: int, target_class: str, item_index: int) -> int:
    """``gen_seed * 10**6 + class_index * 10**5 + item_index`` (unique while ``item_index < 10**5``)."""
    if gen_seed < 0:
        raise ValueError(f"GenerateConfig.seed={gen_seed!r} must be >= 0")
    if not 0 <= item_index < SEED_CLASS_STRIDE:
        raise ValueError(
            f"item index {item_index} is outside 0..{SEED_CLASS_STRIDE - 1}: seeds leave room for at most "
            f"{SEED_CLASS_STRIDE} images per class; lower GenerateConfig.num_per_class"
        )
    return gen_seed * SEED_RUN_STRIDE + class_index(target_class) * SEED_CLASS_STRIDE + item_index


def item_file(item: GeneratedItem) -> str:
    """Path of an item's PNG relative to the output folder: ``{class_slug}/{seed:06d}.png``."""
    return f"{class_slug(item.target_class)}/{item.seed:06d}.png"


def item_latent(seed: int, dim: int) -> Tensor:
    """The item's latent ``(dim,)`` ~ N(0, I), drawn from ``torch.Generator().manual_seed(seed)`` on CPU."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def to_uint8(x: Tensor) -> np.ndarray:
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
    u8 = to_uint8(x).transpose(1, 2, 0)  # (H, W, C)
    return Image.fromarray(u8[..., 0], mode="L") if u8.shape[-1] == 1 else Image.fromarray(u8, mode="RGB")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed (checkpoints can be large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Planning


def check_target(train_cfg: TrainConfig, target_class: str) -> None:
    """Raise ``ValueError`` unless the model of ``train_cfg`` can generate ``target_class``.

    Med-StyleGAN2 generates any of ``CLASS_NAMES``; a baseline only the class it was trained on (its
    ``TrainConfig.target_class``, possibly ``"all"``).
    """
    if train_cfg.model == "medsg":
        if target_class not in CLASS_NAMES:
            raise ValueError(
                f"Med-StyleGAN2 translates to one of {', '.join(map(repr, CLASS_NAMES))}; "
                f"got {target_class!r}"
            )
    elif target_class != train_cfg.target_class:
        raise ValueError(
            f"this {train_cfg.model} model was trained on target_class={train_cfg.target_class!r} and "
            f"generates only that; got target_class={target_class!r}"
        )


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


def _reference_of(seed: int, references: Sequence[XrayRecord]) -> str:
    """The reference image drawn for the item of ``seed`` (uniform over ``references``)."""
    gen = torch.Generator().manual_seed(seed)
    return str(references[int(torch.randint(len(references), (1,), generator=gen))].image_path)


def _plan_translations(
    gen_cfg: GenerateConfig, target_class: str, sources: Sequence[XrayRecord] | None
) -> list[GeneratedItem]:
    """Med-StyleGAN2 items (module docstring)."""
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
                reference_image=_reference_of(seed, references) if gen_cfg.mode == "reference" else None,
            )
        )
    return items


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
    check_target(train_cfg, target_class)
    item_seed(gen_cfg.seed, target_class, gen_cfg.num_per_class - 1)  # checks the seed room before planning
    if train_cfg.model == "medsg":
        return _plan_translations(gen_cfg, target_class, sources)
    return [
        GeneratedItem(item_seed(gen_cfg.seed, target_class, i), target_class, None, None, "noise", None)
        for i in range(gen_cfg.num_per_class)
    ]


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


@contextmanager
def _eval_mode(nets: Mapping[str, nn.Module]) -> Iterator[None]:
    """Put ``nets`` in eval mode (BatchNorm running statistics), restoring each one's mode afterwards."""
    modes = {name: net.training for name, net in nets.items()}
    try:
        for net in nets.values():
            net.eval()
        yield
    finally:
        for name, net in nets.items():
            net.train(modes[name])


def _stack(lookup: Mapping[str, Tensor] | None, paths: Sequence[str | None], device: torch.device) -> Tensor:
    if lookup is None or any(p is None for p in paths):
        raise ValueError("Med-StyleGAN2 items need source (and reference) images: pass dataset_lookup")
    return torch.stack([lookup[p] for p in paths]).to(device)  # (B, C, H, W) in [-1, 1]


def _translate(
    nets: Mapping[str, nn.Module],
    train_cfg: TrainConfig,
    items: Sequence[GeneratedItem],
    lookup: Mapping[str, Tensor] | None,
    device: torch.device,
) -> Tensor:
    """Med-StyleGAN2: ``G(x_src, s_trg)`` with ``s_trg = F(z, y_trg)`` or ``E(x_ref, y_trg)``; unclamped."""
    x_src = _stack(lookup, [it.source_image for it in items], device)  # (B, C, H, W) in [-1, 1]
    y_trg = torch.tensor([class_index(it.target_class) for it in items], device=device)  # (B,)
    s_trg = torch.empty(len(items), train_cfg.style_dim, device=device)  # (B, style_dim)
    latent = [i for i, it in enumerate(items) if it.mode == "latent"]
    reference = [i for i, it in enumerate(items) if it.mode == "reference"]
    if len(latent) + len(reference) != len(items):
        raise ValueError(f"Med-StyleGAN2 items have mode 'latent' or 'reference'; got {items[0].mode!r}")
    if latent:
        z_trg = torch.stack([item_latent(items[i].seed, train_cfg.latent_dim) for i in latent]).to(device)
        s_trg[latent] = nets["mapping_network"](z_trg, y_trg[latent])
    if reference:
        x_ref = _stack(lookup, [items[i].reference_image for i in reference], device)
        s_trg[reference] = nets["style_encoder"](x_ref, y_trg[reference])
    return nets["generator"](x_src, s_trg)


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
    with _eval_mode(nets):
        for start in range(0, len(items), batch_size):
            chunk = list(items[start : start + batch_size])
            if train_cfg.model == "medsg":
                x_fake = _translate(nets, train_cfg, chunk, dataset_lookup, device)
            else:
                z = torch.stack([item_latent(it.seed, train_cfg.nz) for it in chunk]).to(device)  # (B, nz)
                x_fake = nets["generator"](z)
            x_fake = x_fake.float()
            yield chunk, (x_fake.clamp(-1, 1) if clamp else x_fake)


# ----------------------------------------------------------------------------------------------------------
# Files: PNGs, manifest, config


def write_png(x: Tensor, path: Path) -> None:
    """Write one image ``(C, H, W)`` in [-1, 1] to ``path`` (8-bit PNG) through a temporary file."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        to_pil(x).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def manifest_rows(items: Sequence[GeneratedItem], run: Mapping[str, str]) -> pd.DataFrame:
    """Manifest rows of ``items``; ``run`` gives ``model``, ``checkpoint`` and ``checkpoint_sha256``."""
    rows = [
        {
            "seed": it.seed,
            "class": it.target_class,
            "file": item_file(it),
            **run,
            "source_image": it.source_image,
            "source_class": it.source_class,
            "mode": it.mode,
            "latent_index": it.latent_index,
            "reference_image": it.reference_image,
        }
        for it in items
    ]
    return _typed(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Manifest dtypes: ``seed`` int64, ``latent_index`` nullable Int64, the others pandas strings."""
    frame = frame.astype({"seed": "int64", "latent_index": "Int64"})
    return frame.astype(dict.fromkeys(_TEXT_COLUMNS, "string"))


def write_manifest(out_dir: Path, rows: pd.DataFrame) -> Path:
    """Write ``rows`` to ``out_dir/manifest.csv`` atomically, sorted by class (canonical order) and seed."""
    order = rows["class"].map(lambda c: class_index(c)).astype("int64")
    rows = rows.assign(_order=order).sort_values(["_order", "seed"]).drop(columns="_order")
    path = Path(out_dir) / MANIFEST_NAME
    _write_text_atomic(path, rows.to_csv(index=False))
    return path


def read_manifest(out_dir: Path) -> pd.DataFrame:
    """``out_dir/manifest.csv`` as a DataFrame with :data:`MANIFEST_COLUMNS` (``seed`` int64,
    ``latent_index`` Int64, the others strings; empty cells are ``<NA>``).

    Raises:
        FileNotFoundError: no manifest (names the file and the fix). ValueError: columns missing.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: generate images into {out_dir} first (medsg_lib.generate.generate)"
        )
    # only empty cells are missing values (a file could be called "NA")
    dtypes = {"seed": "int64", "latent_index": "Int64"}
    frame = pd.read_csv(
        path, dtype=dtypes, keep_default_na=False, na_values=dict.fromkeys(MANIFEST_COLUMNS, [""])
    )
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; regenerate it with this version")
    return _typed(frame[list(MANIFEST_COLUMNS)])


def lpips_groups(out_dir: Path, target_class: str) -> Iterator[list[Path]]:
    """Files of ``target_class`` grouped by source image (Med-StyleGAN2), for LPIPS diversity.

    Yields one list of absolute paths per source image with at least two outputs (a pair is needed), in the
    manifest's order of seeds.

    Raises:
        ValueError: the class is not in the manifest, or its images have no source (unconditional baselines:
        use random pairs, :func:`medsg_lib.metrics.lpips_div.lpips_pairs`).
    """
    out_dir = Path(out_dir)
    frame = read_manifest(out_dir)
    rows = frame[frame["class"] == target_class]
    if rows.empty:
        present = ", ".join(map(repr, frame["class"].unique()))
        raise ValueError(f"no images of class {target_class!r} in {out_dir / MANIFEST_NAME} (has {present})")
    if rows["source_image"].isna().any():
        raise ValueError(
            f"images of class {target_class!r} in {out_dir} have no source image (an unconditional model); "
            "measure their diversity over random pairs instead"
        )
    for _, group in rows.groupby("source_image", sort=False):
        if len(group) >= 2:
            yield [out_dir / f for f in group.sort_values("seed")["file"]]


def _resume_key(info: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of ``config.json`` that fix the images (what must agree to resume an output folder)."""
    key = {"checkpoint_sha256": info.get("checkpoint_sha256")}
    for stage, skip in _RESUMABLE.items():
        key[stage] = {k: v for k, v in (info.get(stage) or {}).items() if k not in skip}
    key["phantoms"] = info.get("phantoms")
    if (info.get("train") or {}).get("model") != "medsg":  # baselines read no data
        del key["data"], key["phantoms"]
    return key


def _prepare_out_dir(out_dir: Path, info: dict[str, Any]) -> None:
    """Create ``out_dir`` and write ``config.json``; refuse an ``out_dir`` made by a different run."""
    path = out_dir / CONFIG_NAME
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        before, after = _resume_key(old), _resume_key(info)
        if before != after:
            diffs = [k for k in after if before.get(k) != after[k]]
            raise ValueError(
                f"{out_dir} holds images generated with another {', '.join(diffs)} (see {path}); delete it "
                "or choose another out_dir"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(path, json.dumps(info, indent=2) + "\n")


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
    """Targets to generate: ``target_classes`` (checked) or, by default, every class (Med-StyleGAN2) or the
    baseline's own ``target_class``."""
    if target_classes is None:
        return CLASS_NAMES if train_cfg.model == "medsg" else (train_cfg.target_class,)
    for target in target_classes:
        check_target(train_cfg, target)
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
        "generate": to_jsonable(gen_cfg),
        "data": to_jsonable(data_cfg),
        "phantoms": to_jsonable(phantoms) if phantoms is not None else None,
    }
    lookup, sources = None, None
    if train_cfg.model == "medsg":
        dataset = _load_sources(train_cfg, data_cfg, phantoms, progress)
        lookup, sources = SourceImages(dataset), dataset.records
    plan = [it for t in targets for it in plan_items(train_cfg, gen_cfg, t, sources)]
    _prepare_out_dir(out_dir, info)  # after every check of the inputs: a failed call leaves no config.json
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
    with tqdm(total=len(plan), initial=len(done), desc=desc, unit="img", disable=not progress) as bar:
        for b, (chunk, x_fake) in enumerate(batches, start=1):
            for it, x in zip(chunk, x_fake.cpu(), strict=True):
                write_png(x, out_dir / item_file(it))
                done.add(it.seed)
            bar.update(len(chunk))
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


def run_train_config(run_dir: Path) -> TrainConfig:
    """The :class:`TrainConfig` a run directory was trained with (its ``config.json``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a training run directory (train first)")
    return from_jsonable(TrainConfig, json.loads(path.read_text(encoding="utf-8"))["train"])


def generate_runs(
    runs_dir: Path,
    out_root: Path,
    gen_cfg: GenerateConfig,
    data_cfg: DataConfig,
    *,
    phantoms: PhantomConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """Generate from the latest checkpoint of every run under ``runs_dir`` into ``out_root/<run name>/``.

    ``data_cfg`` is adapted to each run's image size and channels (Med-StyleGAN2 translates validation images).
    Returns one row per run and class: run, model, class, n_images, seconds (of the whole run's call), checkpoint.
    """
    from medsg_lib.checkpoint import latest_checkpoint

    rows = []
    for run_dir in sorted(p for p in Path(runs_dir).iterdir() if (p / "config.json").is_file()):
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            continue
        train_cfg = run_train_config(run_dir)
        run_data = dataclasses.replace(data_cfg, img_size=train_cfg.img_size, channels=train_cfg.channels)
        t0 = time.perf_counter()
        out_dir = generate(
            ckpt,
            out_root / run_dir.name,
            gen_cfg,
            run_data,
            phantoms=phantoms,
            device=device,
            progress=progress,
        )
        seconds = time.perf_counter() - t0
        for target in resolve_targets(train_cfg, None):
            n = len(list((out_dir / class_slug(target)).glob("*.png")))
            rows.append(
                {
                    "run": run_dir.name,
                    "model": train_cfg.model,
                    "class": target,
                    "n_images": n,
                    "seconds": round(seconds, 1),
                    "checkpoint": ckpt.name,
                }
            )
    return pd.DataFrame(rows)
