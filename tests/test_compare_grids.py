"""experiments.compare_grids on two hand-made grids of three runs."""

import json

import pytest

from experiments import grid


@pytest.fixture(scope="module")
def compare_grids():
    from experiments import compare_grids

    return compare_grids


def _grid(root, epochs: int, val_accuracies: dict) -> None:
    """A results directory whose cells hold a config and metrics, as experiments.table1 keeps them."""
    from stn.train import runs

    for (model, protocol, seed), val_accuracy in val_accuracies.items():
        kept = root / "table1" / grid.run_name(model, protocol, seed)
        config = grid.cell_config(model, protocol, seed, epochs=epochs)
        runs.init_run_dir(kept, config)
        runs.write_json(kept / "metrics.json", {"epochs": epochs, "val_accuracy": val_accuracy,
                                                "val_loss": 1 - val_accuracy,
                                                "test_accuracy": 0.0, "test_loss": 9.0})


def test_sign_test_matches_the_binomial_tail(compare_grids):
    assert compare_grids.sign_test(0, 0) == 1.0
    assert compare_grids.sign_test(3, 3) == 1.0
    assert compare_grids.sign_test(5, 0) == pytest.approx(2 / 32)
    assert compare_grids.sign_test(1, 9) == pytest.approx(2 * 11 / 1024)


def test_pairs_runs_reports_the_change_and_reads_validation_only(tmp_path, compare_grids,
                                                                 capsys):
    a = {("CNN", "R", 0): 0.9850, ("ST-CNN Aff", "RTS", 0): 0.9920,
         ("ST-CNN Aff", "RTS", 1): 0.9930, ("FCN", "E", 0): 0.9700}
    b = {("CNN", "R", 0): 0.9870, ("ST-CNN Aff", "RTS", 0): 0.9930,
         ("ST-CNN Aff", "RTS", 1): 0.9930}  # FCN/E missing: not compared
    _grid(tmp_path / "a", 30, a)
    _grid(tmp_path / "b", 45, b)
    out_json = tmp_path / "cmp.json"
    assert compare_grids.main([str(tmp_path / "a"), str(tmp_path / "b"),
                               "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["changes"] == {"epochs": [30, 45]}
    assert [(c["model"], c["protocol"], c["seed"]) for c in result["cells"]] == [
        ("CNN", "R", 0), ("ST-CNN Aff", "RTS", 0), ("ST-CNN Aff", "RTS", 1)]
    assert result["cells"][0]["val_error_percent"] == [1.5, 1.3]
    s = result["summary"]
    assert (s["cells"], s["lower_error"], s["higher_error"], s["equal_error"]) == (3, 2, 0, 1)
    assert s["mean_error_change"] == pytest.approx((-0.2 - 0.1 + 0.0) / 3, abs=1e-3)
    assert s["sign_test_p"] == pytest.approx(0.5)
    assert s["lower_loss"] == 2
    assert "epochs 30 -> 45" in capsys.readouterr().out


def test_grids_without_common_runs_or_cells_are_errors(tmp_path, compare_grids):
    (tmp_path / "a" / "table1").mkdir(parents=True)
    (tmp_path / "b" / "table1").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no run is in both"):
        compare_grids.main([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit):  # argparse: not a results directory
        compare_grids.main([str(tmp_path / "a"), str(tmp_path / "nowhere")])
