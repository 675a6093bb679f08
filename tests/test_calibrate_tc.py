"""experiments/calibrate_tc.py: the rule on hand-made numbers, and a one-unit smoke run."""

import json

import pytest

from stn.data import protocols as P


@pytest.fixture(scope="module")
def cal():
    from experiments import calibrate_tc

    return calibrate_tc


def unit(protocol, val):
    p = P.PROTOCOLS[protocol]
    return {"protocol": protocol, "pieces": p.pieces, "piece_size": p.piece_size,
            "val_error_percent": val, "test_error_percent": val + 0.5}


def test_the_sweep_is_every_registered_setting(cal):
    assert cal.settings() == [P.tc_name(n, k) for n, k in P.TC_SETTINGS]
    assert len(set(cal.settings())) == len(P.TC_SETTINGS) == 7
    config = cal.unit_config("tc-4x8", "float32", {})
    assert (config.model.preset, config.protocol, config.recipe) == ("paper-fcn", "tc-4x8",
                                                                    "table1")
    from experiments import grid
    # The ruler trains as the table's TC cells do.
    table_cell = grid.cell_config("FCN", "TC", 0, "table1", "float32")
    assert (config.epochs, config.batch_size, config.learning_rate) == (
        table_cell.epochs, table_cell.batch_size, table_cell.learning_rate)


def test_rule_picks_the_validation_error_nearest_the_papers_on_a_log_scale(cal):
    # 13.2 * 1.2 = 15.84 and 13.2 / 1.2 = 11.0 are equally far: fewer pieces wins.
    units = [unit("tc-4x6", 6.0), unit("tc-8x6", 15.84), unit("tc-4x8", 11.0),
             unit("tc-16x6", 30.0)]
    chosen = cal.choose(units)
    assert chosen["protocol"] == "tc-4x8" and not chosen["complete"]
    assert chosen["ratio_to_paper"] == pytest.approx(11.0 / 13.2, abs=1e-3)
    # The test error plays no part.
    assert cal.choose([{**u, "test_error_percent": 13.2} if u["protocol"] == "tc-4x6" else u
                       for u in units])["protocol"] == "tc-4x8"
    everything = [unit(p, 13.2 + i) for i, p in enumerate(cal.settings())]
    assert cal.choose(everything)["complete"] and cal.choose([]) is None


@pytest.mark.slow
def test_dry_run_of_one_unit_writes_the_json(cal, tmp_path, monkeypatch):
    args = ["--dry-run", "--protocols", "tc-4x8", "--results", str(tmp_path / "r"),
            "--runs-dir", str(tmp_path / "runs"), "--precision", "float32", "--verbose", "0"]
    assert cal.main(args) == 0
    written = json.loads((tmp_path / "r" / "calibration_tc.json").read_text())
    assert [u["protocol"] for u in written["units"]] == ["tc-4x8"]
    assert written["chosen"]["protocol"] == "tc-4x8" and not written["chosen"]["complete"]
    assert written["overrides"]["max_steps_per_epoch"] == 2
    # A choice on validation: the test split was not evaluated.
    assert written["units"][0]["test_error_percent"] is None
    from stn.train import training

    history = (tmp_path / "runs" / "tc-4x8" / "paper-fcn" / "history.csv").read_bytes()
    with monkeypatch.context() as m:
        m.setattr(training, "train_and_evaluate", None)  # done: nothing trained again
        assert cal.main(args) == 0
    # --test adds the test error, evaluating the finished run without training it.
    assert cal.main([*args, "--test"]) == 0
    tested = json.loads((tmp_path / "r" / "calibration_tc.json").read_text())["units"][0]
    assert 0.0 <= tested["test_error_percent"] <= 100.0
    assert tested["val_error_percent"] == written["units"][0]["val_error_percent"]
    assert (tmp_path / "runs" / "tc-4x8" / "paper-fcn" / "history.csv").read_bytes() == history


def test_both_rulers_hold_only_within_fifteen_percent_of_the_papers(cal):
    fcn = [unit("tc-4x6", 12.06), unit("tc-8x8", 30.0)]
    cnn = [{**unit("tc-8x8", 2.0), "model": "CNN"}, {**unit("tc-4x8", 3.5), "model": "CNN"}]
    rows = cal.rulers(fcn, cnn)
    # Only settings trained with both rulers are listed.
    assert [r["protocol"] for r in rows] == ["tc-8x8"]
    assert (rows[0]["fcn_holds"], rows[0]["cnn_holds"]) == (False, False)
    assert cal.within(13.2 * 1.15, "FCN") and not cal.within(13.2 * 1.16, "FCN")
    assert cal.within(3.5 * 0.85, "CNN") and not cal.within(3.5 * 0.84, "CNN")
    assert cal.unit_config("tc-8x8", "float32", {}, cal.RULERS["CNN"]).model.preset == "paper-cnn"
