"""experiments.runner: a unit trained once, its record kept, read back, refused, test unread.

Every test works on a copy of the session's finished run (conftest): the
runner's calls of train_and_evaluate on it resume at its last epoch, so
nothing here trains a step.
"""

import dataclasses

import pytest

import helpers
from experiments import runner
from stn.data import pipeline
from stn.train import runs, training

pytestmark = pytest.mark.slow  # real MNIST, through the finished run


@pytest.fixture
def unit(finished_run_copy, tmp_path):
    return runner.Unit("the tiny unit", helpers.FINISHED_CONFIG, finished_run_copy,
                       tmp_path / "results" / "tiny")


def forbid_training(monkeypatch):
    def train_and_evaluate(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(training, "train_and_evaluate", train_and_evaluate)


def forbid_the_test_split(monkeypatch):
    """Makes any evaluation of the test split that load_data returns fail."""
    loaded = []
    load_data, eval_dataset = pipeline.load_data, pipeline.eval_dataset

    def load(*args, **kwargs):
        loaded.append(load_data(*args, **kwargs))
        return loaded[-1]

    def evaluate(split, *args, **kwargs):
        if any(split is data.test for data in loaded):
            raise AssertionError("the test split was evaluated")
        return eval_dataset(split, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_data", load)
    monkeypatch.setattr(pipeline, "eval_dataset", evaluate)


def test_the_record_names_the_files_the_run_writes():
    from stn.analysis import evaluation

    assert runner.RECORD == (runs.CONFIG, runs.HISTORY, runs.METRICS)
    assert runner.RESULTS == evaluation.RESULTS


def test_a_unit_keeps_its_record_and_is_then_read_back_without_training(unit, capsys,
                                                                       monkeypatch):
    history = (unit.run_dir / runs.HISTORY).read_bytes()
    assert not runner.finished(unit)  # its run is finished, its record not yet kept
    first = runner.run(unit, verbose=1)
    assert first.trained and first.dir == unit.record_dir
    for name in runner.RECORD:  # the kept files are the run's, byte for byte
        assert (unit.record_dir / name).read_bytes() == (unit.run_dir / name).read_bytes()
    assert (unit.run_dir / runs.HISTORY).read_bytes() == history  # resumed at its end
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0
    assert runner.finished(unit)

    forbid_training(monkeypatch)
    capsys.readouterr()
    again = runner.run(unit, verbose=1)
    assert not again.trained and again.metrics == first.metrics
    out = capsys.readouterr().out
    assert f"the tiny unit: done, in {unit.record_dir}" in out and "===" not in out
    # Without a kept record, the run directory is the record (the screens).
    in_place = dataclasses.replace(unit, record_dir=None)
    assert runner.run(in_place, verbose=0).dir == unit.run_dir


def test_a_record_missing_its_last_file_is_not_finished(unit):
    unit.record_dir.mkdir(parents=True)
    for name in runner.RECORD:
        (unit.record_dir / name).write_bytes((unit.run_dir / name).read_bytes())
    assert runner.finished(unit)
    with_results = dataclasses.replace(unit, results=True)
    assert with_results.files[-1] == runner.RESULTS and not runner.finished(with_results)
    (unit.record_dir / runs.METRICS).unlink()
    assert not runner.finished(unit)


def test_a_record_of_another_config_is_refused_with_what_to_do(unit, monkeypatch):
    forbid_training(monkeypatch)
    in_place = dataclasses.replace(unit, record_dir=None)
    other = dataclasses.replace(in_place, config=dataclasses.replace(
        helpers.FINISHED_CONFIG, learning_rate=helpers.FINISHED_CONFIG.learning_rate * 2))
    with pytest.raises(runs.RunError, match=r"another config \(learning_rate: .*remove it"):
        runner.run(other, verbose=0)
    with pytest.raises(runs.RunError, match="remove it"):
        runner.finished(other)


def test_results_need_the_test_split(unit, monkeypatch):
    forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="test=True"):
        runner.run(dataclasses.replace(unit, results=True), test=False)


def test_without_test_the_test_split_is_never_evaluated(unit, capsys, monkeypatch):
    history = (unit.run_dir / runs.HISTORY).read_bytes()
    forbid_the_test_split(monkeypatch)
    record = runner.run(unit, test=False, verbose=1)
    assert record.trained and set(record.metrics) == {"epochs", "val_loss", "val_accuracy",
                                                      "train_seconds", "warnings"}
    assert runner.error_percent(record.metrics, "test") is None
    out = capsys.readouterr().out
    assert "test accuracy" not in out and "(test not evaluated)" in out
    # The guard works: asked for test numbers, the runner evaluates the split.
    with pytest.raises(AssertionError, match="the test split was evaluated"):
        runner.run(unit, test=True, verbose=0)
    monkeypatch.undo()
    tested = runner.run(unit, test=True, verbose=0)
    assert list(tested.metrics) == ["epochs", "val_loss", "val_accuracy", "test_loss",
                                    "test_accuracy", "train_seconds", "warnings"]  # the order
    assert runner.error_percent(tested.metrics, "test") == round(
        100 * (1 - tested.metrics["test_accuracy"]), 2)
    assert {k: tested.metrics[k] for k in record.metrics} == record.metrics
    assert (unit.run_dir / runs.HISTORY).read_bytes() == history  # never trained again
