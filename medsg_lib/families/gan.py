"""The vanilla GAN (Goodfellow et al. 2014), the paper's MLP baseline: see :mod:`medsg_lib.families.noise`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from medsg_lib.config import check_positive
from medsg_lib.families.base import NUM_DOMAINS
from medsg_lib.families.noise import NoiseGAN
from medsg_lib.models.gan import MLPDiscriminator, MLPGenerator

if TYPE_CHECKING:
    from medsg_lib.config import TrainConfig


@dataclass(frozen=True)
class GANConfig:
    """The vanilla GAN's own fields."""

    nz: int = 100  # latent size
    hidden: int = 1024  # width of the hidden layers
    lr: float = 2e-4
    beta1: float = 0.5

    def __post_init__(self) -> None:
        check_positive(self, "nz", "hidden", "lr")


class VanillaGAN(NoiseGAN):
    name = "gan"
    label = "GAN"
    config_cls = GANConfig

    def build(self, cfg: TrainConfig, num_domains: int = NUM_DOMAINS) -> dict[str, nn.Module]:
        net: GANConfig = cfg.net
        size = {"img_size": cfg.img_size, "img_channels": cfg.channels}
        return {
            "generator": MLPGenerator(nz=net.nz, hidden=net.hidden, **size),
            "discriminator": MLPDiscriminator(hidden=net.hidden, **size),
        }
