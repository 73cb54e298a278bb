"""Mining sweeps: the phase rule on hand-made curves, a tiny K sweep end to end, and the `sweep` command."""

import csv
import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.errors import ConfigError, DataError
from defectmine.evaluation.sweep import (
    BASELINE,
    OPPORTUNITY,
    OVER_MINING,
    UNDETERMINED,
    mining_phases,
    phase_spans,
    phases_of,
    summarise,
)
from defectmine.pipeline import RunConfig, merge_sweep_rows, run_sweep

DOUBLINGS = [1, 2, 4, 8, 16]


# -- the phase rule ---------------------------------------------------------------------------------
def test_steady_gains_stay_in_the_opportunity_phase_and_say_how_many_to_collect():
    result = mining_phases(DOUBLINGS, [0.60, 0.70, 0.80, 0.90, 0.95])
    assert result["phases"] == [OPPORTUNITY] * 5
    assert result["boundary"] is None and result["state"] == OPPORTUNITY
    assert result["gain_per_doubling"] == pytest.approx([0.1, 0.1, 0.1, 0.05])
    assert result["recommendation"] == (
        "AUROC still gains 0.050 per doubling at 16 anomalies: collecting about 16 more defect images is "
        "worth it (next point 32)."
    )


def test_saturating_curve_starts_over_mining_where_gains_stay_below_tolerance():
    result = mining_phases(DOUBLINGS, [0.60, 0.80, 0.85, 0.855, 0.857])
    assert result["boundary"] == 4 and result["boundary_index"] == 2
    assert result["phases"] == [OPPORTUNITY, OPPORTUNITY, OVER_MINING, OVER_MINING, OVER_MINING]
    assert result["recommendation"] == (
        "Over-mining from 4 anomalies on: gains below 0.01 AUROC per doubling; stop collecting."
    )
    assert phase_spans(result) == [(1, 4, OPPORTUNITY), (4, 16, OVER_MINING)]


def test_gain_is_per_doubling_so_uneven_spacing_is_comparable():
    # 10 -> 40 is two doublings: +0.04 AUROC is 0.02 per doubling; 40 -> 80 one doubling of +0.005
    result = mining_phases([10, 40, 80], [0.80, 0.84, 0.845])
    assert result["gain_per_doubling"] == pytest.approx([0.02, 0.005])
    assert result["boundary"] == 40


def test_a_gain_of_exactly_the_tolerance_still_counts():
    result = mining_phases([1, 2, 4], [0.7, 0.71, 0.72], tolerance=0.01)
    assert result["boundary"] is None


def test_an_exactly_representable_tie_with_the_tolerance_still_counts():
    # 0.75 - 0.5 is exactly 0.25 in binary floating point: a true tie, no rounding involved
    result = mining_phases([1, 2], [0.5, 0.75], tolerance=0.25)
    assert result["gain_per_doubling"] == [0.25]
    assert result["boundary"] is None and result["phases"] == [OPPORTUNITY, OPPORTUNITY]


def test_a_tie_that_rounding_puts_just_below_the_tolerance_still_counts():
    # 0.82 - 0.81 evaluates to 0.009999999999999898: a gain of one hundredth in decimal, which the
    # rule must read as a tie with 0.01, not as over-mining
    result = mining_phases([1, 2], [0.81, 0.82], tolerance=0.01)
    assert result["gain_per_doubling"][0] < 0.01
    assert result["boundary"] is None and result["phases"] == [OPPORTUNITY, OPPORTUNITY]


def test_the_rounding_slack_ends_where_over_mining_begins():
    from defectmine.evaluation.sweep import _EPS

    # a gain of exactly tolerance - _EPS is still a tie; anything clearly below it is not
    edge = 0.25 - _EPS
    result = mining_phases([1, 2], [0.0, edge], tolerance=0.25)
    assert result["gain_per_doubling"] == [edge]
    assert result["boundary"] is None
    below = mining_phases([1, 2], [0.0, 0.25 - 1e-9], tolerance=0.25)
    assert below["boundary"] == 1 and below["phases"] == [OVER_MINING, OVER_MINING]


def test_flat_curve_is_over_mining_from_the_first_point():
    result = mining_phases([1, 2, 4, 8], [0.8, 0.8, 0.8, 0.8])
    assert result["phases"] == [OVER_MINING] * 4 and result["boundary"] == 1
    assert result["recommendation"].startswith("Over-mining from 1 anomaly on")
    assert phase_spans(result) == [(1, 8, OVER_MINING)]


def test_single_point_is_undetermined():
    result = mining_phases([5], [0.7])
    assert result["phases"] == [UNDETERMINED] and result["boundary"] is None
    assert result["gain_per_doubling"] == [] and phase_spans(result) == []
    assert "add a point with about 10 anomalies" in result["recommendation"]


def test_noisy_dip_and_recovery_is_not_a_gain():
    # Raw means dip at 8 and recover at 16: the raw last gain (+0.06) is noise, the running best is flat.
    result = mining_phases(DOUBLINGS, [0.70, 0.85, 0.86, 0.80, 0.86])
    assert result["raw_gain_per_doubling"][-1] == pytest.approx(0.06)
    assert result["envelope"] == pytest.approx([0.70, 0.85, 0.86, 0.86, 0.86])
    assert result["boundary"] == 4


def test_noisy_curve_that_rises_above_its_best_keeps_the_opportunity_open():
    result = mining_phases(DOUBLINGS, [0.70, 0.80, 0.78, 0.79, 0.84])
    assert result["boundary"] is None and result["gain_per_doubling"][-1] == pytest.approx(0.04)


def test_slow_start_then_gain_is_opportunity():
    result = mining_phases(DOUBLINGS, [0.70, 0.702, 0.76, 0.762, 0.763])
    assert result["phases"][:2] == [OPPORTUNITY, OPPORTUNITY] and result["boundary"] == 4


def test_unsorted_points_and_duplicates_are_sorted_and_merged():
    result = mining_phases([8, 1, 4, 4, 2], [0.9, 0.6, 0.79, 0.81, 0.7])
    assert result["n_anomalies"] == [1, 2, 4, 8]
    assert result["means"] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert len(result["phases"]) == 4


@pytest.mark.parametrize(
    "n, means, tolerance",
    [([], [], 0.01), ([1, 2], [0.5], 0.01), ([0, 1], [0.5, 0.6], 0.01), ([1, 2], [0.5, math.nan], 0.01),
     ([1, 2], [0.5, 0.6], -1.0), ([1.5, 2], [0.5, 0.6], 0.01)],
)
def test_bad_curves_raise_config_errors(n, means, tolerance):
    with pytest.raises(ConfigError):
        mining_phases(n, means, tolerance)


def test_summarise_gives_mean_and_std_per_point_sorted_by_anomalies():
    rows = [
        {"point": "1/2", "n_anomalous": 12, "n_normal": 24, "auroc": 0.90, "fit_seconds": 1.0},
        {"point": "1/2", "n_anomalous": 12, "n_normal": 24, "auroc": 0.92, "fit_seconds": 3.0},
        {"point": "unsupervised", "n_anomalous": 1, "n_normal": 24, "auroc": 0.70, "fit_seconds": 1.0},
    ]
    table = summarise(rows)
    assert [e["point"] for e in table] == ["unsupervised", "1/2"]
    assert table[1]["auroc"] == "0.910 ± 0.014" and table[1]["auroc_mean"] == pytest.approx(0.91)
    assert table[1]["seeds"] == 2 and table[1]["n_anomalous"] == 12 and table[1]["fit_seconds"] == "2.0 ± 1.4"
    assert table[0]["auroc"] == "0.700"  # one seed: no spread shown


# -- a tiny sweep end to end ---------------------------------------------------------------------------
TINY = {"epochs": 2, "width": 8, "batch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from defectmine.data import write_synthetic_folder

    return write_synthetic_folder(tmp_path_factory.mktemp("sweep") / "data", n_normal=40, n_anomalous=16, size=32)


@pytest.fixture(scope="module")
def tiny_sweep(tiny_data, tmp_path_factory):
    base = RunConfig(data=str(tiny_data), detector="fcdd", detector_params=dict(TINY), image_size=32)
    out = tmp_path_factory.mktemp("sweep-out")
    return base, run_sweep(base, ks=[1, 2, 4], seeds=[0], out_dir=out, quiet=True)


def test_run_sweep_writes_every_file_and_one_row_per_point(tiny_sweep):
    _, result = tiny_sweep
    out = result.out_dir
    for name in ("sweep_rows.csv", "sweep.csv", "sweep.json", "sweep.png", "report.html"):
        assert (out / name).is_file(), name
    assert [e["point"] for e in result.summary] == ["K=1", "K=2", "K=4"]
    assert [e["n_anomalous"] for e in result.summary] == [1, 2, 4]
    assert all(e["n_normal"] == result.summary[0]["n_normal"] > 0 for e in result.summary)
    with open(out / "sweep_rows.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"auroc", "auprc", "f1", "precision", "recall", "fit_seconds"} <= set(rows[0])
    with open(out / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    document = json.loads((out / "sweep.json").read_text())
    assert document["recommendation"] == result.recommendation and document["protocol"] == "k"
    assert document["phases"]["n_anomalies"] == [1, 2, 4] and len(document["rows"]) == 3
    assert document["config"]["detector"] == "fcdd"
    html = (out / "report.html").read_text()
    assert "<img" in html and result.recommendation.split(":")[0] in html and "K=4" in html
    assert all(e["phase"] in (OPPORTUNITY, OVER_MINING) for e in result.summary)


def test_resume_keeps_finished_fits(tiny_sweep, monkeypatch):
    base, result = tiny_sweep
    import defectmine.pipeline.steps

    def no_fit(config):
        raise AssertionError("resume should not fit a finished point again")

    monkeypatch.setattr(defectmine.pipeline.steps, "create_detector", no_fit)
    again = run_sweep(base, ks=[1, 2, 4], seeds=[0], out_dir=result.out_dir, resume=True, quiet=True)
    assert [r["auroc"] for r in again.rows] == pytest.approx([r["auroc"] for r in result.rows])
    other = RunConfig(data=base.data, detector="fcdd", detector_params={**TINY, "epochs": 3}, image_size=32)
    with pytest.raises(ConfigError, match="other settings"):
        run_sweep(other, ks=[1, 2, 4], seeds=[0], out_dir=result.out_dir, resume=True, quiet=True)


def test_pieces_run_apart_merge_into_one_sweep_without_fitting_again(tiny_sweep, tmp_path, monkeypatch):
    base, result = tiny_sweep  # seed 0, run whole
    second = run_sweep(base, ks=[1, 2, 4], seeds=[1], out_dir=tmp_path / "seed1", quiet=True)
    assert merge_sweep_rows([result.out_dir, second.out_dir], tmp_path / "all") == 6
    import defectmine.pipeline.steps

    def no_fit(config):
        raise AssertionError("merged rows should not be fitted again")

    monkeypatch.setattr(defectmine.pipeline.steps, "create_detector", no_fit)
    merged = run_sweep(base, ks=[1, 2, 4], seeds=[0, 1], out_dir=tmp_path / "all", resume=True, quiet=True)
    assert [(r["point"], r["seed"]) for r in merged.rows] == [(f"K={k}", s) for k in (1, 2, 4) for s in (0, 1)]
    assert all(e["seeds"] == 2 for e in merged.summary)

    other = RunConfig(data=base.data, detector="fcdd", detector_params={**TINY, "epochs": 3}, image_size=32)
    monkeypatch.undo()
    third = run_sweep(other, ks=[1], seeds=[2], out_dir=tmp_path / "other", quiet=True)
    with pytest.raises(ConfigError, match="other settings") as raised:
        merge_sweep_rows([result.out_dir, third.out_dir], tmp_path / "mixed")
    assert str(third.out_dir / "sweep_rows.csv") in str(raised.value)  # names the odd file out

    # a stale merge in the target folder (e.g. an old smoke run's) is named too, and nothing is written
    (tmp_path / "stale").mkdir()
    shutil.copy(third.out_dir / "sweep_rows.csv", tmp_path / "stale" / "sweep_rows.csv")
    with pytest.raises(ConfigError, match="stale"):
        merge_sweep_rows([result.out_dir, second.out_dir], tmp_path / "stale")


def test_a_piece_row_replaces_the_same_point_and_seed_of_an_earlier_merge(tiny_sweep, tmp_path):
    _, result = tiny_sweep
    merged = tmp_path / "merged"
    merged.mkdir()
    earlier = (result.out_dir / "sweep_rows.csv").read_text()
    lines = earlier.splitlines()
    header = lines[0].split(",")
    first = lines[1].split(",")
    first[header.index("auroc")] = "0.123456"
    (merged / "sweep_rows.csv").write_text("\n".join([lines[0], ",".join(first)]) + "\n")
    assert merge_sweep_rows([result.out_dir], merged) == len(lines) - 1
    assert "0.123456" not in (merged / "sweep_rows.csv").read_text()


def test_baseline_point_without_anomalies_is_labelled_not_placed_on_the_log_axis():
    rows = [{"point": "K=0", "n_anomalous": 0, "n_normal": 9, "auroc": 0.6, "val_auroc": 0.6},
            {"point": "K=2", "n_anomalous": 2, "n_normal": 9, "auroc": 0.7, "val_auroc": 0.7},
            {"point": "K=4", "n_anomalous": 4, "n_normal": 9, "auroc": 0.8, "val_auroc": 0.8}]
    from defectmine.report.sweep import markdown_table, mining_curve_png

    table = summarise(rows)
    phases, _ = phases_of(table, 0.01)
    assert [e["phase"] for e in table] == [BASELINE, OPPORTUNITY, OPPORTUNITY]
    assert mining_curve_png(table, phases)[:4] == b"\x89PNG"
    lines = markdown_table(table).splitlines()
    assert lines[0].startswith("| point | anomalies | normals | positive ratio | seeds | val AUROC |")
    assert lines[2].startswith("| K=0 | 0 | 9 | 0 |") and lines[2].rstrip(" |").endswith(BASELINE)
    assert lines[4].startswith("| K=4 | 4 | 9 | 1/2.25 |")


def test_the_recommendation_reads_validation_auroc_not_test_auroc():
    # test AUROC keeps rising, validation AUROC is flat: the advice must follow validation
    rows = [{"point": f"K={k}", "n_anomalous": k, "n_normal": 9, "auroc": 0.5 + 0.1 * i, "val_auroc": 0.7}
            for i, k in enumerate((1, 2, 4, 8))]
    table = summarise(rows)
    phases, recommendation = phases_of(table, 0.01)
    assert phases["means"] == pytest.approx([0.7] * 4) and phases["metric"] == "validation AUROC"
    assert [e["phase"] for e in table] == [OVER_MINING] * 4
    assert recommendation.startswith("Over-mining from 1 anomaly on") and "validation AUROC" in recommendation


def test_k_beyond_the_pool_fails_before_any_fit(tiny_data, tmp_path):
    base = RunConfig(data=str(tiny_data), detector="fcdd", detector_params=dict(TINY), image_size=32)
    with pytest.raises(DataError, match="K=15 is more than the 14"):
        run_sweep(base, ks=[1, 15], seeds=[0], out_dir=tmp_path, quiet=True)
    assert not (tmp_path / "sweep_rows.csv").exists()


# -- the command -------------------------------------------------------------------------------------
runner = CliRunner()
FAST = ["--image-size", "32", "--epochs", "1", "-p", "width=8", "-p", "batch_size=16", "--device", "cpu", "-q"]


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_sweep_command_prints_table_and_recommendation(tiny_data, tmp_path):
    result = _invoke("sweep", "--data", tiny_data, "--ks", "1,2", "--seeds", "0", "--out", tmp_path / "s", *FAST)
    assert result.exit_code == 0, result.output
    assert "K=2" in result.output and "recommendation" in result.output and "report.html" in result.output
    assert (tmp_path / "s" / "report.html").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratios", "1/2,banana"], "--ratios: positive ratio 'banana' is invalid"),
        (["--ratios", "1/64", "--ks", "1"], "--ratios and --ks given together"),
        ([], "no sweep points"),
        (["--ks", "1,x"], "--ks: 'x' is not a whole number"),
        (["--ks", "1,99"], "--ks: K=99 is more than the 14"),
        (["--ks", "2,2"], "K=2 given more than once"),
        (["--ratios", "1/1,1/64"], "--ratios: 1/1 cannot be reached"),
        (["--ks", "1", "--seeds", "0,zero"], "--seeds: 'zero'"),
        (["--ks", "1", "--tolerance", "-0.1"], "--tolerance"),
    ],
)
def test_sweep_command_bad_input_is_one_clear_line(tiny_data, tmp_path, args, message):
    result = _invoke("sweep", "--data", tiny_data, "--out", tmp_path / "s", *args, *FAST)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_sweep_help_shows_examples():
    result = _invoke("sweep", "--help")
    assert result.exit_code == 0 and "defectmine sweep --data elpv --ratios" in result.output
