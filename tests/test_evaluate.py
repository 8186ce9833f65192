"""evaluate_target / real_vs_real_baseline on tiny folders (six 32 px PNGs per class and split), offline.

No pretrained file exists in the temporary TORCH_HOME and downloads are forbidden (a spy replaces
``torch.hub.download_url_to_file``), so the Inception and LPIPS records must say "missing weights" while the
domain metrics (a fixed random projection as feature network) are computed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medsg_lib import evaluate
from medsg_lib.config import DataConfig, MetricsConfig
from medsg_lib.evaluate import (
    REAL_BASELINE_MODEL,
    EvalTarget,
    bootstrap_skip_reason,
    evaluate_target,
    real_images,
    real_vs_real_baseline,
)
from medsg_lib.generate import GeneratedItem, manifest_rows, write_manifest
from medsg_lib.metrics import REQUIRED_KEYS, features, read_records

SIZE = 32
NUM = 6  # images per class and split, and generated images per set
FOLDERS = {"covid": 60, "non_covid_infection": 128, "normal": 190}  # folder -> mean gray level
METRICS = MetricsConfig(kid_subsets=3, kid_subset_size=4, bootstrap=5)
DOMAIN_METRICS = ("fd_proj", "kid_proj", "precision", "recall", "density", "coverage")


class CountingProjection(nn.Module):
    """A fixed random linear map (1, 32, 32) -> 4 features that counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(SIZE * SIZE, 4)
        with torch.no_grad():
            self.proj.weight.copy_(
                torch.randn(4, SIZE * SIZE, generator=torch.Generator().manual_seed(0)) / SIZE
            )
            self.proj.bias.zero_()
        self.num_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 32, 32) in [-1, 1]
        self.num_images += x.shape[0]
        return self.proj(x.flatten(1))


def write_pngs(folder: Path, num: int, mean: int, seed: int, names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num):
        pixels = np.clip(rng.normal(mean, 40, size=(SIZE, SIZE)), 0, 255).astype(np.uint8)
        path = folder / (names[i] if names else f"{i:06d}.png")
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """An empty TORCH_HOME, no MEDSG_WEIGHTS_DIR, and a spy that fails any download attempt."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("MEDSG_WEIGHTS_DIR", raising=False)
    calls: list[str] = []

    def no_download(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise AssertionError(f"a download was attempted: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return calls


@pytest.fixture
def data_cfg(tmp_path: Path) -> DataConfig:
    root = tmp_path / "real"
    for split_seed, split in enumerate(("train", "test")):
        for k, (folder, mean) in enumerate(FOLDERS.items()):
            write_pngs(root / split / folder, NUM, mean, seed=10 * split_seed + k)
    return DataConfig(layout="folders", root=root, img_size=SIZE, cache_dir=tmp_path / "data_cache")


def run(
    target: EvalTarget, data_cfg: DataConfig, tmp_path: Path, net: nn.Module | None, **kwargs
) -> list[dict]:
    return evaluate_target(
        target,
        data_cfg,
        kwargs.pop("metrics_cfg", METRICS),
        tmp_path / "records.jsonl",
        feature_fn=net,
        feature_name="proj",
        cache_dir=tmp_path / "stats",
        download=False,
        **kwargs,
    )


def by_metric(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["metric"], r["protocol"]): r for r in records}


def test_offline_records_missing_weights_and_domain_metrics(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path
) -> None:
    fake_dir = tmp_path / "generated" / "all"
    write_pngs(fake_dir, NUM, mean=128, seed=99)
    target = EvalTarget("dcgan", "COVID-19", fake_dir, "ckpt-abc")
    records = run(target, data_cfg, tmp_path, CountingProjection())

    assert offline == []
    got = by_metric(records)
    for metric in ("fid", "kid"):
        assert (
            got[(metric, "pytorch-fid")]["status"] == "missing weights: pt_inception-2015-12-05-6726825d.pth"
        )
        assert got[(metric, "paper")]["status"] == "missing weights: inception_v3_google-0cc3c7bd.pth"
        assert got[(metric, "pytorch-fid")]["value"] is None
    (lpips,) = [r for r in records if r["metric"] == "lpips"]
    assert lpips["status"] == "missing weights: alexnet-owt-7be5be79.pth" and lpips["value"] is None
    for metric in DOMAIN_METRICS:
        rec = got[(metric, "domain:proj")]
        assert rec["status"] == "ok", rec
        assert math.isfinite(rec["value"])
        assert (rec["n_real"], rec["n_fake"]) == (NUM, NUM)
        assert (rec["class"], rec["model"], rec["checkpoint"], rec["seed"]) == (
            "COVID-19",
            "dcgan",
            "ckpt-abc",
            0,
        )
    assert got[("fd_proj", "domain:proj")]["value"] > 1.0  # fakes at gray 128 vs COVID-19 reals at gray 60
    fd = got[("fd_proj", "domain:proj")]
    assert fd["ci_low"] <= fd["ci_high"]  # 4-d features, n = 6: the bootstrap rule allows a CI
    assert "state_dict sha256:" in fd["weights"]
    kid = got[("kid_proj", "domain:proj")]
    assert kid["kid_subset_size"] == 4 and kid["std"] >= 0
    for rec in records:
        assert set(REQUIRED_KEYS) <= set(rec) and "value" in rec
    assert read_records(tmp_path / "records.jsonl") == records


def test_second_run_appends_and_hits_the_real_cache(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path
) -> None:
    fake_dir = tmp_path / "fakes"
    write_pngs(fake_dir, NUM, mean=100, seed=5)
    target = EvalTarget("gan", "Normal", fake_dir, "ckpt")
    net = CountingProjection()
    first = run(target, data_cfg, tmp_path, net)
    assert net.num_images == 2 * NUM  # reals + fakes
    lines_after_first = len((tmp_path / "records.jsonl").read_text().splitlines())
    second = run(target, data_cfg, tmp_path, net)
    assert net.num_images == 3 * NUM  # only the fakes again: the real features came from the cache
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2 * lines_after_first
    assert len(list((tmp_path / "stats").glob("stats-*.npz"))) == 1
    assert len(list((tmp_path / "stats").glob("features-*.npz"))) == 1
    fd1, fd2 = (by_metric(r)[("fd_proj", "domain:proj")] for r in (first, second))
    assert fd2["value"] == pytest.approx(fd1["value"], rel=1e-9)


def test_domain_distance_of_a_set_with_itself_is_zero(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path
) -> None:
    target = EvalTarget("gan", "Non-COVID", data_cfg.root / "train" / "non_covid_infection", "-")
    got = by_metric(run(target, data_cfg, tmp_path, CountingProjection()))
    assert got[("fd_proj", "domain:proj")]["value"] == pytest.approx(0.0, abs=1e-6)
    assert got[("precision", "domain:proj")]["value"] == 1.0
    assert got[("coverage", "domain:proj")]["value"] == 1.0


def test_plain_callable_is_not_cached(offline: list[str], data_cfg: DataConfig, tmp_path: Path) -> None:
    net = CountingProjection()
    fake_dir = tmp_path / "fakes"
    write_pngs(fake_dir, NUM, mean=100, seed=5)
    target = EvalTarget("gan", "Normal", fake_dir, "ckpt")
    for _ in range(2):
        records = run(target, data_cfg, tmp_path, lambda x: net(x))
    assert net.num_images == 4 * NUM
    assert (
        by_metric(records)[("fd_proj", "domain:proj")]["weights"]
        == "proj (unidentified callable, not cached)"
    )
    assert not (tmp_path / "stats").exists()


def test_real_vs_real_baseline(offline: list[str], data_cfg: DataConfig, tmp_path: Path) -> None:
    records = real_vs_real_baseline(
        "COVID-19",
        data_cfg,
        METRICS,
        tmp_path / "records.jsonl",
        feature_fn=CountingProjection(),
        feature_name="proj",
        cache_dir=tmp_path / "stats",
        download=False,
    )
    got = by_metric(records)
    assert {r["model"] for r in records} == {REAL_BASELINE_MODEL}
    assert got[("fid", "pytorch-fid")]["status"].startswith("missing weights")
    floor = got[("fd_proj", "domain:proj")]
    assert (floor["n_real"], floor["n_fake"], floor["real_split"], floor["fake_split"]) == (
        NUM,
        NUM,
        "train",
        "test",
    )
    assert not any(r["metric"] == "lpips" for r in records)
    # the floor (same class, other split) lies below the distance to another class
    other_class = EvalTarget("gan", "COVID-19", data_cfg.root / "train" / "normal", "-")
    cross = by_metric(run(other_class, data_cfg, tmp_path, CountingProjection()))[("fd_proj", "domain:proj")]
    assert 0.0 <= floor["value"] < cross["value"]


def test_medsg_lpips_groups_with_random_weights(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path
) -> None:
    out_dir = tmp_path / "generated"
    items = [
        GeneratedItem(
            100_000 + i, "COVID-19", f"src{i // 2}.png", ("Non-COVID", "Normal")[i // 3], "latent", i % 2
        )
        for i in range(NUM)
    ]
    write_pngs(out_dir / "covid", NUM, mean=80, seed=3, names=[f"{it.seed:06d}.png" for it in items])
    write_manifest(
        out_dir, manifest_rows(items, {"model": "medsg", "checkpoint": "c", "checkpoint_sha256": "0"})
    )
    cfg = MetricsConfig(
        fid_protocols=(), kid_subsets=3, kid_subset_size=4, bootstrap=0, allow_random_weights=True
    )
    records = run(
        EvalTarget("medsg", "COVID-19", out_dir / "covid", "c"),
        data_cfg,
        tmp_path,
        CountingProjection(),
        metrics_cfg=cfg,
    )
    (lpips,) = [r for r in records if r["metric"] == "lpips"]
    assert lpips["status"] == "ok" and lpips["value"] > 0
    assert (lpips["num_groups"], lpips["n_fake"]) == (3, NUM)
    assert "UNVERIFIED" in lpips["weights"]
    assert by_metric(records)[("fd_proj", "domain:proj")]["ci_note"] == "no CI: MetricsConfig.bootstrap is 0"
    assert offline == []


def test_baseline_lpips_over_random_pairs(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate, "LPIPS_NUM_PAIRS", 20)  # 1000 pairs take ~10 s here
    fake_dir = tmp_path / "fakes"
    write_pngs(fake_dir, NUM, mean=100, seed=5)
    cfg = MetricsConfig(fid_protocols=(), kid_subsets=3, kid_subset_size=4, allow_random_weights=True)
    records = run(
        EvalTarget("dcgan", "all", fake_dir, "c"), data_cfg, tmp_path, CountingProjection(), metrics_cfg=cfg
    )
    (lpips,) = [r for r in records if r["metric"] == "lpips"]
    assert lpips["protocol"] == evaluate.LPIPS_PAIRS_PROTOCOL and lpips["value"] > 0
    assert (lpips["num_pairs"], lpips["n_fake"], lpips["n_real"]) == (20, NUM, 0)


def test_paper_protocol_is_the_mean_over_source_classes(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Inception networks are replaced by the projection (a 2048-d FID takes minutes on a busy CPU)."""
    net = CountingProjection()

    def fake_inception(protocol: str, **kwargs: object) -> features.FeatureExtractor:
        extractor = features.build_extractor("domain", feature_fn=net, name="proj", img_size=SIZE)
        return dataclasses.replace(extractor, protocol=protocol, metric="fid")

    monkeypatch.setattr(evaluate, "build_extractor", fake_inception)
    out_dir = tmp_path / "generated"
    items = [
        GeneratedItem(100_000 + i, "COVID-19", f"s{i}.png", ("Non-COVID", "Normal")[i % 2], "latent", 0)
        for i in range(8)
    ]
    write_pngs(out_dir / "covid", 4, mean=80, seed=3, names=[f"{it.seed:06d}.png" for it in items[::2]])
    write_pngs(out_dir / "covid", 4, mean=200, seed=4, names=[f"{it.seed:06d}.png" for it in items[1::2]])
    write_manifest(
        out_dir, manifest_rows(items, {"model": "medsg", "checkpoint": "c", "checkpoint_sha256": "0"})
    )
    cfg = MetricsConfig(kid_subsets=3, kid_subset_size=4, bootstrap=0)
    got = by_metric(
        run(
            EvalTarget("medsg", "COVID-19", out_dir / "covid", "c"), data_cfg, tmp_path, None, metrics_cfg=cfg
        )
    )
    paper, pooled = got[("fid", "paper")], got[("fid", "pytorch-fid")]
    assert paper["aggregation"] == "mean over source classes" and pooled["aggregation"] == "pooled"
    assert set(paper["per_source"]) == {"Non-COVID", "Normal"}
    assert paper["value"] == pytest.approx(np.mean(list(paper["per_source"].values())))
    assert paper["value_pooled"] == pytest.approx(pooled["value"])
    assert paper["value"] != pytest.approx(pooled["value"], rel=1e-3)  # the two sources differ


def test_bootstrap_skip_rule() -> None:
    assert bootstrap_skip_reason(100, 100, 4, 10, 0.01, 60.0) is None
    assert (
        bootstrap_skip_reason(100, 50, 64, 10, 0.01, 60.0)
        == "no CI: feature dim 64 > min(n_real, n_fake) = 50"
    )
    assert bootstrap_skip_reason(5000, 5000, 2048, 200, 30.0, 600.0) == (
        "no CI: 200 resamples would take >= 6000 s (30.00 s each), over the budget of 600 s"
    )


def test_real_images_of_one_class_and_all(data_cfg: DataConfig) -> None:
    covid = real_images(data_cfg, "train", "COVID-19", batch_size=4)
    batches = list(covid)
    assert len(covid) == NUM and [b.shape[0] for b in batches] == [4, 2]
    assert batches[0].shape[1:] == (1, SIZE, SIZE) and batches[0].min() >= -1 and batches[0].max() <= 1
    assert abs(float(torch.cat(batches).mean()) - (60 / 127.5 - 1)) < 0.05  # the COVID-19 folder's gray level
    assert len(real_images(data_cfg, "train", "all")) == 3 * NUM


def test_bad_targets() -> None:
    with pytest.raises(
        ValueError, match=r"EvalTarget.model='vae' is not allowed; choose one of medsg, dcgan, gan"
    ):
        EvalTarget("vae", "Normal", Path("x"), "c")
    with pytest.raises(ValueError, match=r"EvalTarget.target_class='normal' is not allowed"):
        EvalTarget("gan", "normal", Path("x"), "c")
    with pytest.raises(ValueError, match=r"Med-StyleGAN2 is evaluated per class"):
        EvalTarget("medsg", "all", Path("x"), "c")


def test_records_are_json_lines(offline: list[str], data_cfg: DataConfig, tmp_path: Path) -> None:
    fake_dir = tmp_path / "fakes"
    write_pngs(fake_dir, NUM, mean=100, seed=5)
    run(EvalTarget("gan", "all", fake_dir, "c"), data_cfg, tmp_path, CountingProjection())
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    fd = [json.loads(line) for line in lines if json.loads(line)["metric"] == "fd_proj"][0]
    assert fd["n_real"] == 3 * NUM and fd["class"] == "all"


def test_module_fingerprint_follows_the_state_dict() -> None:
    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))  # has a 0-d buffer (num_batches_tracked)

    a, b = net(), net()
    assert evaluate.module_fingerprint(a) == evaluate.module_fingerprint(b)
    with torch.no_grad():
        b[0].bias[0] += 1e-3
    assert evaluate.module_fingerprint(a) != evaluate.module_fingerprint(b)
