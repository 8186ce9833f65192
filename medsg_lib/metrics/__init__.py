"""Metrics: FID (pytorch-fid and paper protocols), KID, LPIPS diversity, PRDC, with checked weights and
records.

- ``weights``: find and verify pretrained files (``resolve_weights``), provenance labels (``weights_label``).
- ``features``: feature extractors per protocol (``build_extractor``, ``extract_features``).
- ``fid``: ``frechet_distance``, ``RunningStats``, bootstrap interval, folder FID, real-set stats cache.
- ``kid`` (import ``medsg_lib.metrics.kid.kid``), ``lpips_div``, ``prdc_metric``: the other metrics.
- ``records``: JSON-lines metric records with provenance (``append_record``, ``Comparison``); read them back
  with ``medsg_lib.files.read_jsonl``.

What an evaluation composes (import from the modules; they read data sets and manifests):

- ``sources``: the image sets compared (``RealImages``, ``GeneratedSet``).
- ``cache``: their features, the real side cached on disk (``image_features``).
- ``values``: metric values as pure functions of features (bootstrap rule, KID, PRDC, mean over sources).
- ``registry``: metric name -> the function computing it (``METRICS``, ``metric_plan``), all taking one
  ``EvalOptions`` (``options``); LPIPS and MS-SSIM diversity in ``diversity``. The one writer of their records is
  ``medsg_lib.evaluate.evaluate_images``.
"""

from medsg_lib.metrics.features import (
    PROTOCOLS,
    FeatureExtractor,
    build_extractor,
    extract_features,
    iter_features,
    list_image_files,
    random_state_dict,
    tensor_to_pil,
    to_uint8,
)
from medsg_lib.metrics.fid import (
    RunningStats,
    cached_stats,
    compute_fid_folders,
    extract_stats,
    fid_bootstrap_ci,
    fid_from_features,
    fid_from_stats,
    frechet_distance,
)
from medsg_lib.metrics.lpips_div import (
    LPIPS_GROUP_PROTOCOL,
    LPIPS_PAIRS_PROTOCOL,
    LpipsModel,
    build_lpips,
    lpips_diversity,
    lpips_pairs,
)
from medsg_lib.metrics.prdc_metric import prdc
from medsg_lib.metrics.records import REQUIRED_KEYS, Comparison, append_record
from medsg_lib.metrics.weights import (
    UNVERIFIED,
    WEIGHTS,
    MissingWeightsError,
    WeightsError,
    WeightsSpec,
    is_unverified,
    resolve_weights,
    weights_label,
)

__all__ = [
    "LPIPS_GROUP_PROTOCOL",
    "LPIPS_PAIRS_PROTOCOL",
    "PROTOCOLS",
    "REQUIRED_KEYS",
    "UNVERIFIED",
    "WEIGHTS",
    "Comparison",
    "FeatureExtractor",
    "LpipsModel",
    "MissingWeightsError",
    "RunningStats",
    "WeightsError",
    "WeightsSpec",
    "append_record",
    "build_extractor",
    "build_lpips",
    "cached_stats",
    "compute_fid_folders",
    "extract_features",
    "extract_stats",
    "fid_bootstrap_ci",
    "fid_from_features",
    "fid_from_stats",
    "frechet_distance",
    "iter_features",
    "list_image_files",
    "lpips_diversity",
    "lpips_pairs",
    "prdc",
    "random_state_dict",
    "resolve_weights",
    "tensor_to_pil",
    "to_uint8",
    "is_unverified",
    "weights_label",
]
