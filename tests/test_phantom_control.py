"""The phantom control behind Figure 1: a phantom's lesion-free twin is the same patient without the lesions,
and the twins of the three classes carry no class signal, so a classifier that works on the phantoms must read
the lesions. The control is shown able to fail: a planted class marker in the twins is found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsg_lib.classify import evaluate_classifier, load_classifier, train_classifier
from medsg_lib.config import ClassifierConfig, PhantomConfig
from medsg_lib.data import LabelledImages, preprocess, to_tensor
from medsg_lib.data.phantom_render import render_phantom
from medsg_lib.data.phantoms import image_rng, render_split

COVID, NON_COVID, NORMAL = 0, 1, 2
SIZE = 64
# a 3-class control: 40 training and 32 test twins per class (rendered at 64 px, classified at 32)
CONTROL = PhantomConfig(root=Path("unused"), img_size=SIZE, num_train=40, num_val=1, num_test=32, seed=3)
CLS = ClassifierConfig(img_size=32, epochs=12, batch_size=16, lr=2e-3, init="scratch")
# accuracy of a classifier that cannot tell the classes apart on 96 balanced test images: Binomial(96, 1/3) / 96
# lies in [18/96, 47/96] = [0.1875, 0.49] with probability 0.999
CHANCE_BAND = (0.1875, 0.49)


def _pair(label: int, index: int) -> tuple:
    args = (label, SIZE)
    return (
        render_phantom(image_rng(5, "Train", label, index), *args),
        render_phantom(image_rng(5, "Train", label, index), *args, lesions=False),
    )


@pytest.mark.parametrize("label", [COVID, NON_COVID])
def test_twin_is_the_same_patient_without_the_lesions(label: int) -> None:
    for index in range(4):
        phantom, twin = _pair(label, index)
        assert phantom.infection_mask.any() and not twin.infection_mask.any()
        assert np.array_equal(phantom.lung_mask, twin.lung_mask)
        diff = np.abs(phantom.image.astype(np.int16) - twin.image.astype(np.int16))
        near = ndimage.binary_dilation(phantom.infection_mask, iterations=3)
        assert diff[near].mean() > 8 * max(diff[~near].mean(), 0.05)  # the change sits at the lesions
        assert (phantom.image.astype(np.int16) - twin.image)[phantom.infection_mask].mean() > 3  # denser


def test_a_normal_phantom_is_its_own_twin() -> None:
    phantom, twin = _pair(NORMAL, 0)
    assert np.array_equal(phantom.image, twin.image) and not twin.infection_mask.any()


def test_render_split_reproduces_the_written_phantoms_and_names_bad_splits() -> None:
    cfg = PhantomConfig(root=Path("unused"), img_size=32, num_train=2, num_val=1, num_test=1, seed=4)
    images, labels = render_split(cfg, "Val")
    assert images.shape == (3, 32, 32) and labels.tolist() == [0, 1, 2]
    expected = render_phantom(image_rng(4, "Val", 1, 0), 1, 32).image
    assert np.array_equal(images[1], expected)
    with pytest.raises(
        ValueError, match=r"split='test' has no phantoms; choose one of \('Train', 'Val', 'Test'\)"
    ):
        render_split(cfg, "test")


def _dataset(images: np.ndarray, labels: np.ndarray) -> LabelledImages:
    x = torch.stack([to_tensor(preprocess(im, CLS.img_size)) for im in images])
    return LabelledImages(x, torch.as_tensor(labels))


def _accuracy(train: LabelledImages, test: LabelledImages, run_dir: Path) -> float:
    torch.manual_seed(0)
    model, _ = load_classifier(train_classifier(CLS, train, run_dir, progress=False))
    return evaluate_classifier(model, test)["accuracy"]


@pytest.fixture(scope="module")
def twins() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: render_split(CONTROL, split, lesions=False) for split in ("Train", "Test")}


def _mark(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Plant a shortcut: a white 6x6 square in a class-dependent top corner region (like burned-in text)."""
    marked = images.copy()
    for im, label in zip(marked, labels, strict=True):
        im[2:8, 2 + 20 * label : 8 + 20 * label] = 255
    return marked


def test_a_classifier_trained_on_lesion_free_twins_is_at_chance(twins, tmp_path: Path) -> None:
    accuracy = _accuracy(_dataset(*twins["Train"]), _dataset(*twins["Test"]), tmp_path / "twins")
    assert CHANCE_BAND[0] <= accuracy <= CHANCE_BAND[1], accuracy


def test_the_control_catches_a_planted_class_marker(twins, tmp_path: Path) -> None:
    (train, y_train), (test, y_test) = twins["Train"], twins["Test"]
    accuracy = _accuracy(
        _dataset(_mark(train, y_train), y_train), _dataset(_mark(test, y_test), y_test), tmp_path / "marked"
    )
    assert accuracy > 0.9, accuracy


def test_the_same_classifier_learns_the_classes_from_the_lesions(tmp_path: Path) -> None:
    train, test = (render_split(CONTROL, split) for split in ("Train", "Test"))
    accuracy = _accuracy(_dataset(*train), _dataset(*test), tmp_path / "lesions")
    assert accuracy > CHANCE_BAND[1] + 0.1, accuracy


class _Calls(torch.nn.Module):
    """Calls every image class ``label`` (logits one-hot)."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.nn.functional.one_hot(torch.tensor(label), 3).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 3)


def test_lesion_removal_study_rows_and_layouts_without_twins() -> None:
    from medsg_lib.cam import lesion_removal_study

    small = PhantomConfig(root=Path("unused"), img_size=SIZE, num_train=1, num_val=1, num_test=3, seed=3)
    table = lesion_removal_study(_Calls(NON_COVID), "phantoms", small, "test", 32)
    assert table is not None and table["class"].tolist() == ["COVID-19", "Non-COVID", "Normal"]
    assert table["n"].tolist() == [3, 3, 3]
    for kind in ("images", "twins"):
        assert table[f"{kind} called Non-COVID"].tolist() == [1.0, 1.0, 1.0]
        assert table[f"{kind} called Normal"].tolist() == [0.0, 0.0, 0.0]
    assert lesion_removal_study(_Calls(NORMAL), "folders", small, "test", 32) is None  # real X-rays: no twin
    assert lesion_removal_study(_Calls(NORMAL), "covidqu", small, "test", 32) is None
