import dataclasses
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
    assert set(item) == {"image", "raw", "label", "mask", "class_mask", "has_mask", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 32, 32)
    assert item["raw"].dtype == torch.uint8 and item["raw"].shape == (1, 32, 32)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (32, 32)
    assert item["label"] == 1 and item["has_mask"] is True and item["index"] == 31
    assert item["mask"].sum() > 0
    assert item["class_mask"].dtype == torch.int64 and item["class_mask"].shape == (32, 32)
    assert dataset.classes == ("background", "scratch", "spot")
    assert set(item["class_mask"].unique().tolist()) == {0, 2}  # the last record is a "spot"
    torch.testing.assert_close(item["mask"], (item["class_mask"] > 0).float())
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


# ---------------------------------------------------------------- class masks


def test_class_masks_follow_the_record_classes(dataset):
    assert dataset.classes == ("background", "scratch", "spot")
    class_masks = dataset.class_masks()
    assert class_masks.dtype == np.int64 and class_masks.shape == (32, 32, 32)
    assert dataset._masks.dtype == torch.uint8  # the cache stays compact; int64 only on the way out
    np.testing.assert_array_equal(dataset.masks(), class_masks > 0)
    for record, mask in zip(dataset.records, class_masks):
        expected = {"": {0}, "scratch": {0, 1}, "spot": {0, 2}}[record.defect_class]
        assert set(np.unique(mask)) == expected, record.path
    sub = dataset.subset([30, 0])
    assert sub.classes == dataset.classes
    np.testing.assert_array_equal(sub.class_masks(), class_masks[[30, 0]])


def test_binary_masks_are_bit_identical_to_the_old_reading(dataset, records):
    # the bool masks before class masks: luminance > 127, then prepare_mask of a bool mask
    from defectmine.data.images import prepare_mask, read_image, to_gray

    spec = ImageSpec(size=(20, 44), channels=1, resize="pad")
    ds = ImageDataset(records, spec)
    old = np.stack(
        [
            prepare_mask(to_gray(read_image(r.mask)) > 127, spec) if r.mask else np.zeros(spec.size, bool)
            for r in records
        ]
    )
    np.testing.assert_array_equal(ds.masks(), old)


def test_shared_class_list_and_unknown_class(records):
    spots = [r for r in records if r.defect_class == "spot"]
    alone = ImageDataset(spots, SPEC)
    assert alone.classes == ("background", "spot") and alone.class_masks().max() == 1
    shared = ImageDataset(spots, SPEC, classes=("background", "scratch", "spot"))
    assert shared.classes == ("background", "scratch", "spot") and shared.class_masks().max() == 2
    with pytest.raises(DataError) as e:
        ImageDataset(records, SPEC, classes=("background", "spot"))
    message = str(e.value)
    assert "4 image(s)" in message and str(records[24].path) in message and "'scratch'" in message
    with pytest.raises(DataError, match="background"):
        ImageDataset(spots, SPEC, classes=("spot",))


def test_class_index_mask_file(records, tmp_path):
    # one image holds both classes: a gray mask of indices into the dataset's class list
    record = records[24]
    indices = np.zeros((32, 32), np.uint8)
    indices[:8] = 1
    indices[20:] = 2
    Image.fromarray(indices).save(record.mask)
    ds = ImageDataset(records, ImageSpec(size=(48, 48), channels=1))
    mask = ds.class_masks()[24]
    assert set(np.unique(mask)) == {0, 1, 2}
    assert (mask[:12] == 1).all() and (mask[30:] == 2).all()  # nearest-neighbour: classes never blend
    assert ds[24]["class_mask"].dtype == torch.int64


def test_mask_that_is_neither_binary_nor_indices_is_named(records):
    photo = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(photo).save(records[-1].mask)
    with pytest.raises(DataError) as e:
        ImageDataset(records, SPEC)
    message = str(e.value)
    assert str(records[-1].mask) in message and "mid-gray" in message
    ds = ImageDataset(records, SPEC, skip_bad=True)
    assert len(ds) == 31 and ds.skipped[0][0] == records[-1].path


def test_mask_available(records):
    unmasked = dataclasses.replace(records[25], mask=None)
    ds = ImageDataset([records[0], records[24], unmasked], SPEC)
    assert ds.mask_available.tolist() == [True, True, False]
    assert ds.mask_available.dtype == bool
    assert ds.subset([2, 0]).mask_available.tolist() == [False, True]
    assert not ds.masks()[2].any()  # unknown, not normal: that is what mask_available says


def test_from_tensor_masks():
    images = torch.zeros((3, 1, 32, 32), dtype=torch.uint8)
    bool_masks = torch.zeros((3, 32, 32), dtype=torch.bool)
    bool_masks[1, :4] = True
    ds = ImageDataset.from_tensor(images, SPEC, labels=[0, 1, 1], masks=bool_masks)
    assert ds.classes == ("background", "anomalous")
    assert ds.class_masks()[1, :4].tolist() == [[1] * 32] * 4 and ds.mask_available.all()
    index_masks = np.zeros((3, 32, 32), np.int64)
    index_masks[1, :4], index_masks[2, 10:] = 2, 1
    ds = ImageDataset.from_tensor(images, SPEC, labels=[0, 1, 1], masks=index_masks, classes=("background", "a", "b"))
    np.testing.assert_array_equal(ds.class_masks(), index_masks)
    np.testing.assert_array_equal(ds.masks(), index_masks > 0)
    assert ds[1]["class_mask"].max() == 2 and ds[1]["mask"].max() == 1.0
    with pytest.raises(DataError, match="classes="):
        ImageDataset.from_tensor(images, SPEC, masks=index_masks)
    with pytest.raises(DataError, match="class index 2"):
        ImageDataset.from_tensor(images, SPEC, masks=index_masks, classes=("background", "a"))
    with pytest.raises(DataError, match="bool masks"):
        ImageDataset.from_tensor(images, SPEC, masks=index_masks.astype(np.float32))
    unmasked = ImageDataset.from_tensor(images, SPEC, labels=[0, 1, 1])
    assert unmasked.mask_available.tolist() == [True, False, False]
    assert unmasked.classes == ("background", "anomalous")


def test_many_classes_use_an_int16_cache(records):
    classes = ("background", *(f"c{i:03d}" for i in range(298)), "scratch")
    scratches = [r for r in records if r.defect_class == "scratch"]
    ds = ImageDataset(scratches, SPEC, classes=classes)
    assert ds._masks.dtype == torch.int16 and ds.class_masks().max() == 299


def test_symlinked_duplicate_names_both_paths(records, tmp_path):
    link = tmp_path / "elsewhere" / "copy.png"
    link.parent.mkdir()
    link.symlink_to(records[3].path)
    with pytest.raises(DataError) as e:
        ImageDataset([records[3], Record(path=link, label="normal")], SPEC)
    message = str(e.value)
    assert f"{link} and {records[3].path} are the same file" in message or (
        f"{records[3].path} and {link} are the same file" in message
    )
    assert "symbolic links" in message
    assert len(ImageDataset([records[3], records[4]], SPEC)) == 2


# ---------------------------------------------------------------- small images


def test_enlarging_small_images_is_said_once(records, caplog):
    with caplog.at_level(logging.WARNING, logger="defectmine.data.dataset"):
        ImageDataset(records, ImageSpec(size=(64, 48), channels=1))
    warnings = [r for r in caplog.records if "enlarged" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "32 of 32 image(s)" in message and "smallest: 32x32" in message
    assert "--image-size 32" in message and "native resolution" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="defectmine.data.dataset"):
        ImageDataset(records, ImageSpec(size=(32, 32), channels=1))
        ImageDataset(records, ImageSpec(size=(16, 16), channels=1))
    assert not [r for r in caplog.records if "enlarged" in r.getMessage()]


def test_enlarging_counts_only_the_small_images(records, tmp_path, caplog):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((80, 90), np.uint8)).save(big)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(small)
    chosen = records[:2] + [Record(path=big, label="normal"), Record(path=small, label="normal")]
    with caplog.at_level(logging.WARNING, logger="defectmine.data.dataset"):
        ImageDataset(chosen, ImageSpec(size=(40, 40), channels=1))
    (warning,) = [r.getMessage() for r in caplog.records if "enlarged" in r.getMessage()]
    assert "3 of 4 image(s)" in warning and "smallest: 30x20" in warning and "--image-size 20" in warning
