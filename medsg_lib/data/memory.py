"""Labelled images held in memory: generated images, materialised splits, and seeded noise for tests.

Both classes have the dataset contract of :class:`medsg_lib.data.XrayDataset`: ``dataset[i] -> (x, y)`` with
``x`` float32 ``(C, H, W)`` in [-1, 1] and ``y`` an int64 scalar tensor, and ``labels`` int64 ``(N,)``
(:func:`medsg_lib.data.dataset_labels`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from medsg_lib.config import CLASS_NAMES


class LabelledImages(Dataset):
    """Images held in memory: ``x`` ``(N, C, H, W)`` float32 in [-1, 1] and ``labels`` ``(N,)`` int64."""

    def __init__(self, x: Tensor, labels: Tensor) -> None:
        if x.ndim != 4 or labels.shape != (x.shape[0],):
            raise ValueError(
                f"x must be (N, C, H, W) with N labels; got {tuple(x.shape)} and {tuple(labels.shape)}"
            )
        self.x, self.labels = x, labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.labels[index]


class SyntheticXrays(LabelledImages):
    """``num_per_class`` random images per class, float32 ``(C, S, S)`` in [-1, 1]; ``labels`` int64 ``(N,)``
    cycling through the classes (0, 1, 2, 0, ...).

    Each class has its own mean brightness so that the classes differ; the content is noise (speed tests and
    unit tests only). The same ``seed`` gives the same images.
    """

    def __init__(self, img_size: int, channels: int = 1, num_per_class: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        num_classes = len(CLASS_NAMES)
        labels = torch.arange(num_classes * num_per_class, dtype=torch.int64) % num_classes  # (N,)
        noise = torch.rand(len(labels), channels, img_size, img_size, generator=gen)  # [0, 1)
        offset = (labels.float() / num_classes - 0.5).view(-1, 1, 1, 1)
        super().__init__((noise + offset).clamp(0, 1) * 2 - 1, labels)  # (N, C, S, S) in [-1, 1]
