"""experiments.screen on a tiny study: two variants, a few steps, real MNIST."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TINY = {"epochs": 1, "max_train_examples": 200, "max_steps_per_epoch": 2,
        "max_eval_examples": 200}


@pytest.fixture(scope="module")
def screen():
    from experiments import screen

    return screen


def test_variant_names_say_what_changed(screen):
    assert screen.variant_name("ST-CNN Aff", "R", {}) == "st-cnn-affine_r"
    assert (screen.variant_name("ST-CNN Aff", "RTS", {"learning_rate": 3e-3, "epochs": 10})
            == "st-cnn-affine_rts_epochs10_learning_rate0.003")


def test_default_run_variants_are_make_trains_config_with_the_changes(screen):
    from stn.train.config import make_config

    default = screen.DEFAULT_RUN
    # The studies' default run is the one of their time: preset seed, recipe default.
    assert (screen.variant_config(default, "seed", {}, "float32", {})
            == make_config("predecessor", "predecessor", recipe="cosine"))
    assert screen.variant_name(default, "seed", {"preset": "seed-conv"}) == "default_presetseed-conv"
    changed = screen.variant_config(default, "seed", {"preset": "seed-conv",
                                                      "alignment_weight": 1.0}, "float32", {})
    assert changed == make_config("seed-conv", recipe="cosine", alignment_weight=1.0)
    assert (changed.model.localization, changed.model.classifier) == ("conv", "seed")


def test_tiny_study_trains_reports_validation_only_and_resumes(tmp_path, screen, monkeypatch,
                                                               capsys):
    # A transformer and a baseline, both fully connected: the paper's CNN as
    # the baseline took 2 s more, evaluating 15,000 digits.
    monkeypatch.setitem(screen.STUDIES, "tiny", [
        ("ST-FCN Aff", "R", {**TINY, "localization_lr_scale": 10.0}),
        ("FCN", "R", TINY),
    ])
    monkeypatch.setitem(screen.BASES, "tiny", {"learning_rate": 2e-3, "max_steps_per_epoch": 1})
    out_json = tmp_path / "tiny.json"
    args = ["tiny", "--runs-dir", str(tmp_path / "runs"), "--json", str(out_json),
            "--precision", "float32"]
    assert screen.main(args) == 0
    written = json.loads(out_json.read_text())
    assert written["base"] == {"learning_rate": 2e-3, "max_steps_per_epoch": 1}
    rows = written["variants"]
    assert [(r["model"], r["protocol"]) for r in rows] == [("ST-FCN Aff", "R"), ("FCN", "R")]
    for row in rows:
        assert set(row) == {"model", "protocol", "fields", "run", "val_error_percent",
                            "val_rotation_spread_ratio", "val_median_scale", "val_shift_std_px",
                            "val_scale_spread_ratio", "train_seconds", "train_flops"}
        assert 0.0 <= row["val_error_percent"] <= 100.0 and row["train_flops"] > 0
    assert rows[0]["val_rotation_spread_ratio"] > 0.0  # a transformer: its ratio
    assert 0.2 < rows[0]["val_median_scale"] < 5.0  # and the scale of what it shows
    assert rows[0]["val_scale_spread_ratio"] is None  # R draws no scales: no ratio
    assert rows[1]["val_rotation_spread_ratio"] is None  # no transformer
    assert rows[1]["val_median_scale"] is None and rows[1]["val_shift_std_px"] is None
    assert rows[0]["val_shift_std_px"] >= 0.0  # R has no shifts: about 0 after one step
    # Chosen on validation: the test split was never evaluated, nor printed.
    assert "test accuracy" not in capsys.readouterr().out
    for row in rows:
        assert "test_accuracy" not in json.loads((Path(row["run"]) / "metrics.json").read_text())
    from stn.train import runs

    config = runs.read_config(tmp_path / "runs" / "tiny" / screen.variant_name(
        "ST-FCN Aff", "R", rows[0]["fields"]))
    assert config.localization_lr_scale == 10.0 and config.recipe == "table1"
    # The study's base applies beneath the variant's own fields, which win.
    assert config.learning_rate == 2e-3 and config.max_steps_per_epoch == 2
    # A second call reads both runs back and trains nothing.
    capsys.readouterr()
    assert screen.main(args) == 0
    assert "===" not in capsys.readouterr().out
    assert json.loads(out_json.read_text())["variants"] == rows
