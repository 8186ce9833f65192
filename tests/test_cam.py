"""Grad-CAM wrapper and the localisation metrics of Figure 1 (hand-made maps and masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_png
from PIL import Image
from torch import nn

from medsg_lib.cam import (
    METHOD_KEYS,
    CamInputs,
    cam_iou,
    cam_methods_study,
    cam_study,
    compute_cams,
    describe,
    energy_inside,
    figure1_methods,
    gaussian_baseline,
    generated_cam_inputs,
    localisation_table,
    method_label,
    miss_locations,
    normalise_cams,
    panel_caption,
    pointing_hit,
    save_fig1,
)
from medsg_lib.cam.maps import CAM_METHODS, OCCLUSION
from medsg_lib.manifest import GeneratedItem, item_file, manifest_rows, write_manifest
from medsg_lib.models.classifier import build_classifier, target_layer


def brightness_model() -> nn.Sequential:
    """A CNN whose class-0 logit is the mean brightness: Grad-CAM for class 0 must light up bright pixels."""
    conv = nn.Conv2d(1, 1, kernel_size=1)
    head = nn.Linear(1, 3)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        head.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))
        head.bias.zero_()
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


# ----------------------------------------------------------------------------------------------------
# Grad-CAM


def test_normalise_cams_spans_unit_range_and_handles_flat_maps() -> None:
    maps = np.stack(
        [np.arange(12.0).reshape(3, 4), np.zeros((3, 4)), np.full((3, 4), 7.0), np.full((3, 4), np.nan)]
    )
    out = normalise_cams(maps)
    assert out.dtype == np.float32 and out.shape == (4, 3, 4)
    assert out[0].min() == 0 and out[0].max() == 1
    np.testing.assert_allclose(out[0], np.arange(12.0).reshape(3, 4) / 11, rtol=1e-6)
    assert not np.isnan(out).any() and (out[1:] == 0).all()
    with pytest.raises(ValueError, match=r"maps must be \(B, H, W\)"):
        normalise_cams(np.zeros((3, 4)))


def test_gradcam_points_at_the_bright_square_on_a_non_square_image() -> None:
    model = brightness_model().train()
    x = -torch.ones(2, 1, 16, 24)  # (B, C, H, W) in [-1, 1]
    x[0, :, 2:6, 3:9] = 1.0  # top left
    x[1, :, 10:14, 15:21] = 1.0  # bottom right
    cams = compute_cams(model, x, targets=[0, 0], layer=model[0])
    assert cams.shape == (2, 16, 24) and cams.dtype == np.float32
    assert cams.min() == 0 and cams.max() == 1
    assert cams[0, 2:6, 3:9].min() == 1 and cams[0, 10:, 12:].max() < 0.5
    assert cams[1, 10:14, 15:21].min() == 1 and cams[1, :6, :12].max() < 0.5
    assert model.training and all(p.grad is None for p in model.parameters())  # mode restored, no grads left
    # class 1 has a negative weight on brightness: its map lights the dark background instead
    dark = compute_cams(model, x, targets=[1, 1], layer=model[0])
    assert dark[0, 2:6, 3:9].max() == 0 and dark[0, 10:, 12:].min() == 1
    # class 2 ignores the image: zero gradients, a flat map, returned as zeros (no NaN), with a warning
    with pytest.warns(UserWarning, match="every Grad-CAM map is flat"):
        assert (compute_cams(model, x, targets=[2, 2], layer=model[0]) == 0).all()


def test_contrast_cams_cancel_evidence_shared_by_both_classes() -> None:
    model = brightness_model().train()
    with torch.no_grad():  # class 2 now also reads brightness, half as strongly as class 0
        model[3].weight[2, 0] = 0.5
    x = -torch.ones(1, 1, 16, 16)
    x[0, :, 2:6, 3:9] = 1.0
    layer = model[0]
    against_dark = compute_cams(model, x, [0], layer=layer, versus=1)  # 1 - (-1): still brightness
    assert against_dark[0, 2:6, 3:9].min() == 1 and against_dark[0, 10:, 10:].max() < 0.5
    # 1 - 0.5: the shared half cancels, brightness still wins (the map is scaled per image)
    partly = compute_cams(model, x, [0], layer=layer, versus=2)
    np.testing.assert_allclose(partly, against_dark, atol=1e-6)
    # class 2 against class 0: 0.5 - 1 < 0, so brightness is negative evidence and the dark background lights up
    reverse = compute_cams(model, x, [2], layer=layer, versus=0)
    assert reverse[0, 2:6, 3:9].max() == 0 and reverse[0, 10:, 10:].min() == 1
    with pytest.warns(UserWarning, match="every Grad-CAM map is flat"):  # a logit against itself: nothing
        assert (compute_cams(model, x, [0], layer=layer, versus=0) == 0).all()
    assert model.training and all(p.grad is None for p in model.parameters())


def test_miss_locations_cluster_the_maxima_outside_the_lungs() -> None:
    lung = np.zeros((4, 8, 8), bool)
    lung[:, :, :4] = True
    lesion = np.zeros_like(lung)
    lesion[:3, 1, 1] = True  # image 3 has no lesion: left out
    cams = np.zeros((4, 8, 8), np.float32)
    cams[0, 1, 1] = 1  # a hit
    cams[1, 6, 6] = cams[2, 6, 7] = 1  # two misses outside the lungs, next to each other
    cams[3, 0, 7] = 1
    stats = miss_locations(cams, lung, lesion)
    assert stats["n"] == 3 and stats["pointing_game_hit_rate"] == pytest.approx(1 / 3)
    assert stats["max_in_lung_rate"] == pytest.approx(1 / 3) and stats["n_outside_lungs"] == 2
    assert (stats["outside_row_mean"], stats["outside_col_mean"]) == (6.0, 6.5)
    assert (stats["outside_row_std"], stats["outside_col_std"]) == (0.0, 0.5)
    cams[1:3] = 0  # flat maps have no maximum: left out and counted, not a cluster at pixel (0, 0)
    stats = miss_locations(cams, lung, lesion)
    assert stats["n"] == 1 and stats["n_flat"] == 2 and stats["n_outside_lungs"] == 0
    assert stats["pointing_game_hit_rate"] == 1.0 and np.isnan(stats["outside_row_mean"])


def test_panel_captions_say_what_each_map_does() -> None:
    lung = np.zeros((8, 8), bool)
    lung[:, :4] = True
    lesion = np.zeros_like(lung)
    lesion[1, 1] = True
    cam_map = np.zeros((8, 8), np.float32)
    assert panel_caption(cam_map, lung, lesion) == "flat map: no positive evidence"
    cam_map[1, 1] = 1.0
    assert panel_caption(cam_map, lung, lesion) == "lung share 1.00 · max in lesion"
    cam_map[5, 6] = 3.0
    assert panel_caption(cam_map, lung, lesion) == "lung share 0.25 · max off lesion"
    assert panel_caption(cam_map, np.zeros_like(lung), np.zeros_like(lung)) == "no lung mask"


def test_gradcam_on_the_classifier_has_image_size_and_unit_range() -> None:
    torch.manual_seed(0)
    model = build_classifier().eval()
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    cams = compute_cams(model, x, targets=[0, 1, 2], batch_size=2)
    assert cams.shape == (3, 64, 64) and not np.isnan(cams).any()
    for cam in cams:  # each map is normalised, or all zeros when Grad-CAM found nothing positive
        assert (cam.min(), cam.max()) in {(0.0, 1.0), (0.0, 0.0)}
    assert compute_cams(model, x, targets=None, layer=target_layer(model, "layer3")).shape == (3, 64, 64)
    # at 32 px layer4 is 1x1: no location at all, said loudly
    with pytest.warns(UserWarning, match=r"activation may be 1x1 at this image size \(32x32"):
        assert (compute_cams(model, x[:, :, :32, :32], targets=[0, 1, 2]) == 0).all()
    with pytest.raises(ValueError, match="targets has 2 entries for 3 images"):
        compute_cams(model, x, targets=[0, 1])


def test_gradcam_stops_its_backward_at_the_layer_with_the_same_maps_and_flags_restored() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(1)
    model = build_classifier(stem="fine").eval()
    model.fc.weight.requires_grad_(False)  # a caller's frozen parameter stays frozen
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    layer = target_layer(model, "layer3")
    with GradCAM(model=model, target_layers=[layer]) as reference:  # grad-cam as documented: all the way back
        x_grad = x.clone().requires_grad_(True)
        expected = reference(input_tensor=x_grad, targets=[ClassifierOutputTarget(t) for t in (0, 1, 2, 0)])
    model.zero_grad(set_to_none=True)
    got = compute_cams(model, x, targets=[0, 1, 2, 0], layer=layer)
    np.testing.assert_array_equal(got, normalise_cams(expected))
    assert not model.fc.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "fc.weight")
    assert all(p.grad is None for p in model.parameters())
    # a layer without parameters: the input carries the graph instead
    relu = nn.Sequential(
        nn.Conv2d(1, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 3)
    )
    assert compute_cams(relu, x, targets=[0] * 4, layer=relu[1]).shape == (4, 64, 64)


# ----------------------------------------------------------------------------------------------------
# localisation metrics


def test_map_equal_to_mask_localises_perfectly() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:7] = True
    cam = mask.astype(np.float32)
    assert energy_inside(cam, mask) == 1.0 and cam_iou(cam, mask) == 1.0 and pointing_hit(cam, mask)


def test_map_outside_the_mask_scores_zero() -> None:
    mask = np.zeros((8, 8), bool)
    mask[:4] = True
    cam = np.zeros((8, 8), np.float32)
    cam[5:, 2:6] = 1.0
    assert energy_inside(cam, mask) == 0.0 and cam_iou(cam, mask) == 0.0 and not pointing_hit(cam, mask)


def test_partial_overlap_exact_values_and_conventions() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2] = True  # top half: 8 pixels
    cam = np.full((4, 4), 0.25, np.float32)
    cam[0, :] = 1.0  # 4 hot pixels inside
    cam[3, 0] = 1.0  # 1 hot pixel outside
    # energy: inside 4 * 1 + 4 * 0.25 = 5, total 5 * 1 + 11 * 0.25 = 7.75
    assert energy_inside(cam, mask) == pytest.approx(5 / 7.75)
    assert cam_iou(cam, mask, threshold=0.5) == pytest.approx(4 / 9)
    assert cam_iou(cam, mask, threshold=0.2) == pytest.approx(8 / 16)
    tie = np.zeros((4, 4), np.float32)
    tie[3, 3] = tie[1, 0] = 1.0  # first maximum in row-major order is (1, 0), inside the mask
    assert pointing_hit(tie, mask) and not pointing_hit(tie, ~mask)
    empty = np.zeros((4, 4), bool)
    assert energy_inside(np.zeros((4, 4)), mask) == 0.0  # a map summing to 0
    assert cam_iou(np.zeros((4, 4)), empty) == 0.0  # 0 / 0 is defined as 0


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="mask must be boolean; got dtype float64"):
        energy_inside(np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"same shape; got \(4, 4\) and \(4, 5\)"):
        cam_iou(np.ones((4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="cam must be non-negative"):
        pointing_hit(-np.ones((4, 4)), np.ones((4, 4), bool))


def test_gaussian_baseline_peaks_at_the_centre() -> None:
    g = gaussian_baseline(9, 11)
    assert g.shape == (9, 11) and g.dtype == np.float32
    assert np.unravel_index(np.argmax(g), g.shape) == (4, 5) and g.max() == 1 and g.min() > 0
    np.testing.assert_allclose(g, g[::-1, ::-1])
    even = gaussian_baseline(8, 8)
    assert np.unravel_index(np.argmax(even), even.shape) == (3, 3)  # first of the four central pixels
    # a narrower Gaussian puts less weight on the border
    assert gaussian_baseline(9, 9, 0.1)[0, 4] < gaussian_baseline(9, 9, 0.5)[0, 4]
    with pytest.raises(ValueError, match="must be > 0"):
        gaussian_baseline(0, 4)


def test_localisation_table_per_class_and_baseline() -> None:
    h = w = 8
    lungs = np.zeros((3, h, w), bool)
    lungs[:, :, :3] = True  # "lung" on the left third
    lesions = np.zeros((3, h, w), bool)
    lesions[0, 5:, :2] = True  # only image 0 has a lesion
    cams = lungs.astype(np.float32)
    cams[0] = lesions[0]  # image 0 looks at its lesion exactly
    labels = np.array([0, 0, 2])
    table = localisation_table(cams, lungs, lesions, labels, source="real")
    assert list(table["class"]) == ["COVID-19", "Normal", "all"] and set(table["source"]) == {"real"}
    covid = table.set_index("class").loc["COVID-19"]
    assert covid["n_flat"] == 0 and table.set_index("class").loc["all", "n_flat"] == 0
    assert covid["n"] == 2 and covid["lung_energy_share"] == 1.0 and covid["lung_pointing_hit_rate"] == 1.0
    assert covid["lung_area_fraction"] == pytest.approx(3 / 8)
    assert covid["n_infection"] == 1 and covid["pointing_game_hit_rate"] == 1.0 and covid["iou@0.5"] == 1.0
    assert covid["lesion_area_fraction"] == pytest.approx(6 / 64)  # a random point's chance of a hit
    normal = table.set_index("class").loc["Normal"]
    assert (
        normal["n_infection"] == 0
        and np.isnan(normal["pointing_game_hit_rate"])
        and np.isnan(normal["iou@0.5"])
    )
    # the centred Gaussian cannot find off-centre lungs: lower share, and its maximum is outside them
    base = (
        localisation_table(
            np.broadcast_to(gaussian_baseline(h, w), (3, h, w)),
            lungs,
            lesions,
            labels,
            source="baseline: centred Gaussian",
        )
        .set_index("class")
        .loc["all"]
    )
    assert base["lung_energy_share"] < 0.5 and base["lung_pointing_hit_rate"] == 0.0
    flat = localisation_table(np.zeros_like(cams), lungs, lesions, labels, source="flat").set_index("class")
    assert flat.loc["all", "n_flat"] == 3 and flat.loc["all", "lung_energy_share"] == 0.0
    with pytest.raises(ValueError, match=r"lung_masks must be a boolean array of shape \(3, 8, 8\)"):
        localisation_table(cams, lungs[:2], lesions, labels, source="real")


def test_images_without_a_lung_mask_are_not_scored_zero() -> None:
    """A class-folder set has no lung masks (empty masks reach the table): nothing was measured, so the lung
    columns say NaN and n_lung 0, not a share of 0.0; an image with a mask beside them is scored alone."""
    h = w = 8
    cams = np.zeros((3, h, w), np.float32)
    cams[:, :, :3] = 1.0
    lungs = np.zeros((3, h, w), bool)
    lungs[2, :, :3] = True  # only the Normal image has a mask, and the map is inside it
    table = localisation_table(cams, lungs, None, np.array([0, 0, 2]), source="real").set_index("class")
    covid, normal, everything = (table.loc[c] for c in ("COVID-19", "Normal", "all"))
    assert covid["n_lung"] == 0 and covid["n"] == 2
    assert all(
        np.isnan(covid[c]) for c in ("lung_area_fraction", "lung_energy_share", "lung_pointing_hit_rate")
    )
    assert (
        normal["n_lung"] == 1 and normal["lung_energy_share"] == 1.0 and normal["lung_area_fraction"] == 3 / 8
    )
    assert everything["n_lung"] == 1 and everything["lung_energy_share"] == 1.0  # not (0 + 0 + 1) / 3


# ----------------------------------------------------------------------------------------------------
# inputs


def test_generated_cam_inputs_follow_the_manifest(tmp_path: Path) -> None:
    source = write_png(tmp_path / "qu" / "images" / "s.png", 100, size=16)
    lung = np.zeros((16, 16), np.uint8)
    lung[:, :8] = 255
    write_png(tmp_path / "qu" / "lung masks" / "s.png", lung)  # beside the source, as in COVID-QU-Ex
    items = [
        GeneratedItem(seed, target, str(source), "Normal", "latent", 0)
        for seed, target in ((3, "COVID-19"), (1, "COVID-19"), (2, "Normal"))
    ]
    gen = tmp_path / "gen"
    for item in items:
        write_png(gen / item_file(item), 10 * item.seed, size=16)
    run = {"model": "medsg", "checkpoint": "c.pt", "checkpoint_sha256": "0"}
    write_manifest(gen, manifest_rows(items, run))
    inputs = generated_cam_inputs(gen, 16, per_class=1)
    assert inputs.labels.tolist() == [0, 2]  # the lowest seed of each class, classes in canonical order
    torch.testing.assert_close(inputs.x[:, 0, 0, 0], torch.tensor([10 / 127.5 - 1, 20 / 127.5 - 1]))
    assert inputs.lung[:, :, :8].all() and not inputs.lung[:, :, 8:].any()  # the source's lung mask
    assert not inputs.infection.any()
    write_manifest(tmp_path / "none", manifest_rows([], run))
    with pytest.raises(
        FileNotFoundError, match=r"no generated images listed in .*none/manifest\.csv: run notebook 03"
    ):
        generated_cam_inputs(tmp_path / "none", 16, per_class=1)


# ----------------------------------------------------------------------------------------------------
# the study and Figure 1


def _study_inputs(n: int = 4, size: int = 64) -> dict[str, CamInputs]:
    lung = np.zeros((n, size, size), bool)
    lung[:, 16:48, 8:28] = True
    lesion = np.zeros_like(lung)
    lesion[: n // 2, 30:40, 12:20] = True
    x = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {"real": CamInputs(x, np.array([0, 1] * (n // 2)), lung, lesion)}


@pytest.mark.filterwarnings("ignore:every Grad-CAM map is flat")  # an untrained stock net at 2x2
@pytest.mark.parametrize(
    ("stem", "sizes"),
    [("torchvision", {"layer3": "4x4", "layer4": "2x2"}), ("fine", {"layer3": "16x16", "layer4": "8x8"})],
)
def test_cam_study_records_the_map_size_of_each_layer(stem: str, sizes: dict[str, str]) -> None:
    torch.manual_seed(0)
    methods = [("gradcam", "class"), ("gradcam", "class - Normal")]
    table, maps = cam_study(build_classifier(stem=stem).eval(), _study_inputs(), methods=methods)
    assert list(table.columns[:4]) == ["method", "target", "layer", "map_size"]
    for layer, size in sizes.items():
        assert set(table.loc[table["layer"] == layer, "map_size"]) == {size}
        assert maps[(f"gradcam, {layer}", "real")].shape == (4, 64, 64)
        assert maps[(f"gradcam, {layer} (class - Normal)", "real")].shape == (4, 64, 64)
    assert set(table["target"]) == {"class", "class - Normal", "-"}
    assert set(table.loc[table["layer"] == "-", "map_size"]) == {"64x64"}  # the baseline: image size
    result = {"stem": stem, "init": "scratch", "split": "test", "accuracy": 0.5, "img_size": 64}
    assert describe(result, table, "layer3") == (
        f"ResNet-18, {stem} stem, init scratch, test accuracy 0.50; layer3 map {sizes['layer3']} upsampled to 64 px"
    )


def test_figure1_measures_the_papers_maps_beside_the_profiles_choice() -> None:
    assert figure1_methods(("gradcam", "layer3", "class")) == [("gradcam", "class")]
    assert figure1_methods(("layercam", "layer4", "class - Normal")) == [
        ("gradcam", "class"),
        ("layercam", "class - Normal"),
    ]
    assert method_label("gradcam", "layer3", "class - Normal") == "gradcam, layer3 (class - Normal)"
    assert method_label("occlusion", "-") == "occlusion"


def test_fig1_marks_flat_maps_and_is_legible_at_its_natural_size(tmp_path: Path) -> None:
    inputs = _study_inputs()
    maps = np.zeros((4, 64, 64), np.float32)
    maps[0] = gaussian_baseline(64, 64)  # one real map, three flat ones
    path = save_fig1(inputs, {("layer3", "real"): maps}, "layer3", tmp_path / "fig1.png", per_row=2, dpi=50)
    with Image.open(path) as im:
        width, height = im.size
    # rows of two panels of 1.9 in plus the label column and colour bar, at 50 dpi: panels of ~95 pixels
    assert width == int((1.7 + 2 * 1.9 + 0.9) * 50) and height == int((1.1 + 2 * (1.9 + 0.25)) * 50)
    with pytest.raises(ValueError, match=r"no images of \['Normal'\] in any source"):
        save_fig1(inputs, {("layer3", "real"): maps}, "layer3", tmp_path / "x.png", classes=("Normal",))


@pytest.mark.parametrize("method", [*CAM_METHODS, OCCLUSION])
def test_every_cam_method_points_at_the_planted_bright_square(method: str) -> None:
    model = brightness_model().train()
    # a black background (0): the class score is positive, as Ablation-CAM's ratio of scores needs
    x = torch.zeros(2, 1, 16, 24)
    x[0, :, 2:6, 3:9] = 1.0  # top left
    x[1, :, 10:14, 15:21] = 1.0  # bottom right
    cams = compute_cams(model, x, targets=[0, 0], layer=model[0], method=method)
    assert cams.shape == (2, 16, 24) and cams.max() == 1
    for k, (rows, cols) in enumerate(((slice(2, 6), slice(3, 9)), (slice(10, 14), slice(15, 21)))):
        peak = np.unravel_index(cams[k].argmax(), cams[k].shape)
        assert rows.start - 1 <= peak[0] < rows.stop + 1 and cols.start - 1 <= peak[1] < cols.stop + 1
        inside = cams[k, rows, cols].mean()
        outside = cams[k].sum() - cams[k, rows, cols].sum()
        assert inside > 2 * outside / (16 * 24 - 24)  # the square holds the map's mass
    assert model.training and all(p.grad is None for p in model.parameters())


def test_an_unknown_cam_method_names_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"method='smoothgrad' is not a CAM method; choose one of 'gradcam', "
    ):
        compute_cams(brightness_model(), torch.zeros(1, 1, 8, 8), [0], method="smoothgrad")


def test_pointing_within_a_cell_and_the_lesion_energy_columns() -> None:
    cam = np.zeros((8, 8))
    cam[2, 2] = 1.0
    mask = np.zeros((8, 8), bool)
    mask[4:6, 4:6] = True  # two pixels away from the maximum, diagonally
    assert not pointing_hit(cam, mask) and not pointing_hit(cam, mask, tolerance=1)
    assert pointing_hit(cam, mask, tolerance=2)
    cams = np.stack([cam, mask.astype(float)])
    masks = np.stack([mask, mask])
    lung = np.ones((2, 8, 8), bool)
    table = localisation_table(cams, lung, masks, np.array([0, 0]), "hand", cell=2).set_index("class")
    assert table.loc["COVID-19", "pointing_game_hit_rate"] == 0.5  # the second map's maximum is in the lesion
    assert table.loc["COVID-19", "pointing_game_within_cell"] == 1.0
    assert table.loc["COVID-19", "lesion_energy_share"] == 0.5  # 0 for the first map, 1 for the second
    assert (
        "lesion_energy_share" not in localisation_table(cams, lung, masks, np.array([0, 0]), "hand").columns
    )


@pytest.mark.filterwarnings("ignore:every Grad-CAM map is flat")  # untrained networks: some maps are flat
def test_cam_methods_study_rows_cells_and_baseline() -> None:
    torch.manual_seed(0)
    models = [build_classifier(stem="fine").eval() for _ in range(2)]  # two "seeds"
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    lung = np.zeros((2, 32, 32), bool)
    lung[:, 4:28, 2:30] = True
    lesion = np.zeros((2, 32, 32), bool)
    lesion[:, 8:12, 6:10] = True
    inputs = {"real": CamInputs(x, np.array([0, 1]), lung, lesion)}
    table = cam_methods_study(models, inputs, ["gradcam", "occlusion"], layers=("layer3",))
    assert list(table.columns[: len(METHOD_KEYS) + 1]) == [*METHOD_KEYS, "classifier_seed"]
    assert set(table["target"]) == {"class", "-"} and table["seconds_per_image"].ge(0).all()
    per_seed = table[table["class"] == "all"].groupby("classifier_seed")["method"].apply(list).tolist()
    assert per_seed == [["gradcam", "occlusion", "baseline: centred Gaussian"]] * 2
    sizes = dict(zip(table["method"], table["map_size"], strict=False))
    assert sizes == {
        "gradcam": "8x8",
        "occlusion": "32x32",
        "baseline: centred Gaussian": "32x32",
    }  # fine stem
    assert table["lesion_area_fraction"].dropna().eq(16 / 1024).all()
    assert {"pointing_game_within_cell", "lesion_energy_share"} <= set(table.columns)
