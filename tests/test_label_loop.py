"""The labelling loop: init / next / import / export on a tiny synthetic folder; round trips, interrupted
and repeated imports, and bad input (one clear error, nothing half-applied)."""

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from defectmine.data import read_manifest, read_mask, scan_folder
from defectmine.errors import ConfigError, DataError
from defectmine.labelling import export_manifest, import_file, init_project, next_batch, rank, status
from defectmine.labelling import store as store_module
from defectmine.labelling.coco import encode_mask
from defectmine.labelling.labelstudio import brush_region
from defectmine.labelling.loop import open_store

CLASSES = ["scratch", "spot"]


@pytest.fixture
def project(synthetic_folder, tmp_path):
    init_project(tmp_path / "proj", str(synthetic_folder), CLASSES, who="ana")
    return tmp_path / "proj"


def _truth(synthetic_folder):
    """path -> (class, bool mask) of the synthetic folder's anomalous images."""
    return {str(r.path): (r.defect_class, read_mask(r.mask)) for r in scan_folder(synthetic_folder) if r.is_anomalous}


def _export_of(tasks, truth, tmp_path, name="export.json"):
    """A Label Studio export that annotates each task with the true mask (none: a normal image)."""
    out = []
    for i, task in enumerate(tasks):
        path = "/" + task["data"]["image"].split("?d=", 1)[1]
        results = [brush_region(truth[path][1], truth[path][0])] if path in truth else []
        out.append({"id": i + 1, "data": task["data"],
                    "annotations": [{"id": 10 + i, "result": results, "completed_by": {"email": "bo@x"},
                                     "created_at": "2026-01-01T10:00:00"}]})
    path = tmp_path / name
    path.write_text(json.dumps(out))
    return path


def _rows(project):
    db = sqlite3.connect(project / "labels.db")
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("images", "labels", "imports", "rounds")}
    finally:
        db.close()


def test_init_is_idempotent_and_needs_classes(synthetic_folder, tmp_path, project):
    assert status(project)["pool"] == 32
    again = init_project(project, str(synthetic_folder), ["spot", "dent"], who="ana")
    assert again["new_images"] == 0 and again["classes"] == ["scratch", "spot", "dent"]
    with pytest.raises(ConfigError, match="--classes is needed"):
        init_project(tmp_path / "other", str(synthetic_folder), [], who="ana")
    with pytest.raises(ConfigError, match="background"):
        init_project(tmp_path / "other", None, ["background"], who="ana")
    with pytest.raises(DataError, match="label init"):
        status(tmp_path / "nothing")


def test_label_studio_round_trip_gives_back_the_masks(synthetic_folder, project, tmp_path):
    batch = next_batch(project, 32, strategy="random", seed=1, who="ana")
    tasks = json.loads((batch.folder / "tasks.json").read_text())
    assert len(tasks) == 32 and len(list((batch.folder / "images").iterdir())) == 32
    truth = _truth(synthetic_folder)
    result = import_file(project, _export_of(tasks, truth, tmp_path), who="ana")
    assert result["written"] == 32
    s = status(project)
    assert s["labelled"] == 32 and s["normal"] == 24 and s["anomalous"] == {"scratch": 4, "spot": 4}
    with open_store(project) as store:
        current = store.current_labels()
        paths = {im.id: im.path for im in store.images()}
    for image_id, label in current.items():
        if paths[image_id] in truth:
            cls, mask = truth[paths[image_id]]
            assert label.defect_class == cls and np.array_equal(label.mask == CLASSES.index(cls) + 1, mask)
            assert label.annotator == "bo@x"
    # the manifest reads back with the same masks, as fit / segment fit take it
    records = read_manifest(project / "export" / "manifest.csv")
    assert len(records) == 32
    for r in records:
        if r.is_anomalous:
            assert np.array_equal(read_mask(r.mask), truth[os.path.normpath(r.path)][1])


def test_repeated_and_cumulative_imports_add_nothing(synthetic_folder, project, tmp_path):
    tasks = json.loads((next_batch(project, 10, seed=0).folder / "tasks.json").read_text())
    truth = _truth(synthetic_folder)
    first = _export_of(tasks[:5], truth, tmp_path, "first.json")
    assert import_file(project, first)["written"] == 5
    before = _rows(project)
    assert import_file(project, first)["written"] == 0
    assert _rows(project) == before  # same file: not even a second import row
    later = _export_of(tasks, truth, tmp_path, "later.json")  # Label Studio exports are cumulative
    result = import_file(project, later)
    assert (result["written"], result["unchanged"]) == (5, 5)
    assert _rows(project)["labels"] == 10


def test_an_import_interrupted_half_way_leaves_the_store_unchanged(synthetic_folder, project, tmp_path, monkeypatch):
    tasks = json.loads((next_batch(project, 6, seed=0).folder / "tasks.json").read_text())
    export = _export_of(tasks, _truth(synthetic_folder), tmp_path)
    before = _rows(project)
    real, calls = store_module._insert_label, []

    def dies_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C half-way
        real(*args)

    monkeypatch.setattr(store_module, "_insert_label", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        import_file(project, export)
    assert _rows(project) == before and len(calls) == 3
    monkeypatch.setattr(store_module, "_insert_label", real)
    assert import_file(project, export)["written"] == 6  # re-run: applied once, whole
    assert _rows(project)["labels"] == 6


def _one_task_export(tmp_path, image_id, result, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps([{"id": 1, "data": {"image": "x.png", "defectmine_id": image_id},
                                 "annotations": [{"id": 1, "result": result}]}]))
    return path


@pytest.mark.parametrize("case, match", [
    ("not_in_pool", "not in the pool"),
    ("wrong_size", "mask of 5x4 px, but"),
    ("unknown_class", "'dent' not in the project"),
    ("half_written", "half-written"),
    ("unsupported", "rectanglelabels"),
])
def test_bad_imports_are_refused_whole(project, tmp_path, case, match):
    ok = brush_region(np.ones((32, 32), bool), "spot")
    bad = {
        "not_in_pool": lambda: _one_task_export(tmp_path, 999, [ok]),
        "wrong_size": lambda: _one_task_export(tmp_path, 2, [brush_region(np.ones((4, 5), bool), "spot")]),
        "unknown_class": lambda: _one_task_export(tmp_path, 2, [brush_region(np.ones((32, 32), bool), "dent")]),
        "unsupported": lambda: _one_task_export(tmp_path, 2, [{"type": "rectanglelabels", "value": {}}]),
    }
    if case == "half_written":
        full = _one_task_export(tmp_path, 1, [ok]).read_text()
        path = tmp_path / "half.json"
        path.write_text(full[: len(full) // 2])
    else:
        path = bad[case]()
        # one good task before the bad one: nothing of the file may be applied
        tasks = json.loads(path.read_text())
        good = {"id": 7, "data": {"image": "y.png", "defectmine_id": 1}, "annotations": [{"id": 2, "result": [ok]}]}
        path.write_text(json.dumps([good] + tasks))
    before = _rows(project)
    with pytest.raises(DataError, match=match) as err:
        import_file(project, path)
    assert "nothing was imported" in str(err.value)
    assert _rows(project) == before


def test_coco_import_and_its_checks(synthetic_folder, project, tmp_path):
    truth = _truth(synthetic_folder)
    (path, (cls, mask)), normal = next(iter(truth.items())), next(p for p in map(str, Path(synthetic_folder, "normal").iterdir()))
    coco = {"images": [{"id": 1, "file_name": Path(path).name, "height": 32, "width": 32},
                       {"id": 2, "file_name": Path(normal).name, "height": 32, "width": 32}],
            "categories": [{"id": 5, "name": cls}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "segmentation": encode_mask(mask)}]}
    file = tmp_path / "coco.json"
    file.write_text(json.dumps(coco))
    assert import_file(project, file)["written"] == 2
    with open_store(project) as store:
        by_path = {im.path: im.id for im in store.images()}
        current = store.current_labels()
    assert np.array_equal(current[by_path[path]].mask > 0, mask) and current[by_path[normal]].label == "normal"
    coco["annotations"][0]["category_id"] = 6
    file.write_text(json.dumps(coco))
    with pytest.raises(DataError, match="category_id 6"):
        import_file(project, file)
    coco["annotations"][0].update(category_id=5, segmentation=encode_mask(np.ones((16, 16))))
    file.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"\[16, 16\]"):
        import_file(project, file)


def test_next_skips_asked_images_and_ranks(project):
    first = next_batch(project, 30, seed=0)
    second = next_batch(project, 30, seed=0)
    assert (first.n_images, second.n_images, second.round_id) == (30, 2, 2)
    with pytest.raises(DataError, match="no unlabelled image left"):
        next_batch(project, 5)
    assert next_batch(project, 5, again=True).n_images == 5
    with pytest.raises(ConfigError, match="needs|--model"):
        next_batch(project, 5, strategy="score", again=True)
    with pytest.raises(ConfigError, match="unknown"):
        next_batch(project, 5, strategy="entropy-ish", again=True)


def test_rank_orders_by_score_and_seeds_random(project):
    with open_store(project) as store:
        pool = store.images()[:5]
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    assert [i for i, _ in rank("score", pool, 3, scores=scores, seed=0)] == [pool[1].id, pool[3].id, pool[2].id]
    assert rank("random", pool, 5, scores=None, seed=3) == rank("random", pool, 5, scores=None, seed=3)
    assert rank("random", pool, 5, scores=None, seed=3) != rank("random", pool, 5, scores=None, seed=4)


def test_an_interrupted_next_leaves_no_round_and_reruns(project, monkeypatch):
    from defectmine.labelling import loop

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.LabelStore, "add_round", dies)
    with pytest.raises(KeyboardInterrupt):
        next_batch(project, 4)
    assert _rows(project)["rounds"] == 0
    monkeypatch.undo()
    batch = next_batch(project, 4)
    assert batch.round_id == 1 and len(list((batch.folder / "images").iterdir())) == 4


def test_export_of_a_multi_class_mask_uses_class_indices(synthetic_folder, project, tmp_path):
    truth = _truth(synthetic_folder)
    scratch = next(p for p, (c, _) in truth.items() if c == "scratch")
    spot = next(p for p, (c, _) in truth.items() if c == "spot")
    both = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    both[0][:4], both[1][-4:] = True, True
    tasks = [{"id": 1, "data": {"image": scratch}, "annotations": [{"id": 1, "result": [
        brush_region(both[0], "scratch"), brush_region(both[1], "spot")]}]},
             {"id": 2, "data": {"image": spot}, "annotations": [{"id": 2, "result": [
                 brush_region(truth[spot][1], "spot")]}]}]
    file = tmp_path / "multi.json"
    file.write_text(json.dumps(tasks))
    import_file(project, file)
    from defectmine.data import ImageDataset, ImageSpec, class_list

    records = read_manifest(export_manifest(project, tmp_path / "out"))
    data = ImageDataset(records, ImageSpec(size=(32, 32), channels=1), classes=class_list(records))
    row = [os.path.normpath(r.path) for r in records].index(scratch)
    classes = data.classes
    assert set(np.unique(data.class_masks()[row])) == {0, classes.index("scratch"), classes.index("spot")}


def _label_directly(project, picks):
    """Record labels for (path-substring, label, class) picks in one import, as `label import` would."""
    from defectmine.labelling.store import NewLabel

    with open_store(project) as store:
        images = store.images()
        labels = []
        for needle, label, defect_class in picks:
            image = next(im for im in images if needle in im.path)
            labels.append(NewLabel(image.id, label, defect_class, None, "ana", "2026-01-01T00:00:00"))
        store.apply_import("sha-" + "-".join(p[0] for p in picks), "test", "test", labels, who="ana")


def test_next_with_acquisition_functions_of_the_active_package(project):
    _label_directly(project, [("spot_001", "anomalous", "spot"), ("spot_003", "anomalous", "spot"),
                              ("scratch_000", "anomalous", "scratch"),
                              *[(f"normal_00{i}", "normal", "") for i in range(6)]])
    batch = next_batch(project, 4, strategy="minority", minority="spot", seed=0)
    picked = [line.split(",")[2] for line in (batch.folder / "batch.csv").read_text().splitlines()[1:]]
    # the minority discriminator looks for spots: 2 spots are left among 23 candidates (random: 0.35 in 4)
    assert sum("spot_" in p for p in picked) == 2
    with pytest.raises(ConfigError, match="--minority"):
        next_batch(project, 4, strategy="minority", again=True)
    assert next_batch(project, 3, strategy="kcenter", again=True).n_images == 3
    with pytest.raises(ConfigError, match="--model"):
        next_batch(project, 3, strategy="anomaly", again=True)
