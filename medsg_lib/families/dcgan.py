"""DCGAN (Radford et al. 2015), the paper's convolutional baseline: see :mod:`medsg_lib.families.noise`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from medsg_lib.families.base import NUM_DOMAINS
from medsg_lib.families.noise import NoiseConfig, NoiseGAN
from medsg_lib.models.dcgan import DCGANDiscriminator, DCGANGenerator

if TYPE_CHECKING:
    from medsg_lib.config import TrainConfig


@dataclass(frozen=True)
class DCGANConfig(NoiseConfig):
    """DCGAN's own fields (the reference recipe's defaults); every positive number is checked."""

    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width


class DCGAN(NoiseGAN):
    name = "dcgan"
    label = "DCGAN"
    paper_row = "DCGAN"
    config_cls = DCGANConfig
    profile_nets = {"smoke": DCGANConfig(ngf=8, ndf=8), "cpu": DCGANConfig(ngf=32, ndf=32)}

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: DCGANConfig = cfg.net
        return {
            "generator": DCGANGenerator(
                nz=net.nz, ngf=net.ngf, img_channels=cfg.channels, img_size=cfg.img_size
            ),
            "discriminator": DCGANDiscriminator(
                ndf=net.ndf, img_channels=cfg.channels, img_size=cfg.img_size
            ),
        }
