"""Whether generated chest X-rays keep the real images' orientation: the check that augmentation did not leak.

A PA chest radiograph is not symmetric: the heart shadow lies on the image's right (the patient's left), the
diaphragm and abdomen fill the bottom rows, the apices and shoulders the top. A generator trained with
augmentations that leak (horizontal flips, large rotations) makes some of its images mirrored or upside down; one
trained with non-leaking augmentations (ADA below p = 0.8, invertible augmentations) does not.

The template is the mean of the reference images (the training set). An image's left-right index is its
correlation with the template minus its correlation with the template mirrored left to right; the top-bottom
index likewise with the template upside down. Positive: oriented as the training images. Per set, the share of
positive indices: 30 held-out phantoms against the template of 60 training ones score 1.0 on both, their mirror
images 0.0 left-right (``tests/test_orientation.py``); a generated set whose share falls well below the held-out
images' makes mirrored or turned images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from torch import Tensor

from medsg_lib.config import DataConfig, PhantomConfig

ORIENTATION_INDICES: dict[str, int] = {"left_right": -1, "top_bottom": -2}  # index -> the axis mirrored


def _correlation(x: Tensor, template: Tensor) -> Tensor:
    """Pearson correlation of each image of ``x`` ``(N, C, H, W)`` with ``template`` ``(C, H, W)``, ``(N,)``."""
    a = x.float() - x.float().mean(dim=(-3, -2, -1), keepdim=True)
    b = template.float() - template.float().mean()
    return (a * b).sum(dim=(-3, -2, -1)) / (a.flatten(1).norm(dim=1) * b.norm()).clamp_min(1e-12)


def orientation_indices(x: Tensor, template: Tensor) -> dict[str, Tensor]:
    """``{"left_right": (N,), "top_bottom": (N,)}``: correlation with ``template`` minus correlation with the
    template mirrored along that axis, for images ``x`` ``(N, C, H, W)`` in [-1, 1]."""
    same = _correlation(x, template)
    return {name: same - _correlation(x, template.flip(axis)) for name, axis in ORIENTATION_INDICES.items()}


def orientation_table(reference: Tensor, sets: dict[str, Tensor]) -> pd.DataFrame:
    """One row per set of ``sets`` (e.g. held-out real images, then each model's) and index: the number of
    images, the median index and the share oriented as ``reference`` (index > 0); the template is the mean of
    ``reference`` ``(N, C, H, W)`` (the training images)."""
    template = reference.float().mean(dim=0)
    rows = []
    for name, images in sets.items():
        for index, values in orientation_indices(images, template).items():
            rows.append(
                {
                    "set": name,
                    "index": index,
                    "n": len(values),
                    "median": float(values.median()),
                    "share_as_training": float((values > 0).float().mean()),
                }
            )
    return pd.DataFrame(rows)


def generated_orientation_table(
    data_cfg: DataConfig, generated: Mapping[str, Path], phantoms: PhantomConfig | None = None
) -> pd.DataFrame:
    """:func:`orientation_table` of the held-out real images (set ``"real (held-out)"``, the floor) and of each
    generated set of ``generated`` (name -> a folder of class subfolders, as notebook 03 writes them), against the
    template of the training split of ``data_cfg`` at its ``img_size``."""
    from medsg_lib.data import build_dataset, held_out_split
    from medsg_lib.generate.read import generated_images
    from medsg_lib.utility import materialise

    def split_images(split: str) -> Tensor:
        return materialise(build_dataset(data_cfg, split, phantoms, train=False, progress=False)).x

    sets = {"real (held-out)": split_images(held_out_split(data_cfg.layout))}
    img_size, channels = data_cfg.img_size, data_cfg.channels
    sets.update({name: generated_images(folder, img_size, channels).x for name, folder in generated.items()})
    return orientation_table(split_images("train"), sets)
