"""Why Figure 1's Grad-CAM maps miss the lesions (docs/figure1.md): on every held-out phantom of the diseased
classes, where the maps' maxima fall when they miss, with the class score (Figure 1's target) and with the
contrast against Normal. Needs notebook 05 run first (the Figure 1 classifier in runs/<profile>/cam_classifier).

    .venv/bin/python scripts/cam_diagnostics.py [--profile cpu] [--per-class 32]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd

from medsg_lib import cam
from medsg_lib.classify import evaluation_split, load_classifier
from medsg_lib.config import CLASS_NAMES
from medsg_lib.data import read_records
from medsg_lib.models.classifier import target_layer
from medsg_lib.notebook import setup_notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--per-class", type=int, default=32)
    args = parser.parse_args()
    prof, dirs = setup_notebook(args.profile)
    model, info = load_classifier(dirs.runs / "cam_classifier" / "classifier.pt")
    size = info["config"].img_size
    data_cfg = replace(prof.data, img_size=size)
    records, _ = read_records(data_cfg, (evaluation_split(data_cfg.layout),), phantoms=prof.phantoms)
    inp = cam.real_cam_inputs(records, size, args.per_class)
    normal = CLASS_NAMES.index("Normal")
    rows = []
    for layer in ("layer3", "layer4"):
        module = target_layer(model, layer)
        maps = {
            "class score": cam.compute_cams(model, inp.x, targets=inp.labels.tolist(), layer=module),
            "class minus Normal": cam.compute_contrast_cams(model, inp.x, inp.labels, normal, module),
        }
        for target, cams in maps.items():
            for label in (CLASS_NAMES.index("COVID-19"), CLASS_NAMES.index("Non-COVID")):
                chosen = inp.labels == label
                stats = cam.miss_locations(cams[chosen], inp.lung[chosen], inp.infection[chosen])
                rows.append({"layer": layer, "target": target, "class": CLASS_NAMES[label], **stats})
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
