"""RSGAN (Jolicoeur-Martineau, ICLR 2019): the relativistic standard GAN loss on the DCGAN networks.

The discriminator's logit becomes a critic ``C``; the discriminator learns that a real image is more realistic than
a fake one, ``L_D = -E[log sigmoid(C(x_r) - C(x_f))]``, the generator the opposite, ``L_G = -E[log sigmoid(C(x_f) -
C(x_r))]``, each real image paired with one fake of the same step (:func:`medsg_lib.losses.rsgan_d_loss`). Networks,
optimiser (Adam 2e-4, betas (0.5, 0.999), one D step per G step, as in the paper's DCGAN experiments), sizes and
training targets (the whole set and each class) are DCGAN's: only the loss differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from medsg_lib import losses
from medsg_lib.families.base import Batch
from medsg_lib.families.dcgan import DCGAN, DCGANConfig


@dataclass(frozen=True)
class RSGANConfig(DCGANConfig):
    """RSGAN's own fields: DCGAN's (its networks and optimiser)."""


class RSGAN(DCGAN):
    name = "rsgan"
    label = "RSGAN"
    paper_row = "RSGAN"
    config_cls = RSGANConfig
    profile_nets = {"smoke": RSGANConfig(ngf=8, ndf=8), "cpu": RSGANConfig(ngf=32, ndf=32)}

    def d_loss(self, disc: nn.Module, gen: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return losses.rsgan_d_loss(disc, gen, batch.x_real, batch.z[0])

    def g_loss(self, disc: nn.Module, gen: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return losses.rsgan_g_loss(disc, gen, batch.x_real, batch.z[0])
