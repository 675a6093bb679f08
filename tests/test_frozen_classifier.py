"""experiments.frozen_classifier on a few hundred real MNIST digits."""

import json

import numpy as np
import pytest

from experiments import grid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frozen():
    from experiments import frozen_classifier

    return frozen_classifier


def test_stage_two_trains_the_localization_net_only(frozen):
    from stn.data import pipeline as stn_data
    from stn.data import protocols
    from stn.model import build_model, find_transformer

    config = grid.cell_config("ST-CNN Aff", "R")
    data = stn_data.load_data("r", 0, max_train_examples=300)
    model = build_model(config.model)
    frozen.set_trainable(model, transformer=True, classifier=False)
    localization = find_transformer(model).trainable_weights
    assert localization and len(model.trainable_weights) == len(localization)
    before = [w.numpy().copy() for w in model.weights]
    frozen.train_stage(model, data, protocols.get_protocol("r"), epochs=1, batch_size=100,
                       learning_rate=1e-3, seed=0)
    moved = {id(w) for w, old in zip(model.weights, before) if not np.array_equal(w, old)}
    assert moved and moved <= {id(w) for w in localization}


def test_tiny_run_reports_both_stages_on_validation(tmp_path, frozen):
    out = tmp_path / "report.json"
    argv = ["--model", "ST-FCN Aff", "--max-train-examples", "200", "--upright-epochs", "1",
            "--frozen-epochs", "2", "--batch-size", "100", "--precision", "float32",
            "--json", str(out)]
    assert frozen.main(argv) == 0
    report = json.loads(out.read_text())
    assert (report["model"], report["protocol"], report["precision"]) == ("ST-FCN Aff", "R",
                                                                         "float32")
    assert [row["epoch"] for row in report["upright"] + report["frozen"]] == [1, 2, 3]
    for row in report["upright"] + report["frozen"]:
        assert 0.0 <= row["val_error_percent"] <= 100.0
        assert 0.0 < row["val_rotation_spread_ratio"] < 2.0


@pytest.mark.parametrize("argv, message", [
    (["--model", "CNN"], "invalid choice: 'CNN'"),
    (["--frozen-epochs", "0"], "--frozen-epochs must be a positive integer"),
    (["--learning-rate", "nan"], "--learning-rate must be positive"),
])
def test_bad_flags_exit_2(capsys, frozen, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        frozen.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
