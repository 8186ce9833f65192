"""Figure layouts that must stay legible: the training figure shows its samples at their natural size."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import write_png

from medsg_lib.plots import save_training_figure


@pytest.mark.parametrize("shape", [(398, 266), (300, 1100)])  # a Med-StyleGAN2 grid; a wide paper-size grid
def test_training_samples_are_drawn_at_two_screen_pixels_per_image_pixel(tmp_path: Path, shape) -> None:
    grid = write_png(tmp_path / "step_0000010.png", np.full(shape, 128, np.uint8))
    log = [{"step": s, "d_real": 1.0 / s, "g_adv": float(s)} for s in (10, 20, 30)]
    fig = save_training_figure(log, grid, tmp_path / "fig.png", "run", sample_scale=2, dpi=100)
    samples = fig.axes[0]
    assert samples.get_title() == "fixed-input samples (step_0000010)"
    box = samples.get_window_extent()  # after drawing: the image's own box (equal aspect)
    assert box.width == pytest.approx(2 * shape[1], abs=2) and box.height == pytest.approx(
        2 * shape[0], abs=2
    )
    assert [ax.get_title() for ax in fig.axes[1:]] == ["discriminator loss terms", "generator loss terms"]
    plt.close(fig)


def test_the_augmentation_probability_is_drawn_on_the_right_axis(tmp_path: Path) -> None:
    log = [{"step": s, "d_real": 1.0, "g_adv": 1.0, "ada_p": s / 100} for s in (10, 20, 30)]
    fig = save_training_figure(log, None, tmp_path / "fig.png", "run")
    [p_axis] = [ax for ax in fig.axes if ax.get_ylabel() == "ADA p (dashed)"]
    assert p_axis.get_ylim() == (0, 1)
    np.testing.assert_allclose(p_axis.lines[0].get_ydata(), [0.1, 0.2, 0.3])
    no_ada = save_training_figure(log[:0] + [{"step": 1, "d_real": 1.0}], None, tmp_path / "b.png", "run")
    assert not [ax for ax in no_ada.axes if ax.get_ylabel()]
    plt.close("all")


def test_learning_curves_draw_the_seed_spread_at_the_profiles_iteration_count(tmp_path: Path) -> None:
    import pandas as pd

    from medsg_lib.plots import save_learning_curves

    rows = [("medsg", "Med-StyleGAN2", "medsg", s, m, v, 3) for s, v in ((100, 9.0), (200, 7.5), (400, 7.4))
            for m in ("frd", "msssim")] + [("dcgan", "DCGAN", "dcgan", 200, "frd", 7.0, 1)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["curve", "label", "model", "step", "metric", "value", "n_classes"])
    fig = save_learning_curves(
        frame, {"Med-StyleGAN2": 200, "DCGAN": 200}, tmp_path / "f.png", {"medsg": 0.3}
    )
    frd, msssim = fig.axes
    [bar] = frd.containers  # only the model with a spread, only on the FRD panel
    np.testing.assert_allclose(bar.lines[2][0].get_segments()[0], [[200, 7.2], [200, 7.8]])
    assert not msssim.containers and "+-1 seed sd of FRD" in fig._suptitle.get_text()
    assert (tmp_path / "f.png").is_file()
    plt.close(fig)
