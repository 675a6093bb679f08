"""Watching a run learn: TensorBoard logs and the transformer's trace.

:func:`stn.training.train_and_evaluate` keeps a :class:`Monitor`, which
writes, into the run directory (stn.runs), after checkpoint ``e`` is saved::

    tensorboard/train/       epoch_loss, epoch_accuracy, epoch_learning_rate,
                             epoch_seconds; config (text, step 0)
    tensorboard/validation/  epoch_loss, epoch_accuracy; stn_outputs (image)
    tensorboard/             hparams: the config, flattened (HPARAMS tab)
    trace.npz                the transformer's parameters for fixed test
                             digits after every epoch (stn.animation)

**Steps are epochs**: step ``e`` is the state after ``e`` epochs, the one
checkpoint ``e`` holds; step 0 is the initial model (learning rate, images,
trace). ``epoch_learning_rate`` at step ``e`` is the rate of the next step
(``stn.optimizers.current_learning_rate``). ``stn_outputs`` shows two
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

import dataclasses
import importlib.util
import io
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stn import kinds, runs
from stn.config import Config, config_to_dict
from stn.model import find_transformer, transformer_outputs
from stn.optimizers import current_learning_rate

TENSORBOARD = "tensorboard"  # RUN/tensorboard/{train,validation}/
TRACE = "trace.npz"
PER_CLASS = 2  # digits of each class shown in TensorBoard and traced
TRAIN_SCALARS = {"epoch_loss": "train_loss", "epoch_accuracy": "train_accuracy",
                 "epoch_seconds": "seconds"}  # tag -> history.csv column
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


# --- images --------------------------------------------------------------------------

def tile(rows, gap: int = 2, background: float = 0.35) -> np.ndarray:
    """Lays rows of images out on one canvas, each cell centred.

    Args:
      rows: a list of float arrays ``[m, h_i, w_i, 1]`` in [0, 1] (sizes may
        differ between rows, e.g. inputs and a smaller transformer output).
      gap: pixels between cells.
      background: grey level of the gaps.

    Returns:
      float32 ``[H, W, 1]``.
    """
    h = max(r.shape[1] for r in rows)
    w = max(r.shape[2] for r in rows)
    m = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, m * (w + gap) - gap, 1), background,
                  np.float32)
    for i, row in enumerate(rows):
        top = i * (h + gap) + (h - row.shape[1]) // 2
        for j, image in enumerate(row):
            left = j * (w + gap) + (w - row.shape[2]) // 2
            out[top:top + row.shape[1], left:left + row.shape[2]] = np.clip(image, 0, 1)
    return out


def outputs_grid(inputs, outputs, per_class: int = PER_CLASS, scale: int = 2) -> np.ndarray:
    """The ``stn_outputs`` image: float32 ``[H, W, 1]``, one class per column.

    Args:
      inputs: float ``[n, S, S, 1]``, ``per_class`` digits of each class,
        by class (``stn.figures.first_of_each_class``).
      outputs: float ``[n, h, w, 1]``, the transformer's outputs for them.
      per_class: digits of each class.
      scale: whole-pixel upscaling (nearest), for legibility.

    Rows: input and output of each class's first digit, then of its second...
    """
    rows = []
    for k in range(per_class):
        rows += [np.asarray(inputs[k::per_class]), np.asarray(outputs[k::per_class])]
    return tile(rows).repeat(scale, axis=0).repeat(scale, axis=1)


# --- the trace -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Trace:
    """The transformer's parameters for fixed test digits, epoch by epoch.

    Attributes:
      epochs: int64 ``[F]``, increasing; 0 is the initial model.
      val_accuracy: float64 ``[F]``, validation accuracy after that epoch
        (NaN for epoch 0).
      params: float32 ``[F, n, P]``, the transformer's parameters of kind
        ``kind`` (output -> input, stn.kinds) for each digit.
      images: float32 ``[n, S, S, 1]``, the digits (warped test images).
      labels: int64 ``[n]``, their classes.
      indices: int64 ``[n]``, their positions in the test split.
      kind: the transformer's kind (stn.kinds.KINDS).
      output_size: ``(h, w)`` of the transformer's output.
    """
    epochs: np.ndarray
    val_accuracy: np.ndarray
    params: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    kind: str
    output_size: tuple[int, int]

    def upto(self, epoch: int) -> "Trace":
        """The frames of epochs ``<= epoch``."""
        keep = self.epochs <= epoch
        return dataclasses.replace(self, epochs=self.epochs[keep],
                                   val_accuracy=self.val_accuracy[keep], params=self.params[keep])

    def append(self, epoch: int, val_accuracy: float, params) -> "Trace":
        """This trace with one more frame (``params`` float ``[n, P]``)."""
        return dataclasses.replace(
            self, epochs=np.append(self.epochs, epoch),
            val_accuracy=np.append(self.val_accuracy, val_accuracy),
            params=np.concatenate([self.params, np.asarray(params, np.float32)[None]]))


def write_trace(path, trace: Trace) -> None:
    """Writes ``trace`` as an .npz file, atomically (stn.runs.atomic_write)."""
    buffer = io.BytesIO()
    fields = {**dataclasses.asdict(trace), "kind": np.str_(trace.kind),
              "output_size": np.asarray(trace.output_size, np.int64)}
    np.savez(buffer, **fields)
    runs.atomic_write(Path(path), buffer.getvalue())


def read_trace(path) -> Trace:
    """Reads a trace written by :func:`write_trace`.

    Raises:
      stn.runs.RunError: the file is missing or damaged.
    """
    path = Path(path)
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
        return Trace(**{**arrays, "kind": str(arrays["kind"]),
                        "output_size": tuple(int(s) for s in arrays["output_size"])})
    except FileNotFoundError:
        raise runs.RunError(f"{path} not found: it is written by train.py for models "
                            "with a transformer") from None
    except Exception as e:  # zipfile/pickle/OS/key errors of a damaged file
        raise runs.RunError(f"{path} is damaged ({type(e).__name__}: {e}); delete it: "
                            "a resumed run starts a new trace") from None


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
        from stn.figures import first_of_each_class  # the README figures' choice

        run_dir = Path(run_dir)
        self.model, self.optimizer, self.trace_path = model, optimizer, run_dir / TRACE
        layer = find_transformer(model)
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
            self.board.scalars("train", {t: row[c] for t, c in TRAIN_SCALARS.items()}, step)
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
