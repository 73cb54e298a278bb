"""Labelling: a persistent labelling loop (SQLite store, batches, Label Studio / COCO imports, a manifest
for `fit`) and model-assisted labelling (mask proposals from any detector's maps).

    from defectmine.labelling import init_project, next_batch, import_file, status
    init_project("proj/", "parts/", ["crack", "scratch"], who="ana")
    batch = next_batch("proj/", 20, strategy="score", model="runs/parts/model")  # proj/batches/round-0001/
    import_file("proj/", "export.json")       # Label Studio JSON export or COCO; proj/export/manifest.csv
"""

from defectmine.labelling.brush import decode_values, encode_values, mask_to_rle, rle_to_mask
from defectmine.labelling.loop import export_manifest, import_file, init_project, next_batch, rank, status
from defectmine.labelling.proposals import (
    SOURCES,
    Proposal,
    ProposalSettings,
    choose_settings,
    defect_ious,
    measure,
    propose,
    source_maps,
    to_image_size,
)
from defectmine.labelling.store import LabelStore, NewLabel

__all__ = [
    "SOURCES",
    "LabelStore",
    "NewLabel",
    "Proposal",
    "ProposalSettings",
    "choose_settings",
    "decode_values",
    "defect_ious",
    "encode_values",
    "export_manifest",
    "import_file",
    "init_project",
    "mask_to_rle",
    "measure",
    "next_batch",
    "propose",
    "rank",
    "rle_to_mask",
    "source_maps",
    "status",
    "to_image_size",
]
