"""The Figure 1 study: real and generated images with their masks (:class:`CamInputs`), every layer's maps
measured against a map that cannot localise (:func:`cam_study`), over classifier seeds
(:func:`cam_study_over_seeds`), and the lesion-removal control on the phantoms (:func:`lesion_removal_study`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medsg_lib.cam.localisation import gaussian_baseline, localisation_table
from medsg_lib.cam.maps import OCCLUSION, compute_cams
from medsg_lib.config import CLASS_NAMES, PhantomConfig
from medsg_lib.data import load_image, load_mask, preprocess, to_tensor
from medsg_lib.data.covidqu import SPLIT_FOLDERS, sibling_lung_mask
from medsg_lib.data.phantoms import render_split
from medsg_lib.data.summary import pick_examples
from medsg_lib.files import MANIFEST_NAME
from medsg_lib.manifest import read_manifest
from medsg_lib.models.classifier import stage_map_size, target_layer
from medsg_lib.translation import predicted_classes


class CamInputs:
    """Images with their labels and masks for a CAM study: ``x`` ``(N, 1, H, W)`` in [-1, 1], ``labels``
    ``(N,)``, ``lung`` and ``infection`` boolean ``(N, H, W)`` (infection all False where unknown)."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray, lung: np.ndarray, infection: np.ndarray) -> None:
        self.x, self.labels, self.lung, self.infection = x, np.asarray(labels), lung, infection

    def __len__(self) -> int:
        return len(self.labels)


def real_cam_inputs(records: Sequence, img_size: int, per_class: int, seed: int = 0) -> CamInputs:
    """Up to ``per_class`` real images per class (reproducible pick) with their lung and infection masks."""
    chosen = pick_examples(records, per_class, seed)
    empty = np.zeros((img_size, img_size), bool)
    x = torch.stack([to_tensor(preprocess(load_image(r.image_path, 1), img_size)) for r in chosen])
    lung = np.stack([load_mask(r.lung_mask_path, img_size) if r.lung_mask_path else empty for r in chosen])
    lesion = np.stack(
        [load_mask(r.infection_mask_path, img_size) if r.infection_mask_path else empty for r in chosen]
    )
    return CamInputs(x, np.array([r.label for r in chosen]), lung, lesion)


def generated_cam_inputs(gen_dir: Path, img_size: int, per_class: int) -> CamInputs:
    """Up to ``per_class`` Med-StyleGAN2 images per class (lowest seeds) from ``gen_dir`` (a folder written by
    :func:`medsg_lib.generate.generate`). A translation keeps the anatomy of its source image, so the source's
    lung mask stands in for the generated image's; generated lesions have no mask (infection metrics NaN)."""
    manifest = read_manifest(gen_dir)
    rows = [
        row
        for name in CLASS_NAMES
        for row in manifest[manifest["class"] == name].sort_values("seed").head(per_class).to_dict("records")
    ]
    if not rows:
        raise FileNotFoundError(
            f"no generated images listed in {gen_dir}/{MANIFEST_NAME}: run notebook 03 first"
        )
    x = torch.stack([to_tensor(preprocess(load_image(Path(gen_dir) / r["file"], 1), img_size)) for r in rows])
    lung = np.stack([_source_lung_mask(r["source_image"], img_size) for r in rows])
    labels = np.array([CLASS_NAMES.index(r["class"]) for r in rows])
    return CamInputs(x, labels, lung, np.zeros_like(lung))


def _source_lung_mask(source_image: object, img_size: int) -> np.ndarray:
    """The lung mask beside a COVID-QU-Ex-layout source image (``.../images/NAME`` -> ``.../lung masks/NAME``),
    or an all-False mask when there is none (the image is then left out of the lung metrics)."""
    if not isinstance(source_image, str) or not source_image:
        return np.zeros((img_size, img_size), bool)
    mask = sibling_lung_mask(Path(source_image))
    return load_mask(mask, img_size) if mask is not None else np.zeros((img_size, img_size), bool)


def method_label(method: str, layer: str, target: str = "class") -> str:
    """How tables and figures name one kind of map, e.g. ``"gradcam, layer3"``, ``"gradcam, layer3 (class -
    Normal)"`` or ``"occlusion"``."""
    label = method if layer == "-" else f"{method}, {layer}"
    return label if target == "class" else f"{label} ({target})"


def _gaussian_maps(inp: CamInputs) -> np.ndarray:
    """The centred-Gaussian baseline map once per image of ``inp`` (a read-only view, no copies)."""
    h, w = inp.x.shape[-2:]
    return np.broadcast_to(gaussian_baseline(h, w), (len(inp), h, w))


PAPER_METHOD: tuple[str, str] = ("gradcam", "class")  # the paper's maps: Grad-CAM of the class logit


def cam_study(
    model: nn.Module,
    inputs: dict[str, CamInputs],
    layers: Sequence[str] = ("layer3", "layer4"),
    methods: Sequence[tuple[str, str]] = (PAPER_METHOD,),
    threshold: float = 0.5,
) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """Maps of every ``(method, target)`` of ``methods`` (:func:`method_maps`; each image's own class) for every
    input set at every ``layer``, measured with :func:`localisation_table`, plus the centred-Gaussian baseline on
    the same images and masks.

    Returns the table (columns ``method``, ``target``, ``layer``, ``map_size`` (the layer's map before
    upsampling, e.g. ``16x16``; the image size for the baseline), ``source``, ``class``, ...) and the maps per
    ``(method_label(method, layer, target), source)``.
    """
    tables, maps = [], {}
    for method, target in methods:
        for layer in layers:
            for source, inp in inputs.items():
                cams = method_maps(model, inp, method, layer, target)
                maps[(method_label(method, layer, target), source)] = cams
                side = stage_map_size(model, layer, inp.x.shape[-1])
                table = localisation_table(cams, inp.lung, inp.infection, inp.labels, source, threshold)
                tables.append(
                    table.assign(method=method, target=target, layer=layer, map_size=f"{side}x{side}")
                )
    for source, inp in inputs.items():
        h, w = inp.x.shape[-2:]
        table = localisation_table(
            _gaussian_maps(inp), inp.lung, inp.infection, inp.labels, f"baseline: centred Gaussian ({source})"
        )
        tables.append(table.assign(method="-", target="-", layer="-", map_size=f"{h}x{w}"))
    table = pd.concat(tables, ignore_index=True)
    first = ["method", "target", "layer", "map_size"]
    return table[[*first, *[c for c in table.columns if c not in first]]], maps


# a row of the CAM study is one (method, target, layer, source, class); the numbers compared across classifier seeds
LOCALISATION_KEYS: tuple[str, ...] = ("method", "target", "layer", "map_size", "source", "class")
LOCALISATION_VALUES: tuple[str, ...] = (
    "lung_energy_share",
    "lung_pointing_hit_rate",
    "pointing_game_hit_rate",
    "iou@0.5",
)


def cam_study_over_seeds(
    classifiers: Sequence[tuple[nn.Module, dict]],
    inputs: dict[str, CamInputs],
    layers: Sequence[str] = ("layer3", "layer4"),
    methods: Sequence[tuple[str, str]] = (PAPER_METHOD,),
) -> pd.DataFrame:
    """:func:`cam_study` of each classifier (seed ``k`` at position ``k``) on the same inputs: the tables one
    after the other, with a ``classifier_seed`` column."""
    return pd.concat(
        [
            cam_study(model, inputs, layers, methods)[0].assign(classifier_seed=k)
            for k, (model, _) in enumerate(classifiers)
        ],
        ignore_index=True,
    )


def figure1_methods(choice: tuple[str, str, str]) -> list[tuple[str, str]]:
    """The ``(method, target)`` pairs Figure 1's study measures: the paper's, and the profile's ``choice``
    (``(method, layer, target)``) where it differs."""
    return list(dict.fromkeys([PAPER_METHOD, (choice[0], choice[2])]))


# the CAM-method comparison (Figure 1's choice): one row per method, layer, source and class, per classifier seed
METHOD_KEYS: tuple[str, ...] = (
    "method",
    "target",
    "layer",
    "map_size",
    "source",
    "class",
    "n",
    "n_infection",
)
METHOD_VALUES: tuple[str, ...] = (
    "pointing_game_hit_rate",
    "pointing_game_within_cell",
    "lesion_energy_share",
    "lesion_area_fraction",
    "lung_energy_share",
    "lung_area_fraction",
    "seconds_per_image",
)


def cam_methods_study(
    classifiers: Sequence[nn.Module],
    inputs: dict[str, CamInputs],
    methods: Sequence[str],
    layers: Sequence[str] = ("layer3", "layer4"),
    versus: int | None = None,
) -> pd.DataFrame:
    """Every CAM method (:func:`compute_cams`'s ``method``; occlusion has no layer) of each classifier (seed
    ``k`` at position ``k``) on the same inputs, measured against the masks with :func:`localisation_table`
    (``cell`` = one cell of the layer's map), plus the centred-Gaussian map (method ``"baseline: centred
    Gaussian"``). ``target`` says what a map explains: ``"class"`` (each image's class logit, the paper's) or,
    with ``versus``, ``"class - <versus>"`` (the class logit minus class ``versus``'s; images of class
    ``versus`` get flat maps; no baseline rows then).
    Columns: :data:`METHOD_KEYS`, ``classifier_seed``, the table's numbers, ``seconds_per_image`` (the maps'
    wall time). The uniform map's scores are the area fractions (a uniformly random point hits the lesion with
    probability ``lesion_area_fraction``)."""
    tables = []
    target = map_target(versus)
    for k, model in enumerate(classifiers):
        for source, inp in inputs.items():
            side = inp.x.shape[-1]
            for method in methods:
                for layer in ["-"] if method == OCCLUSION else layers:
                    cells = side if layer == "-" else stage_map_size(model, layer, side)
                    start = time.perf_counter()
                    cams = method_maps(model, inp, method, layer, target)
                    seconds = (time.perf_counter() - start) / len(inp)
                    table = localisation_table(
                        cams, inp.lung, inp.infection, inp.labels, source, cell=max(side // cells, 1)
                    )
                    tables.append(
                        table.assign(
                            method=method,
                            target=target,
                            layer=layer,
                            map_size=f"{cells}x{cells}",
                            classifier_seed=k,
                            seconds_per_image=round(seconds, 3),
                        )
                    )
            if versus is not None:
                continue
            h, w = inp.x.shape[-2:]
            table = localisation_table(
                _gaussian_maps(inp), inp.lung, inp.infection, inp.labels, source, cell=1
            )
            tables.append(
                table.assign(
                    method=BASELINE_METHOD,
                    target="-",
                    layer="-",
                    map_size=f"{h}x{w}",
                    classifier_seed=k,
                    seconds_per_image=0.0,
                )
            )
    table = pd.concat(tables, ignore_index=True)
    first = [*METHOD_KEYS, "classifier_seed"]
    return table[[*first, *[c for c in table.columns if c not in first]]]


BASELINE_METHOD = "baseline: centred Gaussian"


def map_target(versus: int | None) -> str:
    """What a map explains: ``"class"`` (the image's class logit) or ``"class - <name>"`` (minus ``versus``'s)."""
    return "class" if versus is None else f"class - {CLASS_NAMES[versus]}"


def target_versus(target: str) -> int | None:
    """:func:`map_target`'s inverse: None for ``"class"``, else the index of the class subtracted."""
    return None if target == "class" else CLASS_NAMES.index(target.removeprefix("class - "))


def method_maps(
    model: nn.Module, inp: CamInputs, method: str, layer: str, target: str = "class"
) -> np.ndarray:
    """The maps ``(N, H, W)`` of one row of a methods comparison (``method``, ``layer`` (``"-"`` for
    occlusion), ``target``) for ``inp``, each explaining its image's own class."""
    return compute_cams(
        model,
        inp.x,
        targets=inp.labels.tolist(),
        layer=None if layer == "-" else target_layer(model, layer),
        method=method,
        versus=target_versus(target),
    )


# the grad-cam methods that need one backward pass per batch, and those that need about one forward pass per
# channel of the layer (Score-CAM, Ablation-CAM) or per patch (occlusion): seconds against minutes
GRADIENT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam", "layercam")
PERTURBATION_METHODS: tuple[str, ...] = ("scorecam", "ablationcam", OCCLUSION)


def per_class_subset(inp: CamInputs, per_class: int) -> CamInputs:
    """The first ``per_class`` images of each class of ``inp`` (all of a class with fewer), in their order."""
    idx = np.sort(
        np.concatenate([np.flatnonzero(inp.labels == k)[:per_class] for k in np.unique(inp.labels)])
    )
    return CamInputs(inp.x[idx], inp.labels[idx], inp.lung[idx], inp.infection[idx])


def methods_comparison(
    classifiers: Sequence[nn.Module],
    inputs: CamInputs,
    perturbation_per_class: int = 0,
    layers: Sequence[str] = ("layer3", "layer4"),
) -> pd.DataFrame | None:
    """Figure 1's choice of method, measured: :func:`cam_methods_study` of ``inputs`` (images with lesion
    masks, source ``"real"``) for every classifier seed with the :data:`GRADIENT_METHODS` at every layer,
    Grad-CAM of the class-minus-Normal contrast, and, where ``perturbation_per_class`` > 0, the
    :data:`PERTURBATION_METHODS` on that many images per class at ``layers[0]`` (they cost about one forward
    pass per channel or patch and image). None where no image has a lesion mask (nothing to compare against)."""
    if not inputs.infection.any():
        return None
    real = {"real": inputs}
    tables = [
        cam_methods_study(classifiers, real, GRADIENT_METHODS, layers),
        cam_methods_study(classifiers, real, ("gradcam",), layers, versus=CLASS_NAMES.index("Normal")),
    ]
    if perturbation_per_class > 0:
        few = {"real": per_class_subset(inputs, perturbation_per_class)}
        tables.append(cam_methods_study(classifiers, few, PERTURBATION_METHODS, layers[:1]))
    return pd.concat(tables, ignore_index=True)


def best_cam_method(
    summary: pd.DataFrame, classes: Sequence[str] = ("COVID-19", "Non-COVID")
) -> dict[str, Any]:
    """The method and layer of a :func:`methods_comparison` summary over seeds
    (:func:`~medsg_lib.seeds.summarise_over_seeds`) whose worst class among ``classes`` has the highest mean
    strict pointing game, preferring those whose lung energy share (the mean over ``classes``: a contrast map of
    a Normal image is flat by construction) beats the centred Gaussian's on the same images (``beats_gaussian``
    says whether the chosen one does); ties: a gradient method before a perturbation one, then the first. Returns ``method``, ``target``,
    ``layer``, ``pointing_game`` (that worst class's mean), ``worst_class``, ``n_images`` (its images with a
    lesion per seed), ``lung_energy_share`` and the Gaussian's, ``beats_gaussian``, ``seconds_per_image``.
    Raises ValueError when no method has rows for every class of ``classes``."""
    real = summary[summary["source"] == "real"]
    baseline = real[real["method"] == BASELINE_METHOD]
    # (class, images) -> the Gaussian's lung share on them
    gaussian = {
        (c, n): v
        for c, n, v in zip(baseline["class"], baseline["n"], baseline["lung_energy_share"], strict=True)
    }
    candidates = []
    methods = real[real["method"] != BASELINE_METHOD].groupby(["method", "target", "layer"], sort=False)
    for (method, target, layer), rows in methods:
        by_class = rows.set_index("class")
        if not set(classes) <= set(by_class.index):
            continue
        share = float(np.mean([by_class.loc[c, "lung_energy_share"] for c in classes]))
        reference = float(np.mean([gaussian.get((c, by_class.loc[c, "n"]), np.nan) for c in classes]))
        worst = min(classes, key=lambda c: by_class.loc[c, "pointing_game_hit_rate"])
        candidates.append(
            {
                "method": method,
                "target": target,
                "layer": layer,
                "pointing_game": float(by_class.loc[worst, "pointing_game_hit_rate"]),
                "worst_class": worst,
                "n_images": int(by_class.loc[worst, "n_infection"]),
                "lung_energy_share": share,
                "gaussian_lung_energy_share": reference,
                "beats_gaussian": bool(share > reference),
                "seconds_per_image": float(by_class.loc["all", "seconds_per_image"]),
            }
        )
    if not candidates:
        raise ValueError(f"the summary has no CAM method with rows for every class of {list(classes)}")
    # ties go to a gradient method (a measured time would make the choice differ between runs), then the first
    return max(
        candidates,
        key=lambda c: (c["beats_gaussian"], c["pointing_game"], c["method"] not in PERTURBATION_METHODS),
    )


def lesion_removal_study(
    model: nn.Module, layout: str, phantoms: PhantomConfig, split: str, img_size: int
) -> pd.DataFrame | None:
    """:func:`lesion_removal_table` where the data ``layout`` has lesion-free twins (the phantoms, rendered with
    and without lesions); None for every other layout (real X-rays have no twin)."""
    return lesion_removal_table(model, phantoms, split, img_size) if layout == "phantoms" else None


def lesion_removal_table(
    model: nn.Module, phantoms: PhantomConfig, split: str, img_size: int
) -> pd.DataFrame:
    """Does ``model`` need the lesions? It classifies every phantom of ``split`` (e.g. ``"test"``) and its
    lesion-free twin (same patient and acquisition, lesions left out: :func:`render_split`), both resized to
    ``img_size``. One row per class: ``class``, ``n``, then the share of the images and of their twins it calls
    each class. A classifier that reads the lesions calls the COVID-19 and Non-COVID twins Normal; the Normal
    twins are the Normal images themselves."""
    folder = SPLIT_FOLDERS[split]  # "test" -> "Test", the COVID-QU-Ex (and phantom) folder name
    images, labels = render_split(phantoms, folder)
    twins, _ = render_split(phantoms, folder, lesions=False)
    called = {
        kind: np.array(predicted_classes(model, [preprocess(im, img_size) for im in arrays]))
        for kind, arrays in (("images", images), ("twins", twins))
    }
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        chosen = labels == label
        row: dict[str, object] = {"class": name, "n": int(chosen.sum())}
        for kind, names in called.items():
            row.update({f"{kind} called {c}": float(np.mean(names[chosen] == c)) for c in CLASS_NAMES})
        rows.append(row)
    return pd.DataFrame(rows)
