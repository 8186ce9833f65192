"""Small builders shared by the test files (imported as ``from helpers import ...``)."""

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from medsg_lib.config import CLASS_NAMES, TrainConfig
from medsg_lib.families import get_family

# the tiny widths of each model's own config (TrainConfig.net)
TINY_NETS = {
    "medsg": {"base_width": 8, "max_width": 32, "mapping_hidden": 32, "ds_decay_iters": 4},
    "dcgan": {"ngf": 8, "ndf": 8},
    "gan": {"hidden": 64},
    "rsgan": {"ngf": 8, "ndf": 8},
    "stargan": {"conv_dim": 4, "g_repeat_num": 1, "d_repeat_num": 5, "n_critic": 2},
    "cyclegan": {"ngf": 4, "ndf": 4, "n_blocks": 1, "pool_size": 3},  # the pool is full after one step
    # every regularisation and an ADA update within 4 steps, so that a resume at step 2 crosses them
    "stylegan2": {
        "z_dim": 8,
        "w_dim": 8,
        "map_layers": 1,
        "channel_base": 64,
        "channel_max": 8,
        "mbstd_group": 2,
        "r1_interval": 2,
        "pl_interval": 2,
        "ada_interval": 1,
        "ada_kimg": 0.01,
    },  # fmt: skip
}


def tiny_cfg(model: str = "medsg", **kw) -> TrainConfig:
    """A training config of tiny, fast networks at 32 px (4 iterations, log every step, checkpoint every 2).

    Keywords that are fields of the model's own config (e.g. ``ema_beta``, ``lr``, ``ngf``) go into ``net``.
    """
    config_cls = get_family(model).config_cls
    net_fields = {f.name for f in dataclasses.fields(config_cls)}
    net = {**TINY_NETS.get(model, {}), **{k: v for k, v in kw.items() if k in net_fields}}
    loop = dict(
        model=model, img_size=32, batch_size=4, iterations=4, log_every=1, sample_every=2, ckpt_every=2,
        device="cpu",
    )  # fmt: skip
    loop.update({k: v for k, v in kw.items() if k not in net_fields})
    return TrainConfig(**loop, net=config_cls(**net))


LUNG = "Lung Segmentation Data"  # COVID-QU-Ex's subset folders (each nested twice in the download)
INFECTION = "Infection Segmentation Data"


def write_png(path: Path, image: np.ndarray | int, size: int = 8) -> Path:
    """Write ``image`` as a PNG at ``path`` (folders created); returns ``path``.

    ``image``: a uint8 array (gray ``(H, W)`` or RGB(A) ``(H, W, C)``), or a gray level for a constant
    ``size`` x ``size`` image.
    """
    array = np.full((size, size), image, np.uint8) if isinstance(image, int) else image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def marked_image(value: int, size: int) -> np.ndarray:
    """A ``size`` x ``size`` uint8 image of ``value`` with its top-left pixel one grey level brighter (darker
    for 255): two grey levels, so not blank, and the value exact away from that corner after resizing."""
    image = np.full((size, size), value, np.uint8)
    image[0, 0] = value + 1 if value < 255 else value - 1
    return image


def make_covidqu(base: Path, n: int = 2, size: int = 8, subset: str = "lung") -> Path:
    """A COVID-QU-Ex subset folder: ``base/{Train,Val,Test}/{class}/images/img{k}.png``, ``n`` per split and
    class, ``size`` px; image k of class c is the value (40c + 10k + 5) mod 256 everywhere but its top-left pixel,
    one grey level brighter (:func:`marked_image`: a blank image is refused as data). All-255 masks of the same
    name are in ``lung masks`` (and ``infection masks`` for ``subset="infection"``). Returns ``base``."""
    masks = ["lung masks"] + (["infection masks"] if subset == "infection" else [])
    for split in ("Train", "Val", "Test"):
        for c, name in enumerate(CLASS_NAMES):
            for k in range(n):
                value = (40 * c + 10 * k + 5) % 256
                write_png(base / split / name / "images" / f"img{k}.png", marked_image(value, size))
                for folder in masks:
                    write_png(base / split / name / folder / f"img{k}.png", 255, size)
    return base
