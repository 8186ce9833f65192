"""The registry of model families: ``FAMILIES[name]`` owns everything model-specific (:mod:`.base`).

Adding a model is one new module with a :class:`~medsg_lib.families.base.ModelFamily` subclass and its config
dataclass, plus one entry below (``docs/adding-a-model.md``). The order of the registry is the order in which
``reproduce`` trains the models and in which tables and figures show them.

The registry resolves a :class:`~medsg_lib.config.TrainConfig` (:func:`resolve`: its ``net`` becomes the family's
config dataclass, then the family checks the run); the config module never imports model code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from medsg_lib.config import TrainConfig, from_jsonable
from medsg_lib.families.base import ModelFamily
from medsg_lib.families.cyclegan import CycleGAN, CycleGANConfig
from medsg_lib.families.dcgan import DCGAN, DCGANConfig
from medsg_lib.families.gan import GANConfig, VanillaGAN
from medsg_lib.families.medsg import MedSGConfig, MedStyleGAN2
from medsg_lib.families.rsgan import RSGAN, RSGANConfig
from medsg_lib.families.stargan import StarGAN, StarGANConfig
from medsg_lib.families.stylegan2 import StyleGAN2, StyleGAN2Config

FAMILIES: dict[str, ModelFamily] = {
    f.name: f for f in (MedStyleGAN2(), StarGAN(), CycleGAN(), DCGAN(), RSGAN(), VanillaGAN(), StyleGAN2())
}

__all__ = [
    "FAMILIES",
    "CycleGANConfig",
    "DCGANConfig",
    "GANConfig",
    "MedSGConfig",
    "ModelFamily",
    "RSGANConfig",
    "StarGANConfig",
    "StyleGAN2Config",
    "family_of",
    "get_family",
    "labels",
    "load_train_config",
    "register",
    "resolve",
    "unregister",
    "with_capability",
]


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name``; unknown names raise with the registered ones."""
    if name not in FAMILIES:
        raise ValueError(
            f"TrainConfig.model={name!r} is not allowed; choose one of {', '.join(map(repr, FAMILIES))}"
        )
    return FAMILIES[name]


def family_of(cfg: TrainConfig) -> ModelFamily:
    """The family of ``cfg.model``."""
    return get_family(cfg.model)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``net`` as its family's config dataclass (``None``: the family's defaults; a dict: from
    JSON), after the family's own checks (:meth:`ModelFamily.check_config`). Idempotent."""
    family = family_of(cfg)
    net = cfg.net
    if net is None:
        net = family.config_cls()
    elif isinstance(net, Mapping):
        net = from_jsonable(family.config_cls, dict(net))
    elif type(net) is not family.config_cls:
        raise ValueError(
            f"TrainConfig.net is a {type(net).__name__} but model={cfg.model!r} takes a "
            f"{family.config_cls.__name__} (or None for its defaults)"
        )
    if net is not cfg.net:
        cfg = dataclasses.replace(cfg, net=net)
    family.check_config(cfg)
    return cfg


def load_train_config(data: Mapping[str, Any]) -> TrainConfig:
    """The resolved :class:`TrainConfig` of a JSON dict (``config.json``'s ``"train"``, a checkpoint's)."""
    return resolve(from_jsonable(TrainConfig, dict(data)))


def labels() -> dict[str, str]:
    """Registry key -> display label of every family (tables, figures, the audit)."""
    return {name: f.label for name, f in FAMILIES.items()}


def with_capability(
    *, translates: bool | None = None, class_conditional: bool | None = None
) -> list[ModelFamily]:
    """The registered families (in registry order) with the given capabilities (None: either).

    ``translates``: image-to-image (generation translates source images); ``class_conditional``: one trained
    model generates every class."""
    return [
        f
        for f in FAMILIES.values()
        if (translates is None or f.translates == translates)
        and (class_conditional is None or f.class_conditional == class_conditional)
    ]


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry (a model defined outside this package, e.g. in a test); returns it."""
    if family.name in FAMILIES and type(FAMILIES[family.name]) is not type(family):
        raise ValueError(f"a different model family is already registered as {family.name!r}")
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove the family registered as ``name`` (tests that registered one); unknown names are ignored."""
    FAMILIES.pop(name, None)
