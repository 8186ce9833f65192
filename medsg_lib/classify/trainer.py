"""Training the X-ray classifier: :func:`train_classifier` and its pure pieces.

Adam with cosine decay, class-weighted cross-entropy (weights ``n / (K * n_k)``, so that each class contributes
equally to the expected loss; plain uniform shuffling, no re-sampling), optional light augmentation without
flips (:func:`augment_batch`), BatchNorm statistics re-estimated after each epoch, best-val-epoch selection;
seeded: the same config and data give bit-identical weights on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from medsg_lib.classify.checkpoint import CHECKPOINT_NAME, save_classifier
from medsg_lib.classify.evaluation import evaluate_classifier
from medsg_lib.config import CLASS_NAMES, ClassifierConfig, to_jsonable
from medsg_lib.data import dataset_labels
from medsg_lib.devices import autocast, resolve_amp, select_device
from medsg_lib.files import CONFIG_NAME, LOG_NAME, append_jsonl, write_json_atomic, write_text_atomic
from medsg_lib.metrics.weights import MissingWeightsError
from medsg_lib.models.classifier import build_classifier, find_imagenet_weights, is_published_imagenet_file

AUGMENT_DESCRIPTION = "rotation +-5 deg, shift +-4%, scale +-5%, contrast/brightness +-0.1, no flips"


def resolve_init(cfg: ClassifierConfig, pretrained_path: Path | None = None) -> tuple[Path | None, str]:
    """The ImageNet file to start from and the init label recorded in every output.

    Returns ``(path, "imagenet")`` for the published file, ``(path, "imagenet-unverified")`` for a file of
    that name whose sha256 differs, ``(None, "scratch")`` when ``cfg.init == "scratch"`` or (``"auto"``) when
    no file is found.

    Raises:
        MissingWeightsError: ``cfg.init == "imagenet"`` and no file is found.
    """
    if cfg.init == "scratch":
        return None, "scratch"
    path = find_imagenet_weights(pretrained_path)
    if path is None:
        if cfg.init == "imagenet":
            raise MissingWeightsError(
                "ClassifierConfig.init='imagenet' but resnet18-f37072fd.pth was found neither in "
                "$MEDSG_WEIGHTS_DIR nor in torch.hub's checkpoints folder; put it there, pass "
                "pretrained_path, or use init='auto'/'scratch'"
            )
        return None, "scratch"
    return path, "imagenet" if is_published_imagenet_file(path) else "imagenet-unverified"


def class_weights(labels: np.ndarray, num_classes: int = len(CLASS_NAMES)) -> torch.Tensor:
    """Balanced cross-entropy weights ``n / (num_classes * n_k)``, ``(num_classes,)`` float32 (1 if balanced).

    Raises:
        ValueError: a class has no example (its weight would be infinite), naming the class.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"labels go up to {len(counts) - 1} but num_classes={num_classes}")
    empty = [
        CLASS_NAMES[k] if num_classes == len(CLASS_NAMES) else str(k) for k in np.flatnonzero(counts == 0)
    ]
    if empty:
        raise ValueError(f"the training set has no example of class(es) {empty}; cannot balance the loss")
    return torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32)


# how BatchNorm's statistics are made (config.json "batchnorm"); a run that says otherwise is retrained
BATCHNORM_DESCRIPTION = (
    "running statistics re-estimated on the un-augmented training set (at most ClassifierConfig.bn_images "
    "images, a fixed seeded subset) after each epoch, in the training's precision and layout"
)


def batchnorm_subset(train_set: Dataset, max_images: int, seed: int) -> Dataset:
    """The images BatchNorm's statistics are re-estimated on: ``train_set`` itself when it holds at most
    ``max_images``, else ``max_images`` of them drawn without replacement by a ``seed``-ed permutation (the same
    subset after every epoch). A few thousand images pin the means and variances to well under a percent of
    their spread, at a fraction of a pass over a large rendered set."""
    if len(train_set) <= max_images:
        return train_set
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    return Subset(train_set, sorted(order[:max_images].tolist()))


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float = 5.0,
    max_shift: float = 0.04,
    max_scale: float = 0.05,
    max_brightness: float = 0.1,
    max_contrast: float = 0.1,
) -> torch.Tensor:
    """Light, flip-free augmentation of ``x`` ``(B, C, H, W)`` in [-1, 1]; returns the same shape in [-1, 1].

    Per image: rotation uniform in +-``max_degrees``, shift +-``max_shift`` of the half-width, isotropic scale
    1 +- ``max_scale`` (bilinear, border padding), then contrast ``1 +- max_contrast`` and brightness offset
    +-``max_brightness`` (in the [-1, 1] scale), clamped. No horizontal flips: the heart is on the image right
    in a PA film. The draws come from ``generator`` (a CPU generator), so a seeded run is reproducible.
    """
    b = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(max_degrees))
    scale = 1 + uniform(max_scale)
    shift = torch.stack([uniform(max_shift), uniform(max_shift)], dim=1)
    contrast = 1 + uniform(max_contrast)
    brightness = uniform(max_brightness)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = contrast.to(x)[:, None, None, None]
    brightness = brightness.to(x)[:, None, None, None]
    return (x * contrast + brightness).clamp(-1, 1)


def resolved_config(cfg: ClassifierConfig, device: torch.device) -> ClassifierConfig:
    """``cfg`` with ``amp="auto"`` resolved for ``device`` (:func:`medsg_lib.devices.resolve_amp`): what a run
    records, so that a run made in bf16 is not reused where fp32 would be chosen, and the other way round."""
    return replace(cfg, amp=resolve_amp(cfg.amp, device))


def _first_item_shape(dataset: Dataset) -> tuple[int, ...]:
    if len(dataset) == 0:
        raise ValueError("the training set is empty")
    x, _ = dataset[0]
    return tuple(x.shape)


def _run_info(
    cfg: ClassifierConfig,
    init: str,
    weights_path: Path | None,
    in_channels: int,
    labels: np.ndarray,
    weights: torch.Tensor,
    device: torch.device,
) -> dict[str, Any]:
    """The contents of ``config.json``: the config plus every choice made at run time."""
    return {
        "classifier": to_jsonable(cfg),
        "init": init,
        "pretrained_file": None if weights_path is None else str(weights_path),
        "in_channels": in_channels,
        "num_train": int(len(labels)),
        "class_counts": np.bincount(labels, minlength=len(CLASS_NAMES)).tolist(),
        "class_weights": weights.tolist(),
        "loss": "class-weighted cross-entropy, weights n / (K * n_k)",
        "sampler": "uniform shuffle (seeded), no re-sampling",
        "optimizer": "Adam, cosine learning-rate decay to 0 per step",
        "batchnorm": BATCHNORM_DESCRIPTION,
        "augment": AUGMENT_DESCRIPTION if cfg.augment else "none",
        "device": str(device),
    }


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    aug_gen: torch.Generator | None,
    bar: tqdm,
    amp: str = "off",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """One pass over ``loader`` in train mode (augmenting when ``aug_gen`` is given); mean loss, accuracy.

    ``amp`` (resolved, :func:`medsg_lib.devices.resolve_amp`): autocast of the forward pass and the loss;
    ``memory_format``: of the inputs (the model's weights already in it).
    """
    model.train()
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if aug_gen is not None:
            x = augment_batch(x, aug_gen)
        with autocast(device, amp):
            logits = model(x.contiguous(memory_format=memory_format))
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - t0
    return {
        "loss": loss_sum / seen,
        "acc": correct / seen,
        "seconds": seconds,
        "images_per_s": seen / seconds,
    }


def _reestimate_bn(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: str,
    memory_format: torch.memory_format,
) -> None:
    """BatchNorm's running statistics re-estimated on ``loader`` (``torch.optim.swa_utils.update_bn``: the
    cumulative mean over the batches), in the training's precision and memory layout: the statistics then
    describe the activations the weights were trained on, and the pass costs what a forward pass of training
    costs (in fp32 and NCHW it took as long as the bf16 training pass itself with the fine stem)."""
    with autocast(device, amp):
        update_bn((x.contiguous(memory_format=memory_format) for x, _ in loader), model, device=device)


def train_classifier(
    cfg: ClassifierConfig,
    train_set: Dataset,
    run_dir: Path,
    val_set: Dataset | None = None,
    progress: bool = True,
    pretrained_path: Path | None = None,
) -> Path:
    """Train on ``train_set`` (items ``(x (C, H, W) in [-1, 1], y int64)``, int64 ``labels`` ``(N,)``, see
    :func:`medsg_lib.data.dataset_labels`); return the checkpoint path.

    Writes ``run_dir/config.json`` (the config and every run-time choice), ``run_dir/log.jsonl`` (one line per
    epoch: epoch, lr at its start, loss, acc (train, augmented), seconds, images_per_s, init, val_acc,
    val_macro_f1 with a ``val_set``; a new run truncates it) and ``run_dir/classifier.pt``
    (:mod:`medsg_lib.classify.checkpoint`). ``H`` must equal ``cfg.img_size``; ``C`` (1 or 3) sets the stem.
    ImageNet init follows ``cfg.init`` (:func:`resolve_init`).

    Adam with the learning rate decayed to 0 by a per-step cosine. After each epoch BatchNorm's running
    statistics are re-estimated on the un-augmented training set (:func:`_reestimate_bn`, in the training's
    precision): with few steps the momentum-averaged statistics lag the weights and eval-mode predictions
    collapse. With a
    ``val_set`` the saved weights are those of the epoch with the best val macro-F1 (the first on ties), else
    the last epoch's. Deterministic on CPU for a given ``cfg.seed``: model init, shuffling and augmentation
    draw from seeded generators, no workers.
    """
    run_dir = Path(run_dir)
    shape = _first_item_shape(train_set)
    if len(shape) != 3 or shape[-1] != cfg.img_size or shape[-2] != cfg.img_size:
        raise ValueError(
            f"training images have shape {shape}, expected (C, {cfg.img_size}, {cfg.img_size}) from "
            f"ClassifierConfig.img_size={cfg.img_size}; build the data set with the same img_size"
        )
    in_channels = shape[0]
    labels = dataset_labels(train_set).numpy()
    weights = class_weights(labels)
    weights_path, init = resolve_init(cfg, pretrained_path)
    device = select_device(cfg.device)
    cfg = resolved_config(cfg, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    torch.manual_seed(cfg.seed)
    model = build_classifier(
        cfg.arch, in_channels=in_channels, pretrained_path=weights_path, stem=cfg.stem
    ).to(device, memory_format=memory_format)
    # a last batch of one image breaks BatchNorm's batch statistics: drop it only then
    drop_last = len(train_set) % cfg.batch_size == 1
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        drop_last=drop_last,
    )
    bn_set = batchnorm_subset(train_set, cfg.bn_images, cfg.seed)
    bn_loader = DataLoader(
        bn_set, batch_size=cfg.batch_size, shuffle=False, drop_last=len(bn_set) % cfg.batch_size == 1
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, foreach=True)  # = the loop, bit for bit
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1) if cfg.augment else None

    info = _run_info(cfg, init, weights_path, in_channels, labels, weights, device)
    info["selection"] = "epoch of best val macro-F1" if val_set is not None else "last epoch"
    write_json_atomic(run_dir / CONFIG_NAME, info, sort_keys=True)
    log_path = write_text_atomic(run_dir / LOG_NAME, "")
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    bar = tqdm(total=cfg.epochs * len(loader), desc=f"classifier ({init})", disable=not progress)
    for epoch in range(1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        record: dict[str, Any] = {"epoch": epoch, "lr": lr}
        record.update(
            _train_epoch(model, loader, optimizer, scheduler, loss_fn, aug_gen, bar, cfg.amp, memory_format)
        )
        _reestimate_bn(model, bn_loader, device, cfg.amp, memory_format)
        record["init"] = init
        if val_set is not None:
            val = evaluate_classifier(model, val_set, batch_size=max(cfg.batch_size, 64))
            record.update(val_acc=val["accuracy"], val_macro_f1=val["macro_f1"])
            if best is None or val["macro_f1"] > best[0]:
                best = (
                    val["macro_f1"],
                    epoch,
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                )
        append_jsonl(log_path, record)
    bar.close()
    selected_epoch = cfg.epochs
    if best is not None:
        selected_epoch = best[1]
        model.load_state_dict(best[2])
    model.to(memory_format=torch.contiguous_format)  # saved and used downstream in the default layout
    return save_classifier(
        run_dir / CHECKPOINT_NAME,
        model,
        cfg,
        init,
        in_channels=in_channels,
        num_classes=len(CLASS_NAMES),
        epochs=cfg.epochs,
        selected_epoch=selected_epoch,
        selection=info["selection"],
    )
