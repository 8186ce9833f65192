"""Generation: the StarGAN v2 plan, per-item seeds, batch-size invariance, PNGs + manifest, resume, errors."""

from __future__ import annotations

import collections
import hashlib
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_cfg
from PIL import Image

from medsg_lib.checkpoint import save_checkpoint
from medsg_lib.config import CLASS_NAMES, DataConfig, GenerateConfig, PhantomConfig, TrainConfig, to_jsonable
from medsg_lib.data import SyntheticXrays, XrayDataset, XrayRecord
from medsg_lib.families import get_family
from medsg_lib.files import FolderBusyError
from medsg_lib.generate import SourceImages, generate, generate_batches, plan_items, to_uint8_array
from medsg_lib.generate import core as gen_mod
from medsg_lib.manifest import MANIFEST_COLUMNS, GeneratedItem, item_file, lpips_groups, read_manifest
from medsg_lib.metrics.features import to_uint8 as features_to_uint8
from medsg_lib.training import build_train_state, checkpoint_state, train

CPU = torch.device("cpu")
COVID, NON_COVID, NORMAL = CLASS_NAMES


def fake_records(per_class: int) -> list[XrayRecord]:
    """``per_class`` validation records of each class (paths need not exist for planning)."""
    return [
        XrayRecord(Path(f"/val/{c}/{i}.png"), label, c, "val")
        for label, c in enumerate(CLASS_NAMES)
        for i in range(per_class)
    ]


def fake_dataset(per_class: int, channels: int = 1) -> XrayDataset:
    images = torch.randint(
        0, 256, (3 * per_class, channels, 32, 32), generator=torch.Generator().manual_seed(1)
    )
    return XrayDataset(images.to(torch.uint8), fake_records(per_class))


def write_checkpoint(path: Path, cfg: TrainConfig, data_cfg: DataConfig) -> Path:
    """A checkpoint in the trainer's format (step 0: freshly initialised nets, EMA = online)."""
    state = build_train_state(cfg, CPU)
    save_checkpoint(path, checkpoint_state(state, {"train": to_jsonable(cfg), "data": to_jsonable(data_cfg)}))
    return path


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhantomConfig, DataConfig]:
    root = tmp_path_factory.mktemp("data")
    phantoms = PhantomConfig(root=root / "ph", img_size=32, num_train=1, num_val=2, num_test=1)
    return phantoms, DataConfig(img_size=32, cache_dir=root / "cache")


# ---------------------------------------------------------------- plan


def test_plan_cycles_sources_and_latents() -> None:
    gen_cfg = GenerateConfig(num_per_class=6, num_latents_per_source=2)
    items = plan_items(tiny_cfg(), gen_cfg, NORMAL, fake_records(2))
    assert len(items) == 6
    assert {it.source_class for it in items} == {COVID, NON_COVID}
    assert all(it.target_class == NORMAL and it.mode == "latent" for it in items)
    assert [it.latent_index for it in items] == [0, 1, 0, 1, 0, 1]
    # round-robin over source classes, num_latents_per_source outputs per source in a row
    assert [it.source_class for it in items] == [COVID, COVID, NON_COVID, NON_COVID, COVID, COVID]
    assert items[0].source_image == items[1].source_image != items[2].source_image

    full = plan_items(
        tiny_cfg(), GenerateConfig(num_per_class=8, num_latents_per_source=2), NORMAL, fake_records(2)
    )
    pairs = collections.Counter((it.source_image, it.latent_index) for it in full)
    assert len(pairs) == 8 and set(pairs.values()) == {1}  # the whole protocol: 4 sources x 2 latents
    assert all("/Normal/" not in it.source_image for it in full)
    more = plan_items(
        tiny_cfg(), GenerateConfig(num_per_class=10, num_latents_per_source=2), NORMAL, fake_records(2)
    )
    assert more[:8] == full  # a larger num_per_class extends the plan (resume-safe)
    assert (more[8].source_image, more[8].latent_index) == (full[0].source_image, 2)  # next cycle


def test_seeds_follow_the_formula_and_are_unique() -> None:
    gen_cfg = GenerateConfig(num_per_class=5, num_latents_per_source=2, seed=3)
    seeds = []
    for c, target in enumerate(CLASS_NAMES):
        items = plan_items(tiny_cfg(), gen_cfg, target, fake_records(2))
        assert [it.seed for it in items] == [3 * 10**6 + c * 10**5 + i for i in range(5)]
        seeds += [it.seed for it in items]
    assert len(set(seeds)) == len(seeds) == 15
    with pytest.raises(ValueError, match="at most 100000 images per class"):
        plan_items(tiny_cfg(), GenerateConfig(num_per_class=10**5 + 1), NORMAL, fake_records(1))


def test_reference_mode_draws_references_of_the_target_class() -> None:
    gen_cfg = GenerateConfig(num_per_class=8, num_latents_per_source=2, mode="reference")
    items = plan_items(tiny_cfg(), gen_cfg, COVID, fake_records(3))
    assert all(it.mode == "reference" and it.reference_image.startswith("/val/COVID-19/") for it in items)
    assert len({it.reference_image for it in items}) > 1  # drawn per item, not one fixed reference
    assert plan_items(tiny_cfg(), gen_cfg, COVID, fake_records(3)) == items  # seeded
    no_refs = [r for r in fake_records(2) if r.label != 0]
    with pytest.raises(ValueError, match="mode='reference' needs validation images of the target class"):
        plan_items(tiny_cfg(), gen_cfg, COVID, no_refs)


def test_plan_errors_and_baselines() -> None:
    gen_cfg = GenerateConfig(num_per_class=3)
    with pytest.raises(ValueError, match="pass sources"):
        plan_items(tiny_cfg(), gen_cfg, NORMAL, None)
    only_normal = [r for r in fake_records(2) if r.label == 2]
    with pytest.raises(ValueError, match="no source image of a class other than 'Normal'"):
        plan_items(tiny_cfg(), gen_cfg, NORMAL, only_normal)
    items = plan_items(tiny_cfg("dcgan"), gen_cfg, "all", None)
    assert [(it.mode, it.source_image, item_file(it)) for it in items][0] == ("noise", None, "all/300000.png")
    with pytest.raises(ValueError, match="trained on target_class='COVID-19' and generates only that"):
        plan_items(tiny_cfg("gan", target_class=COVID), gen_cfg, NORMAL, None)


# ---------------------------------------------------------------- in memory


@pytest.mark.parametrize("mode", ["latent", "reference"])
def test_medsg_same_seed_same_image_whatever_the_batch(mode: str) -> None:
    cfg = tiny_cfg()
    torch.manual_seed(0)
    nets = get_family(cfg.model).build(cfg)
    dataset = fake_dataset(2)
    items = plan_items(cfg, GenerateConfig(num_per_class=5, num_latents_per_source=2, mode=mode), NORMAL,
                       dataset.records)  # fmt: skip
    lookup = SourceImages(dataset)
    one = torch.cat([x for _, x in generate_batches(nets, cfg, items, lookup, batch_size=1)])
    four = torch.cat([x for _, x in generate_batches(nets, cfg, items, lookup, batch_size=4)])
    backwards = torch.cat([x for _, x in generate_batches(nets, cfg, items[::-1], lookup, batch_size=4)])
    assert one.shape == (5, 1, 32, 32) and one.min() >= -1 and one.max() <= 1
    torch.testing.assert_close(one, four, atol=1e-5, rtol=0)
    torch.testing.assert_close(one, backwards.flip(0), atol=1e-5, rtol=0)
    assert (one[0] - one[1]).abs().max() > 1e-3  # two codes for one source give two images
    assert all(net.training for net in nets.values())  # eval only while generating


def test_dcgan_same_seed_same_image_whatever_the_batch() -> None:
    cfg = tiny_cfg("dcgan", channels=3)
    torch.manual_seed(0)
    nets = get_family(cfg.model).build(cfg)  # BatchNorm: only eval mode makes images independent of the batch
    items = plan_items(cfg, GenerateConfig(num_per_class=6), "all")
    one = torch.cat([x for _, x in generate_batches(nets, cfg, items, batch_size=1)])
    four = torch.cat([x for _, x in generate_batches(nets, cfg, items, batch_size=4)])
    assert one.shape == (6, 3, 32, 32)
    torch.testing.assert_close(one, four, atol=1e-5, rtol=0)
    assert (one[0] - one[1]).abs().max() > 1e-3


def test_to_uint8_array_is_exact_at_the_ends_and_middle() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.0, 1 / 127.5 - 1])
    assert to_uint8_array(x).tolist() == [0, 128, 255, 0, 255, 1]
    assert to_uint8_array(x).dtype == np.uint8
    r = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1
    np.testing.assert_array_equal(to_uint8_array(r), features_to_uint8(r).numpy())


# ---------------------------------------------------------------- files


def test_generate_writes_pngs_and_manifest(tmp_path: Path, phantom_data) -> None:
    phantoms, data_cfg = phantom_data
    ckpt = write_checkpoint(tmp_path / "step_0000000.pt", tiny_cfg(), data_cfg)
    gen_cfg = GenerateConfig(num_per_class=6, num_latents_per_source=2, batch_size=4)
    out = generate(ckpt, tmp_path / "gen", gen_cfg, data_cfg, phantoms=phantoms, progress=False)

    manifest = read_manifest(out)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 18
    for c, (name, slug) in enumerate(zip(CLASS_NAMES, ("covid", "non_covid", "normal"), strict=True)):
        files = sorted(p.name for p in (out / slug).iterdir())
        assert files == [f"{c * 10**5 + i:06d}.png" for i in range(6)]
        rows = manifest[manifest["class"] == name]
        assert list(rows["file"]) == [f"{slug}/{f}" for f in files]
        assert not (rows["source_class"] == name).any()
        assert set(rows["source_class"]) == set(CLASS_NAMES) - {name}
    with Image.open(out / "normal" / "200000.png") as img:
        assert (img.size, img.mode) == ((32, 32), "L")
        on_disk = np.asarray(img)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16]
    assert set(manifest["checkpoint_sha256"]) == {sha} and set(manifest["model"]) == {"medsg"}
    assert manifest["latent_index"].tolist()[:4] == [0, 1, 0, 1]

    # the PNG is the in-memory image, quantised
    from medsg_lib.checkpoint import load_nets_for_inference
    from medsg_lib.data import build_dataset

    nets, cfg = load_nets_for_inference(ckpt)
    dataset = build_dataset(data_cfg, "val", phantoms, train=False, progress=False)
    item = plan_items(cfg, gen_cfg, NORMAL, dataset.records)[0]
    [(_, x_fake)] = list(generate_batches(nets, cfg, [item], SourceImages(dataset)))
    np.testing.assert_array_equal(on_disk, to_uint8_array(x_fake[0, 0]))

    groups = list(lpips_groups(out, NORMAL))
    assert [len(g) for g in groups] == [2, 2, 2] and all(p.is_file() for g in groups for p in g)
    assert (
        len({manifest.set_index("file").loc[str(g[0].relative_to(out)), "source_image"] for g in groups}) == 3
    )


def test_generate_resumes_only_missing_files(tmp_path: Path, phantom_data, monkeypatch) -> None:
    phantoms, data_cfg = phantom_data
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", tiny_cfg(), data_cfg)
    gen_cfg = GenerateConfig(num_per_class=4, num_latents_per_source=2, batch_size=3)
    out = generate(ckpt, tmp_path / "gen", gen_cfg, data_cfg, phantoms=phantoms, target_classes=[COVID],
                   progress=False)  # fmt: skip
    files = sorted((out / "covid").glob("*.png"))
    manifest_before = (out / "manifest.csv").read_text()
    deleted, kept = files[1:3], files[:1] + files[3:]
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    for p in deleted:
        p.unlink()
    written = []
    original = gen_mod.write_png
    monkeypatch.setattr(gen_mod, "write_png", lambda x, path: (written.append(path), original(x, path)))
    generate(ckpt, out, gen_cfg, data_cfg, phantoms=phantoms, target_classes=[COVID], progress=False)
    assert sorted(written) == deleted
    assert {p: p.stat().st_mtime_ns for p in kept} == mtimes
    assert len(list((out / "covid").glob("*.png"))) == 4
    assert (out / "manifest.csv").read_text() == manifest_before

    # another class later: the manifest keeps the first class's rows
    generate(ckpt, out, gen_cfg, data_cfg, phantoms=phantoms, target_classes=[NORMAL], progress=False)
    assert collections.Counter(read_manifest(out)["class"]) == {COVID: 4, NORMAL: 4}

    other = write_checkpoint(tmp_path / "other.pt", tiny_cfg(seed=1), data_cfg)
    with pytest.raises(ValueError, match="holds images generated with another checkpoint_sha256"):
        generate(other, out, gen_cfg, data_cfg, phantoms=phantoms, progress=False)
    with pytest.raises(ValueError, match="holds 2 PNG\\(s\\) that this plan does not make"):
        generate(ckpt, out, GenerateConfig(num_per_class=2, num_latents_per_source=2), data_cfg,
                 phantoms=phantoms, target_classes=[COVID], progress=False)  # fmt: skip


def test_generate_baseline_trained_on_all_classes(tmp_path: Path) -> None:
    cfg = tiny_cfg("dcgan", channels=3)
    data_cfg = DataConfig(img_size=32, channels=3, cache_dir=tmp_path / "cache")
    ckpt = write_checkpoint(tmp_path / "dcgan.pt", cfg, data_cfg)
    out = generate(ckpt, tmp_path / "gen", GenerateConfig(num_per_class=3), data_cfg, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["all", "config.json", "manifest.csv"]
    assert sorted(p.name for p in (out / "all").iterdir()) == ["300000.png", "300001.png", "300002.png"]
    with Image.open(out / "all" / "300000.png") as img:
        assert (img.size, img.mode) == ((32, 32), "RGB")
    manifest = read_manifest(out)
    assert set(manifest["mode"]) == {"noise"} and manifest["source_image"].isna().all()
    with pytest.raises(ValueError, match="have no source image"):
        next(lpips_groups(out, "all"))
    with pytest.raises(ValueError, match="generates only that"):
        generate(
            ckpt, out, GenerateConfig(num_per_class=3), data_cfg, target_classes=[NORMAL], progress=False
        )


def test_bad_paths_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "nope.pt"
    with pytest.raises(FileNotFoundError, match=f"checkpoint {missing} does not exist"):
        generate(missing, tmp_path / "gen", GenerateConfig(), DataConfig(), progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.csv does not exist"):
        read_manifest(tmp_path)
    with pytest.raises(KeyError, match="/elsewhere.png is not in the source dataset"):
        SourceImages(fake_dataset(1))["/elsewhere.png"]


def test_generated_item_fields() -> None:
    item = GeneratedItem(7, NORMAL, "/val/a.png", COVID, "latent", 0)
    assert item.reference_image is None and item_file(item) == "normal/000007.png"


def hold(folder: Path, purpose: str) -> subprocess.Popen:
    """A live process holding ``folder`` (:func:`medsg_lib.files.folder_lock`) until killed."""
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom medsg_lib.files import folder_lock\n"
        "with folder_lock(Path(sys.argv[1]), sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(300)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), purpose], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def busy_message(folder: Path, pid: int, purpose: str) -> str:
    return (
        re.escape(f"{folder} is in use by process {pid} on {socket.gethostname()} ({purpose}, since ")
        + r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
        + re.escape(
            "); two writers would overwrite each other's files. Wait for it to finish or stop it, then run this "
            "again (a stopped run resumes)"
        )
    )


def test_a_second_writer_is_refused_and_a_dead_writers_lock_taken_over(tmp_path: Path) -> None:
    cfg, data_cfg = tiny_cfg("dcgan"), DataConfig(img_size=32)
    run = tmp_path / "run"
    holder = hold(run, "train dcgan")
    try:
        with pytest.raises(FolderBusyError, match=busy_message(run, holder.pid, "train dcgan")):
            train(cfg, data_cfg, run, dataset=SyntheticXrays(32, 1, num_per_class=4), progress=False)
        assert not (run / "config.json").exists()  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up; its lock file stays, naming it
        holder.wait()
    assert (run / ".medsg-lock").read_text().startswith(f"process {holder.pid} ")
    train(cfg, data_cfg, run, dataset=SyntheticXrays(32, 1, num_per_class=4), progress=False)  # taken over
    assert not (run / ".medsg-lock").exists()

    out = tmp_path / "gen"
    holder = hold(out, "generate from step_0000004.pt")
    try:
        with pytest.raises(
            FolderBusyError, match=busy_message(out, holder.pid, "generate from step_0000004.pt")
        ):
            generate(run / "checkpoints" / "step_0000004.pt", out, GenerateConfig(num_per_class=2), data_cfg)
    finally:
        holder.kill()
        holder.wait()
    generate(
        run / "checkpoints" / "step_0000004.pt",
        out,
        GenerateConfig(num_per_class=2),
        data_cfg,
        progress=False,
    )
    assert sorted(p.name for p in out.iterdir()) == ["all", "config.json", "manifest.csv"]


def test_generated_images_reads_every_class_folder_with_its_label(tmp_path: Path) -> None:
    from helpers import write_png

    from medsg_lib.generate.read import WHOLE_SET_LABEL, generated_images

    write_png(tmp_path / "gen" / "non_covid" / "1.png", 255, size=16)
    write_png(tmp_path / "gen" / "non_covid" / "0.png", 0, size=16)
    write_png(tmp_path / "gen" / "covid" / "5.png", 0, size=16)
    write_png(tmp_path / "gen" / "all" / "2.png", 255, size=16)
    read = generated_images(tmp_path / "gen", 8)
    assert read.x.shape == (4, 1, 8, 8)
    assert read.labels.tolist() == [0, 1, 1, WHOLE_SET_LABEL]  # class order, files sorted, "all" last
    assert read.x[:, 0, 0, 0].tolist() == [-1.0, -1.0, 1.0, 1.0]  # 0.png before 1.png; [-1, 1]
    only_classes = generated_images(tmp_path / "gen", 8, classes=CLASS_NAMES)
    assert only_classes.labels.tolist() == [0, 1, 1]
    with pytest.raises(
        FileNotFoundError,
        match=r"no generated images under .*gen/\{normal\}/\*\.png: run notebook 03 \(generation\) first",
    ):
        generated_images(tmp_path / "gen", 8, classes=("Normal",))
