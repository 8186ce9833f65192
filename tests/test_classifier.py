"""The ResNet-18 classifier, its trainer, checkpoint and evaluation (tiny, seeded, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.models import resnet18

from medsg_lib.checkpoint import CheckpointError
from medsg_lib.classify import (
    ClassifierCheckpointError,
    augment_batch,
    class_weights,
    classification_metrics,
    ensure_classifier,
    evaluate_classifier,
    load_classifier,
    predict,
    resolve_init,
    train_classifier,
)
from medsg_lib.config import ClassifierConfig, DataConfig
from medsg_lib.data import LabelledImages
from medsg_lib.files import LOG_NAME, read_jsonl
from medsg_lib.metrics.weights import MissingWeightsError
from medsg_lib.models.classifier import (
    IMAGENET_RESNET18_FILE,
    adapt_conv1_weight,
    build_classifier,
    classifier_features,
    find_imagenet_weights,
    stage_map_size,
    target_layer,
)
from medsg_lib.plots import save_confusion_figure


@pytest.fixture
def fake_imagenet(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random-valued ResNet-18 state dict under torchvision's ImageNet file name (not the real file)."""
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / IMAGENET_RESNET18_FILE
    torch.save(state, path)
    return path, state


def squares_dataset(num_per_class: int = 8, size: int = 32, seed: int = 0) -> LabelledImages:
    """Separable toy set: a bright square on a dark noisy field, its position set by the class."""
    g = torch.Generator().manual_seed(seed)
    corners = [(4, 4), (4, size - 12), (size - 12, size // 2 - 4)]
    xs, ys = [], []
    for label, (r, c) in enumerate(corners):
        for _ in range(num_per_class):
            x = -0.8 + 0.2 * torch.rand(1, size, size, generator=g)
            x[:, r : r + 8, c : c + 8] = 0.8
            xs.append(x)
            ys.append(label)
    return LabelledImages(torch.stack(xs), torch.tensor(ys, dtype=torch.int64))


class FixedPredictions(nn.Module):
    """Predicts the class written in pixel (0, 0) of each image (for exact evaluation tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * F.one_hot(x[:, 0, 0, 0].long(), 3).float() + self.dummy


# ----------------------------------------------------------------------------------------------------
# model


@pytest.mark.parametrize("size", [32, 64])
def test_classifier_shapes(size: int) -> None:
    torch.manual_seed(0)
    model = build_classifier(in_channels=1, num_classes=3).eval()
    x = torch.rand(2, 1, size, size) * 2 - 1
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert model(x).shape == (2, 3)
    feats = classifier_features(model, x)
    assert feats.shape == (2, 512)
    # the features are exactly what the head sees
    torch.testing.assert_close(model.fc(feats), model(x))
    assert target_layer(model) is model.layer4[-1]


@pytest.mark.parametrize("stem", ["torchvision", "fine"])
def test_stage_map_sizes_match_the_network(stem: str) -> None:
    model = build_classifier(stem=stem).eval()
    seen: dict[str, int] = {}
    hooks = [
        getattr(model, name)[-1].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.shape[-1])
        )
        for name in ("layer1", "layer2", "layer3", "layer4")
    ]
    with torch.no_grad():
        model(torch.zeros(1, 1, 64, 64))
    for hook in hooks:
        hook.remove()
    assert seen == {name: stage_map_size(model, name, 64) for name in seen}
    assert seen["layer3"] == (16 if stem == "fine" else 4)  # Figure 1 needs >= 16x16 at 64 px


def test_the_fine_stem_takes_the_same_imagenet_weights(fake_imagenet: tuple[Path, dict]) -> None:
    path, state = fake_imagenet
    fine = build_classifier(in_channels=1, pretrained_path=path, stem="fine")
    assert fine.conv1.stride == (1, 1) and isinstance(fine.maxpool, nn.Identity)
    assert torch.equal(fine.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(fine.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    with pytest.raises(
        ValueError, match="stem='coarse' is not supported; choose one of 'torchvision', 'fine'"
    ):
        build_classifier(stem="coarse")


def test_conv1_is_the_sum_over_rgb_of_imagenet_weights(fake_imagenet: tuple[Path, dict]) -> None:
    path, state = fake_imagenet
    model = build_classifier(in_channels=1, pretrained_path=path)
    assert torch.equal(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert model.fc.weight.shape == (3, 512)
    rgb = build_classifier(in_channels=3, pretrained_path=path)
    assert torch.equal(rgb.conv1.weight, state["conv1.weight"])


def test_gray_input_matches_rgb_repeat_after_adaptation(fake_imagenet: tuple[Path, dict]) -> None:
    path, _ = fake_imagenet
    gray, rgb = (
        build_classifier(in_channels=1, pretrained_path=path),
        build_classifier(in_channels=3, pretrained_path=path),
    )
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(gray.conv1(x), rgb.conv1(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)


def test_bad_model_arguments() -> None:
    with pytest.raises(ValueError, match=r"in_channels=2 is not supported; choose 1 \(grayscale\) or 3"):
        build_classifier(in_channels=2)
    with pytest.raises(ValueError, match="arch='vgg' is not supported"):
        build_classifier(arch="vgg")
    with pytest.raises(ValueError, match=r"expected an RGB conv1 weight of shape \(out, 3, k, k\)"):
        adapt_conv1_weight(torch.zeros(64, 1, 7, 7), 1)
    with pytest.raises(ValueError, match="'layer5' is not a ResNet stage"):
        target_layer(build_classifier(), "layer5")


def test_weights_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_imagenet) -> None:
    monkeypatch.delenv("MEDSG_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    assert find_imagenet_weights() is None
    assert resolve_init(ClassifierConfig(init="auto")) == (None, "scratch")
    with pytest.raises(
        MissingWeightsError, match="init='imagenet' but resnet18-f37072fd.pth was found neither"
    ):
        resolve_init(ClassifierConfig(init="imagenet"))
    with pytest.raises(MissingWeightsError, match="ImageNet ResNet-18 weights not found at"):
        find_imagenet_weights(tmp_path / "nowhere.pth")
    path, _ = fake_imagenet
    monkeypatch.setenv("MEDSG_WEIGHTS_DIR", str(path.parent))
    # found, but a random file: labelled, never passed off as ImageNet
    assert resolve_init(ClassifierConfig(init="auto")) == (path, "imagenet-unverified")
    assert resolve_init(ClassifierConfig(init="scratch")) == (None, "scratch")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="ClassifierConfig.init='random' is not allowed"):
        ClassifierConfig(init="random")
    with pytest.raises(ValueError, match="ClassifierConfig.epochs=0 must be > 0"):
        ClassifierConfig(epochs=0)


# ----------------------------------------------------------------------------------------------------
# training


def test_class_weights() -> None:
    torch.testing.assert_close(class_weights(np.array([0, 0, 1, 2])), torch.tensor([2 / 3, 4 / 3, 4 / 3]))
    torch.testing.assert_close(class_weights(np.array([0, 1, 2])), torch.ones(3))
    with pytest.raises(ValueError, match=r"no example of class\(es\) \['Normal'\]"):
        class_weights(np.array([0, 1, 1]))


def test_augment_batch_is_seeded_bounded_and_identity_at_zero() -> None:
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= -1 and a.max() <= 1 and not torch.allclose(a, x)
    same = augment_batch(x, torch.Generator(), 0.0, 0.0, 0.0, 0.0, 0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def _tiny_cfg(**kw) -> ClassifierConfig:
    base = dict(
        img_size=32, epochs=3, batch_size=8, lr=1e-3, seed=0, init="scratch", augment=False, device="cpu"
    )
    return ClassifierConfig(**{**base, **kw})


def test_training_lowers_loss_and_writes_run_dir(tmp_path: Path) -> None:
    ckpt = train_classifier(
        _tiny_cfg(), squares_dataset(), tmp_path / "run", val_set=squares_dataset(2, seed=1), progress=False
    )
    assert ckpt == tmp_path / "run" / "classifier.pt"
    log = read_jsonl(tmp_path / "run" / LOG_NAME)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert {"acc", "val_acc", "val_macro_f1", "images_per_s"} <= set(log[0]) and log[0]["init"] == "scratch"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["init"] == "scratch" and config["classifier"]["epochs"] == 3
    assert config["class_counts"] == [8, 8, 8] and config["class_weights"] == [1.0, 1.0, 1.0]


def test_best_val_epoch_is_saved_and_batchnorm_is_recalibrated(tmp_path: Path) -> None:
    train = squares_dataset(8)
    ckpt = train_classifier(
        _tiny_cfg(), train, tmp_path / "run", val_set=squares_dataset(2, seed=1), progress=False
    )
    scores = [r["val_macro_f1"] for r in read_jsonl(tmp_path / "run" / LOG_NAME)]
    raw = torch.load(ckpt, weights_only=True)
    assert (
        raw["selected_epoch"] == 1 + int(np.argmax(scores))
        and raw["selection"] == "epoch of best val macro-F1"
    )
    # BatchNorm's running mean is the exact mean of its input over the (un-augmented) training set:
    # three equal batches of 8, averaged cumulatively by update_bn
    model, _ = load_classifier(ckpt)
    with torch.no_grad():
        h = model.conv1(train.x)  # (24, 64, 16, 16): bn1's input
    torch.testing.assert_close(model.bn1.running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_a_checkpoint_naming_the_torchvision_stem_imagenet_still_loads(tmp_path: Path) -> None:
    from medsg_lib.checkpoint import load_checkpoint, save_checkpoint
    from medsg_lib.classify.checkpoint import CLASSIFIER_FORMAT, LEGACY_STEM

    ckpt = train_classifier(_tiny_cfg(epochs=1), squares_dataset(2), tmp_path, progress=False)
    state = load_checkpoint(ckpt, fmt=CLASSIFIER_FORMAT)
    assert state["config"]["stem"] == "torchvision"
    state["config"]["stem"] = LEGACY_STEM
    save_checkpoint(ckpt, state, fmt=CLASSIFIER_FORMAT)
    model, info = load_classifier(ckpt)
    assert info["config"].stem == "torchvision" and model.conv1.stride == (2, 2)


def test_a_fine_stem_classifier_trains_and_loads_back_with_its_stem(tmp_path: Path) -> None:
    ckpt = train_classifier(_tiny_cfg(epochs=1, stem="fine"), squares_dataset(2), tmp_path, progress=False)
    model, info = load_classifier(ckpt)
    assert info["config"].stem == "fine" and model.conv1.stride == (1, 1)
    assert stage_map_size(model, "layer3", 32) == 8
    with pytest.raises(ValueError, match="stem"):
        ClassifierConfig(stem="coarse")


def test_training_is_deterministic(tmp_path: Path) -> None:
    data = squares_dataset(4)
    cfg = _tiny_cfg(epochs=1, batch_size=4, augment=True)
    a = torch.load(train_classifier(cfg, data, tmp_path / "a", progress=False), weights_only=True)["model"]
    b = torch.load(train_classifier(cfg, data, tmp_path / "b", progress=False), weights_only=True)["model"]
    c = torch.load(
        train_classifier(
            _tiny_cfg(epochs=1, batch_size=4, augment=True, seed=1), data, tmp_path / "c", progress=False
        ),
        weights_only=True,
    )["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_training_rejects_wrong_image_size_and_unlabelled_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"training images have shape \(1, 32, 32\), expected \(C, 64, 64\)"):
        train_classifier(_tiny_cfg(img_size=64), squares_dataset(2), tmp_path, progress=False)
    data = squares_dataset(2)
    with pytest.raises(TypeError, match=r"^TensorDataset has no `labels` attribute"):
        train_classifier(_tiny_cfg(), TensorDataset(data.x, data.labels), tmp_path, progress=False)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    ckpt = train_classifier(_tiny_cfg(epochs=1), squares_dataset(3), tmp_path / "run", progress=False)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["format"] == "medsg-classifier-v1" and raw["init"] == "scratch" and raw["in_channels"] == 1
    assert list(raw) == [
        "format",
        "model",
        "config",
        "init",
        "class_names",
        "in_channels",
        "num_classes",
        "epochs",
        "selected_epoch",
        "selection",
        "sha256",
    ]  # fmt: skip (sha256: the content digest every checkpoint stores, medsg_lib.checkpoint)
    model, meta = load_classifier(ckpt)
    assert not model.training and meta["config"] == _tiny_cfg(epochs=1) and "model" not in meta
    assert all(torch.equal(v, raw["model"][k]) for k, v in model.state_dict().items())
    x = squares_dataset(1).x
    probs = predict(model, x)
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_load_refuses_pickled_modules_and_other_files(tmp_path: Path) -> None:
    assert ClassifierCheckpointError is CheckpointError  # one error for every medsg checkpoint
    torch.save(build_classifier(), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match=r"module\.pt is refused for safety: it holds pickled Python"):
        load_classifier(tmp_path / "module.pt")
    torch.save({"format": "medsg-ckpt-v1"}, tmp_path / "gan.pt")
    with pytest.raises(
        CheckpointError,
        match=r"gan\.pt is not a medsg-classifier-v1 checkpoint: format 'medsg-ckpt-v1', expected "
        r"'medsg-classifier-v1'$",
    ):
        load_classifier(tmp_path / "gan.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "gan.pt").read_bytes()[:100])
    with pytest.raises(
        CheckpointError, match=r"cut\.pt could not be read as a torch checkpoint \(truncated\?\)"
    ):
        load_classifier(tmp_path / "cut.pt")


# ----------------------------------------------------------------------------------------------------
# evaluation


def test_evaluate_exact_confusion_accuracy_and_macro_f1() -> None:
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    x = torch.zeros(9, 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(y_pred, dtype=torch.float32)
    result = evaluate_classifier(FixedPredictions(), TensorDataset(x, torch.tensor(y_true)), batch_size=4)
    assert result["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert result["accuracy"] == pytest.approx(6 / 9)
    # precision equals recall per class here, so F1_k = recall_k
    assert result["recall"] == pytest.approx({"COVID-19": 2 / 3, "Non-COVID": 1 / 2, "Normal": 3 / 4})
    assert result["macro_f1"] == pytest.approx(23 / 36)
    assert result["n_per_class"] == {"COVID-19": 3, "Non-COVID": 2, "Normal": 4} and result["n"] == 9


def test_metrics_with_an_absent_class() -> None:
    result = classification_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert np.isnan(result["recall"]["Normal"]) and result["n_per_class"]["Normal"] == 0
    assert result["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="equal-length and non-empty"):
        classification_metrics(np.array([0, 1]), np.array([0]))


def test_confusion_figure_pixel_size(tmp_path: Path) -> None:
    result = classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    path = save_confusion_figure(result, tmp_path / "fig" / "confusion.png", figsize=(4.8, 4.0), dpi=50)
    with Image.open(path) as im:
        assert im.size == (240, 200)


def test_bf16_channels_last_training_records_its_precision_and_saves_the_default_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsg_lib import devices

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: True)
    data, val = squares_dataset(4), squares_dataset(2, seed=1)
    fp32 = train_classifier(_tiny_cfg(epochs=2), data, tmp_path / "fp32", val_set=val, progress=False)
    cfg = _tiny_cfg(epochs=2, amp="auto", channels_last=True)
    bf16 = train_classifier(cfg, data, tmp_path / "bf16", val_set=val, progress=False)
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())["classifier"]
    assert config["amp"] == "bf16" and config["channels_last"] is True  # resolved, never "auto"
    a, b = (torch.load(p, weights_only=True)["model"] for p in (fp32, bf16))
    assert all(v.is_contiguous() for v in b.values())  # saved in the default layout
    assert not torch.equal(a["fc.weight"], b["fc.weight"])  # autocast did change the arithmetic
    log_a, log_b = (read_jsonl(tmp_path / n / LOG_NAME) for n in ("fp32", "bf16"))
    # same data and seeds: the first epoch's loss is close; the bf16 run learns as the float32 one does
    assert log_b[0]["loss"] == pytest.approx(log_a[0]["loss"], rel=0.05)
    assert log_b[-1]["loss"] < 0.5 * log_b[0]["loss"] and log_a[-1]["loss"] < 0.5 * log_a[0]["loss"]


def test_ensure_classifier_reuses_an_auto_run_on_the_same_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medsg_lib.classify.stage as stage
    from medsg_lib import devices

    trained = []

    def counting_train(*args, **kwargs):
        trained.append(1)
        return train_classifier(*args, **kwargs)

    monkeypatch.setattr(stage, "train_classifier", counting_train)
    monkeypatch.setattr(
        stage, "build_dataset", lambda cfg, split, *a, **k: squares_dataset(2, seed=len(split))
    )
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: True)
    cfg, data_cfg = _tiny_cfg(epochs=1, amp="auto"), DataConfig(img_size=32)
    _, result = ensure_classifier(cfg, data_cfg, tmp_path, progress=False)
    assert result["train_amp"] == "bf16" and len(trained) == 1
    ensure_classifier(cfg, data_cfg, tmp_path, progress=False)
    assert len(trained) == 1  # "auto" resolved the same way: reused
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: False)
    _, result = ensure_classifier(cfg, data_cfg, tmp_path, progress=False)
    assert result["train_amp"] == "off" and len(trained) == 2  # a machine that would train in fp32 retrains
    config_path = tmp_path / "config.json"
    saved = json.loads(config_path.read_text())
    saved["batchnorm"] = "running statistics re-estimated on the un-augmented training set after each epoch"
    config_path.write_text(json.dumps(saved))
    ensure_classifier(cfg, data_cfg, tmp_path, progress=False)
    assert len(trained) == 3  # a run whose BatchNorm statistics were made another way is retrained


def test_bf16_batchnorm_statistics_are_those_of_the_bf16_forward_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsg_lib import devices

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda flags=None: True)
    train = squares_dataset(8)
    cfg = _tiny_cfg(epochs=1, amp="auto", channels_last=True)
    model, _ = load_classifier(train_classifier(cfg, train, tmp_path, progress=False))
    with torch.no_grad():
        h32 = model.conv1(train.x)  # bn1's input in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h16 = model.conv1(train.x.contiguous(memory_format=torch.channels_last))
    assert h16.dtype == torch.bfloat16
    # the running mean is the bf16 activations' mean (three equal batches, averaged cumulatively) ...
    torch.testing.assert_close(model.bn1.running_mean, h16.float().mean(dim=(0, 2, 3)), rtol=1e-3, atol=1e-4)
    # ... which differs from the float32 one only by bf16's rounding (8 bits of mantissa)
    torch.testing.assert_close(model.bn1.running_mean, h32.mean(dim=(0, 2, 3)), rtol=2e-2, atol=2e-2)
    assert not torch.equal(model.bn1.running_mean, h32.mean(dim=(0, 2, 3)))
