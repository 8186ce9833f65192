"""Predictions and classification metrics of the X-ray classifier on a labelled data set."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data import held_out_split


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


def evaluation_split(layout: str) -> str:
    """The held-out split the classifier is evaluated on: :func:`medsg_lib.data.held_out_split` (the one place)."""
    return held_out_split(layout)
