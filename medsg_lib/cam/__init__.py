"""Class activation maps (Figure 1): Grad-CAM from the ``grad-cam`` package, and how well the maps localise.

Modules: :mod:`~medsg_lib.cam.maps` (the maps), :mod:`~medsg_lib.cam.localisation` (the metrics and their
table), :mod:`~medsg_lib.cam.study` (the Figure 1 study, over classifier seeds, the comparison of CAM methods
that chooses Figure 1's, and the lesion-removal control), :mod:`~medsg_lib.cam.explain` (why a map misses a
lesion: each phantom beside its lesion-free twin) and :mod:`~medsg_lib.cam.figure` (Figure 1 itself). Everything public is importable from ``medsg_lib.cam``.

:func:`compute_cams` wraps ``pytorch_grad_cam.GradCAM`` and returns maps normalised per image to [0, 1] at the
image's size. The localisation metrics are pure numpy on one map ``(H, W)`` and one boolean mask ``(H, W)``:

- :func:`energy_inside`: the share of the map's sum inside the mask (a uniform map scores the mask's area
  fraction, which :func:`localisation_table` reports as the chance level);
- :func:`pointing_hit`: the pointing game (is the map's maximum inside the mask);
- :func:`cam_iou`: IoU of the thresholded map with the mask.

:func:`gaussian_baseline` is a centred Gaussian that looks at every image the same way: a map that
"concentrates around the lungs" only says something if it beats this baseline.
"""

from medsg_lib.cam.explain import phantom_pairs, twin_studies, twin_study, twin_summary
from medsg_lib.cam.figure import describe, panel_caption, save_fig1, save_methods_figure
from medsg_lib.cam.localisation import (
    cam_iou,
    energy_inside,
    gaussian_baseline,
    localisation_table,
    miss_locations,
    pointing_hit,
)
from medsg_lib.cam.maps import ContrastTarget, compute_cams, normalise_cams
from medsg_lib.cam.study import (
    BASELINE_METHOD,
    GRADIENT_METHODS,
    LOCALISATION_KEYS,
    LOCALISATION_VALUES,
    METHOD_KEYS,
    METHOD_VALUES,
    PERTURBATION_METHODS,
    CamInputs,
    best_cam_method,
    cam_methods_study,
    cam_study,
    cam_study_over_seeds,
    generated_cam_inputs,
    lesion_removal_study,
    lesion_removal_table,
    method_maps,
    methods_comparison,
    per_class_subset,
    real_cam_inputs,
)

__all__ = [
    "BASELINE_METHOD",
    "GRADIENT_METHODS",
    "PERTURBATION_METHODS",
    "best_cam_method",
    "method_maps",
    "methods_comparison",
    "per_class_subset",
    "LOCALISATION_KEYS",
    "LOCALISATION_VALUES",
    "CamInputs",
    "ContrastTarget",
    "cam_iou",
    "cam_study",
    "METHOD_KEYS",
    "METHOD_VALUES",
    "cam_methods_study",
    "cam_study_over_seeds",
    "compute_cams",
    "describe",
    "energy_inside",
    "gaussian_baseline",
    "generated_cam_inputs",
    "lesion_removal_study",
    "lesion_removal_table",
    "localisation_table",
    "miss_locations",
    "normalise_cams",
    "panel_caption",
    "pointing_hit",
    "real_cam_inputs",
    "save_fig1",
    "save_methods_figure",
    "phantom_pairs",
    "twin_study",
    "twin_studies",
    "twin_summary",
]
