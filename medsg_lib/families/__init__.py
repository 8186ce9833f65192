"""The registry of model families: ``FAMILIES[name]`` owns everything model-specific (:mod:`.base`).

Adding a model is one new module with a :class:`~medsg_lib.families.base.ModelFamily` subclass and its config
dataclass, plus one entry below (``docs/adding-a-model.md``). The order of the registry is the order in which
``reproduce`` trains the models.
"""

from __future__ import annotations

from medsg_lib.families.base import ModelFamily
from medsg_lib.families.dcgan import DCGAN, DCGANConfig
from medsg_lib.families.gan import GANConfig, VanillaGAN
from medsg_lib.families.medsg import MedSGConfig, MedStyleGAN2

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (MedStyleGAN2(), DCGAN(), VanillaGAN())}

__all__ = ["FAMILIES", "DCGANConfig", "GANConfig", "MedSGConfig", "ModelFamily", "get_family", "register"]


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name``; unknown names raise with the registered ones."""
    if name not in FAMILIES:
        raise ValueError(
            f"TrainConfig.model={name!r} is not allowed; choose one of {', '.join(map(repr, FAMILIES))}"
        )
    return FAMILIES[name]


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry (a model defined outside this package, e.g. in a test); returns it."""
    if family.name in FAMILIES and type(FAMILIES[family.name]) is not type(family):
        raise ValueError(f"a different model family is already registered as {family.name!r}")
    FAMILIES[family.name] = family
    return family
