"""The vanilla GAN (Goodfellow et al. 2014), the paper's MLP baseline: see :mod:`medsg_lib.families.noise`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from medsg_lib.families.base import NUM_DOMAINS
from medsg_lib.families.noise import NOISE_LOOPS, NoiseConfig, NoiseGAN
from medsg_lib.models.gan import MLPDiscriminator, MLPGenerator

if TYPE_CHECKING:
    from medsg_lib.config import TrainConfig


@dataclass(frozen=True)
class GANConfig(NoiseConfig):
    """The vanilla GAN's own fields; every positive number is checked."""

    hidden: int = 1024  # width of the hidden layers


class VanillaGAN(NoiseGAN):
    name = "gan"
    label = "GAN"
    paper_row = "GAN"
    config_cls = GANConfig
    profile_nets = {"smoke": GANConfig(hidden=64), "cpu": GANConfig(hidden=512)}
    # the GAN's small MLPs gain nothing from bf16 (measured 0.96x): fp32 in the cpu profile
    profile_loops = {**NOISE_LOOPS, "cpu": {**NOISE_LOOPS["cpu"], "amp": "off"}}

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: GANConfig = cfg.net
        size = {"img_size": cfg.img_size, "img_channels": cfg.channels}
        return {
            "generator": MLPGenerator(nz=net.nz, hidden=net.hidden, **size),
            "discriminator": MLPDiscriminator(hidden=net.hidden, **size),
        }
