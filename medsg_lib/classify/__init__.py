"""The three-class chest X-ray classifier (:mod:`medsg_lib.models.classifier`): training, checkpoint, evaluation.

A run directory holds::

    config.json     {"classifier": asdict(ClassifierConfig), "init", "pretrained_file", "in_channels",
                     "num_train", "class_counts", "class_weights", "loss", "sampler", "optimizer",
                     "batchnorm", "selection", "augment", "device"}
    log.jsonl       one JSON object per epoch: epoch, lr (at its start), loss, acc (train, augmented),
                    seconds, images_per_s, init, val_acc, val_macro_f1 (when a val set is given)
    classifier.pt   a plain dict, no pickled code (:mod:`medsg_lib.classify.checkpoint`); read it with
                    :func:`load_classifier` (``weights_only=True``)

Modules: :mod:`~medsg_lib.classify.trainer` (:func:`train_classifier`), :mod:`~medsg_lib.classify.checkpoint`,
:mod:`~medsg_lib.classify.evaluation` (metrics and predictions) and :mod:`~medsg_lib.classify.stage`
(:func:`ensure_classifier`, the pipeline stage: train once, evaluate, write the results;
:func:`ensure_cam_classifier`, Figure 1's, and :func:`cam_classifier_seeds`, it over training seeds).
"""

from medsg_lib.classify.checkpoint import (
    CHECKPOINT_NAME,
    CLASSIFIER_FORMAT,
    ClassifierCheckpointError,
    load_classifier,
    save_classifier,
)
from medsg_lib.classify.evaluation import (
    classification_metrics,
    evaluate_classifier,
    evaluation_split,
    predict,
)
from medsg_lib.classify.stage import cam_classifier_seeds, ensure_cam_classifier, ensure_classifier
from medsg_lib.classify.trainer import (
    AUGMENT_DESCRIPTION,
    augment_batch,
    class_weights,
    resolve_init,
    train_classifier,
)

__all__ = [
    "AUGMENT_DESCRIPTION",
    "CHECKPOINT_NAME",
    "CLASSIFIER_FORMAT",
    "ClassifierCheckpointError",
    "augment_batch",
    "cam_classifier_seeds",
    "class_weights",
    "classification_metrics",
    "ensure_cam_classifier",
    "ensure_classifier",
    "evaluate_classifier",
    "evaluation_split",
    "load_classifier",
    "predict",
    "resolve_init",
    "save_classifier",
    "train_classifier",
]
