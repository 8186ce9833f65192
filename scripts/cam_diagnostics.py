"""Figure 1 diagnostics (docs/figure1.md), written to results/<profile>/cam_diagnostics.md:

1. where the Figure 1 classifier's Grad-CAM maxima fall when they miss the lesions (every held-out image of the
   diseased classes, up to --per-class), with the class score (Figure 1's target) and with the contrast
   against Normal (``compute_cams(..., versus=Normal)``);
2. the domain distance (Fréchet distance in the main classifier's features, Table 1's "FD (classifier)")
   of Med-StyleGAN2 and of the per-class DCGAN against the real training images of each class, split into its
   mean and covariance terms (``frechet_terms``).

Needs notebooks 02-05 run first. Usage: ``.venv/bin/python scripts/cam_diagnostics.py [--profile cpu]``
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medsg_lib import cam
from medsg_lib.classify import CHECKPOINT_NAME, evaluation_split, load_classifier
from medsg_lib.config import CLASS_NAMES, CLASS_SLUGS
from medsg_lib.data import load_image, preprocess, read_records, to_tensor
from medsg_lib.files import run_name, write_text_atomic
from medsg_lib.metrics.fid import frechet_terms
from medsg_lib.models.classifier import as_model_input, classifier_features, target_layer
from medsg_lib.notebook import setup_notebook

NORMAL = CLASS_NAMES.index("Normal")


def miss_table(model: torch.nn.Module, inputs: cam.CamInputs) -> pd.DataFrame:
    rows = []
    for layer in ("layer3", "layer4"):
        module = target_layer(model, layer)
        for target, versus in (("class score", None), ("class minus Normal", NORMAL)):
            maps = cam.compute_cams(model, inputs.x, inputs.labels.tolist(), layer=module, versus=versus)
            for label in (CLASS_NAMES.index("COVID-19"), CLASS_NAMES.index("Non-COVID")):
                chosen = inputs.labels == label
                stats = cam.miss_locations(maps[chosen], inputs.lung[chosen], inputs.infection[chosen])
                rows.append({"layer": layer, "target": target, "class": CLASS_NAMES[label], **stats})
    return pd.DataFrame(rows)


def _features(model: torch.nn.Module, paths: list[Path], img_size: int) -> np.ndarray:
    x = torch.stack([to_tensor(preprocess(load_image(p, 1), img_size)) for p in paths])
    with torch.no_grad():
        return classifier_features(model, as_model_input(x, model)).double().numpy()


def distance_terms(model: torch.nn.Module, records: list, generated: Path, img_size: int) -> pd.DataFrame:
    rows = []
    for name, slug in zip(CLASS_NAMES, CLASS_SLUGS, strict=True):
        real = _features(model, [r.image_path for r in records if r.class_name == name], img_size)
        for label, folder in (
            ("Med-StyleGAN2", generated / "medsg" / slug),
            ("DCGAN per class", generated / run_name("dcgan", name) / slug),
        ):
            files = sorted(folder.glob("*.png"))
            if files:
                terms = frechet_terms(real, _features(model, files, img_size))
                rows.append(
                    {"class": name, "model": label, "n_real": len(real), "n_generated": len(files), **terms}
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--per-class", type=int, default=32)
    args = parser.parse_args()
    prof, dirs = setup_notebook(args.profile)
    main_model, main_info = load_classifier(dirs.runs / "classifier" / CHECKPOINT_NAME)
    cam_dir = "classifier" if prof.cam_classifier is None else "cam_classifier"
    cam_model, cam_info = load_classifier(dirs.runs / cam_dir / CHECKPOINT_NAME)
    cam_size = cam_info["config"].img_size
    data_cfg = replace(prof.data, img_size=cam_size)
    held_out, _ = read_records(data_cfg, (evaluation_split(data_cfg.layout),), phantoms=prof.phantoms)
    misses = miss_table(cam_model, cam.real_cam_inputs(held_out, cam_size, args.per_class))
    train, _ = read_records(data_cfg, ("train",), phantoms=prof.phantoms)
    terms = distance_terms(main_model, train, dirs.generated, main_info["config"].img_size)
    out = dirs.results / "cam_diagnostics.md"
    text = (
        f"# Figure 1 diagnostics ({args.profile} profile; scripts/cam_diagnostics.py)\n\n"
        "## Where the Grad-CAM maxima fall (held-out images with an infection mask; pixels of "
        f"{cam_size})\n\n{misses.round(3).to_markdown(index=False)}\n\n"
        "## Domain distance (main classifier's features) split into mean and covariance terms\n\n"
        f"{terms.round(1).to_markdown(index=False)}\n"
    )
    write_text_atomic(out, text)
    print(text)


if __name__ == "__main__":
    main()
