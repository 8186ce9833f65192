"""The classifier's checkpoint ``classifier.pt``: a plain dict of tensors and JSON-able values, no pickled code.

Layout (written by :func:`save_classifier` through :func:`medsg_lib.checkpoint.save_checkpoint`, atomically)::

    {"format": "medsg-classifier-v1", "model": state_dict, "config": asdict(ClassifierConfig), "init",
     "class_names", "in_channels", "num_classes", "epochs", "selected_epoch", "selection"}

:func:`load_classifier` reads it with ``torch.load(weights_only=True)`` (:func:`medsg_lib.checkpoint.load_checkpoint`)
and refuses pickled objects and files of another format with a :class:`~medsg_lib.checkpoint.CheckpointError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsg_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from medsg_lib.config import CLASS_NAMES, ClassifierConfig, from_jsonable, to_jsonable
from medsg_lib.models.classifier import build_classifier

CLASSIFIER_FORMAT = "medsg-classifier-v1"
CHECKPOINT_NAME = "classifier.pt"
# the error of an unloadable classifier checkpoint: the one of every medsg checkpoint
ClassifierCheckpointError = CheckpointError


def save_classifier(path: Path, model: nn.Module, cfg: ClassifierConfig, init: str, **extra: Any) -> Path:
    """Write ``{"format", "model", "config", "init", "class_names", **extra}`` to ``path`` atomically and
    fsynced (parent folders created); returns ``path``."""
    state = {
        "format": CLASSIFIER_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": to_jsonable(cfg),
        "init": init,
        "class_names": list(CLASS_NAMES),
        **extra,
    }
    save_checkpoint(Path(path), state, fmt=CLASSIFIER_FORMAT)
    return Path(path)


LEGACY_STEM = "imagenet"  # ClassifierConfig.stem="torchvision" was named so (beside init="imagenet")


def load_classifier(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of a ``classifier.pt`` (eval mode, on ``device``) and its metadata.

    The metadata is the checkpoint without ``"model"``, with ``"config"`` as a :class:`ClassifierConfig`.

    Raises:
        CheckpointError: the file holds pickled objects (refused by ``weights_only=True``), cannot be read, or
            is not a ``medsg-classifier-v1`` checkpoint.
    """
    state = load_checkpoint(Path(path), "cpu", fmt=CLASSIFIER_FORMAT)
    config = dict(state["config"])
    if config.get("stem") == LEGACY_STEM:  # older checkpoints name the torchvision stem so
        config["stem"] = "torchvision"
    cfg = from_jsonable(ClassifierConfig, config)
    model = build_classifier(
        cfg.arch, in_channels=state["in_channels"], num_classes=state["num_classes"], stem=cfg.stem
    )
    model.load_state_dict(state["model"])
    meta = {k: v for k, v in state.items() if k != "model"}
    meta["config"] = cfg
    return model.to(device).eval(), meta
