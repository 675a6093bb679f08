"""Watching a run learn: TensorBoard logs and the transformer's trace.

:func:`stn.train.training.train_and_evaluate` keeps a :class:`Monitor`, which
writes, into the run directory (stn.train.runs), after checkpoint ``e`` is saved::

    tensorboard/train/       epoch_loss, epoch_accuracy, epoch_learning_rate,
                             epoch_seconds; config (text, step 0)
    tensorboard/validation/  epoch_loss, epoch_accuracy; stn_outputs (image)
    tensorboard/             hparams: the config, flattened (HPARAMS tab)
    trace.npz                the transformer's parameters for fixed test
                             digits after every epoch (stn.train.trace, stn.viz.animation);
                             models with one transformer on one channel only

**Steps are epochs**: step ``e`` is the state after ``e`` epochs, the one
checkpoint ``e`` holds; step 0 is the initial model (learning rate, images,
trace). ``epoch_learning_rate`` at step ``e`` is the rate of the next step
(``stn.train.optimizers.current_learning_rate``). ``stn_outputs`` shows two
validation digits of each class (the first ones), one class per column;
rows: input, transformer output, input, output.

**Resuming.** The logs of step ``e`` are written only after checkpoint
``e`` is saved, so a log never runs ahead of the checkpoint. A resumed run
reads which (tag, step) pairs the event files already hold, and writes
only the others: completed epochs a kill left out are re-logged from
history.csv (loss, accuracy, seconds), and the checkpoint's own epoch in
full (the restored model and optimizer are that epoch's). No (tag, step)
is ever written twice. The trace is cut back to the checkpoint's epoch,
like the history.

TensorBoard logs need the ``tensorboard`` package (``pip install
tensorboard``); without it training goes on and writes only the trace.
"""

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stn.layer import kinds
from stn.train.config import Config, config_to_dict
from stn.model import find_transformers, transformer_outputs
from stn.train.optimizers import current_learning_rate
from stn.data.tiles import PER_CLASS, first_of_each_class, outputs_grid
from stn.train.trace import TRACE, Trace, read_trace, write_trace

TENSORBOARD = "tensorboard"  # RUN/tensorboard/{train,validation}/
TRAIN_SCALARS = {"epoch_loss": "train_loss", "epoch_accuracy": "train_accuracy",
                 "epoch_seconds": "seconds",  # tag -> history.csv column
                 # With an alignment term only (stn.train.alignment): its label-free gap.
                 "epoch_consistency_px": "train_consistency_px"}
VALIDATION_SCALARS = {"epoch_loss": "val_loss", "epoch_accuracy": "val_accuracy"}


# --- reading event files ------------------------------------------------------------

def logged_steps(log_dir) -> dict[str, set[int]]:
    """The steps of each tag that the event files of ``log_dir`` hold.

    Args:
      log_dir: one TensorBoard run directory, e.g. ``RUN/tensorboard/train``.

    Returns:
      ``{tag: {step, ...}}``; empty if there are no event files.
    """
    found: dict[str, set[int]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    found.setdefault(value.tag, set()).add(int(event.step))
        except tf.errors.DataLossError:
            # A record cut short by a kill: its summaries never reached the
            # log, so they count as missing and are written again.
            continue
    return found


# --- TensorBoard ---------------------------------------------------------------------

def hparams(config: Config) -> dict:
    """The config as flat ``{"model.kind": "affine", "epochs": 20, ...}`` for HPARAMS."""
    flat = {}

    def visit(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(f"{prefix}{key}.", inner)
        else:
            flat[prefix[:-1]] = value if isinstance(value, (bool, int, float, str)) else str(value)

    visit("", config_to_dict(config))
    return flat


class TensorBoardLog:
    """The event files of one run; each (tag, step) is written at most once.

    Args:
      log_dir: ``RUN/tensorboard``.
    """

    def __init__(self, log_dir):
        log_dir = Path(log_dir)
        self._dirs = {"": log_dir, "train": log_dir / "train", "validation": log_dir / "validation"}
        self._done = {run: logged_steps(path) for run, path in self._dirs.items()}
        self._writers = {}

    def _write(self, run: str, tag: str, step: int, summary) -> None:
        """Calls ``summary(tag, step)`` under ``run``'s writer unless already logged."""
        steps = self._done[run].setdefault(tag, set())
        if step in steps:
            return
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(self._dirs[run]))
        with self._writers[run].as_default():
            summary(tag, step)
        steps.add(step)

    def scalars(self, run: str, values: dict, step: int) -> None:
        """``{tag: float}`` under ``run`` (``"train"`` or ``"validation"``)."""
        for tag, value in values.items():
            self._write(run, tag, step, lambda t, s: tf.summary.scalar(t, float(value), step=s))

    def image(self, run: str, tag: str, image, step: int) -> None:
        """One float image ``[H, W, 1]`` in [0, 1]."""
        self._write(run, tag, step, lambda t, s: tf.summary.image(t, image[None], step=s))

    def config(self, config: Config, name: str) -> None:
        """The config as text (train, step 0) and as hparams (the root run)."""
        text = "```json\n" + json.dumps(config_to_dict(config), indent=2) + "\n```"
        self._write("train", "config", 0, lambda t, s: tf.summary.text(t, text, step=s))
        from tensorboard.plugins.hparams import api as hp

        self._write("", "_hparams_/session_start_info", 0,
                    lambda t, s: hp.hparams(hparams(config), trial_id=name))

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


# --- what training calls -----------------------------------------------------------

class Monitor:
    """Writes a run's TensorBoard logs and trace; resumes them with the run.

    Args:
      run_dir: the run directory.
      config: the run's Config.
      data: the run's stn.data.Data (validation and test digits are picked
        from it).
      model: the model being trained (its state is that of ``len(history)``
        epochs).
      optimizer: its optimizer (for the learning rate).
      history: rows of the completed epochs (history.csv, cut to the
        checkpoint): the run resumes after ``len(history)`` epochs.
      verbose: print a line if TensorBoard is not installed.
    """

    def __init__(self, run_dir, config: Config, data, model: keras.Model, optimizer,
                 history: list[dict], verbose: int = 1):
        run_dir = Path(run_dir)
        self.model, self.optimizer, self.trace_path = model, optimizer, run_dir / TRACE
        # The trace and the image grid follow one transformer on one channel;
        # parallel transformers and multi-channel inputs go without them.
        layers = find_transformers(model)
        layer = layers[0] if len(layers) == 1 and model.input_shape[-1] == 1 else None
        self.board = None
        if importlib.util.find_spec("tensorboard") is not None:
            self.board = TensorBoardLog(run_dir / TENSORBOARD)
            self.board.config(config, run_dir.name)
        elif verbose:
            print("TensorBoard not installed: no logs in RUN/tensorboard "
                  "(pip install tensorboard to get them).")
        self.val_images = self.trace = None
        if layer is not None:
            self.val_images = data.validation.images[
                first_of_each_class(data.validation.labels, PER_CLASS)]
            self.trace = self._resume_trace(data.test, layer, first_of_each_class(
                data.test.labels, PER_CLASS), len(history))
        for row in history[:-1]:  # epochs a kill left out of the logs
            self._log_metrics(row)
        self.epoch_end(history[-1] if history else None)

    def _resume_trace(self, test, layer, shown, epoch: int) -> Trace:
        """The trace of the epochs before ``epoch``, or a new one.

        Args:
          test: the test Split; ``shown`` int ``[n]`` indexes the traced digits.
          layer: the model's SpatialTransformer.
        """
        if self.trace_path.exists():
            return read_trace(self.trace_path).upto(epoch - 1)
        size = layer.output_size or test.images.shape[1:3]
        params = np.zeros((0, len(shown), kinds.get_kind(layer.kind).size), np.float32)
        return Trace(epochs=np.zeros(0, np.int64), val_accuracy=np.zeros(0), params=params,
                     images=test.images[shown], labels=test.labels[shown].astype(np.int64),
                     indices=shown.astype(np.int64), kind=layer.kind,
                     output_size=tuple(int(s) for s in size))

    def _log_metrics(self, row: dict) -> None:
        if self.board is not None:
            step = row["epoch"]
            self.board.scalars("train", {t: row[c] for t, c in TRAIN_SCALARS.items()
                                         if c in row}, step)
            self.board.scalars("validation",
                               {t: row[c] for t, c in VALIDATION_SCALARS.items()}, step)

    def epoch_end(self, row: dict | None) -> None:
        """Logs the model's current state as epoch ``row["epoch"]`` (0 if None).

        Call after the epoch's checkpoint is saved.
        """
        epoch = row["epoch"] if row else 0
        if row:
            self._log_metrics(row)
        outputs = None
        if self.trace is not None:
            images = np.concatenate([self.val_images, self.trace.images])
            params, outputs = transformer_outputs(self.model, images)
            n = len(self.val_images)
            if epoch not in self.trace.epochs:
                self.trace = self.trace.append(epoch, row["val_accuracy"] if row else np.nan,
                                               params[n:])
                write_trace(self.trace_path, self.trace)
        if self.board is not None:
            self.board.scalars("train", {"epoch_learning_rate":
                                         current_learning_rate(self.optimizer)}, epoch)
            if outputs is not None:
                self.board.image("validation", "stn_outputs",
                                 outputs_grid(self.val_images, outputs[:n]), epoch)
            self.board.flush()

    def close(self) -> None:
        """Flushes and closes the event files."""
        if self.board is not None:
            self.board.close()
