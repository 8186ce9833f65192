"""The classifier stage of the pipeline: the project's X-ray classifier, trained once and evaluated."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from medsg_lib.classify.checkpoint import CHECKPOINT_NAME, load_classifier
from medsg_lib.classify.evaluation import evaluate_classifier, evaluation_split
from medsg_lib.classify.trainer import BATCHNORM_DESCRIPTION, resolved_config, train_classifier
from medsg_lib.config import ClassifierConfig, DataConfig, PhantomConfig, to_jsonable
from medsg_lib.data import build_dataset
from medsg_lib.data.phantoms import rendered_training_set
from medsg_lib.devices import select_device
from medsg_lib.files import ALL_CLASSES, CONFIG_NAME, check_seed_count, project_relative, read_json, run_name
from medsg_lib.plots import save_confusion_figure
from medsg_lib.report import write_json


def renders_phantoms(cfg: ClassifierConfig, layout: str) -> bool:
    """Whether a classifier of ``cfg`` trains on rendered phantoms for a data set of ``layout``."""
    return cfg.phantoms_per_class > 0 and layout == "phantoms"


def effective_config(cfg: ClassifierConfig, layout: str) -> ClassifierConfig:
    """``cfg`` as it trains for ``layout``: on rendered phantoms its ``epochs`` are ``phantom_epochs``."""
    return replace(cfg, epochs=cfg.phantom_epochs) if renders_phantoms(cfg, layout) else cfg


def classifier_training_set(
    cfg: ClassifierConfig, data_cfg: DataConfig, phantoms: PhantomConfig | None, progress: bool = True
) -> tuple[Dataset, str]:
    """What a classifier of ``cfg`` trains on, and a line that says so: on the phantoms with
    ``cfg.phantoms_per_class`` > 0, that many rendered training phantoms per class
    (:func:`~medsg_lib.data.phantoms.rendered_training_set`, cached in ``data_cfg.cache_dir``); otherwise the
    training split of ``data_cfg`` (real images cannot be rendered: the line says the setting was not used)."""
    if renders_phantoms(cfg, data_cfg.layout):
        n = cfg.phantoms_per_class
        rendered = rendered_training_set(
            phantoms or PhantomConfig(), n, data_cfg.img_size, data_cfg.cache_dir, progress
        )
        return rendered, f"{n} rendered training phantoms per class"
    train_set = build_dataset(data_cfg, "train", phantoms, train=False, progress=progress)
    unused = f" (phantoms_per_class={cfg.phantoms_per_class} applies to the phantoms only)"
    return train_set, "the training split" + (unused if cfg.phantoms_per_class else "")


def ensure_classifier(
    cfg: ClassifierConfig,
    data_cfg: DataConfig,
    run_dir: Path,
    *,
    phantoms: PhantomConfig | None = None,
    results_dir: Path | None = None,
    figures_dir: Path | None = None,
    progress: bool = True,
    name: str = "classifier",
) -> tuple[nn.Module, dict[str, Any]]:
    """The project's X-ray classifier: trained once on :func:`classifier_training_set` (the training split of
    ``data_cfg``, or rendered phantoms; at ``cfg.img_size``) into ``run_dir`` and reused while ``run_dir/config.json`` holds the same config; evaluated on the held-out
    split (:func:`evaluation_split`). Writes ``results_dir/<name>.json`` (accuracy, per-class recall, macro-F1,
    confusion matrix, n per class, init, stem, training images and their source, training precision and layout) and
    ``figures_dir/fig_<name>_confusion.png`` when given. ``cfg.amp="auto"`` is resolved for this machine first,
    so a run trained in another precision is retrained rather than reused.

    Returns the model (eval mode) and that result dict.
    """
    cfg = resolved_config(cfg, select_device(cfg.device))  # amp="auto" as this machine would train it
    cfg = effective_config(cfg, data_cfg.layout)  # rendered phantoms: phantom_epochs passes
    data_cfg = replace(data_cfg, img_size=cfg.img_size, faithful_augment=False)
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    config_path = run_dir / CONFIG_NAME
    split = evaluation_split(data_cfg.layout)
    # the epoch is chosen on val only where val is not also the held-out split (class-folder sets have no
    # test split): choosing and reporting on the same images would flatter the classifier
    select_on_val = split != "val"
    selection = "epoch of best val macro-F1" if select_on_val else "last epoch"
    saved = read_json(config_path) if config_path.is_file() else {}
    same = (
        saved.get("classifier") == to_jsonable(cfg)
        and saved.get("selection") == selection
        and saved.get("batchnorm") == BATCHNORM_DESCRIPTION
    )
    train_set, train_source = classifier_training_set(cfg, data_cfg, phantoms, progress)
    if not (ckpt.is_file() and same):
        val_set = (
            build_dataset(data_cfg, "val", phantoms, train=False, progress=progress)
            if select_on_val
            else None
        )
        train_classifier(cfg, train_set, run_dir, val_set=val_set, progress=progress)
    model, info = load_classifier(ckpt)
    result = evaluate_classifier(
        model, build_dataset(data_cfg, split, phantoms, train=False, progress=progress)
    )
    result.update(
        {
            "split": split,
            "selection": selection,
            "init": info.get("init"),
            "checkpoint": project_relative(ckpt),
            "img_size": cfg.img_size,
            "stem": cfg.stem,
            "train_images": len(train_set),
            "train_source": train_source,
            "train_amp": cfg.amp,
            "train_channels_last": cfg.channels_last,
        }
    )
    if results_dir is not None:
        write_json(Path(results_dir) / f"{name}.json", result)
    if figures_dir is not None:
        title = f"{name} on the {split} split (accuracy {result['accuracy']:.3f}, init {result['init']})"
        save_confusion_figure(result, Path(figures_dir) / f"fig_{name}_confusion.png", title=title)
    return model, result


def ensure_cam_classifier(
    cfg: ClassifierConfig | None,
    main: tuple[nn.Module, dict[str, Any]],
    data_cfg: DataConfig,
    run_dir: Path,
    *,
    phantoms: PhantomConfig | None = None,
    results_dir: Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Figure 1's classifier: ``main`` (the project's classifier and its result) when ``cfg`` is None (a
    profile whose main classifier's maps are fine enough), else :func:`ensure_classifier` with ``cfg`` in
    ``run_dir``, its result written as ``results_dir/cam_classifier.json``."""
    if cfg is None:
        return main
    return ensure_classifier(
        cfg,
        data_cfg,
        run_dir,
        phantoms=phantoms,
        results_dir=results_dir,
        progress=progress,
        name="cam_classifier",
    )


def cam_classifier_seeds(
    cfg: ClassifierConfig | None,
    main_cfg: ClassifierConfig,
    first: tuple[nn.Module, dict[str, Any]],
    data_cfg: DataConfig,
    runs_dir: Path,
    seeds: int,
    *,
    phantoms: PhantomConfig | None = None,
    progress: bool = True,
) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Figure 1's classifier with ``seeds`` training seeds: ``first`` (seed 0's, from
    :func:`ensure_cam_classifier`), then its config (``cfg``, or ``main_cfg`` where the profile has no
    classifier of its own for Figure 1) with ``seed + k`` for k = 1 .. seeds - 1, each trained once into
    ``runs_dir/<name>_seed<k>`` (``cam_classifier_seed1``, ...) and reused like :func:`ensure_classifier`'s.
    The seed moves the initialisation, the shuffling and the augmentation; the data and the recipe stay."""
    check_seed_count(seeds)
    base, name = (cfg, "cam_classifier") if cfg is not None else (main_cfg, "classifier")
    classifiers = [first]
    for k in range(1, seeds):
        run = run_name(name, ALL_CLASSES, k)
        classifiers.append(
            ensure_classifier(
                replace(base, seed=base.seed + k),
                data_cfg,
                Path(runs_dir) / run,
                phantoms=phantoms,
                progress=progress,
                name=run,
            )
        )
    return classifiers
