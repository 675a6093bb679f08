"""Evaluation of a finished run: test metrics and pose alignment, as results.json.

No plots here (:mod:`stn.figures`) and no command line (``evaluate.py``).

**Classification.** The confusion matrix has one *row per true class* and
one *column per predicted class* (``C[i, j]`` = test digits of class ``i``
predicted as ``j``); per-class recall is ``C[i, i] / sum_j C[i, j]``,
accuracy is ``trace(C) / N`` and the error is ``100 * (1 - accuracy)`` %.

**Pose alignment.** How well the transformer brings every test digit to one
common pose, whatever its warp. For test example ``i`` with ground-truth
warp ``A_i`` (the sampling matrix of :mod:`stn.warps`: warped =
``transform(canonical, A_i)``) and the transformer's ``theta_i``, the
classifier sees ``transform(canonical, R_i)`` with the *residual*
``R_i = chain(A_i, theta_i)`` (= ``A_i @ theta_i`` as 3 x 3 matrices).
``stn.warps.decompose(R_i, canvas)`` gives the pose of the digit in the
classifier's input: rotation (degrees, clockwise on screen), isotropic
scale, shear (degrees), translation ``tx``, ``ty`` (pixels of the input
canvas, ``canvas / 2`` per normalized unit, whatever the transformer's
output size) and aspect. The same decomposition of ``A_i`` alone (theta = identity,
i.e. no transformer) gives the *raw* pose. A transformer that canonicalises
makes the residual nearly the same for every example, whatever the warp,
though not necessarily the identity (it may settle on, say, a slightly
enlarged digit). For each parameter we report, over the test set:

* ``std`` (population standard deviation) and ``iqr`` (75th minus 25th
  percentile) of the residual and of the raw values;
* ``ratio`` = residual std / raw std (and ``iqr_ratio`` likewise): 1 means
  the transformer removed none of the variation, 0 all of it; undefined
  (null) when the raw values do not vary (raw std below 1e-6, float32
  rounding of a constant: aspect always, everything under protocol ``none``);
* ``median`` of the residual (and of the raw values): the common pose the
  transformer converges to.

Rotation is an angle: its values are first centred on their circular mean
``c = atan2(mean sin, mean cos)`` and the deviations wrapped to
``(-180, 180]``; std, iqr and median are taken of the deviations (the
median is reported as ``c + median``, wrapped), so a residual near +-180
degrees is not split in two. Translation is also reported in 2-D: ``rms``
= the root mean square distance of ``(tx, ty)`` from its mean, in pixels.
Examples whose residual is non-finite or singular (decompose gives inf or
NaN) are excluded from every statistic, and counted as ``n_excluded``;
``n_reflected`` counts residuals that flip the digit.

**Targets** (reported, not asserted): rotation ``ratio`` <= 1/3, and the
residual std of ``tx`` and of ``ty`` <= 1.5 px.
"""

import dataclasses
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import sklearn.metrics

from stn import data as stn_data
from stn import runs, warps
from stn.config import Config
from stn.model import find_transformer, in_batches, transformer_outputs

RESULTS = "results.json"
RESULTS_FORMAT = 1  # bump when the layout of results.json changes
PARAMETERS = ("rotation", "scale", "shear", "tx", "ty", "aspect")
"""Pose parameters of :func:`stn.warps.decompose`, in reporting order."""
UNITS = {"rotation": "deg", "scale": "factor", "shear": "deg", "tx": "px", "ty": "px",
         "aspect": "factor"}
ROTATION_RATIO_TARGET = 1.0 / 3.0
TRANSLATION_STD_TARGET_PX = 1.5


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


# --- pose alignment --------------------------------------------------------------

def wrap_degrees(angles) -> np.ndarray:
    """Angles wrapped to ``(-180, 180]`` degrees."""
    return 180.0 - np.mod(180.0 - np.asarray(angles, np.float64), 360.0)


def centre_angles(angles) -> tuple[float, np.ndarray]:
    """``(c, d)``: the circular mean ``c`` and the deviations ``wrap(angles - c)``.

    ``c + d`` are the angles made contiguous around ``c`` (no jump at +-180).
    """
    radians = np.radians(np.asarray(angles, np.float64))
    centre = float(np.degrees(np.arctan2(np.mean(np.sin(radians)), np.mean(np.cos(radians)))))
    return centre, wrap_degrees(np.asarray(angles) - centre)


def spread(values, circular: bool = False) -> dict[str, float]:
    """``std`` (ddof 0), ``iqr`` and ``median`` of ``values`` (all finite).

    With ``circular=True`` the values are angles in degrees, treated as in
    the module docstring (deviations from the circular mean).
    """
    values = np.asarray(values, np.float64)
    offset = 0.0
    if circular:
        offset, values = centre_angles(values)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    median = float(wrap_degrees(offset + median)) if circular else float(median)
    return {"std": float(np.std(values)), "iqr": float(q75 - q25), "median": median}


_CONSTANT = 1e-6  # a smaller raw spread is float32 rounding of a constant


def _ratio(residual: float, raw: float) -> float | None:
    return residual / raw if raw > _CONSTANT else None


@dataclasses.dataclass(frozen=True, eq=False)
class PoseAlignment:
    """Residual and raw poses of a test set (definitions: module docstring).

    Attributes:
      raw: float64 ``[N]`` per parameter of :data:`PARAMETERS`, and bool
        ``reflected``: ``decompose(A)``.
      residual: the same for ``decompose(chain(A, theta))``.
      valid: bool ``[N]``: residual (and raw) pose finite; only these count.
      stats: JSON-ready statistics, as written to results.json.
    """
    raw: dict[str, np.ndarray]
    residual: dict[str, np.ndarray]
    valid: np.ndarray
    stats: dict


def _finite(pose: dict) -> np.ndarray:
    return np.all([np.isfinite(pose[k]) for k in PARAMETERS], axis=0)


def _parameter_stats(name: str, raw: np.ndarray, residual: np.ndarray) -> dict:
    circular = name == "rotation"
    raw_stats, residual_stats = spread(raw, circular), spread(residual, circular)
    return {"unit": UNITS[name], "residual": residual_stats, "raw": raw_stats,
            "ratio": _ratio(residual_stats["std"], raw_stats["std"]),
            "iqr_ratio": _ratio(residual_stats["iqr"], raw_stats["iqr"])}


def _rms_radius(tx: np.ndarray, ty: np.ndarray) -> float:
    """Root mean square distance of the points ``(tx, ty)`` from their mean."""
    return float(np.sqrt(np.mean((tx - tx.mean()) ** 2 + (ty - ty.mean()) ** 2)))


def pose_statistics(raw: dict, residual: dict, valid: np.ndarray) -> dict:
    """The statistics of the module docstring, over the ``valid`` examples."""
    stats = {"n": int(valid.size), "n_valid": int(valid.sum()),
             "n_excluded": int(valid.size - valid.sum()),
             "n_reflected": int(np.sum(residual["reflected"] & valid))}
    if not valid.any():
        return {**stats, "parameters": None, "translation": None}
    raw = {k: raw[k][valid] for k in PARAMETERS}
    residual = {k: residual[k][valid] for k in PARAMETERS}
    stats["parameters"] = {k: _parameter_stats(k, raw[k], residual[k]) for k in PARAMETERS}
    raw_rms, residual_rms = (_rms_radius(p["tx"], p["ty"]) for p in (raw, residual))
    stats["translation"] = {"unit": "px", "residual_rms": residual_rms, "raw_rms": raw_rms,
                            "ratio": _ratio(residual_rms, raw_rms)}
    return stats


def pose_alignment(warp_matrices, theta, canvas: int) -> PoseAlignment:
    """Pose alignment of the transformer on a test set (module docstring).

    Args:
      warp_matrices: ``[N, 2, 3]`` ground-truth sampling matrices ``A``.
      theta: ``[N, 2, 3]`` (or ``[N, 6]``) the transformer's theta.
      canvas: side of the input images in pixels.

    Returns:
      :class:`PoseAlignment`.
    """
    raw = warps.decompose(warp_matrices, canvas)
    residual = warps.decompose(warps.chain(warp_matrices, theta), canvas)
    valid = _finite(raw) & _finite(residual)
    return PoseAlignment(raw, residual, valid, pose_statistics(raw, residual, valid))


def pose_targets(stats: dict) -> dict:
    """The two targets of the module docstring: value, threshold, ``met``."""
    params = stats.get("parameters") or {}
    rotation = params.get("rotation", {}).get("ratio")
    shifts = [params[k]["residual"]["std"] for k in ("tx", "ty") if k in params]
    shift = max(shifts) if shifts else None
    return {
        "rotation_std_ratio": {
            "description": "residual rotation std / raw warp rotation std <= 1/3",
            "value": rotation, "threshold": ROTATION_RATIO_TARGET,
            "met": None if rotation is None else bool(rotation <= ROTATION_RATIO_TARGET)},
        "translation_std_px": {
            "description": "residual std of tx and of ty <= 1.5 px (value: the larger)",
            "value": shift, "threshold": TRANSLATION_STD_TARGET_PX,
            "met": None if shift is None else bool(shift <= TRANSLATION_STD_TARGET_PX)},
    }


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
      history: rows of history.csv (``stn.runs.read_history``).
      theta: float32 ``[N, 2, 3]``, or None for a model with no transformer.
      transformed: float32 ``[N, h, w, 1]`` transformer outputs, or None.
      pose: :class:`PoseAlignment`, or None.
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


def _timed(progress: Callable[[str], None] | None, message: str, work: Callable):
    """Runs ``work()``, telling ``progress`` what it does and how long it took."""
    if progress is None:
        return work()
    progress(f"{message} ...")
    began = time.perf_counter()
    out = work()
    progress(f"  done in {time.perf_counter() - began:.1f} s")
    return out


def load_test_split(config: Config, mnist_path=None, cache_dir=None) -> stn_data.Split:
    """The run's test split: a pure function of its protocol and seed.

    Raises:
      stn.mnist.MnistError: MNIST cannot be found or read.
    """
    # One training image: the test warps do not depend on it (stn.data), and
    # warping the other 54,999 would only cost time and memory.
    return stn_data.load_data(config.protocol, config.seed, mnist_path=mnist_path,
                              cache_dir=cache_dir, max_train_examples=1).test


def evaluate_run(run_dir, mnist_path=None, cache_dir=None,
                 progress: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluates the final model of a finished run on its test set.

    Args:
      run_dir: a run directory written by ``train.py`` (see stn.runs).
      mnist_path: MNIST file or folder (``stn.mnist.load_mnist(path=)``).
      cache_dir: MNIST cache (``stn.mnist.load_mnist(cache_dir=)``).
      progress: called with a line of text as each slow step starts and ends.

    Returns:
      :class:`Evaluation`.

    Raises:
      stn.runs.RunError: no such directory, no finished model, another format.
      stn.mnist.MnistError: MNIST cannot be found or read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise runs.RunError(f"{run_dir} is not a directory: pass the --run-dir of a "
                            "train.py run")
    config = runs.read_config(run_dir)
    model = _timed(progress, f"loading {run_dir / runs.MODEL}", lambda: runs.load_model(run_dir))
    test = _timed(progress, f"rebuilding the test set (protocol {config.protocol!r}, "
                  f"seed {config.seed})", lambda: load_test_split(config, mnist_path, cache_dir))
    logits = _timed(progress, f"classifying {len(test):,} test digits",
                    lambda: predict(model, test.images))
    predictions = np.argmax(logits, axis=1)
    outputs = {}
    if find_transformer(model) is not None:
        theta, transformed = _timed(progress, "running the transformer",
                                    lambda: transformer_outputs(model, test.images))
        outputs = {"theta": theta, "transformed": transformed,
                   "pose": pose_alignment(test.warps, theta, test.canvas)}
    return Evaluation(run_dir, config, model, test, logits, predictions,
                      confusion_matrix(test.labels, predictions), runs.read_history(run_dir),
                      **outputs)


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
        "epochs": config.epochs, "epochs_completed": len(ev.history),
        "model_parameters": ev.model.count_params(),
        "test_examples": len(ev.test),
        "accuracy": acc, "error_percent": 100.0 * (1.0 - acc),
        "per_class_recall": per_class_recall(ev.confusion),
        "confusion_matrix": ev.confusion,
        "confusion_matrix_layout": "rows = true class, columns = predicted class",
        "pose": pose,
        "targets": pose_targets(pose) if pose is not None else None,
    })


def write_results(evaluation: Evaluation) -> Path:
    """Writes ``run_dir/results.json`` (atomically) and returns its path."""
    path = evaluation.run_dir / RESULTS
    runs.write_json(path, results(evaluation))
    return path


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def pose_lines(pose: dict) -> list[str]:
    """Residual vs raw std per parameter, and the 2-D shift, of :func:`pose_statistics`."""
    lines = []
    for name, p in (pose["parameters"] or {}).items():
        lines.append(f"  {name:<9}{_fmt(p['residual']['std'], '8.3f')} vs "
                     f"{_fmt(p['raw']['std'], '7.3f')} {p['unit']:<6} ratio "
                     f"{_fmt(p['ratio'], '.3f'):>6}, median residual "
                     f"{_fmt(p['residual']['median'], '+.3f')}")
    if pose["translation"]:
        t = pose["translation"]
        lines.append(f"  2-D shift rms {t['residual_rms']:.2f} px vs {t['raw_rms']:.2f} px")
    return lines


def summary_text(record: dict) -> str:
    """A few lines for the terminal from a :func:`results` dict."""
    lines = [f"{record['run_dir']}: preset {record['preset']}, protocol {record['protocol']}, "
             f"seed {record['seed']}, {record['model_parameters']:,} parameters",
             f"test accuracy {100 * record['accuracy']:.2f}% "
             f"(error {record['error_percent']:.2f}%) on {record['test_examples']:,} digits"]
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
                     f"(value {_fmt(target['value'], '.3f')})")
    return "\n".join(lines)
