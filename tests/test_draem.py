"""DRAEM-style detector and its synthetic defects: the pure pieces on known values, the options, and
the labelled-defect path (the fit/score/save/load contract is in test_detectors.py)."""

import numpy as np
import pytest
import torch

from defectmine.data.perlin import (DEFAULT_DEFECTS, SOURCE_OPS, augment_source, band_mask, perlin_mask, perlin_noise,
                                    synthetic_defects)
from defectmine.errors import ConfigError, DataError
from defectmine.models.draem import DRAEMNetwork, image_score, ssim
from defectmine.models.registry import create


def _batch(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(60, 190, (n, 1, size, size)).astype(np.uint8)


def test_perlin_noise_repeats_under_a_seed_and_is_smooth():
    a = perlin_noise((32, 32), (4, 4), np.random.default_rng(1))
    b = perlin_noise((32, 32), (4, 4), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() < 1.0 and a.std() > 0.05
    # Perlin noise is 0 on the lattice points (every 8th pixel here)
    np.testing.assert_allclose(a[::8, ::8], 0.0, atol=1e-6)
    assert perlin_mask((32, 32), np.random.default_rng(2)).any()


@pytest.mark.parametrize("kind", ["perlin", "cutpaste", "poisson", "band"])
def test_synthetic_defects_change_pixels_only_where_labelled(kind):
    images = _batch()
    out, masks = synthetic_defects(images, np.random.default_rng(0), kinds=[kind], clean_share=0.0)
    assert out.shape == images.shape and out.dtype == np.uint8 and masks.shape == (6, 32, 32)
    assert masks.any(axis=(1, 2)).all()  # clean_share 0: every image gets a defect
    changed = (out != images).any(axis=1)
    if kind == "poisson":  # Poisson blending also smooths the defect's surroundings (inside its box)
        assert changed.any()
    else:
        assert not (changed & ~masks).any()
    np.testing.assert_array_equal(images, _batch())  # the input is untouched


def test_band_masks_are_large_regions_from_one_edge_to_a_wavy_line():
    shares, wavy = [], 0
    for seed in range(40):
        mask = band_mask((48, 64), np.random.default_rng(seed), reach=(0.2, 0.4))
        assert mask.shape == (48, 64) and mask.dtype == bool
        # one of the four sides is fully inside the band, the opposite one fully outside
        sides = [mask[0].all(), mask[-1].all(), mask[:, 0].all(), mask[:, -1].all()]
        opposite = [~mask[-1].any(), ~mask[0].any(), ~mask[:, -1].any(), ~mask[:, 0].any()]
        assert any(s and o for s, o in zip(sides, opposite))
        # every line across the band is one run from the edge: no holes, no islands
        lines = mask if (mask[0].all() or mask[-1].all()) else mask.T
        assert (np.abs(np.diff(lines.astype(int), axis=0)).sum(axis=0) == 1).all()
        shares.append(mask.mean())
        wavy += len(np.unique(lines.sum(axis=0))) > 1
    assert 0.1 < min(shares) and max(shares) < 0.6 and wavy > 30
    np.testing.assert_array_equal(band_mask((48, 64), np.random.default_rng(5)), band_mask((48, 64), np.random.default_rng(5)))


def test_the_default_defects_leave_band_out():
    images = _batch(n=40)
    default, _ = synthetic_defects(images, np.random.default_rng(1))
    named, _ = synthetic_defects(images, np.random.default_rng(1), kinds=list(DEFAULT_DEFECTS))
    np.testing.assert_array_equal(default, named)
    assert "band" not in DEFAULT_DEFECTS
    assert create("draem", defects=["band", "perlin"]).config.defects == ["band", "perlin"]


def test_synthetic_defects_leave_a_clean_share_and_check_inputs():
    images = _batch(n=40)
    _, masks = synthetic_defects(images, np.random.default_rng(0), clean_share=0.5)
    assert 8 <= int((~masks.any(axis=(1, 2))).sum()) <= 32
    with pytest.raises(ConfigError, match="kinds"):
        synthetic_defects(images, np.random.default_rng(0), kinds=["dtd"])
    with pytest.raises(ConfigError, match="clean_share"):
        synthetic_defects(images, np.random.default_rng(0), clean_share=1.0)
    with pytest.raises(DataError, match="uint8 numpy"):
        synthetic_defects(images.astype(np.float32), np.random.default_rng(0))


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    x = torch.rand(2, 1, 16, 16)
    np.testing.assert_allclose(ssim(x, x).numpy(), [1.0, 1.0], atol=1e-5)
    assert (ssim(x, x + 0.5 * torch.randn_like(x)) < 0.8).all()


def test_image_score_is_the_max_of_the_mean_filtered_map():
    maps = torch.zeros(2, 9, 9)
    maps[0, 4, 4] = 9.0           # one hot pixel: a 3x3 mean gives 1
    maps[1, 3:6, 3:6] = 2.0       # a 3x3 blob of 2: its mean stays 2
    np.testing.assert_allclose(image_score(maps, 3).numpy(), [1.0, 2.0])
    np.testing.assert_allclose(image_score(maps, 1).numpy(), [9.0, 2.0])


def test_network_maps_are_full_resolution():
    network = DRAEMNetwork(channels=1, width=4, depth=3).eval()
    reconstruction, logits = network(torch.zeros(2, 1, 40, 24))
    assert reconstruction.shape == (2, 1, 40, 24) and logits.shape == (2, 1, 40, 24)


def test_source_ops_change_the_perlin_texture_and_nothing_outside_its_mask():
    images = _batch()
    plain, plain_masks = synthetic_defects(images, np.random.default_rng(3), kinds=["perlin"], clean_share=0.0)
    again, _ = synthetic_defects(images, np.random.default_rng(3), kinds=["perlin"], clean_share=0.0, source_ops=0)
    np.testing.assert_array_equal(plain, again)
    # 0 ops draws what the code before source_ops drew (these sums are its output), so kept rows reproduce
    assert (int(plain.astype(np.int64).sum()), int(plain_masks.sum())) == (763547, 559)
    mixed, mixed_masks = synthetic_defects(images, np.random.default_rng(3))
    assert (int(mixed.astype(np.int64).sum()), int(mixed_masks.sum())) == (764711, 118)
    changed, masks = synthetic_defects(images, np.random.default_rng(3), kinds=["perlin"], clean_share=0.0,
                                       source_ops=3)
    assert not ((changed != images).any(axis=1) & ~masks).any()
    assert (changed != plain).any()
    with pytest.raises(ConfigError, match="source_ops"):
        synthetic_defects(images, np.random.default_rng(0), source_ops=2.5)


def test_without_turns_texture_sources_keep_their_orientation():
    # vertical stripes: inside its mask a synthetic region stays constant down each column unless its
    # source was turned
    stripes = np.tile((np.arange(16) % 4 * 60).astype(np.uint8), (16, 1))
    images = np.stack([np.roll(stripes, i, axis=1)[None] for i in range(6)])

    def columns_constant_in_masks(out, masks):
        return all(len(np.unique(image[0][:, x][mask[:, x]])) <= 1 for image, mask in zip(out, masks) for x in range(16))

    kept, masks = synthetic_defects(images, np.random.default_rng(0), kinds=["perlin", "cutpaste"], clean_share=0.0,
                                    source_ops=0, source_turns=False)
    assert masks.any() and columns_constant_in_masks(kept, masks)
    assert not columns_constant_in_masks(*synthetic_defects(images, np.random.default_rng(0), kinds=["perlin", "cutpaste"],
                                                            clean_share=0.0, source_ops=0))
    # the default draws what the benchmarked code drew (the pinned sums of the test above)
    plain, plain_masks = synthetic_defects(_batch(), np.random.default_rng(3), kinds=["perlin"], clean_share=0.0,
                                           source_turns=True)
    assert (int(plain.astype(np.int64).sum()), int(plain_masks.sum())) == (763547, 559)


def test_band_draws_repeat_what_the_benchmarked_code_drew():
    images = _batch()
    band, band_masks = synthetic_defects(images, np.random.default_rng(3), kinds=["band"], clean_share=0.0)
    assert (int(band.astype(np.int64).sum()), int(band_masks.sum())) == (775366, 1818)  # commit 2e00b04's output
    four, four_masks = synthetic_defects(images, np.random.default_rng(3), kinds=["perlin", "cutpaste", "poisson", "band"])
    assert (int(four.astype(np.int64).sum()), int(four_masks.sum())) == (764750, 305)


@pytest.mark.parametrize("op", sorted(SOURCE_OPS))
def test_each_source_op_keeps_shape_and_range(op):
    rng = np.random.default_rng(1)
    for channels in (1, 3):
        image = rng.integers(0, 256, (20, 24, channels)).astype(np.float32)
        out = np.clip(SOURCE_OPS[op](image, np.random.default_rng(2)), 0, 255)
        assert out.shape == image.shape
    gray = rng.integers(40, 200, (20, 24, 1)).astype(np.uint8)
    assert augment_source(gray, np.random.default_rng(0), len(SOURCE_OPS)).dtype == np.uint8
    assert augment_source(gray, np.random.default_rng(0), 0) is gray


@pytest.mark.parametrize("params, match", [
    ({"defects": ["dtd"]}, "defects"),
    ({"synthetic": "cutpaste"}, "not `synthetic`"),
    ({"backbone": "resnet18"}, "own networks"),
    ({"score_pool": 4}, "score_pool"),
    ({"clean_share": 1.0}, "clean_share"),
    ({"source_ops": 10}, "source_ops"),
    ({"source_ops": -1}, "source_ops"),
    ({"source_turns": "no"}, "source_turns"),
    ({"standardise": "yes"}, "standardise"),
])
def test_bad_options_are_named(params, match):
    with pytest.raises(ConfigError, match=match):
        create("draem", **params)


def test_labelled_defects_with_and_without_masks_enter_the_loss():
    detector = create("draem", device="cpu", width=4, depth=2, quiet=True)
    network = DRAEMNetwork(1, 4, 2)
    images = torch.randn(4, 1, 16, 16)
    masks = torch.zeros(4, 16, 16, dtype=torch.long)
    masks[2, 4:8, 4:8] = 1
    recon_rows = torch.tensor([True, True, False, False])
    all_known = detector._loss(network, (images, images, masks, recon_rows, torch.ones(4, dtype=torch.bool)))
    one_unknown = detector._loss(network, (images, images, masks, recon_rows, torch.tensor([True, True, True, False])))
    assert torch.isfinite(all_known) and torch.isfinite(one_unknown)
    assert not torch.isclose(all_known, one_unknown)  # the image-level term replaces row 3's mask term


def test_the_scored_map_is_the_channel_the_focal_loss_trains():
    """A few steps on one masked batch raise the scored map inside the mask and lower it outside
    (a scored channel the loss never trains stays flat: the map would localise nothing)."""
    torch.manual_seed(0)
    detector = create("draem", device="cpu", width=4, depth=2, quiet=True)
    network = detector.network_ = DRAEMNetwork(1, 4, 2)
    images = torch.randn(2, 1, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[:, 4:10, 4:10] = 1
    rows = torch.ones(2, dtype=torch.bool)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(40):
        optimiser.zero_grad()
        detector._loss(network, (images, images, masks, rows, rows)).backward()
        optimiser.step()
    with torch.no_grad():
        _, maps = detector._forward_scores(images)
    inside = masks.bool()
    assert maps[inside].mean() > maps[~inside].mean() + 0.3


@pytest.fixture(scope="module")
def fitted_draem(tiny_training_sets):
    normal, _ = tiny_training_sets
    detector = create("draem", device="cpu", width=4, depth=2, epochs=1, batch_size=4, quiet=True)
    return detector.fit(normal), normal


def test_the_fit_keeps_the_training_normals_map_statistics(fitted_draem):
    detector, normal = fitted_draem
    network = detector.network_
    detector.config.standardise = "none"
    raw = torch.from_numpy(detector.score(normal).maps)
    assert int(network.normal_count) == len(normal)
    torch.testing.assert_close(network.normal_mean, raw.mean(dim=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(network.normal_std, raw.std(dim=0), rtol=1e-4, atol=1e-5)
    detector.config.standardise = "both"


@pytest.mark.parametrize("mode", ["none", "score", "both"])
def test_standardise_reads_the_map_against_the_normals(fitted_draem, mode):
    detector, normal = fitted_draem
    network = detector.network_
    detector.config.standardise = "none"
    raw = detector.score(normal)
    detector.config.standardise = mode
    got = detector.score(normal)
    detector.config.standardise = "both"
    z = (torch.from_numpy(raw.maps) - network.normal_mean) / (network.normal_std + 1e-3)
    expected_map = z if mode == "both" else torch.from_numpy(raw.maps)
    expected_score = raw.image if mode == "none" else image_score(z, detector.config.score_pool).numpy()
    np.testing.assert_allclose(got.maps, expected_map.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.image, expected_score, rtol=1e-4, atol=1e-4)
    if mode != "none":  # a normal pixel sits near its mean: the z-scores are centred, not the raw map's scale
        assert abs(float(z.mean())) < 0.2


def test_the_statistics_travel_with_the_weights(fitted_draem, tmp_path):
    from defectmine.models.registry import load_detector

    detector, normal = fitted_draem
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert int(loaded.network_.normal_count) == len(normal)
    np.testing.assert_allclose(loaded.score(normal).image, detector.score(normal).image, rtol=1e-5)


def test_a_model_saved_before_the_statistics_loads_and_reads_its_map_as_it_is(fitted_draem, tmp_path):
    from safetensors.torch import load_file, save_file

    from defectmine.models.registry import load_detector

    detector, normal = fitted_draem
    detector.save(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("normal_")}
    save_file(state, str(weights))
    old = load_detector(tmp_path / "model")
    assert int(old.network_.normal_count) == 0
    detector.config.standardise = "none"
    try:
        expected = detector.score(normal)
    finally:
        detector.config.standardise = "both"
    got = old.score(normal)  # standardise "both" by default, but nothing to standardise by
    np.testing.assert_allclose(got.image, expected.image, rtol=1e-5)
    np.testing.assert_allclose(got.maps, expected.maps, rtol=1e-5, atol=1e-6)
    del state["reconstructive.head.bias"]  # any other missing tensor is still an error
    save_file(state, str(weights))
    with pytest.raises(DataError, match="missing"):
        load_detector(tmp_path / "model")


def test_with_tta_the_map_is_read_against_flip_symmetric_statistics(fitted_draem):
    """Under tta a flipped image's map is in flipped coordinates: the statistics it is read against are
    the kept ones averaged over the four flips (a normal peak on the left edge counts on the right too)."""
    detector, normal = fitted_draem
    network = detector.network_
    kept = network.normal_mean.clone(), network.normal_std.clone()
    images = normal.raw_images()[:3]
    try:
        network.normal_mean.zero_()
        network.normal_mean[:, :2] = 0.9  # a peak every normal map has on the left edge only
        network.normal_std.fill_(0.1)
        detector.config.tta, detector.config.standardise = True, "both"
        got = detector.score(images)
        detector.config.standardise = "none"
        raw = torch.from_numpy(detector.score(images).maps)
    finally:
        network.normal_mean.copy_(kept[0])
        network.normal_std.copy_(kept[1])
        detector.config.tta, detector.config.standardise = False, "both"
    mean = torch.zeros(16, 16)
    mean[:, :2] = mean[:, -2:] = 0.45
    std = (0.1**2 + torch.where(mean > 0, 0.9**2 / 2, 0.0) - mean**2).sqrt()
    np.testing.assert_allclose(got.maps, ((raw - mean) / (std + 1e-3)).numpy(), rtol=1e-3, atol=1e-3)


def test_before_the_statistics_exist_the_map_is_read_as_it_is():
    detector = create("draem", device="cpu", width=4, depth=2, quiet=True)
    detector.network_ = DRAEMNetwork(1, 4, 2, size=(16, 16))
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        score, defect_map = detector._forward_scores(images)
    torch.testing.assert_close(score, image_score(defect_map, detector.config.score_pool))
