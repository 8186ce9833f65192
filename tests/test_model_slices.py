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
from medsg_lib.models.cyclegan import PatchDiscriminator, ResnetGenerator
from medsg_lib.models.dcgan import DCGANDiscriminator, DCGANGenerator
from medsg_lib.models.gan import MLPDiscriminator, MLPGenerator
from medsg_lib.models.medsg import Discriminator, Generator, MappingNetwork, StyleEncoder
from medsg_lib.models.stargan import StarGANDiscriminator, StarGANGenerator

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


def _c() -> Tensor:
    return torch.nn.functional.one_hot(_y(), 3).float()  # (B, 3) one-hot target domains


class _Output(nn.Module):
    """One output of a network that returns a tuple (the StarGAN discriminator's ``(out_src, out_cls)``)."""

    def __init__(self, net: nn.Module, index: int) -> None:
        super().__init__()
        self.net, self.index = net, index

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net(*inputs)[self.index]


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
# trainer's build_models does to them. The StarGAN generator's instance norm tracks running statistics (as
# the reference), so it is pinned in train() (each image's own statistics, as in training); a fresh one in
# eval() normalises with mean 0 and variance 1, i.e. not at all. CycleGAN nets (instance norm without running
# statistics) and the StarGAN discriminator (no norm) do not depend on the mode; eval() is set. The StarGAN
# discriminator is pinned once per output, at repeat_num 3 (a 4x4 map: all 9 taps of the patch head are used).
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
    Case(
        name="stargan_generator_train",
        build=lambda: StarGANGenerator(conv_dim=8, c_dim=3, repeat_num=2, img_channels=1),
        train_mode=True,
        inputs=lambda gen: (_x(gen), _c()),
        param="main.0.weight",
        shape=(B, 1, S, S),
        out_slice=[-0.18750896, -0.007652143, -0.17054413, -0.064346291, -0.13835779, -0.38110134],
        out_sum=-982.25983,
        param_slice=[-0.00053477287, 0.038317401, -0.05878894, -0.052567076, -0.027511027, 0.019154098],
    ),
    Case(
        name="stargan_discriminator_src",
        build=lambda: _Output(StarGANDiscriminator(S, conv_dim=8, c_dim=3, repeat_num=3, img_channels=1), 0),
        train_mode=False,
        inputs=lambda gen: (_x(gen),),
        param="net.main.0.weight",
        shape=(B, 1, 4, 4),
        out_slice=[-0.0002573356, 0.026775243, 0.0048782909, 0.018266525, -0.0071180873, 0.020031381],
        out_sum=0.92067564,
        param_slice=[-0.0018717051, 0.1341109, -0.20576128, -0.18398476, -0.096288592, 0.067039341],
    ),
    Case(
        name="stargan_discriminator_cls",
        build=lambda: _Output(StarGANDiscriminator(S, conv_dim=8, c_dim=3, repeat_num=3, img_channels=1), 1),
        train_mode=False,
        inputs=lambda gen: (_x(gen),),
        param="net.conv_cls.weight",
        shape=(B, 3),
        out_slice=[0.022861548, 0.010565024, 0.030268274, 0.033928424, 0.022768788, 0.05005268],
        out_sum=0.2822789,
        param_slice=[-0.037264708, -0.0024811323, -0.018289439, 0.03342006, 0.017093234, 0.0011008967],
    ),
    Case(
        name="resnet_generator",
        build=lambda: ResnetGenerator(img_channels=1, ngf=8, n_blocks=2),
        train_mode=False,
        inputs=lambda gen: (_x(gen),),
        param="main.1.weight",  # the stem conv: N(0, 0.02) under cyclegan_init_
        shape=(B, 1, S, S),
        out_slice=[-0.10804001, -0.21511398, -0.21782389, -0.53758931, -0.38932216, -0.038538054],
        out_sum=-405.04001,
        param_slice=[0.02348477, -0.0040614195, 0.0031798386, -0.020566996, 0.0018186045, -0.0061638514],
    ),
    Case(
        name="patch_discriminator",
        build=lambda: PatchDiscriminator(img_channels=1, ndf=8, n_layers=3),
        train_mode=False,
        inputs=lambda gen: (_x(gen),),
        param="main.0.weight",
        shape=(B, 1, 2, 2),
        out_slice=[0.46573219, 0.14080317, -0.51022667, -0.18541218, 0.0071250051, 0.10077278],
        out_sum=-1.8519468,
        param_slice=[0.001991573, -0.016124506, -0.00070242718, 0.024355518, 0.018156301, -0.0047950083],
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
