"""Reading generated images back: the PNGs notebook 03 writes as ``<generated folder>/<class slug>/<seed>.png``,
as one labelled tensor (the utility experiment, the orientation check)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data import LabelledImages, load_image, preprocess, to_tensor
from medsg_lib.files import ALL_CLASSES, class_slug

WHOLE_SET_LABEL = -1  # label of the images in the "all" folder (a model trained on every class, no class)


def generated_images(
    gen_dir: Path, img_size: int, channels: int = 1, classes: Sequence[str] = (*CLASS_NAMES, ALL_CLASSES)
) -> LabelledImages:
    """The PNGs of ``gen_dir/<class slug>/*.png`` for each of ``classes`` (in that order, files sorted), resized
    to ``img_size`` in [-1, 1], labelled with the class's index in ``CLASS_NAMES`` (:data:`WHOLE_SET_LABEL` for
    the ``"all"`` folder). Raises FileNotFoundError naming the folders when none of them holds an image."""
    xs, ys = [], []
    for name in classes:
        label = WHOLE_SET_LABEL if name == ALL_CLASSES else CLASS_NAMES.index(name)
        for path in sorted((Path(gen_dir) / class_slug(name)).glob("*.png")):
            xs.append(to_tensor(preprocess(load_image(path, channels), img_size)))
            ys.append(label)
    if not xs:
        folders = ",".join(class_slug(name) for name in classes)
        raise FileNotFoundError(
            f"no generated images under {gen_dir}/{{{folders}}}/*.png: run notebook 03 (generation) first"
        )
    return LabelledImages(torch.stack(xs), torch.tensor(ys))
