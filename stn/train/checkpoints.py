"""``checkpoint.npz``: the model and optimizer state after the last completed epoch.

One array per variable, keyed by its path (:func:`stable_paths`), written
atomically and streamed one variable at a time (stn.train.runs.atomic_file);
restoring matches by key and refuses a checkpoint of another model, or one
ahead of history.csv, saying what to do. The run directory around it:
:mod:`stn.train.runs`.
"""

import itertools
import re
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np

from stn.train.runs import CHECKPOINT, CONFIG, HISTORY, RunError, atomic_file, read_history


def _state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
    """All variables that determine the rest of a run, by a key that names each.

    Keys are ``model/<path>`` and ``optimizer/<path>``, each variable's
    Keras path (``conv1/kernel``, ``adam/conv1_kernel_momentum``) made the
    same in every process (:func:`stable_paths`): restoring matches by key,
    so a model whose variables come in another order still gets its own
    values, and a model of another structure is refused, naming the keys.
    ``model.variables`` includes the dropout layers' seed-generator states,
    so a resumed run draws the same dropout masks as an uninterrupted one.
    Model first, then optimizer, each in its variables' order (the order of
    the index keys of older checkpoints, :func:`_from_index_keys`).
    """
    model_raw = [v.path for v in model.variables]
    model_paths = stable_paths(model_raw)
    # An optimizer's slot is named after its variable's path, with "/" as "_".
    flat = {raw.replace("/", "_"): key.replace("/", "_") for raw, key in model_paths.items()}
    optimizer_raw = [_slot_path(v.path, flat) for v in optimizer.variables]
    optimizer_paths = stable_paths(optimizer_raw)
    state = {}
    for prefix, variables, raw, paths in (
            ("model", model.variables, model_raw, model_paths),
            ("optimizer", optimizer.variables, optimizer_raw, optimizer_paths)):
        for v, path in zip(variables, raw):
            key = f"{prefix}/{paths[path]}"
            if key in state:
                raise ValueError(f"two variables have the path {key!r}: name the layers "
                                 "of the model uniquely")
            state[key] = v
    return state


def stable_paths(paths: list[str]) -> dict[str, str]:
    """``{path: the same path in any process}`` for variable paths.

    Keras names an unnamed layer (or optimizer) after its class and numbers
    it by how many of them the process made before (``dense``, ``dense_1``,
    ...; ``adam_1``), so the same model built after another has other
    paths. Among the children of one parent, the names ``b`` and ``b_<n>``
    are renamed ``b``, ``b_1``, ``b_2``, ... in the order of ``n``, their
    order of creation, which a model's builder fixes.
    """
    parts = {path: path.split("/") for path in paths}
    stable = {path: [] for path in paths}
    for depth in range(max(map(len, parts.values()), default=0)):
        siblings = {}  # (stable parent, base name) -> {(number, name), ...}
        for path, names in parts.items():
            if depth < len(names):
                match = re.fullmatch(r"(.+)_(\d+)", names[depth])
                base, number = (match[1], int(match[2])) if match else (names[depth], 0)
                siblings.setdefault((tuple(stable[path]), base), set()).add(
                    (number, names[depth]))
        renamed = {}
        for (parent, base), members in siblings.items():
            for rank, (_, name) in enumerate(sorted(members)):
                renamed[parent, name] = f"{base}_{rank}" if rank else base
        for path, names in parts.items():
            if depth < len(names):
                stable[path].append(renamed[tuple(stable[path]), names[depth]])
    return {path: "/".join(names) for path, names in stable.items()}


def _slot_path(path: str, flat: dict[str, str]) -> str:
    """An optimizer variable's path with the model path in its name made stable.

    ``adam_1/dense_3_kernel_momentum`` -> ``adam_1/dense_kernel_momentum``
    when ``flat`` maps ``dense_3_kernel`` to ``dense_kernel`` (the longest
    model path that begins the name wins).
    """
    head, _, name = path.rpartition("/")
    for raw in sorted(flat, key=len, reverse=True):
        if name.startswith(raw + "_"):
            return f"{head}/{flat[raw]}{name[len(raw):]}"
    return path


def save_checkpoint(run_dir: Path, model, optimizer, epoch: int) -> None:
    """Saves the state after ``epoch`` completed epochs (atomically).

    The variables are streamed into the temporary file one at a time, so
    saving costs the memory of the largest variable (105 MB for the default
    model's dense kernel), not a second copy of the whole state (420 MB).
    """
    variables = ((name, v.numpy()) for name, v in _state(model, optimizer).items())
    with atomic_file(Path(run_dir) / CHECKPOINT) as f:
        _write_npz(f, itertools.chain([("epoch", np.int64(epoch))], variables))


def _write_npz(file, pairs: Iterable[tuple[str, np.ndarray]]) -> None:
    """Writes ``(name, array)`` pairs as ``np.savez`` does, consuming them one by one.

    The layout is np.savez's (an uncompressed zip of ``<name>.npy`` members),
    so ``np.load`` reads the file; unlike np.savez, an array need not exist
    before the previous one is written.
    """
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in pairs:
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            del array  # before the next one is made: one variable in memory at a time


def restore_checkpoint(run_dir: Path, model, optimizer, recorded_epochs: int | None = None) -> int:
    """Restores the last checkpoint; returns its epoch count (0 if none).

    The optimizer must be built (``optimizer.build(model.trainable_variables)``).
    ``recorded_epochs``: how many epochs' metrics the caller keeps beside the
    checkpoint, if not in history.csv (experiments.volumes keeps its own).

    Raises:
      RunError: the checkpoint is corrupt, does not fit this model, or is
        ahead of history.csv or ``recorded_epochs`` (whose missing rows cannot
        be rebuilt); the model, the optimizer and the files are left unchanged.
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
    epoch = arrays.pop("epoch", None)
    if epoch is None:
        raise RunError(f"{path} is damaged (it holds no epoch); delete it to restart the run "
                       "from scratch")
    if arrays and all(_INDEX_KEY.fullmatch(name) for name in arrays):
        arrays = _from_index_keys(path, arrays, state)
    missing, unexpected = sorted(set(state) - set(arrays)), sorted(set(arrays) - set(state))
    if missing or unexpected:
        differences = [f"{label}: {_some(names)}" for label, names in (
            ("not in the checkpoint", missing), ("not in this model", unexpected)) if names]
        raise RunError(f"{path} does not fit this model ({'; '.join(differences)}): it was "
                       "saved by another model. Use the run's own flags, or a new --run-dir.")
    for name, variable in state.items():
        if arrays[name].shape != tuple(variable.shape):
            raise RunError(f"{path} does not fit this model: {name} has shape "
                           f"{arrays[name].shape}, expected {tuple(variable.shape)}")
    epoch = int(epoch)
    if recorded_epochs is None:
        _check_history_reaches(run_dir, epoch)
    elif recorded_epochs < epoch:
        raise RunError(f"{path} was saved after epoch {epoch} but the metrics of only "
                       f"{recorded_epochs} are kept beside it: delete it to train the run "
                       "again from scratch, or use a new --run-dir.")
    for name, variable in state.items():
        variable.assign(arrays[name])
    return epoch


_INDEX_KEY = re.compile(r"(model|optimizer)/\d+")  # checkpoints before keys were paths


def _from_index_keys(path: Path, arrays: dict, state: dict) -> dict:
    """An older checkpoint's arrays (``model/0``, ``optimizer/0``, ...) keyed by path.

    Such a checkpoint held the i-th variable of the model (or optimizer) as
    ``model/i``. It is read in that order if the counts and every shape
    match; otherwise it is refused, saying what to do.
    """
    by_order = {}
    for prefix in ("model", "optimizer"):
        names = [name for name in state if name.startswith(prefix + "/")]
        by_order.update({name: f"{prefix}/{i}" for i, name in enumerate(names)})
    fits = set(by_order.values()) == set(arrays) and all(
        arrays[old].shape == tuple(state[name].shape) for name, old in by_order.items())
    if not fits:
        raise RunError(
            f"{path} is an older checkpoint, keyed by variable order ({len(arrays)} arrays), "
            f"and this model's {len(state)} variables do not match it in order and shape. "
            f"Resume it with the stn commit that wrote it (git_commit in {CONFIG}), or "
            f"delete {path} to train the run again from scratch.")
    print(f"stn.train.runs: {path} is keyed by variable order (an older stn); every shape matches, "
          "so it is read in order. The next checkpoint is keyed by variable path.",
          file=sys.stderr)
    return {name: arrays[old] for name, old in by_order.items()}


def _some(names: list[str], at_most: int = 4) -> str:
    """``a, b, c, d and 3 more``."""
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


def _check_history_reaches(run_dir: Path, epoch: int) -> None:
    """Raises RunError unless history.csv has the rows of epochs 1..``epoch``.

    A row missing beside a checkpoint (history.csv deleted or replaced by
    hand) cannot be rebuilt: the checkpoint holds weights, not metrics.
    Refusing keeps the run's record complete; the message says what to do.
    """
    epochs = [row["epoch"] for row in read_history(run_dir)[:epoch]]
    if epochs == list(range(1, epoch + 1)):
        return
    history, checkpoint = Path(run_dir) / HISTORY, Path(run_dir) / CHECKPOINT
    raise RunError(
        f"{history} holds {len(epochs)} epochs but {checkpoint} was saved after epoch "
        f"{epoch}: the metrics of the missing epochs are lost, and cannot be rebuilt from the "
        f"checkpoint. Put back the complete {HISTORY}, or delete {checkpoint} to train "
        "this run again from scratch, or use a new --run-dir.")
