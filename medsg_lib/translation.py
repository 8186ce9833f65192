"""What Med-StyleGAN2's translations change (beyond the paper): for each translation, the mean gray value inside
its source's lung mask before (the source) and after (the translation), and the class the X-ray classifier
sees in it, grouped by target and source class, beside the same lung opacity of the real classes.

A translation keeps its source's anatomy, so the source's lung mask is the translation's. If translations to
COVID-19 added the class's lesions, their lung opacity would rise from a Normal source towards the real
COVID-19 level and the classifier would call them COVID-19; if they kept a Non-COVID source's consolidation,
the classifier would still call them Non-COVID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from medsg_lib.classify import predict
from medsg_lib.config import CLASS_NAMES, DataConfig
from medsg_lib.data import load_image, load_mask, preprocess, to_tensor
from medsg_lib.data.covidqu import sibling_lung_mask
from medsg_lib.data.records import XrayRecord
from medsg_lib.manifest import read_manifest
from medsg_lib.models.classifier import as_model_input


def has_lung_masks(layout: str) -> bool:
    """Whether images of a data ``layout`` come with lung masks (COVID-QU-Ex and the phantoms; class-folder
    sets do not, so their translations cannot be measured here)."""
    return layout in ("phantoms", "covidqu")


def lung_mean(img_u8: np.ndarray, lung: np.ndarray) -> float:
    """Mean gray value (0-255) of ``img_u8`` ``(H, W)`` inside the boolean ``lung`` mask; NaN when it is empty."""
    return float(img_u8[lung].mean()) if lung.any() else float("nan")


def predicted_classes(
    model: nn.Module | None, images: Sequence[np.ndarray], batch_size: int = 64
) -> list[str | None]:
    """The classifier's class name for each uint8 ``(H, W)`` image (None for each without ``model``; gray
    is repeated to a three-channel stem, :func:`~medsg_lib.models.classifier.as_model_input`)."""
    if model is None or not len(images):
        return [None] * len(images)
    x = as_model_input(torch.stack([to_tensor(im) for im in images]), model)
    labels = [predict(model, x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    return [CLASS_NAMES[k] for k in torch.cat(labels).tolist()]


def _source_lung(source: Path, img_size: int) -> tuple[np.ndarray, float] | None:
    """A source image's lung mask and the mean gray value inside it, at ``img_size``; None without a mask."""
    mask_path = sibling_lung_mask(source)
    if mask_path is None:
        return None
    lung = load_mask(mask_path, img_size)
    return lung, lung_mean(preprocess(load_image(source, 1), img_size), lung)


def translation_rows(gen_dir: Path, img_size: int, model: nn.Module | None = None) -> pd.DataFrame:
    """One row per translation of ``gen_dir`` (its ``manifest.csv``) whose source has a lung mask: ``class``
    (target), ``source_class``, ``source_lung_mean``, ``translation_lung_mean`` (0-255, inside the source's
    lung mask, both at ``img_size``), ``delta`` (after - before) and ``predicted`` (the classifier's class for
    the translation; None without ``model``)."""
    manifest = read_manifest(gen_dir)
    manifest = manifest[manifest["source_image"].notna() & (manifest["source_image"].astype(str) != "")]
    rows, translations = [], []
    sources: dict[str, tuple[np.ndarray, float] | None] = {}  # source path -> (lung mask, its opacity)
    for rec in manifest.to_dict("records"):
        path = str(rec["source_image"])
        if path not in sources:  # each source image has several translations: read it and its mask once
            sources[path] = _source_lung(Path(path), img_size)
        if sources[path] is None:
            continue
        lung, before = sources[path]
        translated = preprocess(load_image(Path(gen_dir) / rec["file"], 1), img_size)
        after = lung_mean(translated, lung)
        translations.append(translated)
        rows.append(
            {
                "class": rec["class"],
                "source_class": rec["source_class"],
                "source_lung_mean": before,
                "translation_lung_mean": after,
                "delta": after - before,
            }
        )
    if not rows:
        raise FileNotFoundError(
            f"no translation in {gen_dir}/manifest.csv has a source with a lung mask (COVID-QU-Ex layout: "
            "'.../images/NAME' beside '.../lung masks/NAME'); nothing to measure"
        )
    return pd.DataFrame(rows).assign(predicted=predicted_classes(model, translations))


def real_lung_means(
    records: Sequence[XrayRecord], img_size: int, model: nn.Module | None = None
) -> pd.DataFrame:
    """One row per real image with a lung mask: ``class``, ``lung_mean`` (0-255 at ``img_size``), ``predicted``
    (no rows, but these columns, when no record has a lung mask)."""
    rows, images = [], []
    for rec in records:
        if rec.lung_mask_path is None:
            continue
        img = preprocess(load_image(rec.image_path, 1), img_size)
        rows.append(
            {"class": rec.class_name, "lung_mean": lung_mean(img, load_mask(rec.lung_mask_path, img_size))}
        )
        images.append(img)
    table = pd.DataFrame(rows, columns=["class", "lung_mean"])
    return table.assign(predicted=predicted_classes(model, images))


def _shares(predicted: pd.Series) -> dict[str, float]:
    if predicted.isna().all():
        return {f"called {name}": float("nan") for name in CLASS_NAMES}
    return {f"called {name}": float((predicted == name).mean()) for name in CLASS_NAMES}


def translation_rows_of(
    gen_dirs: Mapping[str, Path], img_size: int, model: nn.Module | None = None
) -> pd.DataFrame:
    """:func:`translation_rows` of several translators (label -> generated folder) with a ``generator``
    column."""
    frames = [translation_rows(d, img_size, model).assign(generator=label) for label, d in gen_dirs.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def translation_table(translations: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """Per (generator, target class, source class): n, the lung opacity of the sources and of the translations,
    its mean change, and the share the classifier calls each class; then one row per real class (generator and
    source "real") with its lung opacity in the translation column, for comparison. Without a ``generator``
    column (one translator) the table has none either."""
    keyed = "generator" in translations.columns
    keys = ["generator", "class", "source_class"] if keyed else ["class", "source_class"]
    rows = []
    for key, group in translations.groupby(keys, sort=False):
        *generator, target, source = key
        rows.append(
            {
                **({"generator": generator[0]} if keyed else {}),
                "class": target,
                "source": f"translated from {source}",
                "n": len(group),
                "source_lung_mean": group["source_lung_mean"].mean(),
                "lung_mean": group["translation_lung_mean"].mean(),
                "delta": group["delta"].mean(),
                **_shares(group["predicted"]),
            }
        )
    for name, group in real.groupby("class", sort=True):
        rows.append(
            {
                **({"generator": "real"} if keyed else {}),
                "class": name,
                "source": "real",
                "n": len(group),
                "source_lung_mean": float("nan"),
                "lung_mean": group["lung_mean"].mean(),
                "delta": float("nan"),
                **_shares(group["predicted"]),
            }
        )
    class_order = {name: i for i, name in enumerate(CLASS_NAMES)}
    generator_order = {g: i for i, g in enumerate(dict.fromkeys(translations.get("generator", [])))}
    generator_order["real"] = len(generator_order)
    order = {"class": class_order, "generator": generator_order}
    table = pd.DataFrame(rows)
    return table.sort_values(
        [*(["generator"] if keyed else []), "class", "source"],
        key=lambda s: s.map(order[s.name]) if s.name in order else s,
        kind="stable",
    ).reset_index(drop=True)


def translation_study(
    translators: Mapping[str, Path], records: Sequence[XrayRecord], data: DataConfig, model: nn.Module
) -> pd.DataFrame | None:
    """Notebook 06's table: :func:`translation_table` of every translating model (label -> generated folder)
    beside the real ``records`` (e.g. the held-out split), at ``data.img_size``, with ``model``'s calls. None
    where there is nothing to measure: no translating model, or a data layout without lung masks."""
    if not translators or not has_lung_masks(data.layout):
        return None
    return translation_table(
        translation_rows_of(translators, data.img_size, model), real_lung_means(records, data.img_size, model)
    )
