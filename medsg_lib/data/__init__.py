"""Chest X-ray data: readers (COVID-QU-Ex, class folders), phantoms, decoding and preprocessing, datasets.

``read_records`` -> list of :class:`XrayRecord` + :class:`ReadReport`; ``build_dataset`` ->
:class:`XrayDataset` of float32 ``(C, H, W)`` images in [-1, 1] with int64 labels (0 COVID-19, 1 Non-COVID, 2
Normal); ``write_phantoms`` writes the offline default data set. In-memory sets (:class:`LabelledImages`,
:class:`SyntheticXrays`) have the same item contract; :func:`dataset_labels` reads the labels of any of them.
"""

from medsg_lib.data.covidqu import find_subset_dir, read_covidqu
from medsg_lib.data.dataset import (
    XrayDataset,
    build_dataset,
    cache_key,
    cached_images,
    dataset_labels,
    decode_record,
    read_records,
)
from medsg_lib.data.folders import read_class_folders
from medsg_lib.data.memory import LabelledImages, SyntheticXrays
from medsg_lib.data.phantoms import write_phantoms
from medsg_lib.data.records import (
    IMAGE_SUFFIXES,
    SPLITS,
    BadFileError,
    DataError,
    ReadReport,
    XrayRecord,
    held_out_split,
    layout_splits,
)
from medsg_lib.data.transforms import (
    faithful_augment,
    load_image,
    load_mask,
    normalize_u8,
    preprocess,
    rgb_to_gray,
    to_tensor,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "held_out_split",
    "layout_splits",
    "BadFileError",
    "DataError",
    "LabelledImages",
    "ReadReport",
    "SyntheticXrays",
    "XrayDataset",
    "XrayRecord",
    "build_dataset",
    "cache_key",
    "cached_images",
    "dataset_labels",
    "decode_record",
    "faithful_augment",
    "find_subset_dir",
    "load_image",
    "load_mask",
    "normalize_u8",
    "preprocess",
    "read_class_folders",
    "read_covidqu",
    "read_records",
    "rgb_to_gray",
    "to_tensor",
    "write_phantoms",
]
