"""stn.train.monitor and stn.viz.animation: TensorBoard logs, resuming them, trace.npz, the gif."""

import collections
import io
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import helpers
from stn.viz import animation
from stn.layer import kinds
from stn.train import monitor
from stn.train import runs
from stn.data import tiles
from stn.train import trace as stn_trace
from stn.train import training
from stn.train import config as C
from stn.model import build_model, transformer_outputs

CONFIG = helpers.FINISHED_CONFIG  # of the shared finished run (conftest.py)
TRAIN_TAGS = {"config": {0}, "epoch_learning_rate": {0, 1, 2}, "epoch_loss": {1, 2},
              "epoch_accuracy": {1, 2}, "epoch_seconds": {1, 2}}
VALIDATION_TAGS = {"stn_outputs": {0, 1, 2}, "epoch_loss": {1, 2}, "epoch_accuracy": {1, 2}}


def summaries(log_dir) -> collections.Counter:
    """How many times each (tag, step) occurs in the event files of ``log_dir``."""
    count = collections.Counter()
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            count.update((value.tag, event.step) for value in event.summary.value)
    return count


def values(log_dir, tag) -> dict:
    """``{step: tensor value}`` of one tag."""
    found = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    found[event.step] = tf.make_ndarray(value.tensor)
    return found


def tags(count) -> dict:
    """``{tag: {steps}}`` of a Counter of (tag, step)."""
    out = collections.defaultdict(set)
    for tag, step in count:
        out[tag].add(step)
    return dict(out)


def drop_steps(log_dir, steps) -> None:
    """Rewrites the event files without the summaries of ``steps`` (as if never logged)."""
    for path in log_dir.glob("events.out.tfevents.*"):
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                event = tf.compat.v1.Event.FromString(record)
                if not (event.HasField("summary") and event.step in steps):
                    writer.write(record)


@pytest.fixture
def run(finished_run):
    """A finished 2-epoch run on 200 real MNIST digits (read-only; conftest.py)."""
    return finished_run


@pytest.mark.slow
def test_tensorboard_logs_every_epoch_once(run):
    board = run / monitor.TENSORBOARD
    for log_dir, expected in ((board / "train", TRAIN_TAGS),
                              (board / "validation", VALIDATION_TAGS)):
        count = summaries(log_dir)
        assert tags(count) == expected
        assert set(count.values()) == {1}
    assert tags(summaries(board)) == {"_hparams_/session_start_info": {0}}
    history = runs.read_history(run)
    for split, tag, column in (("train", "epoch_loss", "train_loss"),
                               ("validation", "epoch_accuracy", "val_accuracy")):
        logged = values(board / split, tag)
        np.testing.assert_allclose([logged[r["epoch"]] for r in history],
                                   [r[column] for r in history], rtol=1e-6)
    # The default recipe: warm-up from 0 to the peak over epoch 1, cosine to 0 at the end.
    rate = values(board / "train", "epoch_learning_rate")
    np.testing.assert_allclose([rate[0], rate[1], rate[2]], [0.0, CONFIG.learning_rate, 0.0],
                               atol=1e-9)
    width, height, png = values(board / "validation", "stn_outputs")[2]
    image = Image.open(io.BytesIO(png))
    assert image.size == (int(width), int(height)) == (2 * (10 * 42 - 2), 2 * (4 * 42 - 2))
    assert b'"preset": "predecessor"' in values(board / "train", "config")[0].item()


@pytest.mark.slow
def test_resume_logs_the_missing_epochs_exactly_once(run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(run, run_dir)
    board = run_dir / monitor.TENSORBOARD
    # A kill after checkpoint 2, before its logs; epoch 1's logs lost as well.
    for split in ("train", "validation"):
        drop_steps(board / split, {1, 2})
    full = stn_trace.read_trace(run / stn_trace.TRACE)
    stn_trace.write_trace(run_dir / stn_trace.TRACE, full.upto(1))
    assert "epoch_loss" not in tags(summaries(board / "train"))
    training.train_and_evaluate(CONFIG, run_dir, verbose=0)  # finished: only catches up
    train, validation = summaries(board / "train"), summaries(board / "validation")
    assert set(train.values()) == set(validation.values()) == {1}
    # Every metric of history.csv is back; of epoch 1's images and rate there is no
    # record left, epoch 2's come from the restored checkpoint.
    assert tags(train) == {**TRAIN_TAGS, "epoch_learning_rate": {0, 2}}
    assert tags(validation) == {**VALIDATION_TAGS, "stn_outputs": {0, 2}}
    for split, tag in (("train", "epoch_loss"), ("validation", "epoch_accuracy")):
        before, after = values(run / monitor.TENSORBOARD / split, tag), values(board / split, tag)
        np.testing.assert_array_equal([after[1], after[2]], [before[1], before[2]])
    resumed = stn_trace.read_trace(run_dir / stn_trace.TRACE)
    np.testing.assert_array_equal(resumed.epochs, full.epochs)
    np.testing.assert_allclose(resumed.params, full.params, atol=1e-6)
    assert tags(summaries(board)) == {"_hparams_/session_start_info": {0}}


@pytest.mark.slow
def test_trace_holds_every_epoch_and_the_model_s_outputs(run):
    trace = stn_trace.read_trace(run / stn_trace.TRACE)
    np.testing.assert_array_equal(trace.epochs, [0, 1, 2])
    assert trace.params.shape == (3, 20, 6) and trace.images.shape == (20, 40, 40, 1)
    np.testing.assert_array_equal(trace.labels, np.repeat(np.arange(10), 2))
    assert np.isnan(trace.val_accuracy[0])
    np.testing.assert_allclose(trace.val_accuracy[1:],
                               [r["val_accuracy"] for r in runs.read_history(run)])
    np.testing.assert_allclose(trace.params[0], kinds.identity("affine", 20), atol=1e-7)
    # The animation's frames are what the final model makes of the digits.
    model = runs.load_model(run)
    params, outputs = transformer_outputs(model, trace.images)
    np.testing.assert_allclose(trace.params[-1], params, atol=1e-6)
    np.testing.assert_allclose(animation.transformed(trace)[-1], outputs, atol=1e-5)


@pytest.mark.slow
def test_gif_has_a_frame_per_epoch(run, tmp_path):
    gif = animation.render_run(run, tmp_path / "images")  # what evaluate.py calls
    assert gif == tmp_path / "images" / "training.gif"
    assert animation.render_run(tmp_path, tmp_path) is None  # no trace, no GIF
    with Image.open(gif) as image:
        assert image.n_frames == CONFIG.epochs + 1
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            durations.append(image.info["duration"])
    assert durations == [500, 500, 2500]
    assert gif.stat().st_size < 2 * CONFIG.epochs * 60_000


def test_thin_keeps_the_first_and_last_epochs():
    trace = stn_trace.Trace(np.arange(101), np.zeros(101), np.zeros((101, 2, 6), np.float32),
                          np.zeros((2, 8, 8, 1), np.float32), np.arange(2), np.arange(2),
                          "affine", (8, 8))
    thinned = animation.thin(trace, 41)
    assert len(thinned.epochs) == 41
    assert thinned.epochs[0] == 0 and thinned.epochs[-1] == 100


def synthetic_data(n=40):
    split = helpers.synthetic_split(n, np.random.default_rng(0))
    return types.SimpleNamespace(validation=split, test=split)


def monitored(tmp_path, preset, verbose=0, **overrides):
    """A Monitor of a fresh model on synthetic digits, after epoch 0 (no training)."""
    model = build_model(preset, dense_units=8, **overrides)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    config = C.make_config(preset, "seed", model_overrides={"dense_units": 8, **overrides},
                           recipe="cosine")
    return monitor.Monitor(tmp_path, config, synthetic_data(), model, optimizer, [],
                           verbose=verbose)


def test_model_without_transformer_records_no_trace(tmp_path):
    watch = monitored(tmp_path, "cnn")
    watch.epoch_end({"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.1, "val_loss": 2.0,
                     "val_accuracy": 0.1, "seconds": 1.0})
    watch.close()
    assert not (tmp_path / stn_trace.TRACE).exists()
    validation = tags(summaries(tmp_path / monitor.TENSORBOARD / "validation"))
    assert validation == {"epoch_loss": {1}, "epoch_accuracy": {1}}


def test_smaller_output_and_no_tensorboard(tmp_path, monkeypatch, capsys):
    real = monitor.importlib.util.find_spec
    monkeypatch.setattr(monitor.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    monitored(model_dir, "seed", verbose=1, transformer_output_size=28)
    assert "TensorBoard not installed" in capsys.readouterr().out
    assert not (model_dir / monitor.TENSORBOARD).exists()
    trace = stn_trace.read_trace(model_dir / stn_trace.TRACE)
    assert trace.output_size == (28, 28)
    assert animation.transformed(trace).shape == (1, 20, 28, 28, 1)
    frame = animation.frame(tiles.outputs_grid(trace.images, animation.transformed(trace)[0]),
                            "epoch 0")
    assert frame.mode == "L"


def test_training_imports_no_plotting(tmp_path):
    # A training run (stn.train.training, a model with a transformer, its Monitor
    # and one epoch's logs) needs neither matplotlib nor scikit-learn: with
    # both made unimportable it still works (Keras imports them only if it
    # can), and stn.viz.figures and stn.analysis.evaluation are never imported.
    code = f"""
import sys
for name in ("matplotlib", "sklearn"):
    sys.modules[name] = None  # any import of them raises ImportError
sys.path.insert(0, {str(helpers.ROOT / "tests")!r})
from pathlib import Path
import stn.train.training
from test_monitor import monitored
watch = monitored(Path({str(tmp_path)!r}), "seed")
watch.epoch_end({{"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.1, "val_loss": 2.0,
                 "val_accuracy": 0.1, "seconds": 1.0}})
watch.close()
assert (Path({str(tmp_path)!r}) / "trace.npz").exists()
loaded = sorted(m for m in ("stn.viz.figures", "stn.analysis.evaluation") if m in sys.modules)
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=helpers.ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
