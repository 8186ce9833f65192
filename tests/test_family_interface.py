"""The model-family interface is complete: a family defined and registered here (and nowhere else) is sized by
the smoke profile, planned by ``reproduce``, trains, checkpoints, resumes bit-exactly, exports and generates
through the unchanged trainer, checkpoint and generation code, and shows in Table 1, Figure 2 and the audit
labelled by its own ``label``. Expectations about the built-in families come from the registry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsg_lib import audit, losses
from medsg_lib.checkpoint import export_generator, latest_checkpoint, load_checkpoint, load_nets_for_inference
from medsg_lib.config import DataConfig, GenerateConfig, TrainConfig
from medsg_lib.data import SyntheticXrays
from medsg_lib.families import FAMILIES, get_family, register, resolve, unregister
from medsg_lib.families.base import (
    Batch,
    ModelFamily,
    SampleInputs,
    StepContext,
    StepPlan,
    TrainState,
    draw,
    item_seeds,
    optimise,
    record_terms,
)
from medsg_lib.generate import generate
from medsg_lib.manifest import GeneratedItem, item_latent, item_seed, read_manifest
from medsg_lib.plots import fig2_columns, fig2_panels, save_fig2
from medsg_lib.profiles import get_profile
from medsg_lib.reproduce import plan_jobs
from medsg_lib.table1 import build_table1, model_labels
from medsg_lib.training import train


@dataclass(frozen=True)
class TinyConfig:
    nz: int = 4
    lr: float = 1e-3


class TinyGenerator(nn.Module):
    def __init__(self, nz: int, img_size: int, channels: int) -> None:
        super().__init__()
        self.shape = (channels, img_size, img_size)
        self.fc = nn.Linear(nz, channels * img_size * img_size)

    def forward(self, z: Tensor) -> Tensor:  # (B, nz) -> (B, C, H, W) in [-1, 1]
        return torch.tanh(self.fc(z)).view(len(z), *self.shape)


class TinyFamily(ModelFamily):
    """A linear noise-to-image GAN: every method of the interface, nothing else."""

    name = "tiny"
    label = "Tiny GAN"
    config_cls = TinyConfig
    profile_nets = {"smoke": TinyConfig(nz=3)}  # its own sizes: no edit of profiles.py
    profile_loops = {"smoke": {"img_size": 16, "iterations": 3}}
    ema_nets = ("generator",)
    inference_nets = ("generator",)

    def build(self, cfg: TrainConfig, num_domains: int = 3) -> dict[str, nn.Module]:
        pixels = cfg.channels * cfg.img_size**2
        return {
            "generator": TinyGenerator(cfg.net.nz, cfg.img_size, cfg.channels),
            "discriminator": nn.Sequential(nn.Flatten(), nn.Linear(pixels, 1), nn.Flatten(0)),
        }

    def optimizers(self, cfg: TrainConfig, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {name: torch.optim.SGD(net.parameters(), lr=cfg.net.lr) for name, net in nets.items()}

    def step_planner(
        self, cfg: TrainConfig, labels: Tensor, batch: int
    ) -> Callable[[torch.Generator], StepPlan]:
        pool = torch.arange(len(labels))

        def plan(gen: torch.Generator) -> StepPlan:
            indices = draw(pool, batch, gen).tolist()
            z = [torch.randn(batch, cfg.net.nz, generator=gen)]
            return StepPlan(items=list(zip(indices, item_seeds(batch, gen), strict=True)), z=z)

        return plan

    def to_batch(self, x: Tensor, y: Tensor, plan: StepPlan) -> Batch:
        return Batch(x_real=x, y_org=y, z=tuple(plan.z))

    def train_step(
        self, state: TrainState, batch: Batch, cfg: TrainConfig, ctx: StepContext
    ) -> dict[str, Tensor | float]:
        gen, disc = state.nets["generator"], state.nets["discriminator"]
        terms: dict[str, Tensor | float] = {}
        loss, parts = losses.baseline_d_loss(disc, gen, batch.x_real, batch.z[0])
        record_terms(terms, "d", loss, parts)
        optimise(loss, [disc], [state.optimizers["discriminator"]], ctx.info)
        loss, parts = losses.baseline_g_loss(disc, gen, batch.z[0])
        record_terms(terms, "g", loss, parts)
        optimise(loss, [gen], [state.optimizers["generator"]], ctx.info)
        with torch.no_grad():
            for p_ema, p in zip(state.ema["generator"].parameters(), gen.parameters(), strict=True):
                p_ema.lerp_(p, 0.5)
        return terms

    def sample_inputs(self, cfg: TrainConfig, dataset: Dataset, labels: Tensor) -> SampleInputs:
        return SampleInputs(z=torch.randn(4, cfg.net.nz, generator=torch.Generator().manual_seed(cfg.seed)))

    def sample_grid(
        self, state: TrainState, cfg: TrainConfig, inputs: SampleInputs, device: torch.device
    ) -> tuple[Tensor, int]:
        with torch.no_grad():
            return state.ema["generator"](inputs.z.to(device)).cpu(), 2

    def plan_items(
        self, cfg: TrainConfig, gen_cfg: GenerateConfig, target_class: str, sources: Sequence | None
    ) -> list[GeneratedItem]:
        return [
            GeneratedItem(item_seed(gen_cfg.seed, target_class, i), target_class, None, None, "noise", None)
            for i in range(gen_cfg.num_per_class)
        ]

    def generate(
        self,
        nets: Mapping[str, nn.Module],
        cfg: TrainConfig,
        items: Sequence[GeneratedItem],
        lookup: Mapping[str, Tensor] | None,
        device: torch.device,
    ) -> Tensor:
        z = torch.stack([item_latent(it.seed, cfg.net.nz) for it in items]).to(device)
        return nets["generator"](z)


@pytest.fixture
def tiny_family():
    family = register(TinyFamily())
    yield family
    unregister(family.name)


def _cfg(**kw) -> TrainConfig:
    base = dict(
        model="tiny", img_size=16, batch_size=4, iterations=4, log_every=1, sample_every=2, ckpt_every=2
    )
    return TrainConfig(**{**base, **kw}, device="cpu")


def test_a_registered_family_trains_resumes_and_generates(tmp_path: Path, tiny_family: TinyFamily) -> None:
    data, data_cfg = SyntheticXrays(16, 1, num_per_class=4), DataConfig(img_size=16)
    assert _cfg().net is None and resolve(_cfg()).net == TinyConfig()  # the registry fills in its defaults
    train(_cfg(), data_cfg, tmp_path / "a", dataset=data, progress=False)
    train(_cfg(), data_cfg, tmp_path / "b", dataset=data, progress=False, stop_at=2)
    train(_cfg(), data_cfg, tmp_path / "b", dataset=data, progress=False)
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / run)) for run in "ab")
    assert a["step"] == b["step"] == 4 and set(a["ema"]) == {"generator"}
    for part in ("nets", "ema"):
        for net, state in a[part].items():
            assert all(torch.equal(v, b[part][net][k]) for k, v in state.items()), (part, net)
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == [
        "step_0000002.png",
        "step_0000004.png",
    ]

    exported = export_generator(latest_checkpoint(tmp_path / "a"), tmp_path / "tiny.safetensors")
    nets, cfg = load_nets_for_inference(exported)
    assert cfg == resolve(_cfg()) and set(nets) == {"generator"}
    torch.testing.assert_close(
        nets["generator"].fc.weight, a["ema"]["generator"]["fc.weight"]
    )  # the EMA copy

    out = generate(
        exported, tmp_path / "gen", GenerateConfig(num_per_class=3, batch_size=2), data_cfg, progress=False
    )
    manifest = read_manifest(out)
    assert list(manifest["file"]) == ["all/300000.png", "all/300001.png", "all/300002.png"]
    assert set(manifest["model"]) == {"tiny"} and manifest["source_image"].isna().all()
    assert all(Image.open(out / f).size == (16, 16) for f in manifest["file"])


def test_a_registered_family_is_sized_planned_and_shown(tmp_path: Path, tiny_family: TinyFamily) -> None:
    """With no edit anywhere else: the smoke profile sizes it, reproduce trains it, Table 1 has its row,
    Figure 2 its column and the audit its set, each labelled "Tiny GAN"."""
    smoke = get_profile("smoke")
    cfg = smoke.train_config("tiny")
    assert (cfg.net, cfg.img_size, cfg.iterations) == (TinyConfig(nz=3), 16, 3)
    assert {"profile": "smoke", "model": "tiny", "target_class": "all"} in [
        j.parameters for j in plan_jobs("smoke")
    ]

    # train and generate it into a generated/ tree as notebook 03 does
    train(cfg, smoke.data, tmp_path / "runs" / "tiny", dataset=SyntheticXrays(16, 1, 4), progress=False)
    out = generate(
        latest_checkpoint(tmp_path / "runs" / "tiny"),
        tmp_path / "generated" / "tiny",
        GenerateConfig(num_per_class=12, batch_size=4),
        replace(smoke.data, img_size=16),
        progress=False,
    )

    records = [
        {
            "model": "tiny",
            "class": "all",
            "metric": "fd_classifier",
            "protocol": "domain:classifier",
            "value": 1.5,
        }
    ]
    table = build_table1(records)
    assert table["model"].tolist()[-1] == "Tiny GAN (all)"
    assert table.iloc[-1]["FD (classifier) [95% CI]"] == "1.500"

    assert ("Tiny GAN", "tiny") in fig2_columns()
    panels = fig2_panels(tmp_path / "generated", [])
    assert panels[("COVID-19", "Tiny GAN")] == out / "all" / "300000.png"  # the whole-set run's first image
    save_fig2(panels, 16, tmp_path / "fig2.png")

    ref = _audit_reference()
    audits = audit.audit_generated(
        tmp_path / "generated", ref, _pooled, audit.AuditConfig(num_planted=0, min_gen_per_cell=2), 16
    )
    assert [(a.row["model"], a.row["class"]) for a in audits] == [("tiny", "all")]
    assert list(audit.distances_by_model(audits, model_labels())) == ["Tiny GAN"]


def _pooled(x: Tensor) -> Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, 16) stand-in features


def _audit_reference() -> audit.Reference:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 16, 16, generator=gen) * 2 - 1
    sides = [
        audit.RealSide(
            part, audit.features_of(part, _pooled), [f"/data/{n}/{i}.png" for i in range(len(part))]
        )
        for n, part in (("train", x[:60]), ("test", x[60:]))
    ]
    return audit.build_reference(sides[0], sides[1], audit.AuditConfig())


def test_unknown_model_names_the_registered_ones(tiny_family: TinyFamily) -> None:
    registered = ", ".join(map(repr, FAMILIES))
    assert registered.endswith("'tiny'")
    with pytest.raises(ValueError) as err:
        resolve(TrainConfig(model="vae"))
    assert str(err.value) == f"TrainConfig.model='vae' is not allowed; choose one of {registered}"
    with pytest.raises(
        ValueError, match=r"TrainConfig.net is a TinyConfig but model='dcgan' takes a DCGANConfig"
    ):
        resolve(TrainConfig(model="dcgan", net=TinyConfig()))
    assert get_family("tiny") is tiny_family
    with pytest.raises(ValueError, match=r"a different model family is already registered as 'gan'"):
        register(type("Other", (TinyFamily,), {"name": "gan"})())


def test_config_does_not_import_the_registry() -> None:
    """The registry resolves a config, not the other way round: importing the config module in a fresh
    interpreter loads no model code."""
    code = "import sys, medsg_lib.config; print(sorted(m for m in sys.modules if m.startswith('medsg_lib.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "medsg_lib.families" not in out and "medsg_lib.models" not in out, out
