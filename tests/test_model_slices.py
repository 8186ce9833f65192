"""Pinned outputs of every network, diffusers style: a tiny model built from a fixed seed gives exact values.

Each case builds one network directly from its class constructor (not through ``build_models`` or
``TrainConfig``) right after ``torch.manual_seed(0)``, feeds it inputs drawn from
``torch.Generator().manual_seed(1)`` and compares the output's shape, its first values, its sum and a slice of
one named parameter right after initialisation (so a changed init that keeps the parameter count fails too).
Tolerance: ``rtol=1e-4, atol=1e-5`` (one torch thread, from ``conftest.py``'s autouse fixture).

Regenerating after an *intended* architecture or init change: run ``python tests/test_model_slices.py`` from
the repository root; it prints, per case, the values to paste into ``CASES``. Say why in the commit message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from medsg_lib.models.classifier import build_classifier
from medsg_lib.models.dcgan import DCGANDiscriminator, DCGANGenerator
from medsg_lib.models.gan import MLPDiscriminator, MLPGenerator
from medsg_lib.models.medsg import Discriminator, Generator, MappingNetwork, StyleEncoder

TOL = {"rtol": 1e-4, "atol": 1e-5}
NUM_VALUES = 6  # leading values pinned, of the flattened output and of the parameter
B, S = 4, 32  # batch size, image size (pixels)
MEDSG = {"img_size": S, "img_channels": 1, "base_width": 8, "max_width": 32}


def _x(gen: torch.Generator) -> Tensor:
    return torch.rand(B, 1, S, S, generator=gen) * 2 - 1  # (B, 1, S, S) in [-1, 1]


def _y() -> Tensor:
    return torch.tensor([0, 1, 2, 0])  # (B,) domains


def _z(gen: torch.Generator, dim: int = 8) -> Tensor:
    return torch.randn(B, dim, generator=gen)  # (B, dim) ~ N(0, I)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]  # called right after torch.manual_seed(0)
    train_mode: bool  # net.train(train_mode) before the forward pass
    inputs: Callable[[torch.Generator], tuple[Tensor, ...]]  # from torch.Generator().manual_seed(1)
    param: str  # name of the pinned parameter
    shape: tuple[int, ...]
    out_slice: list[float]  # first NUM_VALUES values of the flattened output
    out_sum: float
    param_slice: list[float]  # first NUM_VALUES values of the flattened parameter, after init

    def __str__(self) -> str:
        return self.name


# Modes: Med-StyleGAN2 nets use InstanceNorm without running statistics and the MLP GAN has no norm and
# dropout 0, so their mode does not change the output; eval() is set (as in generation). BatchNorm nets are
# pinned deliberately: DCGAN in train() (batch statistics, as in training; a fresh DCGAN generator in eval()
# gives outputs ~1e-5, below atol, so that pin would be vacuous), the classifier in eval() (running
# statistics, as in metrics and CAM). DCGAN nets apply dcgan_init_ in their constructors, which is all the
# trainer's build_models does to them.
CASES = [
    Case(
        name="generator",
        build=lambda: Generator(**MEDSG, style_dim=16),
        train_mode=False,
        inputs=lambda gen: (_x(gen), _z(gen, 16)),  # x, s (B, style_dim)
        param="from_rgb.weight",
        shape=(B, 1, S, S),
        out_slice=[-0.6476686, -0.79350024, -0.59944564, -0.29380968, -0.16626766, -0.54999286],
        out_sum=-1754.043,
        param_slice=[-0.33787492, -0.78221047, -0.42098957, -0.88786197, -0.082874537, -0.83265561],
    ),
    Case(
        name="mapping_network",
        build=lambda: MappingNetwork(latent_dim=8, style_dim=16, num_domains=3, hidden_dim=32),
        train_mode=False,
        inputs=lambda gen: (_z(gen), _y()),
        param="shared.0.weight",
        shape=(B, 16),
        out_slice=[-0.10746048, -0.011349981, -0.20966201, 0.19199345, -0.88653994, -0.068461433],
        out_sum=-4.0464673,
        param_slice=[-0.069444008, 0.38607767, 0.70560259, 0.76470178, 0.29698509, -0.43811873],
    ),
    Case(
        name="style_encoder",
        build=lambda: StyleEncoder(**MEDSG, style_dim=16, num_domains=3),
        train_mode=False,
        inputs=lambda gen: (_x(gen), _y()),
        param="unshared.0.weight",
        shape=(B, 16),
        out_slice=[0.11011901, 0.082086027, -0.10486946, -0.13869052, -0.1224354, 0.043640736],
        out_sum=-0.38696986,
        param_slice=[0.08531075, 0.011655937, -0.15286845, -0.071832754, -0.066080153, -0.20213608],
    ),
    Case(
        name="discriminator",
        build=lambda: Discriminator(**MEDSG, num_domains=3),
        train_mode=False,
        inputs=lambda gen: (_x(gen), _y()),
        param="main.0.weight",
        shape=(B,),
        out_slice=[-0.15498742, -0.22727811, -0.084314011, -0.074703529],
        out_sum=-0.54128307,
        param_slice=[0.90201038, 0.082127489, -0.50217175, -0.20788376, -0.25639161, 0.2593151],
    ),
    Case(
        name="dcgan_generator_train",
        build=lambda: DCGANGenerator(nz=8, ngf=8, img_channels=1, img_size=S),
        train_mode=True,
        inputs=lambda gen: (_z(gen),),
        param="main.1.weight",  # BatchNorm scale: N(1, 0.02) under dcgan_init_, 1 without it
        shape=(B, 1, S, S),
        out_slice=[0.00042715354, 0.0048481487, 0.0082360599, 0.04293878, -0.0085065737, 0.028264413],
        out_sum=52.64941,
        param_slice=[1.0108397, 1.0051491, 0.99295539, 0.96949929, 1.0027411, 0.98181778],
    ),
    Case(
        name="dcgan_discriminator",
        build=lambda: DCGANDiscriminator(ndf=8, img_channels=1, img_size=S),
        train_mode=True,
        inputs=lambda gen: (_x(gen),),
        param="main.0.weight",
        shape=(B,),
        out_slice=[0.23236383, -0.29386604, -0.015978441, 0.34824768],
        out_sum=0.27076703,
        param_slice=[-0.0037921011, 0.017263873, 0.0093273856, 0.02754892, 0.0077307201, -0.018719476],
    ),
    Case(
        name="mlp_generator",
        build=lambda: MLPGenerator(nz=8, hidden=64, img_size=S, img_channels=1),
        train_mode=False,
        inputs=lambda gen: (_z(gen),),
        param="main.0.weight",
        shape=(B, 1, S, S),
        out_slice=[-0.0037637176, 0.14095879, 0.20195824, 0.075839363, -0.074763253, -0.047515742],
        out_sum=-18.166765,
        param_slice=[-0.0026469906, 0.18966144, -0.29099038, -0.26019374, -0.13617262, 0.094807945],
    ),
    Case(
        name="mlp_discriminator",
        build=lambda: MLPDiscriminator(hidden=64, img_size=S, img_channels=1),
        train_mode=False,
        inputs=lambda gen: (_x(gen),),
        param="main.0.weight",
        shape=(B,),
        out_slice=[0.15851784, 0.14474276, 0.20100971, 0.18457147],
        out_sum=0.68884182,
        param_slice=[-0.00023396313, 0.016763862, -0.02572016, -0.022998095, -0.012036074, 0.0083799176],
    ),
    Case(
        name="classifier",
        build=lambda: build_classifier("resnet18", in_channels=1, num_classes=3),  # scratch init
        train_mode=False,
        inputs=lambda gen: (_x(gen),),
        param="conv1.weight",  # the one-channel stem
        shape=(B, 3),
        out_slice=[-0.32092485, -0.016223351, 0.13453054, -0.27378735, -0.049636133, 0.34171611],
        out_sum=-1.0837333,
        param_slice=[0.1104359, -0.082537688, 0.080588631, 0.057352614, -0.086024694, 0.012942587],
    ),
]


def run_case(case: Case) -> tuple[Tensor, Tensor]:
    """Build ``case``'s network from seed 0 and run it on seed-1 inputs; returns (output, parameter slice)."""
    torch.manual_seed(0)
    net = case.build()
    param_slice = net.get_parameter(case.param).detach().flatten()[:NUM_VALUES].clone()
    net.train(case.train_mode)
    with torch.no_grad():
        out = net(*case.inputs(torch.Generator().manual_seed(1)))
    return out, param_slice


@pytest.mark.parametrize("case", CASES, ids=str)
def test_model_slice(case: Case) -> None:
    out, param_slice = run_case(case)
    assert tuple(out.shape) == case.shape
    torch.testing.assert_close(out.flatten()[:NUM_VALUES], torch.tensor(case.out_slice), **TOL)
    torch.testing.assert_close(out.sum(), torch.tensor(case.out_sum), **TOL)
    torch.testing.assert_close(param_slice, torch.tensor(case.param_slice), **TOL)


def _print_expected() -> None:
    """Print each case's current values in the form of ``CASES`` (to paste after an intended change)."""
    torch.set_num_threads(1)  # as the tests run (conftest.py)
    for case in CASES:
        out, param_slice = run_case(case)
        values = [f"{v:.8g}" for v in out.flatten()[:NUM_VALUES].tolist()]
        print(f"{case.name}:")
        print(f"    shape={tuple(out.shape)},")
        print(f"    out_slice=[{', '.join(values)}],")
        print(f"    out_sum={out.sum().item():.8g},")
        print(f"    param_slice=[{', '.join(f'{v:.8g}' for v in param_slice.tolist())}],")


if __name__ == "__main__":
    _print_expected()
