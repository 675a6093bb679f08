"""experiments/calibrate_pe.py: the rule on hand-made numbers, and a smoke sweep on real MNIST."""

import json
import runpy
import sys

import pytest

import helpers
from experiments import runner
from stn.data import protocols as P

UNIT_KEYS = {"protocol", "family", "sigma", "scale", "model", "preset", "val_error_percent",
             "test_error_percent", "train_seconds", "epochs", "run"}


@pytest.fixture(scope="module")
def cal():
    return helpers.script("experiments/calibrate_pe.py")


def unit(protocol, val, preset="paper-fcn"):
    p = P.PROTOCOLS[protocol]
    family = "p" if p.kind == "projective" else "e"
    return {"protocol": protocol, "family": family,
            "sigma": p.corner_std if family == "p" else p.control_std,
            "scale": p.scale != (1.0, 1.0), "preset": preset, "val_error_percent": val,
            "test_error_percent": val + 0.1}


def test_the_sweep_is_every_registered_family_member(cal):
    names = cal.settings()
    assert len(names) == 20 == len(set(names)) and set(names) <= set(P.PROTOCOLS)
    assert names[:6] == ["p-s1", "p-s2", "p-s3", "p-s4", "p-s5", "p-s1-scale"]
    assert cal.describe("e-s2.5-scale") == {"protocol": "e-s2.5-scale", "family": "e",
                                            "sigma": 2.5, "scale": True}
    assert cal.describe("p-s3") == {"protocol": "p-s3", "family": "p", "sigma": 3.0,
                                    "scale": False}


def test_the_rule_is_nearest_on_a_log_scale_by_validation_error(cal):
    # Paper's FCN on P: 3.1%. Linearly 2.0 is nearer (1.1 vs 1.4); as a ratio
    # 4.5 is (4.5 / 3.1 = 1.45 < 3.1 / 2.0 = 1.55): the rule takes 4.5.
    units = [unit("p-s1", 0.9), unit("p-s2", 2.0), unit("p-s3", 4.5), unit("p-s5-scale", 12.5),
             unit("p-s3", 3.1, preset="paper-cnn"),  # the CNN chooses nothing
             unit("e-s2", 3.2)]  # nor does the other family
    assert cal.choose(units, "p")["protocol"] == "p-s3"
    assert cal.choose(units, "e")["protocol"] == "e-s2"
    assert cal.choose(units[:1], "e") is None
    # Test errors play no part: the same validation errors, other test errors.
    flipped = [{**u, "test_error_percent": 100 - u["test_error_percent"]} for u in units]
    assert cal.choose(flipped, "p")["protocol"] == "p-s3"
    # Ties: the smaller std, then no scale.
    tied = [unit("e-s3-scale", 4.0), unit("e-s3", 4.0), unit("e-s4", 4.0)]
    assert cal.choose(tied, "e")["protocol"] == "e-s3"
    assert cal.log_distance(6.2, 3.1) == pytest.approx(cal.log_distance(1.55, 3.1))


def test_summary_reports_the_choice_and_the_second_ruler(cal):
    units = [unit("e-s2", 2.5), unit("e-s3", 3.5), unit("e-s3", 1.2, preset="paper-cnn")]
    chosen = cal.summary(units, "e")
    assert chosen == {"protocol": "e-s3", "sigma": 3.0, "scale": False, "complete": False,
                      "fcn_units": 2, "fcn_val_error_percent": 3.5,
                      "fcn_test_error_percent": 3.6, "paper_fcn_error_percent": 3.2,
                      "cnn_val_error_percent": 1.2, "cnn_test_error_percent": 1.3,
                      "paper_cnn_error_percent": 1.4}
    everything = [unit(name, 3.0) for name in cal.settings(["e"])]
    assert cal.summary(everything, "e")["complete"] is True
    assert cal.summary(everything, "p") is None


@pytest.mark.slow
def test_smoke_sweep_resumes_and_writes_json_and_figure(tmp_path, cal, capsys, monkeypatch):
    args = ["--only", "p", "--protocols", "p-s1", "p-s3-scale", "--dry-run",
            "--results", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--figure-path", str(tmp_path / "cal.png"), "--precision", "float32",
            "--verbose", "0"]
    assert cal.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("  trained: ") == 3 and "[unit 3/3," in out  # 2 FCN units, then the CNN
    assert " test " not in out and "test accuracy" not in out
    calibration = json.loads((tmp_path / "results" / "calibration.json").read_text())
    assert set(calibration) == {"rule", "recipe", "seed", "precision", "overrides",
                                "paper_error_percent", "chosen", "units"}
    assert calibration["overrides"] == cal.SMOKE and calibration["precision"] == "float32"
    units = calibration["units"]
    assert [(u["protocol"], u["model"]) for u in units if u["model"] == "FCN"] == [
        ("p-s1", "FCN"), ("p-s3-scale", "FCN")]
    for u in units:
        assert set(u) == UNIT_KEYS and 0 <= u["val_error_percent"] <= 100 and u["epochs"] == 1
        assert u["test_error_percent"] is None  # a screen: the test split left unread
        for name in runner.RECORD:
            assert (tmp_path / "results" / "calibration" / u["protocol"] / u["preset"]
                    / name).exists()
    chosen = calibration["chosen"]
    assert chosen["e"] is None and chosen["p"]["complete"] is False
    assert chosen["p"]["protocol"] == cal.choose(units, "p")["protocol"]
    (cnn,) = [u for u in units if u["model"] == "CNN"]
    assert cnn["protocol"] == chosen["p"]["protocol"]
    assert chosen["p"]["cnn_test_error_percent"] == cnn["test_error_percent"]
    assert (tmp_path / "cal.png").stat().st_size > 10_000
    # Resumption: a second invocation trains nothing and writes the same units.
    from stn.train import training

    def no_training(*a, **k):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(training, "train_and_evaluate", no_training)
    (tmp_path / "cal.png").unlink()
    assert cal.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("  done before: ") == 3 and "trained:" not in out
    again = json.loads((tmp_path / "results" / "calibration.json").read_text())
    assert again["units"] == units and (tmp_path / "cal.png").exists()
    # The figure alone, from the json alone.
    assert cal.main(["--figure", "--results", str(tmp_path / "results"),
                     "--figure-path", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").exists()
    # Other settings against the same results: an error, not a silent mix.
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="another config"):
        cal.main([*args, "--epochs", "2"])


def test_unknown_setting_is_an_error(cal):
    with pytest.raises(SystemExit, match="e-s9 not in the sweep"):
        cal.main(["--protocols", "e-s9", "--list"])
    with pytest.raises(SystemExit, match="p-s3 not in the sweep"):
        cal.main(["--only", "e", "--protocols", "p-s3", "--list"])


def test_runs_as_a_module(capsys, monkeypatch):
    # In-process (TensorFlow is imported already): python -m experiments.calibrate_pe
    # from the repository, as every study in experiments/.
    monkeypatch.setattr(sys, "argv", ["calibrate_pe", "--help"])
    with pytest.raises(SystemExit) as exit_:
        monkeypatch.chdir(helpers.ROOT)
        monkeypatch.syspath_prepend(str(helpers.ROOT))
        runpy.run_module("experiments.calibrate_pe", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "log scale" in out
