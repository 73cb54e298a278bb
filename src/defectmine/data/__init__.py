"""Data: records, folder and CSV datasets, built-in sets, splits, image loading.

    records = scan_folder("my_parts/")              # or read_manifest("parts.csv"), fixed_split("elpv")
    split = make_split(records, n_train_anomalous=8)
    classes = class_list(records)                   # one class list for every split's class masks
    train = ImageDataset(split.train, ImageSpec(size=(256, 256)), classes=classes)

Names are imported on first use (`defectmine._lazy`): decoding images (`images`, `pixels`, `manifest`)
needs no torch, only datasets do.
"""

from defectmine._lazy import lazy_exports

_EXPORTS = {
    "ANOMALOUS": "records",
    "BACKGROUND": "masks",
    "BUILTIN_SETS": "builtin",
    "INJECTION_METHODS": "blending:METHODS",
    "NORMAL": "records",
    "POSITIVE_RATIOS": "splits",
    "Crop": "injection",
    "CropTransform": "blending",
    "DefectPool": "injection",
    "DynamicLabelInjection": "injection",
    "ImageDataset": "dataset",
    "ImageSpec": "images",
    "Injection": "injection",
    "Record": "records",
    "Split": "splits",
    "class_list": "masks",
    "defect_pool": "injection",
    "elpv": "builtin",
    "fixed_split": "builtin",
    "inject": "injection",
    "is_hidden": "folder",
    "labels_of": "records",
    "magnetic_tile": "builtin",
    "make_split": "splits",
    "normalise": "images",
    "parse_ratio": "splits",
    "positive_ratio_subset": "splits",
    "prepare_image": "images",
    "prepare_mask": "images",
    "read_class_mask": "masks",
    "read_image": "images",
    "read_manifest": "manifest",
    "read_mask": "masks",
    "scan_folder": "folder",
    "shared_dir": "builtin",
    "take_k": "splits",
    "write_manifest": "manifest",
    "write_synthetic_folder": "synthetic",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
