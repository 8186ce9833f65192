"""Networks: Med-StyleGAN2 (StarGAN v2 architecture), DCGAN and the vanilla GAN; built from a TrainConfig."""

from __future__ import annotations

from torch import nn

from medsg_lib.config import TrainConfig
from medsg_lib.models.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init_
from medsg_lib.models.gan import MLPDiscriminator, MLPGenerator
from medsg_lib.models.medsg import Discriminator, Generator, MappingNetwork, StyleEncoder

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "Discriminator",
    "Generator",
    "MLPDiscriminator",
    "MLPGenerator",
    "MappingNetwork",
    "StyleEncoder",
    "build_models",
    "count_parameters",
    "dcgan_init_",
]


def build_models(cfg: TrainConfig, num_domains: int = 3) -> dict[str, nn.Module]:
    """Freshly initialised networks of ``cfg.model`` (on CPU, in train mode).

    Returns:
        ``"medsg"``: ``{"generator", "mapping_network", "style_encoder", "discriminator"}``;
        ``"dcgan"`` / ``"gan"``: ``{"generator", "discriminator"}`` (``num_domains`` is then unused).
    """
    if cfg.model == "medsg":
        width = {
            "img_size": cfg.img_size,
            "img_channels": cfg.channels,
            "base_width": cfg.resolved_base_width,
        }
        return {
            "generator": Generator(
                **width, max_width=cfg.max_width, style_dim=cfg.style_dim, w_hpf=cfg.w_hpf
            ),
            "mapping_network": MappingNetwork(
                latent_dim=cfg.latent_dim,
                style_dim=cfg.style_dim,
                num_domains=num_domains,
                hidden_dim=cfg.mapping_hidden,
            ),
            "style_encoder": StyleEncoder(
                **width, max_width=cfg.max_width, style_dim=cfg.style_dim, num_domains=num_domains
            ),
            "discriminator": Discriminator(**width, max_width=cfg.max_width, num_domains=num_domains),
        }
    if cfg.model == "dcgan":
        return {
            "generator": DCGANGenerator(
                nz=cfg.nz, ngf=cfg.ngf, img_channels=cfg.channels, img_size=cfg.img_size
            ),
            "discriminator": DCGANDiscriminator(
                ndf=cfg.ndf, img_channels=cfg.channels, img_size=cfg.img_size
            ),
        }
    if cfg.model == "gan":
        return {
            "generator": MLPGenerator(
                nz=cfg.nz, hidden=cfg.gan_hidden, img_size=cfg.img_size, img_channels=cfg.channels
            ),
            "discriminator": MLPDiscriminator(
                hidden=cfg.gan_hidden, img_size=cfg.img_size, img_channels=cfg.channels
            ),
        }
    raise ValueError(f"TrainConfig.model={cfg.model!r} is not allowed; choose one of 'medsg', 'dcgan', 'gan'")


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
