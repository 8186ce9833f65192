"""Figure 1's choice of CAM method (hand-made summaries), the Figure 1 classifier's rendered training phantoms,
its cheap BatchNorm re-estimation, and the phantom-and-twin study of why maps miss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from medsg_lib.cam import (
    BASELINE_METHOD,
    CamInputs,
    best_cam_method,
    methods_comparison,
    per_class_subset,
    phantom_pairs,
    real_cam_inputs,
    twin_study,
    twin_summary,
)
from medsg_lib.cam.study import map_target, target_versus
from medsg_lib.classify.stage import classifier_training_set, effective_config
from medsg_lib.classify.trainer import batchnorm_subset
from medsg_lib.config import ClassifierConfig, DataConfig, PhantomConfig
from medsg_lib.data import LabelledImages, SyntheticXrays, build_dataset, read_records
from medsg_lib.data.phantoms import PARALLEL_MIN_PHANTOMS, render_in_processes, rendered_training_set

PHANTOMS = PhantomConfig(img_size=64, num_train=3, num_val=1, num_test=2, seed=5)


def _row(method: str, layer: str, cls: str, pg: float, lung: float, n: int = 8, seconds: float = 0.1) -> dict:
    return {
        "method": method,
        "target": "-" if method == BASELINE_METHOD else "class",
        "layer": layer,
        "source": "real",
        "class": cls,
        "n": n,
        "n_infection": 0 if cls == "Normal" else n,
        "pointing_game_hit_rate": pg,
        "lung_energy_share": lung,
        "seconds_per_image": seconds,
    }


def _summary(rows: list[tuple]) -> pd.DataFrame:
    """Rows ``(method, layer, pointing game COVID-19, Non-COVID, lung share, seconds)`` plus a Gaussian at 0.37."""
    out = []
    for cls in ("COVID-19", "Non-COVID", "all"):
        out.append(_row(BASELINE_METHOD, "-", cls, 0.05, 0.37, seconds=0.0))
    for method, layer, covid, non_covid, lung, seconds in rows:
        out += [
            _row(method, layer, "COVID-19", covid, lung, seconds=seconds),
            _row(method, layer, "Non-COVID", non_covid, lung, seconds=seconds),
            _row(method, layer, "all", (covid + non_covid) / 2, lung, seconds=seconds),
        ]
    return pd.DataFrame(out)


def test_the_best_method_has_the_best_worst_class_among_those_beating_the_gaussian() -> None:
    summary = _summary(
        [
            ("gradcam", "layer3", 0.9, 0.3, 0.45, 0.1),  # worst class 0.3
            ("layercam", "layer3", 0.7, 0.6, 0.50, 0.2),  # worst class 0.6: the best
            (
                "scorecam",
                "layer3",
                0.95,
                0.9,
                0.30,
                9.0,
            ),  # finds the lesions, but its lung share is below the Gaussian
        ]
    )
    best = best_cam_method(summary)
    assert (best["method"], best["target"], best["layer"], best["worst_class"]) == (
        "layercam",
        "class",
        "layer3",
        "Non-COVID",
    )
    assert best["pointing_game"] == 0.6 and best["gaussian_lung_energy_share"] == pytest.approx(0.37)
    # a tie goes to the cheaper method
    tied = _summary([("scorecam", "layer3", 0.6, 0.6, 0.5, 9.0), ("hirescam", "layer4", 0.6, 0.7, 0.5, 0.1)])
    assert best_cam_method(tied)["method"] == "hirescam"
    assert (
        best["beats_gaussian"]
        and not best_cam_method(_summary([("gradcam", "layer3", 0.9, 0.9, 0.2, 0.1)]))["beats_gaussian"]
    )  # none beats it: the best pointing game, flagged
    with pytest.raises(
        ValueError, match=r"no CAM method with rows for every class of \['COVID-19', 'Normal'\]"
    ):
        best_cam_method(summary, classes=("COVID-19", "Normal"))


def test_map_targets_round_trip_and_per_class_subsets_keep_order() -> None:
    assert map_target(None) == "class" and target_versus("class") is None
    assert map_target(2) == "class - Normal" and target_versus("class - Normal") == 2
    labels = np.array([0, 1, 0, 2, 1, 0, 2])
    inp = CamInputs(
        torch.arange(7.0).view(7, 1, 1, 1), labels, np.zeros((7, 1, 1), bool), np.zeros((7, 1, 1), bool)
    )
    few = per_class_subset(inp, 2)
    assert few.x.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 6.0] and few.labels.tolist() == [
        0,
        1,
        0,
        2,
        1,
        2,
    ]


def test_methods_comparison_needs_lesion_masks() -> None:
    inp = CamInputs(
        torch.zeros(2, 1, 16, 16), np.array([0, 2]), np.ones((2, 16, 16), bool), np.zeros((2, 16, 16), bool)
    )
    assert methods_comparison([nn.Identity()], inp) is None  # no mask: nothing to score, no model called


def test_rendered_training_phantoms_start_with_the_written_split_and_are_cached(tmp_path: Path) -> None:
    phantoms = replace(PHANTOMS, root=tmp_path / "phantoms")
    data = DataConfig(layout="phantoms", img_size=32, cache_dir=tmp_path / "cache")
    written = build_dataset(data, "train", phantoms, train=False, progress=False)
    rendered = rendered_training_set(phantoms, 5, 32, tmp_path / "cache", progress=False)
    assert isinstance(rendered, LabelledImages) and rendered.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    # the written Train split's images are the first num_train of each class, bit for bit
    by_class = {int(y): [] for y in written.labels}
    for x, y in (written[i] for i in range(len(written))):
        by_class[int(y)].append(x)
    for label, images in by_class.items():
        for k, x in enumerate(images):
            assert torch.equal(rendered.x[label * 5 + k], x)
    # the new patients are none of the Val or Test phantoms
    held_out = torch.stack(
        [
            x
            for split in ("val", "test")
            for x, _ in build_dataset(data, split, phantoms, train=False, progress=False)
        ]
    )
    for x in rendered.x:
        assert not (held_out == x).flatten(1).all(1).any()
    cached = list((tmp_path / "cache").glob("phantoms-train-5pc-32px-*.pt"))
    assert len(cached) == 1
    again = rendered_training_set(phantoms, 5, 32, tmp_path / "cache", progress=False)
    assert torch.equal(again.x, rendered.x)


def test_phantoms_rendered_in_processes_are_the_bits_rendered_in_one() -> None:
    n = PARALLEL_MIN_PHANTOMS + 4  # enough to start the pool
    draws = [(7, k % 3, k, 64, 32) for k in range(n)]
    one = render_in_processes(draws, "one", progress=False, workers=1)
    two = render_in_processes(draws, "two", progress=False, workers=2)
    assert len(two) == n and all(a.shape == (32, 32) and a.dtype == np.uint8 for a in two)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert len({a.tobytes() for a in two}) == n  # every draw its own phantom, in order


def test_the_classifier_trains_on_rendered_phantoms_only_where_it_can(tmp_path: Path) -> None:
    phantoms = replace(PHANTOMS, root=tmp_path / "phantoms")
    data = DataConfig(layout="phantoms", img_size=32, cache_dir=tmp_path / "cache")
    cfg = ClassifierConfig(img_size=32, phantoms_per_class=4)
    train_set, source = classifier_training_set(cfg, data, phantoms, progress=False)
    assert len(train_set) == 12 and source == "4 rendered training phantoms per class"
    plain, source = classifier_training_set(
        replace(cfg, phantoms_per_class=0), data, phantoms, progress=False
    )
    assert len(plain) == 9 and source == "the training split"
    assert effective_config(replace(cfg, epochs=4, phantom_epochs=2), "phantoms").epochs == 2
    assert effective_config(replace(cfg, epochs=4, phantom_epochs=2), "folders").epochs == 4  # a real split
    with pytest.raises(ValueError, match=r"ClassifierConfig.phantoms_per_class=-1 must be an int >= 0"):
        ClassifierConfig(phantoms_per_class=-1)


def test_batchnorm_is_re_estimated_on_a_fixed_subset_of_large_sets() -> None:
    small = SyntheticXrays(8, num_per_class=2)
    assert batchnorm_subset(small, 6, seed=0) is small  # 6 images: all of them, in order
    large = SyntheticXrays(8, num_per_class=10)
    subset = batchnorm_subset(large, 7, seed=3)
    assert isinstance(subset, Subset) and len(subset) == 7
    assert subset.indices == sorted(subset.indices) and len(set(subset.indices)) == 7
    assert batchnorm_subset(large, 7, seed=3).indices == subset.indices  # the same after every epoch
    assert batchnorm_subset(large, 7, seed=4).indices != subset.indices


class LesionDetector(nn.Module):
    """Class logits from the difference to a known lesion-free background: the evidence for a class is the
    brightness added inside its own lesion region, so occluding the lesion removes it."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 1.0, -1.0]).view(3, 1, 1, 1))
            self.conv.bias.zero_()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x))).flatten(1)


def test_phantom_pairs_match_the_files_and_twins_differ_only_in_the_lesion_signal(tmp_path: Path) -> None:
    phantoms = replace(PHANTOMS, root=tmp_path / "phantoms")
    data = DataConfig(layout="phantoms", subset="infection", img_size=32, cache_dir=tmp_path / "cache")
    inputs, twins, signal = phantom_pairs(phantoms, "Test", 32)
    assert inputs.labels.tolist() == [0, 0, 1, 1] and twins.shape == (4, 1, 32, 32)
    records, _ = read_records(data, ("test",), phantoms)
    files = real_cam_inputs([r for r in records if r.label < 2], 32, 2)
    assert torch.equal(files.x, inputs.x)
    assert np.array_equal(files.lung, inputs.lung) and np.array_equal(files.infection, inputs.infection)
    assert signal.any(axis=(1, 2)).all()  # every lesion changed some pixels
    difference = (inputs.x - twins).abs()[:, 0].numpy() * 127.5
    assert (difference[~signal] <= 2 + 1e-3).all()  # outside the signal the twin is the image


@pytest.mark.filterwarnings("ignore:every Grad-CAM map is flat")  # the twins hold no evidence at all
def test_twin_study_sees_the_evidence_leave_with_the_lesion() -> None:
    size = 16
    x = -torch.ones(2, 1, size, size)
    lesion = np.zeros((2, size, size), bool)
    lesion[0, 2:6, 2:6] = True
    lesion[1, 9:13, 8:12] = True
    x[torch.from_numpy(lesion)[:, None]] = 1.0
    lung = np.ones((2, size, size), bool)
    inputs = CamInputs(x, np.array([0, 1]), lung, lesion)
    twins = -torch.ones(2, 1, size, size)
    model = LesionDetector(size).eval()
    rows = twin_study(model, (inputs, twins, lesion), method="occlusion", layer="-", patch=4)
    assert rows["on_lesion"].all() and rows["on_signal"].all() and rows["in_lung"].all()
    lost = rows["margin"] - rows["margin_twin"]
    assert (lost > 0).all()  # removing the lesion removes the class's evidence against Normal
    summary = twin_summary(rows.assign(method="occlusion", layer="-", target="class")).set_index(
        ["class", "maxima"]
    )
    assert summary.loc[("COVID-19", "all"), "on_lesion"] == 1.0
    assert rows["twin_peak_distance"].isna().all() and summary["twin_flat"].eq(1.0).all()  # flat twin maps
    assert ("COVID-19", "off lesion") not in summary.index
