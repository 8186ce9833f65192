"""What translations change: lung opacity before and after, per target and source class (hand-made files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_png
from torch import nn

from medsg_lib.config import DataConfig
from medsg_lib.data.covidqu import sibling_lung_mask
from medsg_lib.data.records import XrayRecord
from medsg_lib.manifest import GeneratedItem, item_file, manifest_rows, write_manifest
from medsg_lib.translation import (
    has_lung_masks,
    lung_mean,
    predicted_classes,
    real_lung_means,
    translation_rows,
    translation_study,
    translation_table,
)

SIZE = 16


class ConstantModel(nn.Module):
    """Calls every image class ``label``."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(label), 3).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 3)


def _source(root: Path, name: str, value: int) -> Path:
    """A source image of constant ``value`` whose lung mask is the left half (COVID-QU-Ex layout)."""
    lung = np.zeros((SIZE, SIZE), np.uint8)
    lung[:, : SIZE // 2] = 255
    write_png(root / "lung masks" / f"{name}.png", lung)
    return write_png(root / "images" / f"{name}.png", value, size=SIZE)


def _generated(tmp_path: Path) -> Path:
    normal = _source(tmp_path / "qu" / "Normal", "n", 60)
    non_covid = _source(tmp_path / "qu" / "Non-COVID", "p", 100)
    items = [
        GeneratedItem(0, "COVID-19", str(normal), "Normal", "latent", 0),
        GeneratedItem(1, "COVID-19", str(normal), "Normal", "latent", 1),
        GeneratedItem(2, "COVID-19", str(non_covid), "Non-COVID", "latent", 0),
        GeneratedItem(3, "Normal", str(non_covid), "Non-COVID", "latent", 0),
    ]
    gen = tmp_path / "gen"
    for item, left in zip(items, (80, 90, 110, 70), strict=True):
        image = np.full((SIZE, SIZE), 200, np.uint8)  # the right half (outside the lungs) never counts
        image[:, : SIZE // 2] = left
        write_png(gen / item_file(item), image)
    write_manifest(
        gen, manifest_rows(items, {"model": "medsg", "checkpoint": "c.pt", "checkpoint_sha256": "0"})
    )
    return gen


def test_lung_mean_and_empty_inputs() -> None:
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = True
    assert lung_mean(img, mask) == 0.5 and np.isnan(lung_mean(img, np.zeros_like(mask)))
    assert predicted_classes(ConstantModel(0), []) == []
    empty = real_lung_means([], SIZE, ConstantModel(0))
    assert list(empty.columns) == ["class", "lung_mean", "predicted"] and empty.empty


def test_translation_rows_measure_inside_the_source_lungs(tmp_path: Path) -> None:
    rows = translation_rows(_generated(tmp_path), SIZE, ConstantModel(1))
    assert rows["class"].tolist() == ["COVID-19"] * 3 + ["Normal"]
    assert rows["source_lung_mean"].tolist() == [60, 60, 100, 100]
    assert rows["translation_lung_mean"].tolist() == [80, 90, 110, 70]
    assert rows["delta"].tolist() == [20, 30, 10, -30]
    assert set(rows["predicted"]) == {"Non-COVID"}
    assert translation_rows(_generated(tmp_path / "again"), SIZE)["predicted"].isna().all()


def test_translation_table_groups_by_target_and_source_beside_the_real_classes(tmp_path: Path) -> None:
    rows = translation_rows(_generated(tmp_path), SIZE, ConstantModel(0))
    real_img = _source(tmp_path / "real" / "COVID-19", "r", 120)
    record = XrayRecord(real_img, 0, "COVID-19", "test", sibling_lung_mask(real_img))
    real = real_lung_means([record], SIZE, ConstantModel(0))
    table = translation_table(rows, real).set_index(["class", "source"])
    from_normal = table.loc[("COVID-19", "translated from Normal")]
    assert from_normal["n"] == 2 and from_normal["lung_mean"] == 85 and from_normal["delta"] == 25
    assert from_normal["called COVID-19"] == 1.0 and from_normal["called Normal"] == 0.0
    assert table.loc[("Normal", "translated from Non-COVID"), "delta"] == -30
    real_row = table.loc[("COVID-19", "real")]
    assert real_row["lung_mean"] == 120 and np.isnan(real_row["delta"])
    assert [c for c, _ in table.index] == ["COVID-19"] * 3 + ["Normal"]  # canonical class order


def test_translation_study_is_the_table_of_every_translator_or_none(tmp_path: Path) -> None:
    real_img = _source(tmp_path / "real" / "COVID-19", "r", 120)
    records = [XrayRecord(real_img, 0, "COVID-19", "test", sibling_lung_mask(real_img))]
    gen = {"A": _generated(tmp_path / "a")}
    covidqu = DataConfig(layout="covidqu", root=tmp_path, img_size=SIZE)
    study = translation_study(gen, records, covidqu, ConstantModel(0))
    expected = translation_table(
        translation_rows(gen["A"], SIZE, ConstantModel(0)).assign(generator="A"),
        real_lung_means(records, SIZE, ConstantModel(0)),
    )
    assert study is not None and study.equals(expected) and set(study["generator"]) == {"A", "real"}
    assert translation_study({}, records, covidqu, ConstantModel(0)) is None  # no translating model
    folders = DataConfig(
        layout="folders", root=tmp_path, img_size=SIZE
    )  # class folders: no lung masks to measure in
    assert translation_study(gen, records, folders, ConstantModel(0)) is None


def test_no_source_with_a_lung_mask_is_a_clear_error(tmp_path: Path) -> None:
    item = GeneratedItem(0, "COVID-19", str(tmp_path / "nowhere" / "images" / "a.png"), "Normal", "latent", 0)
    write_png(tmp_path / "gen" / item_file(item), 10, size=SIZE)
    write_manifest(
        tmp_path / "gen", manifest_rows([item], {"model": "m", "checkpoint": "c", "checkpoint_sha256": "0"})
    )
    with pytest.raises(
        FileNotFoundError, match=r"no translation in .*gen/manifest\.csv has a source with a lung mask"
    ):
        translation_rows(tmp_path / "gen", SIZE)


def test_only_layouts_with_lung_masks_are_measured() -> None:
    assert has_lung_masks("phantoms") and has_lung_masks("covidqu") and not has_lung_masks("folders")


def test_a_three_channel_classifier_gets_the_gray_image_three_times() -> None:
    class Rgb(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 1, 1, bias=False)
            with torch.no_grad():
                self.conv1.weight.copy_(torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1))  # R - B

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = self.conv1(x).mean(dim=(1, 2, 3))  # 0 for a gray image repeated
            return torch.stack([v, v + 1, v], dim=1)

    assert predicted_classes(Rgb(), [np.full((SIZE, SIZE), 200, np.uint8)]) == ["Non-COVID"]
