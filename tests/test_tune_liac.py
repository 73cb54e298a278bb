"""LIAC stability (issue 18, part 1): with LIL's margin the training loss stays bounded; as printed it drifts."""

import numpy as np
import pytest

from defectmine.data import ImageDataset, ImageSpec, make_split, scan_folder, write_synthetic_folder
from defectmine.models.registry import create

# a high learning rate and no weight decay: the setting in which the printed LIL runs away fastest
FAST = {"epochs": 10, "width": 4, "stride": 8, "batch_size": 8, "lr": 1e-2, "weight_decay": 0.0,
        "device": "cpu", "quiet": True}
MARGIN = 1.0


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = write_synthetic_folder(tmp_path_factory.mktemp("liac") / "data", n_normal=24, n_anomalous=10)
    split = make_split(scan_folder(root), n_train_anomalous=4, seed=0)
    spec = ImageSpec(size=(32, 32), channels=1)
    return {name: ImageDataset(records, spec) for name, records in
            (("normal", split.normal_train), ("anomalous", split.train_anomalous), ("val", split.val))}


def test_liac_loss_with_a_margin_stays_bounded_where_the_printed_loss_drifts(sets):
    printed = create("liac", **FAST).fit(sets["normal"], sets["anomalous"])
    bounded = create("liac", loss_params={"margin": MARGIN}, **FAST).fit(sets["normal"], sets["anomalous"])
    # as printed the anomalous term is linear: the mean loss keeps falling, past -margin
    assert min(printed.history_) < -MARGIN and printed.history_[-1] < printed.history_[4]
    # LIL's normal term and the ACL are >= 0 and the anomalous term >= -margin: every epoch's mean too
    assert all(np.isfinite(printed.history_)) and all(np.isfinite(bounded.history_))
    assert min(bounded.history_) >= -MARGIN
    scores = bounded.score(sets["val"])
    assert np.isfinite(scores.image).all() and np.isfinite(scores.maps).all()
    assert scores.maps.reshape(len(scores.maps), -1).std(axis=1).max() > 0  # the maps are not flat
