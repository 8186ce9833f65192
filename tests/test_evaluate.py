"""evaluate_target / real_vs_real_baseline on tiny folders (six 32 px PNGs per class and split), offline.

No pretrained file exists in the temporary TORCH_HOME and downloads are forbidden (a spy replaces
``torch.hub.download_url_to_file``), so the Inception and LPIPS records must say "missing weights" while the
domain metrics (a fixed random projection as feature network) are computed. Model names in these tests are
arbitrary identifiers: how a set is measured must follow its manifest, never the name.
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

from medsg_lib.config import DataConfig, MetricsConfig
from medsg_lib.evaluate import (
    REAL_BASELINE_MODEL,
    EvalTarget,
    evaluate_images,
    evaluate_target,
    plan_targets,
    real_vs_real_baseline,
)
from medsg_lib.files import CONFIG_NAME, read_jsonl
from medsg_lib.manifest import GeneratedItem, manifest_rows, write_manifest
from medsg_lib.metrics import (
    LPIPS_GROUP_PROTOCOL,
    LPIPS_PAIRS_PROTOCOL,
    REQUIRED_KEYS,
    Comparison,
    diversity,
    features,
    registry,
)
from medsg_lib.metrics import (
    options as eval_options,
)
from medsg_lib.metrics.cache import load_features, module_fingerprint, save_features
from medsg_lib.metrics.diversity import lpips_protocol
from medsg_lib.metrics.frd import FRD_PROTOCOL
from medsg_lib.metrics.msssim import MSSSIM_GROUP_PROTOCOL, MSSSIM_PAIRS_PROTOCOL, msssim_levels
from medsg_lib.metrics.registry import EvalOptions
from medsg_lib.metrics.sources import generated_set, real_images
from medsg_lib.metrics.values import bootstrap_skip_reason

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
    for split_seed, split in enumerate(("train", "val")):  # a class-folder set: its held-out split is val
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
    assert read_jsonl(tmp_path / "records.jsonl") == records


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
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "stats").glob("*.npz"))
    assert cached == ["radiomics"]  # only FRD's real radiomic features, no domain features or moments


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
        "val",
    )
    assert not any(r["metric"] == "lpips" for r in records)
    frd_floor, msssim_floor = got[("frd", FRD_PROTOCOL)], got[("msssim", MSSSIM_PAIRS_PROTOCOL)]
    assert (frd_floor["n_real"], frd_floor["n_fake"], frd_floor["status"]) == (NUM, NUM, "ok")
    assert frd_floor["num_features"] > 300 and np.isfinite(frd_floor["value"])
    assert (msssim_floor["n_fake"], msssim_floor["levels"]) == (NUM, msssim_levels(data_cfg.img_size))
    assert 0.0 < msssim_floor["value"] < 1.0
    # the floor (same class, other split) lies below the distance to another class
    other_class = EvalTarget("gan", "COVID-19", data_cfg.root / "train" / "normal", "-")
    cross = by_metric(run(other_class, data_cfg, tmp_path, CountingProjection()))[("fd_proj", "domain:proj")]
    assert 0.0 <= floor["value"] < cross["value"]


def write_translations(out_dir: Path, num: int = NUM) -> list[GeneratedItem]:
    """``num`` outputs of class COVID-19 in ``out_dir/covid``, two per source image, and their manifest."""
    items = [
        GeneratedItem(
            100_000 + i, "COVID-19", f"src{i // 2}.png", ("Non-COVID", "Normal")[i // 3], "latent", i % 2
        )
        for i in range(num)
    ]
    write_pngs(out_dir / "covid", num, mean=80, seed=3, names=[f"{it.seed:06d}.png" for it in items])
    write_manifest(
        out_dir, manifest_rows(items, {"model": "translator", "checkpoint": "c", "checkpoint_sha256": "0"})
    )
    return items


def write_noise_samples(out_dir: Path, num: int = NUM) -> None:
    """``num`` samples of class COVID-19 without source images (a noise-to-image model) and their manifest."""
    items = [GeneratedItem(200_000 + i, "COVID-19", None, None, "noise", None) for i in range(num)]
    write_pngs(out_dir / "covid", num, mean=80, seed=3, names=[f"{it.seed:06d}.png" for it in items])
    write_manifest(
        out_dir, manifest_rows(items, {"model": "medsg", "checkpoint": "c", "checkpoint_sha256": "0"})
    )


def test_lpips_protocol_follows_the_manifest(tmp_path: Path) -> None:
    """Source images in the manifest => groups per source image; none, or no manifest => random pairs."""
    write_translations(tmp_path / "translations")
    write_noise_samples(tmp_path / "noise")  # its manifest even says model "medsg": the data decides
    write_pngs(tmp_path / "loose" / "covid", NUM, mean=80, seed=3)
    translations = generated_set(tmp_path / "translations" / "covid", "COVID-19")
    assert translations.image_to_image and len(translations) == NUM
    assert translations.source_images == (
        "src0.png",
        "src0.png",
        "src1.png",
        "src1.png",
        "src2.png",
        "src2.png",
    )
    assert translations.source_classes == ("Non-COVID",) * 3 + ("Normal",) * 3
    assert lpips_protocol(translations) == LPIPS_GROUP_PROTOCOL
    for folder in ("noise", "loose"):
        samples = generated_set(tmp_path / folder / "covid", "COVID-19")
        assert not samples.image_to_image and samples.source_classes is None
        assert lpips_protocol(samples) == LPIPS_PAIRS_PROTOCOL


def test_lpips_groups_from_the_manifest_with_random_weights(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path
) -> None:
    out_dir = tmp_path / "generated"
    write_translations(out_dir)
    cfg = MetricsConfig(
        fid_protocols=(), kid_subsets=3, kid_subset_size=4, bootstrap=0, allow_random_weights=True
    )
    records = run(
        EvalTarget("dcgan", "COVID-19", out_dir / "covid", "c"),
        data_cfg,
        tmp_path,
        CountingProjection(),
        metrics_cfg=cfg,
    )
    (lpips,) = [r for r in records if r["metric"] == "lpips"]
    assert lpips["status"] == "ok" and lpips["value"] > 0
    assert lpips["protocol"] == LPIPS_GROUP_PROTOCOL and lpips["model"] == "dcgan"
    assert (lpips["num_groups"], lpips["n_fake"]) == (3, NUM)
    assert "UNVERIFIED" in lpips["weights"]
    msssim = by_metric(records)[("msssim", MSSSIM_GROUP_PROTOCOL)]  # the same groups, no weights needed
    assert (msssim["num_groups"], msssim["n_fake"], msssim["status"]) == (3, NUM, "ok")
    assert 0.0 < msssim["value"] < 1.0
    assert by_metric(records)[("fd_proj", "domain:proj")]["ci_note"] == "no CI: MetricsConfig.bootstrap is 0"
    assert offline == []


def test_lpips_over_random_pairs_without_sources(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diversity, "LPIPS_NUM_PAIRS", 20)  # 1000 pairs take ~10 s here
    fake_dir = tmp_path / "fakes"
    write_pngs(fake_dir, NUM, mean=100, seed=5)
    cfg = MetricsConfig(fid_protocols=(), kid_subsets=3, kid_subset_size=4, allow_random_weights=True)
    records = run(
        EvalTarget("medsg", "all", fake_dir, "c"), data_cfg, tmp_path, CountingProjection(), metrics_cfg=cfg
    )
    (lpips,) = [r for r in records if r["metric"] == "lpips"]
    assert lpips["protocol"] == LPIPS_PAIRS_PROTOCOL and lpips["value"] > 0
    assert (lpips["num_pairs"], lpips["n_fake"], lpips["n_real"]) == (20, NUM, 0)
    msssim = by_metric(records)[("msssim", MSSSIM_PAIRS_PROTOCOL)]
    assert (msssim["num_pairs"], msssim["n_fake"]) == (20, NUM)


def test_paper_protocol_is_the_mean_over_source_classes(
    offline: list[str], data_cfg: DataConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Inception networks are replaced by the projection (a 2048-d FID takes minutes on a busy CPU)."""
    net = CountingProjection()

    def fake_inception(protocol: str, **kwargs: object) -> features.FeatureExtractor:
        extractor = features.build_extractor("domain", feature_fn=net, name="proj", img_size=SIZE)
        return dataclasses.replace(extractor, protocol=protocol, metric="fid")

    monkeypatch.setattr(registry, "build_extractor", fake_inception)
    out_dir = tmp_path / "generated"
    items = [
        GeneratedItem(100_000 + i, "COVID-19", f"s{i}.png", ("Non-COVID", "Normal")[i % 2], "latent", 0)
        for i in range(8)
    ]
    write_pngs(out_dir / "covid", 4, mean=80, seed=3, names=[f"{it.seed:06d}.png" for it in items[::2]])
    write_pngs(out_dir / "covid", 4, mean=200, seed=4, names=[f"{it.seed:06d}.png" for it in items[1::2]])
    write_manifest(
        out_dir, manifest_rows(items, {"model": "translator", "checkpoint": "c", "checkpoint_sha256": "0"})
    )
    cfg = MetricsConfig(kid_subsets=3, kid_subset_size=4, bootstrap=0)
    got = by_metric(
        run(EvalTarget("gan", "COVID-19", out_dir / "covid", "c"), data_cfg, tmp_path, None, metrics_cfg=cfg)
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
    for model in ("", "two words", "a/b"):
        with pytest.raises(ValueError) as err:
            EvalTarget(model, "Normal", Path("x"), "c")
        assert str(err.value) == (
            f"EvalTarget.model={model!r} must be a non-empty identifier (a model family's name)"
        )
    with pytest.raises(ValueError) as err:
        EvalTarget("gan", "normal", Path("x"), "c")
    assert str(err.value) == (
        "EvalTarget.target_class='normal' is not allowed; "
        "choose one of 'COVID-19', 'Non-COVID', 'Normal', 'all'"
    )
    # any family name is provenance only, and any family may be evaluated on every class
    assert EvalTarget("vae", "all", "x", 7) == EvalTarget("vae", "all", Path("x"), "7")
    assert EvalTarget("medsg", "all", Path("x"), "c").target_class == "all"


def test_eval_options_validation_messages() -> None:
    with pytest.raises(ValueError) as err:
        EvalOptions(MetricsConfig(fid_protocols=("pytorch-fid", "clean-fid", "domain")))
    assert str(err.value) == (
        "MetricsConfig.fid_protocols has ['clean-fid', 'domain']; choose from pytorch-fid, paper "
        "(domain features are passed as feature_fn)"
    )
    with pytest.raises(ValueError) as err:
        EvalOptions(MetricsConfig(), feature_fn=CountingProjection(), feature_name="my net")
    assert str(err.value) == "feature_name='my net' must be an identifier (it names metrics fd_<name>)"
    assert EvalOptions(MetricsConfig(), feature_name="my net").feature_fn is None  # unused name: no check
    options = EvalOptions(MetricsConfig(), cache_dir="somewhere")
    assert (
        options.cache_dir == Path("somewhere")
        and options.bootstrap_budget_s == eval_options.BOOTSTRAP_BUDGET_S
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "cuda"  # type: ignore[misc]


def test_wrappers_validate_options_before_reading_anything(data_cfg: DataConfig, tmp_path: Path) -> None:
    bad = MetricsConfig(fid_protocols=("fid",))
    with pytest.raises(ValueError, match=r"MetricsConfig.fid_protocols has \['fid'\]"):
        evaluate_target(EvalTarget("gan", "Normal", tmp_path / "absent", "c"), data_cfg, bad, tmp_path / "r")
    with pytest.raises(TypeError, match="unexpected keyword argument 'feature_nam'"):
        real_vs_real_baseline("Normal", data_cfg, MetricsConfig(), tmp_path / "r", feature_nam="x")
    assert not (tmp_path / "r").exists()


def test_registry_unknown_metric_is_refused_before_any_record(data_cfg: DataConfig, tmp_path: Path) -> None:
    assert set(registry.METRICS) == {
        "fid",
        "kid",
        "fd_domain",
        "kid_domain",
        "prdc",
        "frd",
        "lpips",
        "msssim",
    }
    real = real_images(data_cfg, "train", "Normal")
    comparison = Comparison("gan", "Normal", "-", 0, tmp_path / "records.jsonl")
    options = EvalOptions(
        MetricsConfig(fid_protocols=()), feature_fn=CountingProjection(), feature_name="proj"
    )
    with pytest.raises(ValueError) as err:
        evaluate_images(comparison, real, real, options, ["domain", "fid", "is", "fd"])
    assert str(err.value) == (
        "unknown metric(s) ['is', 'fd']; choose from fid, kid, fd_domain, kid_domain, prdc, frd, lpips, msssim, "
        "inception, domain"
    )
    assert not (tmp_path / "records.jsonl").exists()
    with pytest.raises(ValueError, match="metric 'lpips' measures the diversity of a generated set"):
        evaluate_images(comparison, real, real, options, ["lpips"])
    domain_only = evaluate_images(comparison, real, real, options, ["domain"])
    assert [r["metric"] for r in domain_only] == [
        "fd_proj",
        "kid_proj",
        "precision",
        "recall",
        "density",
        "coverage",
    ]
    no_net = dataclasses.replace(options, feature_fn=None)
    assert evaluate_images(comparison, real, real, no_net, ["inception", "domain"]) == []


def test_one_metric_can_be_asked_for_and_a_feature_extraction_serves_its_group(
    data_cfg: DataConfig, tmp_path: Path
) -> None:
    real = real_images(data_cfg, "train", "Normal")
    comparison = Comparison("gan", "Normal", "-", 0, tmp_path / "records.jsonl")
    net = CountingProjection()
    options = EvalOptions(
        MetricsConfig(fid_protocols=()), feature_fn=net, feature_name="proj", cache_dir=None
    )
    only_kid = evaluate_images(comparison, real, real, options, ["kid_domain"])
    assert [r["metric"] for r in only_kid] == ["kid_proj"]
    seen = net.num_images
    both = evaluate_images(comparison, real, real, options, ["prdc", "fd_domain", "prdc"])
    assert [r["metric"] for r in both] == ["fd_proj", "precision", "recall", "density", "coverage"]
    assert net.num_images == 2 * seen  # one extraction of both sets for the two metrics of one group
    assert [r["metric"] for r in read_jsonl(tmp_path / "records.jsonl")] == [
        "kid_proj",
        *[r["metric"] for r in both],
    ]
    assert registry.registry_name("kid") == "kid" and registry.registry_name("kid_proj") == "kid_domain"


def test_plan_targets_follow_the_class_folders(tmp_path: Path) -> None:
    def run_dir(name: str, model: str, slugs: list[str], sha: bool = True) -> None:
        info = {"train": {"model": model, "target_class": "all"}, "checkpoint": f"{name}.pt"}
        if sha:
            info["checkpoint_sha256"] = f"sha-{name}"
        (tmp_path / name).mkdir()
        (tmp_path / name / CONFIG_NAME).write_text(json.dumps(info))
        for slug in slugs:
            write_pngs(tmp_path / name / slug, 1, mean=100, seed=0)

    run_dir("zeta", "newfamily", ["all", "normal", "covid"])  # any family, any mix of class folders
    run_dir("alpha", "medsg", ["non_covid"], sha=False)
    (tmp_path / "zeta" / "non_covid").mkdir()  # an empty class folder: nothing to evaluate
    (tmp_path / "stray").mkdir()  # no config.json: not a generated set
    got = [(t.model, t.target_class, t.fake_dir.name, t.checkpoint) for t in plan_targets(tmp_path)]
    assert got == [
        ("medsg", "Non-COVID", "non_covid", "alpha.pt"),
        ("newfamily", "COVID-19", "covid", "sha-zeta"),
        ("newfamily", "Normal", "normal", "sha-zeta"),
        ("newfamily", "all", "all", "sha-zeta"),
    ]


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
    assert module_fingerprint(a) == module_fingerprint(b)
    with torch.no_grad():
        b[0].bias[0] += 1e-3
    assert module_fingerprint(a) != module_fingerprint(b)


def test_features_cache_round_trip_and_key_check(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "features-0123.npz"
    assert load_features(path, '{"k": 1}') is None
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_features(path, '{"k": 1}', feats)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # atomic: no temporary file left
    np.testing.assert_array_equal(load_features(path, '{"k": 1}'), feats)
    with pytest.raises(ValueError) as err:
        load_features(path, '{"k": 2}')
    assert str(err.value) == f'features cache {path} holds key {{"k": 1}}, expected {{"k": 2}}; delete it'
