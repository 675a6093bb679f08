"""The run directory: what a training run writes, and how it is read back.

A run directory holds::

    config.json      the resolved Config, library versions, git commit
    history.csv      one row per completed epoch (train/validation metrics)
    checkpoint.npz   model + optimizer state after the last completed epoch
    model.keras      the final model (written when training ends)
    metrics.json     final validation and test metrics

Every file is written atomically (a temporary file, then ``os.replace``),
so a run killed at any moment, even by ``kill -9``, leaves each file either
old or new, never half-written; see :func:`stn.training.train_and_evaluate`
for the order that makes resuming exact.
"""

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stn.config import Config, config_from_dict, config_to_dict

FORMAT = 1  # bump when the layout of a run directory changes
CONFIG = "config.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.npz"
MODEL = "model.keras"
METRICS = "metrics.json"
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                  "seconds")


class RunError(RuntimeError):
    """A run directory that cannot be used as asked: the message says why."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` so that readers see all of it or none."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def environment() -> dict:
    """Library versions and the git commit of this code, for config.json."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=here, capture_output=True, text=True,
                                    timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "git_commit": commit, "git_dirty": dirty}


def init_run_dir(run_dir: Path, config: Config, command: list[str] | None = None) -> bool:
    """Creates a run directory for ``config``, or checks an existing one.

    Returns:
      True if the directory already holds this config (the run resumes).

    Raises:
      RunError: the directory holds a different config or another format;
        nothing is changed.
    """
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).exists():
        existing = read_config(run_dir)
        if existing != config:
            old, new = config_to_dict(existing), config_to_dict(config)
            diff = _diff(old, new)
            raise RunError(f"{run_dir} holds a run with a different config ({diff}). "
                           "Use another --run-dir, or the same flags to resume it.")
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} is not empty and has no {CONFIG}: not a run directory. "
                       "Choose an empty or new --run-dir.")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, {"format": FORMAT, "config": config_to_dict(config),
                                  "environment": environment(), "command": command})
    return False


def _diff(old: dict, new: dict, prefix: str = "") -> str:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.append(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return "; ".join(c for c in changes if c)


def read_config(run_dir: Path) -> Config:
    """The Config of a run directory. Raises RunError if missing or unreadable."""
    path = Path(run_dir) / CONFIG
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} not found: is {run_dir} a run directory made by train.py?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is unreadable ({e})") from None
    if record.get("format") != FORMAT:
        raise RunError(f"{path} has run format {record.get('format')!r}, this code reads "
                       f"format {FORMAT}: re-run train.py with this version")
    try:
        return config_from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} holds an invalid config ({e})") from None


# --- history -----------------------------------------------------------------

def read_history(run_dir: Path) -> list[dict]:
    """Rows of history.csv as dicts of floats (``epoch`` as int); [] if none."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [{k: int(r[k]) if k == "epoch" else float(r[k]) for k in HISTORY_FIELDS}
                for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} is malformed ({e}); it is written by train.py") from None


def write_history(run_dir: Path, rows: list[dict]) -> None:
    """Replaces history.csv with ``rows`` (atomically)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(run_dir) / HISTORY, out.getvalue())


# --- checkpoints -------------------------------------------------------------

def _state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
    """All variables that determine the rest of a run, in a fixed order.

    ``model.variables`` includes the dropout layers' seed-generator states,
    so a resumed run draws the same dropout masks as an uninterrupted one.
    """
    return {**{f"model/{i}": v for i, v in enumerate(model.variables)},
            **{f"optimizer/{i}": v for i, v in enumerate(optimizer.variables)}}


def save_checkpoint(run_dir: Path, model, optimizer, epoch: int) -> None:
    """Saves the state after ``epoch`` completed epochs."""
    arrays = {name: np.asarray(v.numpy()) for name, v in _state(model, optimizer).items()}
    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.int64(epoch), **arrays)
    atomic_write(Path(run_dir) / CHECKPOINT, buffer.getvalue())


def restore_checkpoint(run_dir: Path, model, optimizer) -> int:
    """Restores the last checkpoint; returns its epoch count (0 if none).

    The optimizer must be built (``optimizer.build(model.trainable_variables)``).

    Raises:
      RunError: the checkpoint is corrupt or does not fit this model.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return 0
    state = _state(model, optimizer)
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except Exception as e:  # zipfile/pickle/OS errors of a damaged file
        raise RunError(f"{path} is damaged ({type(e).__name__}: {e}); delete it to "
                       "restart the run from scratch") from None
    if set(arrays) - {"epoch"} != set(state):
        raise RunError(f"{path} does not fit this model: it holds {len(arrays) - 1} "
                       f"variables, the model and optimizer have {len(state)}")
    for name, variable in state.items():
        if arrays[name].shape != tuple(variable.shape):
            raise RunError(f"{path} does not fit this model: {name} ({variable.path}) has "
                           f"shape {arrays[name].shape}, expected {tuple(variable.shape)}")
    for name, variable in state.items():
        variable.assign(arrays[name])
    return int(arrays["epoch"])


# --- final model -------------------------------------------------------------

def save_model(run_dir: Path, model: keras.Model) -> None:
    """Writes model.keras atomically (Keras needs the .keras suffix)."""
    path = Path(run_dir) / MODEL
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def load_model(run_dir: Path) -> keras.Model:
    """The final model of a finished run. Raises RunError if there is none."""
    import stn.layers  # noqa: F401  (registers the custom layer for loading)

    path = Path(run_dir) / MODEL
    if not path.exists():
        raise RunError(f"{path} not found: the run in {run_dir} has not finished; "
                       "run train.py with the same flags to complete it")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # Keras raises many types for a bad file
        raise RunError(f"{path} cannot be loaded ({type(e).__name__}: {e})") from None


def write_json(path: Path, obj) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2) + "\n")
