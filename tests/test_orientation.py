"""The orientation check of generated images (ADA must not leak flips or turns): on rendered phantoms, held-out
images are oriented as the training ones, mirrored or upside-down copies are caught."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from medsg_lib.config import PhantomConfig
from medsg_lib.data.phantoms import render_split
from medsg_lib.metrics.orientation import orientation_indices, orientation_table


@pytest.fixture(scope="module")
def phantoms() -> tuple[torch.Tensor, torch.Tensor]:
    cfg = PhantomConfig(img_size=64, num_train=20, num_val=10, num_test=1)
    train, val = (
        torch.from_numpy(render_split(cfg, s)[0]).float()[:, None] / 127.5 - 1 for s in ("Train", "Val")
    )
    return train, val


def test_held_out_phantoms_are_oriented_and_mirrors_are_caught(phantoms) -> None:
    train, val = phantoms
    table = orientation_table(
        train,
        {
            "held-out": val,
            "mirrored": val.flip(-1),
            "upside down": val.flip(-2),
            "half mirrored": torch.cat([val[:15], val[15:].flip(-1)]),
        },
    )
    share = table.pivot(index="set", columns="index", values="share_as_training")
    assert share.loc["held-out", "left_right"] >= 0.8 and share.loc["held-out", "top_bottom"] == 1.0
    assert share.loc["mirrored", "left_right"] <= 0.2 and share.loc["mirrored", "top_bottom"] == 1.0
    assert share.loc["upside down", "top_bottom"] == 0.0
    assert 0.3 <= share.loc["half mirrored", "left_right"] <= 0.7
    assert list(table.columns) == ["set", "index", "n", "median", "share_as_training"]
    assert isinstance(table, pd.DataFrame) and set(table["n"]) == {30}


def test_indices_by_hand() -> None:
    template = torch.zeros(1, 2, 2)
    template[0, :, 1] = 1.0  # bright right column
    x = torch.stack([template, template.flip(-1)])  # oriented, mirrored
    idx = orientation_indices(x, template)
    torch.testing.assert_close(
        idx["left_right"], torch.tensor([2.0, -2.0])
    )  # corr +1 - (-1), and the reverse
    torch.testing.assert_close(idx["top_bottom"], torch.tensor([0.0, 0.0]))  # symmetric top to bottom
