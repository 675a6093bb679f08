"""The run directory: what a training run writes, and how it is read back.

A run directory holds::

    config.json      the resolved Config, library versions, git commit
    history.csv      one row per completed epoch (train/validation metrics)
    checkpoint.npz   model + optimizer state after the last completed epoch (stn.train.checkpoints)
    model.keras      the final model (written when training ends)
    metrics.json     final validation and test metrics

Every file is written atomically (a temporary file, then ``os.replace``),
so a run killed at any moment, even by ``kill -9``, leaves each file either
old or new, never half-written; see :func:`stn.train.training.train_and_evaluate`
for the order that makes resuming exact. Only such a kill leaves the
temporary file behind (``.<name>.<random>.tmp``, ``.model.tmp.keras``);
:func:`init_run_dir` removes them when the run resumes.
"""

import contextlib
import csv
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stn.train.config import Config, config_from_dict, config_to_dict

FORMAT = 1  # bump when the layout of a run directory changes
CONFIG = "config.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.npz"
MODEL = "model.keras"
METRICS = "metrics.json"
LOCK = ".writer.lock"  # held by the process training the run (stn.train.run_lock)
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                  "seconds")
# Columns only some runs write: the alignment term's label-free gap (stn.train.alignment).
OPTIONAL_HISTORY_FIELDS = ("train_consistency_px",)
TMP_SUFFIX = ".tmp"
MODEL_TMP = ".model.tmp.keras"  # Keras insists on the .keras suffix
# What an interrupted write leaves: mkstemp's ".<name>." + 8 random characters
# + ".tmp" (atomic_write), or save_model's temporary model.
_STALE = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TMP_SUFFIX) + "|" + re.escape(MODEL_TMP))


class RunError(RuntimeError):
    """A run directory that cannot be used as asked: the message says why."""


@contextlib.contextmanager
def atomic_file(path: Path):
    """A binary file open for writing that replaces ``path`` when the block ends.

    The data goes to ``.<name>.<random>.tmp`` beside ``path``, renamed over
    it (``os.replace``, atomic) only if the block completes: readers see the
    old file or the new one, never part of one. An exception, KeyboardInterrupt
    included, removes the temporary file; only ``kill -9`` (or a crash) can
    leave it, and :func:`init_run_dir` removes it on resume.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        # mkstemp makes the file private (0600); a run's files are ordinary
        # files, readable as the umask allows, like model.keras.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` so that readers see all of it or none."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def check_writable_dir(path: Path, flag: str = "--run-dir") -> None:
    """Raises RunError unless ``path`` is, or can be made, a directory we can write.

    Called before any work, so that a bad output path costs a second, not a
    training run or an evaluation. ``flag`` names the option in the message.
    """
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent  # the nearest ancestor that exists
    if not existing.is_dir():
        made = "" if existing == path else f", so {path} cannot be created"
        raise RunError(f"{existing} is a file, not a directory{made}: choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == path else f", so {path} cannot be created in it"
        raise RunError(f"{existing} is not writable{made}: choose another {flag}, or "
                       "make it writable")


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Deletes the temporary files interrupted writes left in ``run_dir``; returns their names.

    Only a ``kill -9`` or a crash during :func:`atomic_file` or
    :func:`save_model` leaves one; the complete file it was replacing is intact.
    """
    stale = sorted(p.name for p in Path(run_dir).iterdir() if _STALE.fullmatch(p.name))
    for name in stale:
        (Path(run_dir) / name).unlink(missing_ok=True)
    if stale:
        files = "file" if len(stale) == 1 else "files"
        print(f"stn.train.runs: removed {len(stale)} temporary {files} left by an interrupted "
              f"write in {run_dir}: {', '.join(stale)}", file=sys.stderr)
    return stale


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

    Temporary files left by a write that ``kill -9`` interrupted are removed
    (and counted on stderr) before the run goes on.

    Returns:
      True if the directory already holds this config (the run resumes).

    Raises:
      RunError: the path is a file or not writable, or the directory holds
        a different config or another format; nothing is changed.
    """
    run_dir = Path(run_dir)
    check_writable_dir(run_dir)
    if (run_dir / CONFIG).exists():
        existing = read_config(run_dir)
        if existing != config:
            diff = changes_text(config_to_dict(existing), config_to_dict(config))
            raise RunError(f"{run_dir} holds a run with a different config ({diff}). "
                           "Use another --run-dir, or the same flags to resume it.")
        remove_stale_temporaries(run_dir)
        return True
    if run_dir.exists():
        # A kill during the very first write of config.json leaves only its temporary.
        if any(not _STALE.fullmatch(p.name) and p.name != LOCK for p in run_dir.iterdir()):
            raise RunError(f"{run_dir} is not empty and has no {CONFIG}: not a run directory. "
                           "Choose an empty or new --run-dir.")
        remove_stale_temporaries(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, {"format": FORMAT, "config": config_to_dict(config),
                                  "environment": environment(), "command": command})
    return False


def as_recorded(recorded: dict, legacy: dict, defaults: dict | None = None) -> dict:
    """The settings a record ran with, every field filled in.

    A record written before a field existed lacks it: it ran with the value in
    ``legacy`` (where the field's default has changed since), else with the
    field's default (``defaults``, for settings whose other fields were
    added at their default). What the record holds always wins.
    """
    return {**(defaults or {}), **legacy, **recorded}


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``{"model.kind": (old value, new value), ...}`` for the leaves that differ.

    Nested dicts (as ``config_to_dict`` writes them) are walked; keys are
    dotted paths, sorted; a key missing on one side has the value None there.
    """
    flat_old, flat_new = _flatten(old), _flatten(new)
    return {key: (flat_old.get(key), flat_new.get(key))
            for key in sorted(set(flat_old) | set(flat_new))
            if flat_old.get(key) != flat_new.get(key)}


def changes_text(old: dict, new: dict) -> str:
    """:func:`config_changes` for a message: ``"model.kind: 'affine' there, 'tps' now; ..."``."""
    return "; ".join(f"{key}: {was!r} there, {now!r} now"
                     for key, (was, now) in config_changes(old, new).items())


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
    optional = [k for k in OPTIONAL_HISTORY_FIELDS if rows and k in rows[0]]
    try:
        return [{k: int(r[k]) if k == "epoch" else float(r[k])
                 for k in (*HISTORY_FIELDS, *optional)} for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} is malformed ({e}); it is written by train.py") from None


def write_history(run_dir: Path, rows: list[dict]) -> None:
    """Replaces history.csv with ``rows`` (atomically)."""
    out = io.StringIO()
    optional = [k for k in OPTIONAL_HISTORY_FIELDS if rows and k in rows[0]]
    writer = csv.DictWriter(out, fieldnames=(*HISTORY_FIELDS, *optional), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(run_dir) / HISTORY, out.getvalue())


# --- final model -------------------------------------------------------------

def save_model(run_dir: Path, model: keras.Model) -> None:
    """Writes model.keras atomically (Keras needs the .keras suffix)."""
    path = Path(run_dir) / MODEL
    tmp = path.with_name(MODEL_TMP)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_model(run_dir: Path) -> keras.Model:
    """The final model of a finished run. Raises RunError if there is none.

    ``import stn`` has registered the package's layers, so Keras finds them.
    """
    path = Path(run_dir) / MODEL
    if not path.exists():
        raise RunError(f"{path} not found: the run in {run_dir} has not finished; "
                       "run train.py with the same flags to complete it")
    rebuild = (f"Delete {path} and run train.py again with the run's flags: a finished run "
               f"rewrites {MODEL} from {CHECKPOINT} without training")
    # Keras reports a file that is not a zip as "File not found"; say what it is.
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path} is damaged or not a Keras archive (not a zip file). {rebuild}.")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # Keras raises many types for a bad file
        if "safe_mode" in str(e):  # a Lambda layer: Python code that would run on load
            raise RunError(
                f"{path} was refused by Keras's safe mode: it holds a Lambda layer, Python "
                "code that loading would run (stn's models never have one). Only for a file "
                "you trust, load it yourself with keras.saving.load_model(path, "
                f"safe_mode=False); otherwise {rebuild[0].lower()}{rebuild[1:]}.") from None
        raise RunError(f"{path} is damaged or not a Keras archive ({type(e).__name__}: {e}). "
                       f"{rebuild}.") from None


def write_json(path: Path, obj) -> None:
    """Writes ``obj`` as indented, strict JSON (no NaN or Infinity), atomically.

    Raises:
      ValueError: ``obj`` holds a NaN or infinite float (named in the
        message); nothing is written.
    """
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except ValueError:
        bad = ", ".join(f"{key} is {value}" for key, value in _non_finite(obj))
        raise ValueError(f"cannot write {path}: {bad}, and strict JSON has no NaN or "
                         "Infinity") from None
    atomic_write(path, text + "\n")


def _non_finite(obj, prefix: str = ""):
    """``(key path, value)`` of every NaN or infinite float in a JSON-ready ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _non_finite(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _non_finite(value, f"{prefix}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        yield prefix, obj
