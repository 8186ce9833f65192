"""Losses of Med-StyleGAN2 (StarGAN v2 objective) and of the baselines.

Modules: :mod:`~medsg_lib.losses.common` (adversarial loss, R1), :mod:`~medsg_lib.losses.medsg`,
:mod:`~medsg_lib.losses.baselines` (GAN/DCGAN, RSGAN) and :mod:`~medsg_lib.losses.translators` (StarGAN,
CycleGAN); everything public is importable from ``medsg_lib.losses``.

Small pure functions first, then the two per-step objectives that compose them. Equation numbers refer to
StarGAN v2 (Choi et al., CVPR 2020), Section 2.2, as summarised in ``docs/paper.md``:

- (1) adversarial, non-saturating: ``L_adv = E[log D_y(x)] + E[log(1 - D_y~(G(x, s~)))]``
- (2) style reconstruction: ``L_sty = E[|s~ - E_y~(G(x, s~))|_1]``
- (3) diversity sensitive: ``L_ds = E[|G(x, s~1) - G(x, s~2)|_1]`` (maximised, so subtracted)
- (4) cycle consistency: ``L_cyc = E[|x - G(G(x, s~), s^)|_1]`` with ``s^ = E_y(x)``
- R1 (Mescheder et al. 2018): ``R1 = 0.5 * E[|grad_x D_y(x)|^2]`` on real images.

``nets`` is a mapping with the keys ``"generator"``, ``"mapping_network"``, ``"style_encoder"`` and
``"discriminator"`` (see :func:`medsg_lib.models.build_models`). Loss dicts hold detached 0-d tensors: the
trainer turns them into numbers once per log interval, so a step never waits for the device to report a loss.

Baselines of the translation and relativistic comparisons (last section), one line per model:

- StarGAN (Choi et al., CVPR 2018): WGAN-GP ``D: -E[D(x)] + E[D(G(x, c))] + l_cls CE + l_gp E[(|grad D(x^)| - 1)^2]``,
  ``G: -E[D(G(x, c))] + l_cls CE + l_rec E[|x - G(G(x, c), c')|_1]``.
- CycleGAN (Zhu et al., ICCV 2017): least squares GAN ``E[(D(x) - t)^2]`` per direction, cycle
  ``l_cyc E[|G_ba(G_ab(a)) - a|_1]`` both ways, identity ``l_cyc l_idt E[|G_ab(b) - b|_1]``; fakes via an image pool.
- StyleGAN2 (Karras et al., CVPR 2020): non-saturating logistic loss, lazy R1 and path-length regularisation
  (:mod:`~medsg_lib.losses.stylegan2`).
- RSGAN (Jolicoeur-Martineau, ICLR 2019): relativistic standard GAN ``D: E[softplus(-(C(x_r) - C(x_f)))]``,
  ``G: E[softplus(-(C(x_f) - C(x_r)))]``.
"""

from medsg_lib.losses.baselines import (
    baseline_d_loss,
    baseline_g_loss,
    rsgan_d_loss,
    rsgan_g_loss,
)
from medsg_lib.losses.common import (
    adv_loss,
    cycle_loss,
    detached,
    r1_reg,
)
from medsg_lib.losses.medsg import (
    diversity_loss,
    lambda_ds_at,
    medsg_d_loss,
    medsg_g_loss,
    style_recon_loss,
)
from medsg_lib.losses.stylegan2 import ema_beta, path_length_penalty
from medsg_lib.losses.translators import (
    cyclegan_d_loss,
    cyclegan_g_loss,
    gradient_penalty,
    interpolates,
    lsgan_loss,
    pool_query,
    stargan_d_loss,
    stargan_g_loss,
)

__all__ = [
    "adv_loss",
    "baseline_d_loss",
    "baseline_g_loss",
    "cycle_loss",
    "cyclegan_d_loss",
    "cyclegan_g_loss",
    "detached",
    "diversity_loss",
    "ema_beta",
    "gradient_penalty",
    "interpolates",
    "lambda_ds_at",
    "lsgan_loss",
    "medsg_d_loss",
    "medsg_g_loss",
    "path_length_penalty",
    "pool_query",
    "r1_reg",
    "rsgan_d_loss",
    "rsgan_g_loss",
    "stargan_d_loss",
    "stargan_g_loss",
    "style_recon_loss",
]
