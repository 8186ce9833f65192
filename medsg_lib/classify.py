"""Training and evaluating the three-class chest X-ray classifier (:mod:`medsg_lib.models.classifier`).

A run directory holds::

    config.json     {"classifier": asdict(ClassifierConfig), "init", "pretrained_file", "in_channels",
                     "num_train", "class_counts", "class_weights", "loss", "sampler", "optimizer",
                     "batchnorm", "selection", "augment", "device"}
    log.jsonl       one JSON object per epoch: epoch, lr (at its start), loss, acc (train, augmented),
                    seconds, images_per_s, init, val_acc, val_macro_f1 (when a val set is given)
    classifier.pt   torch.save of a plain dict (no pickled code): {"format": "medsg-classifier-v1",
                    "model": state_dict, "config": asdict(cfg), "init", "class_names", "in_channels",
                    "num_classes", "epochs", "selected_epoch", "selection"}; read it with
                    :func:`load_classifier` (``weights_only=True``)

Training (:func:`train_classifier`): Adam with cosine decay, class-weighted cross-entropy (weights
``n / (K * n_k)``, so that each class contributes equally to the expected loss; plain uniform shuffling, no
re-sampling), optional light augmentation without flips (:func:`augment_batch`), BatchNorm statistics
re-estimated after each epoch, best-val-epoch selection; seeded: the same config and data give bit-identical
weights on CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import confusion_matrix, f1_score, recall_score  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.swa_utils import update_bn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from medsg_lib.config import CLASS_NAMES, ClassifierConfig, from_jsonable, to_jsonable  # noqa: E402
from medsg_lib.devices import select_device  # noqa: E402
from medsg_lib.metrics.weights import MissingWeightsError  # noqa: E402
from medsg_lib.models.classifier import (  # noqa: E402
    build_classifier,
    find_imagenet_weights,
    is_published_imagenet_file,
)
from medsg_lib.report import write_json  # noqa: E402

CLASSIFIER_FORMAT = "medsg-classifier-v1"
CHECKPOINT_NAME = "classifier.pt"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"
AUGMENT_DESCRIPTION = "rotation +-5 deg, shift +-4%, scale +-5%, contrast/brightness +-0.1, no flips"


class ClassifierCheckpointError(RuntimeError):
    """A classifier checkpoint that cannot be loaded (unsafe, unreadable or of another format)."""


# ----------------------------------------------------------------------------------------------------
# pure pieces


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


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """``(N,)`` int64 labels: ``dataset.labels`` when present (no image is read), else each item's ``y``."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64).reshape(-1)


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


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES
) -> dict[str, Any]:
    """Accuracy, per-class recall, macro-F1 (sklearn) and the confusion matrix of integer labels.

    Returns ``{"n", "accuracy", "macro_f1", "recall": {name: float}, "n_per_class": {name: int},
    "confusion": list of lists (rows = true class, columns = predicted), "class_names"}``. The recall of a
    class absent from ``y_true`` is NaN; macro-F1 averages all classes, counting an undefined F1 as 0.
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"y_true and y_pred must be equal-length and non-empty; got {y_true.shape}, {y_pred.shape}"
        )
    labels = list(range(len(class_names)))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return {
        "n": int(y_true.size),
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "recall": {name: float(r) for name, r in zip(class_names, recall, strict=True)},
        "n_per_class": {name: int(np.sum(y_true == k)) for k, name in enumerate(class_names)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }


# ----------------------------------------------------------------------------------------------------
# checkpoint


def save_classifier(path: Path, model: nn.Module, cfg: ClassifierConfig, init: str, **extra: Any) -> Path:
    """Write ``{"format", "model", "config", "init", "class_names", **extra}`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CLASSIFIER_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": to_jsonable(cfg),
        "init": init,
        "class_names": list(CLASS_NAMES),
        **extra,
    }
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_classifier(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of a ``classifier.pt`` (eval mode, on ``device``) and its metadata.

    The metadata is the checkpoint without ``"model"``, with ``"config"`` as a :class:`ClassifierConfig`.

    Raises:
        ClassifierCheckpointError: the file holds pickled objects (refused by ``weights_only=True``), cannot
            be read, or is not a ``medsg-classifier-v1`` checkpoint.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for pickled code; RuntimeError/EOFError for broken files
        raise ClassifierCheckpointError(f"{path} could not be loaded with weights_only=True: {err}") from err
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != CLASSIFIER_FORMAT:
        raise ClassifierCheckpointError(
            f"{path} is not a classifier checkpoint: format {fmt!r}, expected {CLASSIFIER_FORMAT!r}"
        )
    cfg = from_jsonable(ClassifierConfig, state["config"])
    model = build_classifier(cfg.arch, in_channels=state["in_channels"], num_classes=state["num_classes"])
    model.load_state_dict(state["model"])
    meta = {k: v for k, v in state.items() if k != "model"}
    meta["config"] = cfg
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------------------------------
# training


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
        "batchnorm": "running statistics re-estimated on the un-augmented training set after each epoch",
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
) -> dict[str, float]:
    """One pass over ``loader`` in train mode (augmenting when ``aug_gen`` is given); mean loss, accuracy."""
    model.train()
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if aug_gen is not None:
            x = augment_batch(x, aug_gen)
        logits = model(x)
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


def train_classifier(
    cfg: ClassifierConfig,
    train_set: Dataset,
    run_dir: Path,
    val_set: Dataset | None = None,
    progress: bool = True,
    pretrained_path: Path | None = None,
) -> Path:
    """Train on ``train_set`` (items ``(x (C, H, W) in [-1, 1], y int64)``); return the checkpoint path.

    Writes ``run_dir/config.json``, ``run_dir/log.jsonl`` (one line per epoch; a new run truncates it) and
    ``run_dir/classifier.pt`` (see the module docstring). ``H`` must equal ``cfg.img_size``; ``C`` (1 or 3)
    sets the stem. ImageNet init follows ``cfg.init`` (:func:`resolve_init`).

    Adam with the learning rate decayed to 0 by a per-step cosine. After each epoch BatchNorm's running
    statistics are re-estimated on the un-augmented training set (``torch.optim.swa_utils.update_bn``): with
    few steps the momentum-averaged statistics lag the weights and eval-mode predictions collapse. With a
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
    labels = dataset_labels(train_set)
    weights = class_weights(labels)
    weights_path, init = resolve_init(cfg, pretrained_path)
    device = select_device(cfg.device)

    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.arch, in_channels=in_channels, pretrained_path=weights_path).to(device)
    # a last batch of one image breaks BatchNorm's batch statistics: drop it only then
    drop_last = len(train_set) % cfg.batch_size == 1
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        drop_last=drop_last,
    )
    bn_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=False, drop_last=drop_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1) if cfg.augment else None

    run_dir.mkdir(parents=True, exist_ok=True)
    info = _run_info(cfg, init, weights_path, in_channels, labels, weights, device)
    info["selection"] = "epoch of best val macro-F1" if val_set is not None else "last epoch"
    write_json(run_dir / CONFIG_NAME, info)
    log_path = run_dir / LOG_NAME
    log_path.write_text("")
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    bar = tqdm(total=cfg.epochs * len(loader), desc=f"classifier ({init})", disable=not progress)
    for epoch in range(1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        record: dict[str, Any] = {"epoch": epoch, "lr": lr}
        record.update(_train_epoch(model, loader, optimizer, scheduler, loss_fn, aug_gen, bar))
        update_bn(bn_loader, model, device=device)
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
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    bar.close()
    selected_epoch = cfg.epochs
    if best is not None:
        selected_epoch = best[1]
        model.load_state_dict(best[2])
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


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/log.jsonl``, one dict per epoch."""
    lines = (Path(run_dir) / LOG_NAME).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ----------------------------------------------------------------------------------------------------
# inference and evaluation


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, K)`` (softmax, rows sum to 1) of ``x`` ``(B, C, H, W)`` in [-1, 1].

    Puts ``model`` in eval mode and runs without gradients; the result is on ``x``'s device.
    """
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.softmax(model(x.to(device)), dim=1).to(x.device)


def evaluate_classifier(model: nn.Module, dataset: Dataset, batch_size: int = 64) -> dict[str, Any]:
    """Predict every item of ``dataset``; return :func:`classification_metrics` (model left in eval mode)."""
    y_true, y_pred = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        y_pred.append(predict(model, x).argmax(1).cpu())
        y_true.append(torch.as_tensor(y).reshape(-1).cpu())
    return classification_metrics(torch.cat(y_true).numpy(), torch.cat(y_pred).numpy())


def save_confusion_figure(
    result: dict[str, Any],
    path: Path,
    title: str | None = None,
    figsize: tuple[float, float] = (4.8, 4.0),
    dpi: int = 100,
) -> Path:
    """Confusion matrix of :func:`classification_metrics` as a PNG of ``figsize * dpi`` pixels at ``path``.

    Cells: the count and the row-normalised share (% of the true class), coloured by that share; true class on
    the y axis, predicted on the x axis.
    """
    cm = np.asarray(result["confusion"], dtype=np.int64)
    names = list(result.get("class_names", CLASS_NAMES))
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=figsize)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(cm.shape):
        color = "white" if share[i, j] > 0.6 else "black"
        ax.text(
            j, i, f"{cm[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center", color=color, fontsize=9
        )
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def evaluation_split(layout: str) -> str:
    """The held-out split a data layout has: ``test`` (COVID-QU-Ex, phantoms) or ``val`` (class-folder sets)."""
    return "val" if layout == "folders" else "test"


def ensure_classifier(
    cfg: ClassifierConfig,
    data_cfg: Any,
    run_dir: Path,
    *,
    phantoms: Any = None,
    results_dir: Path | None = None,
    figures_dir: Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The project's X-ray classifier: trained once on the training split of ``data_cfg`` (at ``cfg.img_size``)
    into ``run_dir`` and reused while ``run_dir/config.json`` holds the same config; evaluated on the held-out
    split (:func:`evaluation_split`). Writes ``results_dir/classifier.json`` (accuracy, per-class recall, macro-F1,
    confusion matrix, n per class, init) and ``figures_dir/fig_classifier_confusion.png`` when given.

    Returns the model (eval mode) and that result dict.
    """
    from dataclasses import replace

    from medsg_lib.data import build_dataset

    data_cfg = replace(data_cfg, img_size=cfg.img_size, faithful_augment=False)
    run_dir = Path(run_dir)
    ckpt = run_dir / "classifier.pt"
    config_path = run_dir / "config.json"
    same = config_path.is_file() and json.loads(config_path.read_text())["classifier"] == to_jsonable(cfg)
    if not (ckpt.is_file() and same):
        train_set = build_dataset(data_cfg, "train", phantoms, train=False, progress=progress)
        val_set = build_dataset(data_cfg, "val", phantoms, train=False, progress=progress)
        train_classifier(cfg, train_set, run_dir, val_set=val_set, progress=progress)
    model, info = load_classifier(ckpt)
    split = evaluation_split(data_cfg.layout)
    result = evaluate_classifier(
        model, build_dataset(data_cfg, split, phantoms, train=False, progress=progress)
    )
    result.update(
        {"split": split, "init": info.get("init"), "checkpoint": str(ckpt), "img_size": cfg.img_size}
    )
    if results_dir is not None:
        write_json(Path(results_dir) / "classifier.json", result)
    if figures_dir is not None:
        title = f"classifier on the {split} split (accuracy {result['accuracy']:.3f}, init {result['init']})"
        save_confusion_figure(result, Path(figures_dir) / "fig_classifier_confusion.png", title=title)
    return model, result
