"""Runs that went wrong: a model with NaN weights, divergence, a refused or bad file.

Rows of docs/errors.md: what the user sees (exit status, message) and what
is kept. The broken model is the conftest's finished run with one NaN
poked into a weight; the diverging run is two steps at ``--learning-rate 1e4``.
"""

import contextlib
import io
import json
import math
import os

import keras
import numpy as np
import pytest

import helpers
from stn.train import config as C
from stn.train import runs, training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluate_main():
    return helpers.entry_point("evaluate")


def poke_nan(run_dir):
    """Saves the run's model with one NaN in the last localization layer's kernel."""
    model = runs.load_model(run_dir)
    kernel = model.get_layer("transformer").localization.layers[-1].kernel
    value = kernel.numpy()
    value[0, 0] = np.nan
    kernel.assign(value)
    runs.save_model(run_dir, model)
    return kernel.path


def test_evaluate_reports_a_nan_model_and_draws_every_figure(finished_run_copy, capsys,
                                                             evaluate_main):
    weight = poke_nan(finished_run_copy)
    assert evaluate_main(["--run-dir", str(finished_run_copy)]) == 2
    out, err = capsys.readouterr()
    record = json.loads((finished_run_copy / "results.json").read_text())
    n = record["test_examples"]
    # The NaN enters at the transformer's parameters and reaches every image's
    # output; the logits of this model come out finite all the same, which is
    # why the accuracy alone said nothing.
    assert record["non_finite_images"] == {"transformer_parameters": n, "transformer_output": n,
                                           "logits": 0}
    assert record["non_finite_weights"] == [weight]
    message = (f"NaN or Inf in the transformer parameters of {n:,} of {n:,} images, transformer "
               f"output of {n:,} of {n:,} images; they start at the transformer parameters; "
               f"1 weight(s) hold NaN or Inf (first: {weight})")
    assert message in record["warnings"][0]
    assert err.startswith("evaluate.py: error: the model's outputs are not finite") \
        and message in err and "lower --learning-rate" in err and "Traceback" not in err
    assert "WARNING: the model's outputs are not finite" in out
    drawn = sorted(p.name for p in (finished_run_copy / "images").iterdir())
    assert drawn == ["architecture.png", "confusion_matrix.png", "data_augmentation.png",
                     "loss_history.png", "pose_alignment.png", "stn_outputs.png", "training.gif"]


def test_a_sound_model_has_no_warnings(finished_run_copy, evaluate_main):
    assert evaluate_main(["--run-dir", str(finished_run_copy)]) == 0
    record = json.loads((finished_run_copy / "results.json").read_text())
    assert record["warnings"] == [] and record["non_finite_weights"] == []
    assert set(record["non_finite_images"].values()) == {0}


def test_a_lambda_layer_is_named_as_refused_by_safe_mode(finished_run_copy, capsys,
                                                        evaluate_main):
    inputs = keras.Input((40, 40, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(
        keras.layers.Lambda(lambda x: x * 2)(inputs)))
    keras.Model(inputs, outputs).save(finished_run_copy / runs.MODEL)
    assert evaluate_main(["--run-dir", str(finished_run_copy)]) == 2
    err = capsys.readouterr().err
    assert "model.keras was refused by Keras's safe mode: it holds a Lambda layer" in err
    assert "Only for a file you trust" in err and "safe_mode=False" in err
    assert "damaged" not in err


def test_mnist_file_that_is_bad_is_refused_though_the_cache_is_good(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(os.urandom(4096))
    argv = ["--preset", "paper", "--protocol", "r", "--epochs", "1", "--max-train-examples",
            "200", "--mnist", str(bad), "--run-dir", str(tmp_path / "run")]
    assert helpers.entry_point("train")(argv) == 2
    err = capsys.readouterr().err
    assert f"could not load MNIST from --mnist {bad}: {bad} is not a valid MNIST .npz" in err
    assert "leave --mnist out to use it" in err


# --- divergence ----------------------------------------------------------------------

def row(epoch, train_loss, val_loss=1.0, val_accuracy=0.9):
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": 0.5,
            "val_loss": val_loss, "val_accuracy": val_accuracy, "seconds": 1.0}


CONFIG = C.make_config("seed", "r", learning_rate=0.002, recipe="cosine")


@pytest.mark.parametrize("history, total_steps, found", [
    ([row(1, 2.3), row(2, 0.1)], 1000, []),
    ([row(1, 2.3), row(2, 2.2, val_accuracy=0.2)], 1000, []),
    ([row(1, 0.1), row(2, 10.1)], 1000, ["training loss grew from 0.1 (epoch 1) to 10.1"]),
    ([row(1, 0.1), row(2, 9.9)], 1000, []),  # 99x: not yet
    ([row(1, 24.0)], 1000, ["epoch 1's training loss is 24 and validation loss 1, above 23.0"]),
    ([row(1, 2.3, val_loss=1e20)], 1000, ["validation loss 1e+20, above 23.0"]),
    ([row(1, 2.3, val_accuracy=0.15)], 1000, ["validation accuracy 0.150 is chance",
                                              "after 1,000 steps"]),
    ([row(1, 2.3, val_accuracy=0.15)], 199, []),  # a smoke run: too short to learn
], ids=["healthy", "poor but learning", "100x", "99x", "bound", "val bound", "chance",
        "chance in a smoke run"])
def test_divergence_warnings(history, total_steps, found):
    assert training.LOSS_BOUND == pytest.approx(10 * math.log(10))
    warnings = training.divergence_warnings(history, CONFIG, total_steps)
    assert len(warnings) == (1 if found else 0)
    for text in found:
        assert text in warnings[0]
    if found:  # what to change, not the same command
        assert warnings[-1].endswith("--learning-rate 0.0002 (a tenth of this run's 0.002); "
                                     "the same command would diverge the same way")


def test_a_diverging_run_is_named_in_the_log_and_metrics(tmp_path):
    config = C.make_config("seed", "r", model_overrides={"dense_units": 32}, epochs=1,
                           batch_size=100, max_train_examples=200, max_eval_examples=200,
                           learning_rate=1e4,
                           recipe="cosine")
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        metrics = training.train_and_evaluate(config, tmp_path / "run")
    assert metrics["warnings"] and metrics["warnings"][0].startswith("the loss diverged")
    assert json.loads((tmp_path / "run" / runs.METRICS).read_text())["warnings"] == \
        metrics["warnings"]
    assert f"WARNING: {metrics['warnings'][0]}" in err.getvalue()
    assert "--learning-rate 1000 (a tenth of this run's 10000)" in err.getvalue()


def test_nan_loss_message_says_what_to_change():
    class NanSteps:  # a step whose loss is NaN, on the real data pipeline
        alignment = None
        strategy = __import__("tensorflow").distribute.get_strategy()

        def train(self, images, labels):
            return [math.nan, 0.0, float(len(labels))]

    split = helpers.synthetic_split(20, np.random.default_rng(0))
    config = C.make_config("seed", "seed", epochs=4, batch_size=10, learning_rate=0.001,
                           recipe="cosine")
    with pytest.raises(training.TrainingDiverged) as info:
        training.train_epoch(NanSteps(), split, config, 2, verbose=0)
    assert str(info.value) == (
        "loss is nan at epoch 3, step 1: training stopped (the checkpoint of epoch 2 is kept). "
        "To train this model, start a new --run-dir with a lower --learning-rate, e.g. "
        "--learning-rate 0.0001 (a tenth of this run's 0.001); the same command would "
        "diverge the same way.")
