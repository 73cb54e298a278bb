"""Data: records, folder and CSV datasets, built-in sets, splits, image loading.

    records = scan_folder("my_parts/")              # or read_manifest("parts.csv"), fixed_split("elpv")
    split = make_split(records, n_train_anomalous=8)
    classes = class_list(records)                   # one class list for every split's class masks
    train = ImageDataset(split.train, ImageSpec(size=(256, 256)), classes=classes)
"""

from defectmine.data.blending import METHODS as INJECTION_METHODS, CropTransform
from defectmine.data.builtin import BUILTIN_SETS, elpv, fixed_split, magnetic_tile, shared_dir
from defectmine.data.dataset import ImageDataset
from defectmine.data.folder import is_hidden, scan_folder
from defectmine.data.images import ImageSpec, normalise, prepare_image, prepare_mask, read_image
from defectmine.data.injection import (
    Crop,
    DefectPool,
    DynamicLabelInjection,
    Injection,
    defect_pool,
    inject,
)
from defectmine.data.masks import BACKGROUND, class_list, read_class_mask, read_mask
from defectmine.data.manifest import read_manifest, write_manifest
from defectmine.data.records import ANOMALOUS, NORMAL, Record, labels_of
from defectmine.data.splits import (
    POSITIVE_RATIOS,
    Split,
    make_split,
    parse_ratio,
    positive_ratio_subset,
    take_k,
)
from defectmine.data.synthetic import write_synthetic_folder

__all__ = [
    "ANOMALOUS",
    "BACKGROUND",
    "BUILTIN_SETS",
    "INJECTION_METHODS",
    "NORMAL",
    "POSITIVE_RATIOS",
    "Crop",
    "CropTransform",
    "DefectPool",
    "DynamicLabelInjection",
    "ImageDataset",
    "ImageSpec",
    "Injection",
    "Record",
    "Split",
    "class_list",
    "defect_pool",
    "elpv",
    "fixed_split",
    "inject",
    "is_hidden",
    "labels_of",
    "magnetic_tile",
    "make_split",
    "normalise",
    "parse_ratio",
    "positive_ratio_subset",
    "prepare_image",
    "prepare_mask",
    "read_class_mask",
    "read_image",
    "read_manifest",
    "read_mask",
    "scan_folder",
    "shared_dir",
    "take_k",
    "write_manifest",
    "write_synthetic_folder",
]
