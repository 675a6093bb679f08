"""Evaluation of a finished run: test metrics and pose alignment, as results.json.

No plots here (:mod:`stn.viz.figures`) and no command line (``evaluate.py``).

**Classification.** The confusion matrix has one *row per true class* and
one *column per predicted class* (``C[i, j]`` = test digits of class ``i``
predicted as ``j``); per-class recall is ``C[i, i] / sum_j C[i, j]``,
accuracy is ``trace(C) / N`` and the error is ``100 * (1 - accuracy)`` %.

**Pose alignment**: :mod:`stn.analysis.pose`.
"""

import dataclasses
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import sklearn.metrics

from stn.data import pipeline as stn_data
from stn.train import run_lock, runs
from stn.train.config import Config
from stn.analysis.pose import PoseAlignment, format_value, pose_alignment, pose_lines, pose_targets
from stn.model import find_transformer, in_batches, transformer_outputs

RESULTS = "results.json"
RESULTS_FORMAT = 1  # bump when the layout of results.json changes


# --- classification ------------------------------------------------------------

def predict(model: keras.Model, images, batch_size: int = 1000) -> np.ndarray:
    """Logits of ``model`` in inference mode, one compiled call per batch.

    Args:
      model: maps float32 ``[B, S, S, 1]`` to logits ``[B, 10]``.
      images: float32 ``[N, S, S, 1]``.
      batch_size: images per call.

    Returns:
      float32 ``[N, 10]`` NumPy array.
    """
    return in_batches(lambda batch: model(batch, training=False), images,
                      batch_size).astype(np.float32)


def confusion_matrix(labels, predictions) -> np.ndarray:
    """int64 ``[10, 10]``: rows are the true classes, columns the predicted ones."""
    return sklearn.metrics.confusion_matrix(labels, predictions,
                                            labels=range(stn_data.NUM_CLASSES))


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """float64 ``[10]``: diagonal / row sums (NaN for a class with no examples)."""
    confusion = np.asarray(confusion, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.diag(confusion) / confusion.sum(axis=1)


def accuracy(confusion: np.ndarray) -> float:
    """Fraction of the examples on the diagonal."""
    confusion = np.asarray(confusion)
    return float(np.trace(confusion) / confusion.sum())


# --- a whole run -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything :func:`evaluate_run` computed, for results.json and the figures.

    Attributes:
      run_dir: the run directory.
      config: the run's Config.
      model: the run's final model.
      test: the run's test split (warped images, labels, warps, canonical).
      logits: float32 ``[N, 10]``.
      predictions: int64 ``[N]``, argmax of the logits.
      confusion: int64 ``[10, 10]``, rows true, columns predicted.
      history: rows of history.csv (``stn.train.runs.read_history``).
      theta: float32 ``[N, P]``, the transformer's parameters (of the kind
        ``config.model.kind``, stn.layer.kinds), or None for a model with no
        transformer.
      transformed: float32 ``[N, h, w, 1]`` transformer outputs, or None.
      pose: :class:`PoseAlignment`, or None.
      non_finite: ``{stage: images}`` for each stage of the forward pass
        (:data:`STAGES`) whose output holds NaN or Inf for that many test
        images; empty for a sound model.
      bad_weights: names of the model's weights that hold NaN or Inf.
    """
    run_dir: Path
    config: Config
    model: keras.Model
    test: stn_data.Split
    logits: np.ndarray
    predictions: np.ndarray
    confusion: np.ndarray
    history: list[dict]
    theta: np.ndarray | None = None
    transformed: np.ndarray | None = None
    pose: PoseAlignment | None = None
    non_finite: dict = dataclasses.field(default_factory=dict)
    bad_weights: tuple[str, ...] = ()


STAGES = ("transformer parameters", "transformer output", "logits")
"""The stages of the forward pass checked for NaN and Inf, in order."""


def non_finite_images(array) -> int:
    """The number of images (first axis) of ``array`` holding a NaN or Inf."""
    array = np.asarray(array)
    return int(np.sum(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)))


def non_finite_weights(model: keras.Model) -> tuple[str, ...]:
    """Paths of the model's weights that hold a NaN or Inf."""
    return tuple(w.path for w in model.weights
                 if not np.isfinite(keras.ops.convert_to_numpy(w)).all())


def problems(evaluation: "Evaluation") -> list[str]:
    """Sentences saying what is wrong with the evaluated model; [] if nothing.

    Names how many test images have NaN or Inf outputs at each stage
    (:data:`STAGES`), the first stage that has them and the weights that hold them.
    """
    ev = evaluation
    if not ev.non_finite and not ev.bad_weights:
        return []
    n = len(ev.test)
    stages = ", ".join(f"{stage} of {count:,} of {n:,} images" for stage, count
                       in ev.non_finite.items())
    first = next(iter(ev.non_finite), None)
    weights = (f"{len(ev.bad_weights)} weight(s) hold NaN or Inf (first: {ev.bad_weights[0]})"
               if ev.bad_weights else "no weight holds NaN or Inf")
    text = (f"the model's outputs are not finite: NaN or Inf in the {stages}" if first else
            "the model's outputs are finite")
    where = f"; they start at the {first}" if first else ""
    return [f"{text}{where}; {weights}. The accuracy and pose statistics of those images "
            "mean nothing"]


def _timed(progress: Callable[[str], None] | None, message: str, work: Callable):
    """Runs ``work()``, telling ``progress`` what it does and how long it took."""
    if progress is None:
        return work()
    progress(f"{message} ...")
    began = time.perf_counter()
    out = work()
    progress(f"  done in {time.perf_counter() - began:.1f} s")
    return out


def load_test_split(protocol: str, seed: int, mnist_path=None, cache_dir=None,
                    max_examples: int | None = None) -> stn_data.Split:
    """A run's test split: a pure function of its protocol and seed (its first
    ``max_examples`` images, for a smoke run's ``Config.max_eval_examples``).

    Raises:
      stn.data.mnist.MnistError: MNIST cannot be found or read.
    """
    # One training image: the test warps do not depend on it (stn.data), and
    # warping the other 54,999 would only cost time and memory.
    return stn_data.load_data(protocol, seed, mnist_path=mnist_path, cache_dir=cache_dir,
                              max_train_examples=1, max_eval_examples=max_examples).test


def split_pose(model: keras.Model, split: stn_data.Split) -> PoseAlignment:
    """Pose alignment of ``model``'s transformer on a split's digits (stn.analysis.pose)."""
    theta = transformer_outputs(model, split.images)[0]
    return pose_alignment(split.warps, theta, split.canvas, split.kind,
                          find_transformer(model).kind)


def evaluate_run(run_dir, mnist_path=None, cache_dir=None,
                 progress: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluates the final model of a finished run on its test set.

    Args:
      run_dir: a run directory written by ``train.py`` (see stn.train.runs).
      mnist_path: MNIST file or folder (``stn.data.mnist.load_mnist(path=)``).
      cache_dir: MNIST cache (``stn.data.mnist.load_mnist(cache_dir=)``).
      progress: called with a line of text as each slow step starts and ends.

    Returns:
      :class:`Evaluation`.

    Raises:
      stn.train.runs.RunError: no such directory, no finished model, another format,
        or a run that a live process is training (stn.train.run_lock.RunBusy).
      stn.data.mnist.MnistError: MNIST cannot be found or read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise runs.RunError(f"{run_dir} is not a directory: pass the --run-dir of a "
                            "train.py run")
    run_lock.check_not_training(run_dir)
    config = runs.read_config(run_dir)
    model = _timed(progress, f"loading {run_dir / runs.MODEL}", lambda: runs.load_model(run_dir))
    test = _timed(progress, f"rebuilding the test set (protocol {config.protocol!r}, "
                  f"seed {config.seed})",
                  lambda: load_test_split(config.protocol, config.seed, mnist_path, cache_dir,
                                          config.max_eval_examples))
    logits = _timed(progress, f"classifying {len(test):,} test digits",
                    lambda: predict(model, test.images))
    predictions = np.argmax(logits, axis=1)
    outputs, found = {}, {}
    layer = find_transformer(model)
    if layer is not None:
        theta, transformed = _timed(progress, "running the transformer",
                                    lambda: transformer_outputs(model, test.images))
        pose = _timed(progress, "measuring pose alignment", lambda: pose_alignment(
            test.warps, theta, test.canvas, test.kind, layer.kind))
        outputs = {"theta": theta, "transformed": transformed, "pose": pose}
        found = {STAGES[0]: non_finite_images(theta), STAGES[1]: non_finite_images(transformed)}
    found[STAGES[2]] = non_finite_images(logits)
    return Evaluation(run_dir, config, model, test, logits, predictions,
                      confusion_matrix(test.labels, predictions), runs.read_history(run_dir),
                      **outputs, non_finite={k: v for k, v in found.items() if v},
                      bad_weights=non_finite_weights(model))


# --- results.json ----------------------------------------------------------------

def _json_ready(value):
    """NumPy scalars and arrays as plain Python; NaN and inf as None (valid JSON)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def results(evaluation: Evaluation) -> dict:
    """The contents of results.json (JSON-ready)."""
    ev, config = evaluation, evaluation.config
    acc = accuracy(ev.confusion)
    pose = ev.pose.stats if ev.pose is not None else None
    return _json_ready({
        "format": RESULTS_FORMAT,
        "run_dir": str(ev.run_dir),
        "protocol": config.protocol, "seed": config.seed, "preset": config.model.preset,
        "transformer_kind": config.model.kind if config.model.transformer else None,
        "epochs": config.epochs, "epochs_completed": len(ev.history),
        "model_parameters": ev.model.count_params(),
        "test_examples": len(ev.test),
        "accuracy": acc, "error_percent": 100.0 * (1.0 - acc),
        "per_class_recall": per_class_recall(ev.confusion),
        "confusion_matrix": ev.confusion,
        "confusion_matrix_layout": "rows = true class, columns = predicted class",
        "pose": pose,
        "targets": pose_targets(pose) if pose is not None else None,
        "non_finite_images": {stage.replace(" ", "_"): ev.non_finite.get(stage, 0)
                              for stage in STAGES},
        "non_finite_weights": list(ev.bad_weights),
        "warnings": problems(ev),
    })


def write_results(evaluation: Evaluation) -> Path:
    """Writes ``run_dir/results.json`` (atomically) and returns its path."""
    path = evaluation.run_dir / RESULTS
    runs.write_json(path, results(evaluation))
    return path


def summary_text(record: dict) -> str:
    """A few lines for the terminal from a :func:`results` dict."""
    lines = [f"{record['run_dir']}: preset {record['preset']}, protocol {record['protocol']}, "
             f"seed {record['seed']}, {record['model_parameters']:,} parameters",
             f"test accuracy {100 * record['accuracy']:.2f}% "
             f"(error {record['error_percent']:.2f}%) on {record['test_examples']:,} digits"]
    lines += [f"WARNING: {w}" for w in record.get("warnings", [])]
    pose = record["pose"]
    if pose is None:
        lines.append("no transformer: no pose alignment")
        return "\n".join(lines)
    lines.append(f"pose alignment, std of the residual vs the raw warps "
                 f"({pose['n_valid']:,} examples, {pose['n_excluded']} excluded as "
                 f"singular/non-finite, {pose['n_reflected']} reflected):")
    lines += pose_lines(pose)
    for name, target in record["targets"].items():
        met = {True: "met", False: "NOT met", None: "undefined"}[target["met"]]
        lines.append(f"  target {target['description']}: {met} "
                     f"(value {format_value(target['value'], '.3f')})")
    return "\n".join(lines)
