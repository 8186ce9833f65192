"""Networks: Med-StyleGAN2 (StarGAN v2 architecture), StarGAN, CycleGAN, StyleGAN2, DCGAN, the vanilla GAN and the
X-ray classifier.

Each model family (:mod:`medsg_lib.families`) builds its networks from its own config."""

from __future__ import annotations

from torch import nn

from medsg_lib.models.cyclegan import PatchDiscriminator, ResnetGenerator, cyclegan_init_
from medsg_lib.models.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init_
from medsg_lib.models.gan import MLPDiscriminator, MLPGenerator
from medsg_lib.models.medsg import Discriminator, Generator, MappingNetwork, StyleEncoder
from medsg_lib.models.stargan import StarGANDiscriminator, StarGANGenerator
from medsg_lib.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "Discriminator",
    "Generator",
    "MLPDiscriminator",
    "MLPGenerator",
    "MappingNetwork",
    "PatchDiscriminator",
    "ResnetGenerator",
    "StarGANDiscriminator",
    "StarGANGenerator",
    "StyleEncoder",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "count_parameters",
    "cyclegan_init_",
    "dcgan_init_",
]


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
