import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import defectmine.data.dataset as dataset_module
from defectmine.data import ImageDataset, ImageSpec, Record, scan_folder
from defectmine.errors import DataError

SPEC = ImageSpec(size=(32, 32), channels=1)


@pytest.fixture
def records(synthetic_folder):
    return scan_folder(synthetic_folder)


@pytest.fixture
def dataset(records):
    return ImageDataset(records, SPEC)


def test_items(dataset, records):
    assert len(dataset) == 32 and dataset.records == records
    item = dataset[-1]
    assert set(item) == {"image", "raw", "label", "mask", "has_mask", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 32, 32)
    assert item["raw"].dtype == torch.uint8 and item["raw"].shape == (1, 32, 32)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (32, 32)
    assert item["label"] == 1 and item["has_mask"] is True and item["index"] == 31
    assert item["mask"].sum() > 0
    first = dataset[0]
    assert first["label"] == 0 and first["has_mask"] is False and first["mask"].sum() == 0
    torch.testing.assert_close(first["image"], (first["raw"].float() / 255 - 0.5) / 0.25)
    with pytest.raises(IndexError):
        dataset[32]


def test_caches_and_labels(dataset):
    assert dataset.labels.tolist() == [0] * 24 + [1] * 8 and dataset.labels.dtype == np.int64
    assert dataset.has_masks
    masks = dataset.masks()
    assert masks.dtype == bool and masks.shape == (32, 32, 32)
    assert not masks[:24].any() and all(m.any() for m in masks[24:])
    raw = dataset.raw_images()
    assert raw.dtype == torch.uint8 and raw.shape == (32, 1, 32, 32)


def test_anomalies_are_visible(dataset):
    # the synthetic defects are out of the normal value range: a detector can rank them above normals
    raw = dataset.raw_images().float()
    extreme = ((raw > 230) | (raw < 25)).flatten(1).sum(1)
    assert extreme[:24].max() < extreme[24:].min()


def test_rgb_spec_and_pad(records):
    ds = ImageDataset(records[:3], ImageSpec(size=(16, 40), channels=3, resize="pad"))
    raw = ds.raw_images()
    assert raw.shape == (3, 3, 16, 40)
    assert (raw[:, :, :, :12] == 0).all()  # letterbox: 16x16 content centred in 40 columns


def test_dataloader_collates(dataset):
    batch = next(iter(DataLoader(dataset, batch_size=5, shuffle=False)))
    assert batch["image"].shape == (5, 1, 32, 32)
    assert batch["label"].tolist() == [0] * 5 and batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_subset_shares_cache_without_rereading(dataset, monkeypatch):
    def no_reading(path):
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr(dataset_module, "read_image", no_reading)
    sub = dataset.subset([30, 0, -1])
    assert len(sub) == 3 and sub.labels.tolist() == [1, 0, 1]
    assert sub.records == [dataset.records[30], dataset.records[0], dataset.records[31]]
    torch.testing.assert_close(sub[0]["raw"], dataset[30]["raw"])
    assert sub[0]["index"] == 0
    assert sub.raw_images().shape == (3, 1, 32, 32)
    np.testing.assert_array_equal(sub.masks(), dataset.masks()[[30, 0, 31]])
    assert sub._images.data_ptr() == dataset._images.data_ptr()  # one cache for both
    subsub = sub.subset(np.array([2]))
    assert subsub.records == [dataset.records[31]]
    torch.testing.assert_close(subsub.raw_images()[0], dataset.raw_images()[31])
    assert len(dataset.subset([])) == 0
    with pytest.raises(IndexError):
        dataset.subset([32])


def test_from_tensor():
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    ds = ImageDataset.from_tensor(images, SPEC, labels=[0, 1, 0, 1])
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1]
    assert str(ds.records[2].path) == "<memory>/2"
    assert torch.equal(ds.raw_images(), images) and not ds.has_masks
    resized = ImageDataset.from_tensor(torch.zeros((2, 3, 8, 8), dtype=torch.uint8), SPEC)
    assert resized.raw_images().shape == (2, 1, 32, 32) and resized.labels.tolist() == [0, 0]
    with pytest.raises(DataError, match="uint8"):
        ImageDataset.from_tensor(images.float(), SPEC)
    with pytest.raises(DataError, match="labels"):
        ImageDataset.from_tensor(images, SPEC, labels=[0, 1])


def test_progress_bar_when_not_quiet(records):
    assert len(ImageDataset(records[:2], SPEC, quiet=False)) == 2


# ---------------------------------------------------------------- bad inputs


def _break(records, tmp_path):
    truncated = records[3].path
    truncated.write_bytes(truncated.read_bytes()[:60])
    fake = records[5].path
    fake.write_text("this is text, not a PNG")
    return truncated, fake


def test_bad_images_are_all_listed_in_one_error(records, tmp_path):
    truncated, fake = _break(records, tmp_path)
    with pytest.raises(DataError) as e:
        ImageDataset(records, SPEC)
    message = str(e.value)
    assert "2 of 32" in message and str(truncated) in message and str(fake) in message
    assert "--skip-bad" in message


def test_skip_bad_lists_and_drops(records, tmp_path, caplog):
    truncated, fake = _break(records, tmp_path)
    with caplog.at_level(logging.WARNING, logger="defectmine.data.dataset"):
        ds = ImageDataset(records, SPEC, skip_bad=True)
    assert len(ds) == 30 and [p for p, _ in ds.skipped] == [truncated, fake]
    assert [reason for _, reason in ds.skipped] == ["image file is truncated", "not an image file or an unsupported format"]
    assert truncated not in [r.path for r in ds.records]
    assert str(truncated) in caplog.text and str(fake) in caplog.text
    assert ds.raw_images().shape[0] == 30 and ds.masks().shape[0] == 30
    assert ds.labels.sum() == 8  # the mask caches stayed aligned with the kept records
    assert all(ds.masks()[ds.labels == 1].reshape(8, -1).any(1))


def test_all_bad_with_skip_bad(records):
    for r in records[:2]:
        r.path.write_text("junk")
    with pytest.raises(DataError, match="none of the 2"):
        ImageDataset(records[:2], SPEC, skip_bad=True)


def test_many_bad_images_are_capped_in_message(records):
    for r in records[:24]:
        r.path.write_text("junk")
    with pytest.raises(DataError, match=r"24 of 32[\s\S]*and 4 more"):
        ImageDataset(records, SPEC)


def test_mask_of_wrong_size_names_both_files_and_sizes(records):
    anomalous = records[-1]
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(anomalous.mask)
    with pytest.raises(DataError) as e:
        ImageDataset(records, SPEC)
    message = str(e.value)
    assert str(anomalous.mask) in message and str(anomalous.path) in message
    assert f"image is 32x32 (WxH) but its mask {anomalous.mask} is 30x20" in message
    assert "a mask must have the size of its image" in message


def test_unreadable_mask(records):
    records[-1].mask.write_text("junk")
    with pytest.raises(DataError, match="cannot read its mask"):
        ImageDataset(records, SPEC)


def test_unknown_label_names_record(records):
    bad = Record(path=records[0].path, label="defective")
    with pytest.raises(DataError, match=f"{records[0].path}: label 'defective'"):
        ImageDataset([bad], SPEC)


def test_duplicate_paths_named(records):
    with pytest.raises(DataError, match=f"{records[1].path} \\(2 times\\)"):
        ImageDataset([records[0], records[1], records[1]], SPEC)


def test_empty_records_give_empty_dataset():
    ds = ImageDataset([], SPEC)
    assert len(ds) == 0 and ds.raw_images().shape == (0, 1, 32, 32) and not ds.has_masks
