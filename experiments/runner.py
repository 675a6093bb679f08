"""The one runner of the studies: train a unit, evaluate it, keep its record.

    unit = Unit("CNN on R (seed 0)", config, Path("runs/table1/paper-cnn_r"),
                Path("results/table1/paper-cnn_r"), results=True)
    record = run(unit)               # trains what is missing, else reads the record back
    record.metrics["val_accuracy"]

A unit is one run of ``stn.train.training.train_and_evaluate`` in its
``run_dir`` (resumable: a killed unit goes on from its last checkpoint).
Its record is the files :data:`RECORD` (the config, the history, the final
metrics) and, for a unit with ``results=True``, ``results.json``
(``stn.analysis.evaluation``: the test split in depth, with the pose). When the run
ends they are copied to the unit's ``record_dir`` (under ``results/``, which
is committed, while ``runs/`` is not); a unit without one keeps its record
in its run directory.

**Finished** means the record holds all its files (copied in order, so the
last one marks it): the unit is read back, never trained again. A finished record of another
config is refused (:class:`stn.train.runs.RunError`, naming what differs and
what to do): two configs' records are never mixed.

**The test split.** Screens choose on the validation split: they run with
``test=False``, so the test split is not evaluated and the record's metrics
hold no test numbers (``stn.train.training``). A unit with ``results=True``
needs the test split. A finished record without test numbers, asked for
with ``test=True``, gets them: its run is resumed at its end, which only
evaluates (it is trained again only if its run directory is gone).
"""

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stn.train.config import Config

# A run's files, as stn.train.runs and stn.analysis.evaluation name them (a
# test holds them equal; named here so that the studies' --help needs no
# TensorFlow). In the order they are copied.
RECORD = ("config.json", "history.csv", "metrics.json")
RESULTS = "results.json"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One training run of a study and where its record is kept.

    Attributes:
      name: what the messages call it, e.g. ``"CNN on R (seed 0)"``.
      config: its stn.train.config.Config.
      run_dir: where it is trained (stn.train.runs).
      record_dir: where its record is copied; None keeps it in ``run_dir``.
      results: also evaluate the test split in depth into ``results.json``
        (stn.analysis.evaluation) and keep it; needs ``test=True``.
    """
    name: str
    config: "Config"
    run_dir: Path
    record_dir: Path | None = None
    results: bool = False

    @property
    def record(self) -> Path:
        """The directory that holds the unit's record."""
        return Path(self.record_dir if self.record_dir is not None else self.run_dir)

    @property
    def files(self) -> tuple[str, ...]:
        """The record's files, in the order they are copied."""
        return RECORD + ((RESULTS,) if self.results else ())


@dataclasses.dataclass(frozen=True)
class Record:
    """A unit's record after :func:`run`.

    Attributes:
      dir: the directory that holds it (the unit's ``record``).
      metrics: its metrics.json (``val_accuracy``, ``train_seconds``, ...;
        ``test_accuracy`` only if the test split was evaluated).
      trained: False if the record was finished before and read back.
    """
    dir: Path
    metrics: dict
    trained: bool


def finished(unit: Unit) -> bool:
    """True if the unit's record holds all its files and exactly its config.

    Raises:
      stn.train.runs.RunError: the record is finished but of another config
        (or unreadable); the message says what differs and to remove it.
    """
    from stn.train import runs
    from stn.train.config import config_to_dict

    record = unit.record
    if not all((record / name).exists() for name in unit.files):
        return False
    existing = runs.read_config(record)
    if existing != unit.config:
        diff = runs.changes_text(config_to_dict(existing), config_to_dict(unit.config))
        raise runs.RunError(f"{record} holds a finished run of another config ({diff}): "
                            f"remove it to run {unit.name} again, or choose other output "
                            "directories")
    return True


def read_metrics(directory: Path) -> dict:
    """The metrics.json of a run directory or a record."""
    import json

    return json.loads((Path(directory) / RECORD[-1]).read_text())


def error_percent(metrics: dict, split: str) -> float | None:
    """``100 * (1 - <split>_accuracy)`` to 2 decimals; None if the split was not evaluated."""
    accuracy = metrics.get(f"{split}_accuracy")
    return None if accuracy is None else round(100 * (1 - accuracy), 2)


def run(unit: Unit, *, test: bool = True, mnist_path=None, verbose: int = 1,
        command: list[str] | None = None) -> Record:
    """Trains (or resumes) and evaluates ``unit`` and keeps its record, unless it is finished.

    Args:
      unit: the unit.
      test: evaluate the test split at the end of training (False for
        screens, which choose on the validation split).
      mnist_path: MNIST file or folder (stn.data.mnist.load_mnist).
      verbose: 1: a line when the unit is read back or starts, and training's
        progress; 0: silence.
      command: recorded in the run's config.json; default: this process's.

    Returns:
      The :class:`Record`.

    Raises:
      stn.train.runs.RunError: a record or run directory of another config.
      ValueError: a unit with ``results=True`` and ``test=False``.
    """
    from stn.train import training

    if unit.results and not test:
        raise ValueError(f"{unit.name}: its results.json evaluates the test split; run it "
                         "with test=True")
    done = finished(unit)
    if done:
        metrics = read_metrics(unit.record)
        if not test or "test_accuracy" in metrics:
            if verbose:
                print(f"{unit.name}: done, in {unit.record}")
            return Record(unit.record, metrics, trained=False)
    if verbose:
        why = " (finished without test numbers: its test split)" if done else ""
        print(f"\n=== {unit.name} -> {unit.run_dir}{why}", flush=True)
    training.train_and_evaluate(unit.config, unit.run_dir, mnist_path=mnist_path,
                                verbose=verbose, test=test,
                                command=command or [Path(sys.executable).name, *sys.argv])
    if unit.results:
        from stn.analysis import evaluation

        evaluation.write_results(evaluation.evaluate_run(unit.run_dir, mnist_path=mnist_path))
    keep(unit)
    return Record(unit.record, read_metrics(unit.record), trained=True)


def add_test_flag(parser) -> None:
    """``--test``, for the studies that choose on the validation split (off: test unread)."""
    parser.add_argument("--test", action="store_true",
                        help="also evaluate each run's test split when it ends, and report it "
                        "(default: off: this study chooses on the validation split, and "
                        "leaves the test split unread)")


def keep(unit: Unit) -> None:
    """Copies the record's files from the run directory to ``record_dir``, in order."""
    if unit.record_dir is None:
        return
    record = Path(unit.record_dir)
    record.mkdir(parents=True, exist_ok=True)
    # A copy interrupted before its last file leaves the record unfinished
    # (finished() needs every file): the next run copies it again.
    (record / unit.files[-1]).unlink(missing_ok=True)
    for name in unit.files:
        shutil.copyfile(Path(unit.run_dir) / name, record / name)
