"""The benchmark scripts' shared bookkeeping (benchmarks/_table.py): rows kept between runs, sections of
BENCHMARKS.md, and the pretraining table's list of fits not run yet."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _table  # noqa: E402


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fit.py"
    script.write_text(body)
    return script


def test_kept_row_runs_once_then_reads_the_kept_row(tmp_path):
    counter = tmp_path / "runs.txt"
    script = _script(tmp_path, (
        "import json, sys, pathlib\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "counter.write_text(counter.read_text() + 'x' if counter.exists() else 'x')\n"
        "print('progress noise')\n"
        "print(json.dumps({'auroc': 0.75, 'arg': sys.argv[1]}))\n"
    ))
    path = tmp_path / "rows" / "a.json"

    row, ran = _table.kept_row(path, str(script), ["seed0"], dict(os.environ), {"jobs": 2})
    assert ran and row == {"auroc": 0.75, "arg": "seed0", "jobs": 2}
    assert json.loads(path.read_text()) == row

    again, ran_again = _table.kept_row(path, str(script), ["seed0"], dict(os.environ))
    assert not ran_again and again == row
    assert counter.read_text() == "x"  # the second call did not start the script


def test_kept_row_failure_names_the_row_and_keeps_nothing(tmp_path):
    script = _script(tmp_path, "import sys\nsys.exit('CUDA out of memory on fold 3')\n")
    path = tmp_path / "rows" / "b.json"
    with pytest.raises(_table.FitFailed, match=r"b\.json failed:(.|\n)*CUDA out of memory on fold 3"):
        _table.kept_row(path, str(script), [], dict(os.environ))
    assert not path.exists()


def test_replace_section_appends_then_replaces_in_place(tmp_path):
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\nintro\n")
    _table.replace_section(target, "demo", "Demo", "first body")
    _table.replace_section(target, "other", "Other", "other body")
    _table.replace_section(target, "demo", "Demo", "second body")
    text = target.read_text()
    assert "first body" not in text and text.count("<!-- demo:start -->") == 1
    assert text.index("second body") < text.index("other body")  # replaced where it was


def test_machines_summary_lists_each_machine_once_with_its_code_versions():
    cpu, gpu = "2 CPU cores (EPYC), no GPU, torch 2.14.1", "16 CPU cores (Xeon), H100, torch 2.11.0"
    described = [f"{cpu}, code b2", f"{gpu}, code a1", f"{cpu}, code a1", f"{cpu}, code b2", "not recorded"]
    assert _table.machines_summary(described) == f"{gpu} (code a1); {cpu} (code a1, b2); not recorded"


def test_subprocess_env_shares_the_cores_among_jobs(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert _table.subprocess_env(4)["OMP_NUM_THREADS"] == "4"
    assert _table.subprocess_env(32)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _table.subprocess_env(4)["OMP_NUM_THREADS"] == "3"


def test_subprocess_env_pins_the_code_version_at_launch(monkeypatch):
    read_commit = _table.code_version
    monkeypatch.delenv("DEFECTMINE_CODE_VERSION", raising=False)
    monkeypatch.setattr(_table, "code_version", lambda: "abc1234")
    env = _table.subprocess_env(1)
    assert env["DEFECTMINE_CODE_VERSION"] == "abc1234"
    # The subprocess reads its version when its fit ends; by then HEAD may have moved on.
    monkeypatch.setattr(os, "environ", env)
    assert read_commit() == "abc1234"


def test_pretraining_table_lists_the_fits_not_run_yet():
    import pretrain_benchmark

    jobs = [{"dataset": "elpv", "detector": "liac", "k": 0, "variant": v, "seed": s}
            for v in ("scratch", "ours") for s in (0, 1)]
    jobs.append({"dataset": "elpv", "detector": "fcdd", "k": 80, "variant": "ours", "seed": 2})
    line = pretrain_benchmark.missing_line(jobs)
    assert line.startswith("Not run yet (5 fits of the protocol)")
    assert "elpv fcdd K=80 (ours seeds [2])" in line
    assert "elpv liac K=0 (ours seeds [0, 1], scratch seeds [0, 1])" in line


def test_pretraining_table_pairs_seeds_and_states_the_target_verdict():
    import pretrain_benchmark

    def row(dataset, k, seed, variant, auroc):
        return {"dataset": dataset, "detector": "fcdd", "k": k, "seed": seed, "variant": variant, "auroc": auroc,
                "f1": 0.5, "machine": "test box"}

    rows = [row("a", 10, 0, "scratch", 0.60), row("a", 10, 0, "ours", 0.70), row("a", 10, 1, "scratch", 0.62),
            row("a", 10, 1, "ours", 0.70), row("a", 40, 0, "scratch", 0.80), row("a", 40, 0, "ours", 0.81),
            row("a", 40, 1, "ours", 0.90),  # no scratch partner: not paired
            row("a", 80, 0, "scratch", 0.9), row("a", 80, 0, "ours", 0.5),  # K = 80 is outside the target
            row("a", 0, 0, "scratch", 0.7)]  # no pair at all: no table row
    info = {"backbone": "cnn", "method": "simsiam", "recipe": {"loss": "x"}, "epochs": 1, "n_images": 4,
            "source": "a", "cpu_seconds": 1.0, "wall_seconds": 1.0, "threads": 1, "final_loss": 0.0}
    settings = {"image_size": 32, "detector_epochs": 1, "limit": None}
    text = pretrain_benchmark.comparison_table(rows, info, "cmd", settings)
    table = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| a | fcdd")}
    assert table["10"].split(" | ")[3] == "2" and "+0.090" in table["10"] and table["10"].endswith("| met |")
    assert table["40"].split(" | ")[3] == "1" and "+0.010" in table["40"] and table["40"].endswith("| missed |")
    assert table["80"].endswith("| - |") and "0" not in table
    assert "Target met in 1 of 2 cells at K = 10 and 40. Largest mean Δ AUROC +0.090 (a fcdd K=10); " \
           "smallest +0.010 (a fcdd K=40)." in text


def test_mining_sweep_notes_the_machine_beside_each_row_it_fits(tmp_path, monkeypatch):
    import mining_sweep

    def write_rows(folder, keys):
        lines = ["point,seed,auroc", *(f"{point},{seed},0.5" for point, seed in keys)]
        (folder / "sweep_rows.csv").write_text("\n".join(lines) + "\n")
        return "result"

    piece = tmp_path / "seed0"
    piece.mkdir()
    write_rows(piece, [("K=1", 0)])  # fitted before records were kept
    monkeypatch.setattr(mining_sweep, "machine_description", lambda: "box A, code aaa")
    assert mining_sweep.recording_machine(piece, lambda: write_rows(piece, [("K=1", 0), ("K=2", 0)]),
                                          resume=True) == "result"
    monkeypatch.setattr(mining_sweep, "machine_description", lambda: "box A, code bbb")
    mining_sweep.recording_machine(piece, lambda: write_rows(piece, [("K=1", 0), ("K=2", 0), ("K=5", 0)]),
                                   resume=True)
    assert json.loads((piece / "fitted_on.json").read_text()) == {"K=2|0": "box A, code aaa",
                                                                  "K=5|0": "box A, code bbb"}
    rows = [{"point": p, "seed": "0"} for p in ("K=1", "K=2", "K=5")]
    assert mining_sweep.fitted_on(tmp_path, rows) == "box A (code aaa, bbb); not recorded"

    # a fresh (not resumed) run refits every row: all of them are this machine's, old notes go
    monkeypatch.setattr(mining_sweep, "machine_description", lambda: "box B, code ccc")
    mining_sweep.recording_machine(piece, lambda: write_rows(piece, [("K=1", 0)]), resume=False)
    assert json.loads((piece / "fitted_on.json").read_text()) == {"K=1|0": "box B, code ccc"}


def test_mining_sweep_records_the_code_its_fits_started_on(tmp_path, monkeypatch):
    import mining_sweep

    monkeypatch.setattr(mining_sweep, "machine_description", lambda: "box A, code aaa")

    def sweep_during_which_a_commit_lands():
        monkeypatch.setattr(mining_sweep, "machine_description", lambda: "box A, code bbb")
        (tmp_path / "sweep_rows.csv").write_text("point,seed,auroc\nK=1,0,0.5\n")

    mining_sweep.recording_machine(tmp_path, sweep_during_which_a_commit_lands, resume=False)
    assert json.loads((tmp_path / "fitted_on.json").read_text()) == {"K=1|0": "box A, code aaa"}


def test_backbone_table_names_the_machines_of_its_rows_and_the_fits_not_run_yet():
    from argparse import Namespace

    import fcdd_backbones

    row = {"dataset": "magnetic_tile", "backbone": "cnn", "params_m": 0.07, "map": "16x16", "auroc": 0.9,
           "auprc": 0.9, "f1": 0.8, "precision": 0.8, "recall": 0.8, "pixel_auroc": 0.7, "fit_seconds": 100.0,
           "score_ms_per_image": 2.0, "peak_rss_mb": 1000.0, "jobs": 2}
    rows = [{**row, "seed": 0, "machine": "box A, code aaa"}, {**row, "seed": 1}]
    args = Namespace(image_size=128, epochs=25, k=80)
    text = fcdd_backbones.table(rows, args, "cmd", [("elpv", "cnn", 0), ("elpv", "cnn", 2), ("elpv", "vgg16", 0)])
    assert "rows fitted on: box A (code aaa); not recorded" in text
    assert "| magnetic_tile | cnn | 0.07 | 16x16 | 2 |" in text
    assert "Not run yet (3 fits of this command): elpv cnn (seeds 0, 2); elpv vgg16 (seeds 0)." in text
    assert "Not run in this table: vgg16, resnet18, inception_v3" in text


def test_side_by_side_compares_fit_times_only_between_rows_of_one_machine():
    import side_by_side

    def row(model, machine, k=None, fit=10.0):
        return {"dataset": "elpv", "model": model, "k": k, "auroc": 0.7, "f1": 0.8, "val_auroc": 0.7,
                "fit_seconds": fit, "machine": machine}

    rows = [row("FCDD", "box A, code aaa", k=40, fit=20.0), row("FCDD", "box A, code bbb", k=40, fit=20.0),
            row("padim", "box A, code ccc", fit=10.0), row("cflow", "box B, code aaa", fit=1000.0)]
    text = "\n".join(side_by_side.ratio_lines(rows, [], "elpv", ["FCDD"]))
    assert "| padim | 1.00 | 1.00 | 0.50 |" in text  # same machine, other code versions: comparable
    assert "| cflow | 1.00 | 1.00 | n/a* |" in text
    assert "n/a*: cflow was fitted on another machine than FCDD" in text


def _segmentation():
    import importlib

    return importlib.import_module("segmentation")


def test_segmentation_job_names_keep_the_rows_kept_before_the_ablation_knobs():
    seg = _segmentation()
    assert seg.Job("resnet18", "bce_dice", True, 0, 12, 128).name == "resnet18-bce_dice-dli-s0-e12-128px"
    ablation = seg.Job("resnet18", "bce_dice", True, 1, 40, 128, blend="cutpaste", keep_clean=0.5, fraction=0.25,
                       eval_every=5, weights="ssl")
    assert ablation.name == "resnet18-bce_dice-dli-s1-e40-128px-cutpaste-keep0.5-frac0.25-ev5-ssl"


def test_segmentation_jobs_vary_the_injection_knobs_only_with_injection_and_weights_only_for_cnn():
    from types import SimpleNamespace

    seg = _segmentation()
    args = SimpleNamespace(seeds=[0], encoders=["resnet18", "cnn"], losses=["focal"], injection=["off", "on"],
                           blends=["poisson", "cutpaste"], keep_clean=[0.1], fractions=[1.0], epochs=2,
                           image_size=64, eval_every=1, weights=["scratch", "ssl"])
    jobs = seg.make_jobs(args)
    plain = [j for j in jobs if not j.injection]
    assert {j.blend for j in plain} == {seg.DEFAULT_BLEND}
    assert {j.blend for j in jobs if j.injection} == {"poisson", "cutpaste"}
    assert {j.weights for j in jobs if j.encoder == "resnet18"} == {"scratch"}
    assert {j.weights for j in jobs if j.encoder == "cnn"} == {"scratch", "ssl"}
    assert len(jobs) == len(set(jobs)) == 2 * (1 + 2) + 1 * (1 + 2)


def test_segmentation_summary_reports_the_configuration_chosen_on_val_not_on_test():
    seg = _segmentation()

    def row(loss, seed, val, test, fraction=1.0):
        return {"encoder": "resnet18", "loss": loss, "injection": False, "epochs": 40, "image_size": 128,
                "seed": seed, "val_iou_eq8": val, "test_iou_eq8": test, "fraction": fraction}

    rows = [row("focal", 0, 0.30, 0.10), row("focal", 1, 0.20, 0.12),     # best on val
            row("bce", 0, 0.10, 0.50), row("bce", 1, 0.10, 0.50),         # best on test
            row("dice", 0, 0.90, 0.90, fraction=0.5)]                      # a data-fraction row
    assert seg.best_iou(rows) == pytest.approx(0.11)


def test_levers_ensemble_windows_need_consecutive_seeds_and_use_the_librarys_combination():
    import numpy as np

    import levers
    from defectmine.models import ensemble

    rng = np.random.default_rng(0)
    labels = [0, 0, 0, 1, 1, 1]

    def row(seed):
        val, test = rng.normal(size=6) + np.array(labels) * seed, rng.normal(size=6)
        return {"seed": seed, "val_scores": val.tolist(), "test_scores": test.tolist(), "val_labels": labels,
                "test_labels": labels}

    rows = [row(s) for s in (0, 1, 2, 3, 5)]  # seed 4 missing: only the ensembles 0-2 and 1-3 exist
    windows = levers.ensemble_windows(rows, size=3)
    assert len(windows) == 2
    references = [r["val_scores"] for r in rows[1:4]]
    expected = ensemble.seed_ensemble_auroc(labels, [r["test_scores"] for r in rows[1:4]], references)
    assert windows[1][1] == pytest.approx(expected)


def test_levers_recipe_needs_full_seeds_and_a_real_gain_for_a_costlier_variant():
    import levers

    def rows(label_, lever, values, where="gpu", first_seed=0):
        overrides = {} if label_ == "baseline" else dict(kv.split("=") for kv in label_.split(","))
        return [{"stage": "levers", "dataset": "d", "detector": "fcdd", "lever": lever, "label": label_,
                 "overrides": overrides, "k": 80, "seed": s, "where": where, "val_auroc": v}
                for s, v in enumerate(values, start=first_seed)]

    kept = (rows("baseline", "baseline", [0.90, 0.90, 0.90]) + rows("epochs=50", "budget", [0.93, 0.93, 0.93])
            + rows("epochs=100", "budget", [0.934, 0.934, 0.934])  # +0.004 over 50 epochs: a tie, costlier
            + rows("tta=True", "tta", [0.99]))  # one seed of a cut-off run
    assert levers.recipe_for(kept, "d", "fcdd", 80) == {"epochs": 50}

    kept += rows("epochs=100", "budget", [0.94, 0.94, 0.94], where="cpu") + rows("baseline", "baseline", [0.90] * 3, "cpu")
    assert levers.recipe_for(kept, "d", "fcdd", 80) == {"epochs": 100}  # +0.010 over 50 epochs: worth it
    kept += rows("tta=True", "tta", [0.99, 0.99], first_seed=1)  # the cut-off run, resumed
    assert levers.recipe_for(kept, "d", "fcdd", 80) == {"epochs": 100, "tta": True}


def test_levers_summary_takes_the_val_best_recipe_row_from_our_weights_too():
    import levers

    labels = [0, 0, 1, 1]

    def row(stage, overrides, seed, val, test):
        return {"stage": stage, "lever": stage, "dataset": "magnetic_tile", "detector": "classifier", "k": 40,
                "seed": seed, "where": "cpu", "overrides": overrides, "label": levers.label(overrides),
                "val_auroc": val, "auroc": test, "fit_seconds": 1.0, "val_labels": labels, "test_labels": labels,
                "val_scores": [0.1, 0.2, 0.3 + seed, 0.4], "test_scores": [0.1, 0.2, 0.3, 0.4]}

    recipe, ours = {"tta": True}, {"tta": True, "backbone_weights": levers.SSL_WEIGHTS}
    rows = [row("recipe", recipe, s, 0.90, 0.95) for s in range(3)] + [row("ssl", ours, s, 0.92, 0.91) for s in range(3)]
    args = type("A", (), {"datasets": ["magnetic_tile"], "detectors": ["classifier"]})()
    lines, summary = levers.recipe_table(rows, args)
    assert any("backbone_weights=ours" in line for line in lines)
    assert summary["mt_k40_auroc"] == pytest.approx(0.91)  # higher on val, so taken though lower on test
    _, summary = levers.recipe_table(rows[:3] + rows[3:5], args)
    assert summary["mt_k40_auroc"] == pytest.approx(0.95)  # two seeds of ours are not enough


def test_mining_sweep_pieces_keep_each_point_apart(tmp_path, monkeypatch):
    import mining_sweep

    monkeypatch.setattr(mining_sweep, "_out_dir", lambda data: tmp_path / f"mining-{data}")
    folders = {mining_sweep._piece_dir("set", seed, point) for seed in (0, 1)
               for point in ("273/666", "1/4", "1/64", "unsupervised")}
    assert len(folders) == 8 and all(f.parent == tmp_path / "mining-set" for f in folders)
    assert mining_sweep._piece_dir("set", 0, "1/4").name == "seed0-1in4"


def test_levers_ssl_stage_fits_from_our_weights_and_pairs_them_with_scratch(tmp_path, monkeypatch):
    import levers
    from defectmine.data import ImageDataset, ImageSpec
    from defectmine.data.synthetic import write_synthetic_folder
    from defectmine.errors import ConfigError
    from defectmine.pipeline.data import load_records
    from defectmine.pretrain import pretrain

    folder = write_synthetic_folder(tmp_path / "synthetic")
    images = ImageDataset(load_records(str(folder)), ImageSpec(size=(32, 32), channels=1), quiet=True)
    weights = pretrain(images, out_dir=tmp_path / "ssl", method="simsiam", width=4, epochs=1, quiet=True).weights
    recipe = {"image_size": 32, "epochs": 1, "width": 4}
    common = {"dataset": str(folder), "detector": "fcdd", "k": 2, "seed": 0, "where": "cpu", "lever": "ssl"}
    ours = levers.run_one({**common, "stage": "ssl", "overrides": {**recipe, "backbone_weights": levers.SSL_WEIGHTS},
                           "label": "x", "weights_file": str(weights)})
    assert ours["pretraining"]["method"] == "simsiam" and ours["pretraining"]["width"] == 4
    assert 0.0 <= ours["auroc"] <= 1.0

    # the table pairs each seed with the scratch recipe row of the same seed and machine, and only those
    def row(stage, overrides, seed, auroc, where="cpu"):
        return {"stage": stage, "lever": stage, "dataset": "d", "detector": "fcdd", "k": 80, "seed": seed,
                "where": where, "overrides": overrides, "label": levers.label(overrides), "val_auroc": auroc,
                "auroc": auroc, **({"pretraining": ours["pretraining"]} if stage == "ssl" else {})}

    mine = {**recipe, "backbone_weights": levers.SSL_WEIGHTS}
    rows = [row("recipe", recipe, 0, 0.80), row("recipe", recipe, 1, 0.90), row("recipe", recipe, 2, 0.5, "gpu"),
            row("ssl", mine, 0, 0.85), row("ssl", mine, 1, 0.91), row("ssl", mine, 2, 0.99)]
    table = levers.ssl_table(rows)
    line = next(line for line in table if line.startswith("| d | fcdd"))
    cells = [c.strip() for c in line.split("|")]
    assert cells[6] == "2" and cells[11] == "+0.030 ± 0.028"  # seed 2's scratch row is the GPU's: not paired
    # a second pretraining of the same recipe (a fresh machine) shows its wall time beside the first's
    rows[4] = {**rows[4], "pretraining": {**ours["pretraining"], "wall_seconds": 12345.0}}
    cell = next(line for line in levers.ssl_table(rows) if line.startswith("| d | fcdd")).split("|")[12]
    assert f"{ours['pretraining']['wall_seconds']:.0f} s / 12345 s on cpu" in cell

    monkeypatch.setattr(levers, "recipe_for", lambda *a, **k: {"depth": 3})
    with pytest.raises(ConfigError, match="depth"):
        levers.ssl_jobs([], type("A", (), {"datasets": ["d"], "detectors": ["fcdd"], "k": 80, "where": "cpu",
                                           "seeds": [0]})())


def test_runs_record_the_cpu_model_that_the_benchmarks_name(tmp_path):
    from defectmine.pipeline.runinfo import cpu_model, environment

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())
    # The same seed can train differently on two CPU models, so each run says which one it had.
    assert environment()["cpu"] == cpu_model()
    assert f"({cpu_model()})" in _table.machine_description()


def test_segdec_summary_picks_only_variants_run_at_both_target_k():
    import side_by_side

    def row(model, k, val, auroc):
        return {"dataset": "magnetic_tile", "model": model, "k": k, "val_auroc": val, "auroc": auroc, "pixel_auroc": 0.7}

    rows = [row("SegDec", 40, 0.80, 0.81), row("SegDec", 80, 0.82, 0.83),
            row("SegDec (batch Dice)", 80, 0.99, 0.95)]  # one K only: its higher val must not win
    summary = side_by_side.segdec_summary(rows)
    assert summary == {"segdec_mt_k40_auroc": 0.81, "segdec_mt_k80_auroc": 0.83, "segdec_mt_k80_pixel_auroc": 0.7}
    assert all(v is None for v in side_by_side.segdec_summary(rows[2:]).values())


def test_zero_label_levers_stay_out_of_the_targets_and_compare_on_shared_seeds_val_first():
    import zero_label

    def row(detector, seed, auroc, val, pixel):
        return {"dataset": "magnetic_tile", "detector": detector, "k": 0, "seed": seed, "budget": "gpu",
                "params": {"epochs": 40}, "auroc": auroc, "auprc": 0.5, "f1": 0.5, "val_auroc": val,
                "maps": {"defect map": {"all": {"pixel_auroc": pixel}, "per_class": {}}}, "fit_seconds": 1.0,
                "machine": "2 CPU cores, no GPU (code c)"}

    rows = [row("draem", 0, 0.70, 0.80, 0.60), row("draem", 1, 0.72, 0.82, 0.62),
            row("draem_src0", 0, 0.95, 0.90, 0.93), row("draem_src0", 1, 0.75, 0.84, 0.63),
            row("draem_band", 1, 0.55, 0.50, 0.40)]
    del rows[1]["val_auroc"]  # a row kept from before val AUROC was recorded
    text, summary = zero_label.render(rows, "cmd")
    assert summary["mt_k0_best_image_auroc"] == pytest.approx(0.71)  # the lever's 0.95 is not a target's best
    lever = [line for line in text.splitlines() if line.startswith("- lever ")]
    assert lever == ["- lever draem_band (40 epochs) vs draem_src0, magnetic_tile K = 0, seeds [1]: val AUROC 0.500 vs "
                     "0.840; test AUROC 0.550 vs 0.750; test pixel AUROC 0.400 vs 0.630.",
                     "- lever draem_src0 (40 epochs) vs draem, magnetic_tile K = 0, seeds [0, 1]: val AUROC 0.900 vs "
                     "0.800 (seeds [0]); test AUROC 0.850 vs 0.710; test pixel AUROC 0.780 vs 0.610."]


def test_zero_label_lever_line_names_the_pretraining_behind_its_weights_one_run_or_one_per_member():
    import zero_label

    def info(seed, wall):
        return {"method": "simsiam", "epochs": 30, "source": "magnetic_tile+elpv", "wall_seconds": wall,
                "device": "cpu", "seed": seed}

    def row(detector, auroc, pretraining=None):
        return {"dataset": "elpv", "detector": detector, "k": 0, "seed": 0, "params": {}, "auroc": auroc,
                "auprc": 0.5, "f1": 0.5, "val_auroc": auroc, "maps": {}, "fit_seconds": 1.0,
                "machine": "2 CPU cores, no GPU (code c)", **({"pretraining": pretraining} if pretraining else {})}

    rows = [row("padim", 0.70), row("padim_ssl", 0.68, info(0, 497.2)),
            row("padim_ssl_ens3", 0.69, [info(0, 497.2), info(1, 207.0), info(2, 199.4)])]
    lines = {line.split(" vs ")[0]: line for line in zero_label.render(rows, "cmd")[0].splitlines()
             if line.startswith("- lever ")}
    assert lines["- lever padim_ssl"].endswith("its weights: simsiam, 30 epochs on the training images of "
                                               "magnetic_tile+elpv, 497 s wall on cpu.")
    assert lines["- lever padim_ssl_ens3"].endswith(
        "its weights: simsiam, 30 epochs on the training images of magnetic_tile+elpv (one per member, seeds 0, 1, "
        "2), 497 + 207 + 199 s wall on cpu.")


def test_zero_label_grouped_lever_fits_one_detector_per_kind_and_needs_the_kind(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import zero_label

    rng = np.random.default_rng(0)
    rows = ["path,label,split,kind"]
    for i in range(40):
        kind, split = "ab"[i % 2], ("train", "train", "train", "val", "test")[i % 5 if i < 30 else 3 + i % 2]
        label = "anomalous" if i >= 30 else "normal"
        pixels = rng.integers(40, 60, (32, 32)) + (120 if kind == "b" else 0)
        if label == "anomalous":
            pixels[8:16, 8:16] = 255 - pixels[8:16, 8:16]
        Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label},{split if label == 'normal' else ('val', 'test')[i % 2]},{kind}")
    manifest = tmp_path / "kinds.csv"
    manifest.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(zero_label, "IMAGE_SIZE", 32)
    options = {"backbone": "cnn", "width": 4, "n_features": 8, "quiet": True}
    monkeypatch.setitem(zero_label.LEVERS, "padim_by_kind",
                        zero_label.Lever("padim", {zero_label.GROUP_BY: "kind", **options}, "padim"))
    row = zero_label.run_one(str(manifest), "padim_by_kind", 0, 0)
    assert row["detector"] == "padim_by_kind" and row["groups"] == {"a": 9, "b": 9}
    assert 0.0 <= row["auroc"] <= 1.0 and row["val_auroc"] is not None
    monkeypatch.setitem(zero_label.LEVERS, "padim_clusters2",
                        zero_label.Lever("padim", {zero_label.GROUP_BY: zero_label.CLUSTERS + "2", **options}, "padim"))
    clustered = zero_label.run_one(str(manifest), "padim_clusters2", 0, 0)  # no field: the kinds are found
    assert sorted(clustered["groups"].values()) == [9, 9] and set(clustered["groups"]) == {"cluster0", "cluster1"}
    monkeypatch.setitem(zero_label.LEVERS, "padim_by_line",
                        zero_label.Lever("padim", {zero_label.GROUP_BY: "line", **options}, "padim"))
    with pytest.raises(SystemExit, match="records have no 'line'"):
        zero_label.run_one(str(manifest), "padim_by_line", 0, 0)


def test_zero_label_replaced_budget_stays_out_of_the_targets_and_sits_beside_its_replacement():
    import zero_label

    def row(budget, epochs, seed, auroc, val):
        return {"dataset": "magnetic_tile", "detector": "draem", "k": 0, "seed": seed, "budget": budget,
                "params": {"epochs": epochs}, "auroc": auroc, "auprc": 0.5, "f1": 0.5, "val_auroc": val,
                "maps": {"defect map": {"all": {"pixel_auroc": auroc - 0.1}, "per_class": {}}}, "fit_seconds": 1.0,
                "machine": "2 CPU cores, no GPU (code c)"}

    rows = [row("gpu40", 40, 0, 0.90, 0.70), row("gpu40", 40, 1, 0.92, 0.72), row("gpu40", 40, 2, 0.94, 0.74),
            row("gpu", 80, 0, 0.80, 0.80), row("gpu", 80, 1, 0.82, 0.82)]
    text, summary = zero_label.render(rows, "cmd")
    # the replaced budget's higher test AUROC is not a target's best: only the adopted budget's rows count
    assert summary["mt_k0_best_image_auroc"] == pytest.approx(0.81)
    assert summary["mt_k0_best_pixel_auroc"] == pytest.approx(0.71)
    budget = [line for line in text.splitlines() if line.startswith("- draem (80 epochs) (--budget gpu)")]
    assert budget == ["- draem (80 epochs) (--budget gpu) vs 40 epochs (--budget gpu40), magnetic_tile K = 0, seeds "
                      "[0, 1]: val AUROC 0.810 vs 0.710; test AUROC 0.810 vs 0.910; test pixel AUROC 0.710 vs 0.810."]
    assert "| magnetic_tile | draem (40 epochs) | 0 | 3 |" in text  # its rows stay in the table


def test_zero_label_image_score_variants_read_the_maps_and_sit_in_a_table():
    import numpy as np
    import torch
    import zero_label
    from sklearn.metrics import roc_auc_score

    from defectmine.models.draem import image_score

    rng = np.random.default_rng(0)
    val_maps, test_maps = rng.random((8, 32, 32)).astype(np.float32) * 0.5, rng.random((8, 32, 32)).astype(np.float32) * 0.5
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    classes = np.array(["", "", "", "", "uneven", "uneven", "crack", "crack"])
    test_maps[4:6, :, :16] += 0.3  # large, faint: half of each uneven image
    test_maps[6:8, 10, 10] = 1.0  # one strong pixel: a peak the mean filter dilutes
    got = zero_label.image_score_variants(val_maps, test_maps, labels, labels, classes)
    assert set(got) == {"pool1", "pool11", "pool21", "pool41", "top0.01", "top0.05"}
    own = image_score(torch.from_numpy(test_maps), 11).numpy()  # draem's own image score
    assert got["pool11"]["test_auroc"] == pytest.approx(roc_auc_score(labels, own))
    assert got["pool1"]["per_class"]["crack"] == 1.0 and got["top0.05"]["per_class"]["uneven"] == 1.0
    assert set(got["pool1"]["per_class"]) == {"uneven", "crack"}
    # zpool11 reads the standardised maps it is given with draem's own filter
    standardised_test = test_maps[::-1].copy()
    standardised = zero_label.image_score_variants(val_maps, test_maps, labels, labels, classes,
                                                   standardised=(val_maps, standardised_test))
    assert "zpool11" not in got and standardised["zpool11"]["val_auroc"] == standardised["pool11"]["val_auroc"]
    flipped = image_score(torch.from_numpy(standardised_test), 11).numpy()
    assert standardised["zpool11"]["test_auroc"] == pytest.approx(roc_auc_score(labels, flipped))
    row = {"dataset": "magnetic_tile", "detector": "draem", "k": 0, "seed": 0, "budget": "gpu", "params": {"epochs": 80},
           "auroc": 0.5, "auprc": 0.5, "f1": 0.5, "maps": {}, "fit_seconds": 1.0, "machine": "2 CPU cores, no GPU (code c)",
           "image_score_variants": got}
    text, _ = zero_label.render([row], "cmd")
    line = next(line for line in text.splitlines() if line.startswith("| mean of the top 5% of pixels |"))
    assert line.split(" | ")[2] == f"{got['top0.05']['test_auroc']:.3f}"  # one seed: no spread


def test_zero_label_compares_rows_that_read_the_map_differently_on_the_map_as_it_is():
    """A lever fitted before draem standardised its score is compared with draem's rows read from the map
    as it is (their pool11 variant); without that variant the line says the readings differ."""
    import zero_label

    def row(detector, seed, auroc, val, raw, standardise=None, variants=True):
        out = {"dataset": "magnetic_tile", "detector": detector, "k": 0, "seed": seed, "budget": "gpu",
               "params": {"epochs": 80}, "auroc": auroc, "auprc": 0.5, "f1": 0.5, "val_auroc": val,
               "maps": {"defect map": {"all": {"pixel_auroc": 0.7}, "per_class": {}}}, "fit_seconds": 1.0,
               "machine": "2 CPU cores, no GPU (code c)", "standardise": standardise}
        if variants:
            out["image_score_variants"] = {"pool11": {"val_auroc": raw[0], "test_auroc": raw[1], "per_class": {}}}
        return out

    rows = [row("draem", 0, 0.90, 0.95, (0.80, 0.70), standardise="score"),
            row("draem_noturn", 0, 0.60, 0.85, (0.85, 0.60))]
    line = next(x for x in zero_label.render(rows, "cmd")[0].splitlines() if x.startswith("- lever draem_noturn"))
    expected = ("val AUROC 0.850 vs 0.800; test AUROC 0.600 vs 0.700; test pixel AUROC 0.700 vs 0.700 "
                "(image scores of both read from the map as it is).")
    assert line.endswith(expected)
    rows[1] = row("draem_noturn", 0, 0.60, 0.85, None, variants=False)  # read as it is: its own score serves
    line = next(x for x in zero_label.render(rows, "cmd")[0].splitlines() if x.startswith("- lever draem_noturn"))
    assert line.endswith(expected)
    del rows[0]["image_score_variants"]
    line = next(x for x in zero_label.render(rows, "cmd")[0].splitlines() if x.startswith("- lever draem_noturn"))
    assert line.endswith("val AUROC 0.850 vs 0.950; test AUROC 0.600 vs 0.900; test pixel AUROC 0.700 vs 0.700 "
                         "(image scores read differently: score vs none standardisation).")


def test_zero_label_standardised_map_is_draems_own_and_sits_beside_the_map_as_it_is():
    import zero_label

    def metrics(test, val, uneven):
        return {"all": {"pixel_auroc": test}, "val": {"pixel_auroc": val}, "per_class": {"uneven": {"pixel_auroc": uneven}}}

    rows = [{"dataset": "magnetic_tile", "detector": "draem", "k": 0, "seed": seed, "budget": "gpu",
             "params": {"epochs": 80}, "auroc": 0.8, "auprc": 0.5, "f1": 0.5, "val_auroc": 0.8,
             "maps": {"defect map": metrics(0.90, 0.72, 0.60), "standardised map": metrics(0.70, 0.70 + seed, 0.80)},
             "fit_seconds": 1.0, "machine": "2 CPU cores, no GPU (code c)", "standardise": "score"}
            for seed in (0, 1)]
    rows[1]["maps"]["standardised map"]["val"]["pixel_auroc"] = 0.74
    text, summary = zero_label.render(rows, "cmd")
    assert summary["mt_k0_best_pixel_auroc"] == pytest.approx(0.70)  # the replaced map's 0.90 on test does not count
    line = next(x for x in text.splitlines() if x.startswith("- draem (80 epochs), magnetic_tile K = 0"))
    assert line == ("- draem (80 epochs), magnetic_tile K = 0, seeds [0, 1]: standardised map vs defect map: "
                    "val pixel AUROC 0.720 ± 0.028 vs 0.720 ± 0.000; test 0.700 ± 0.000 vs 0.900 ± 0.000; "
                    "uneven 0.800 ± 0.000 vs 0.600 ± 0.000.")
    for row in rows:  # rows fitted before draem standardised: their map as it is is their own
        del row["maps"]["standardised map"]
    assert zero_label.render(rows, "cmd")[1]["mt_k0_best_pixel_auroc"] == pytest.approx(0.90)
