"""3-D MNIST (paper, appendix A.3): a 3-D affine transformer against a baseline without it.

    python -m experiments.volumes                 # both models, seed 0, 3 epochs (~28 + ~3 min here)
    python -m experiments.volumes --models st --epochs 2
    python -m experiments.volumes --screen        # the localization rate screen (validation only)
    python -m experiments.volumes --screen pose-ramp   # the pose curriculum screen (validation only)
    python -m experiments.volumes --screen localization  # conv3d vs projections (validation only)
    python -m experiments.volumes --screen view-prior --iterations 1 --json results/volumes_1pass.json
    python -m experiments.volumes --tilt-of runs/volumes  # how far its ST turns the view (validation)
    python -m experiments.volumes --tiny --run-dir /tmp/v --json /tmp/v.json --figure /tmp/v.png

The protocol (thickness, placement, rotation ranges) is :mod:`stn.data.volumes`,
the two models :mod:`stn.volume_model`. Each model is one *unit*, trained
into ``<run-dir>/<model>/`` (``model.keras``, ``metrics.json``,
``config.json``): a unit whose ``metrics.json`` exists is read back, not
trained again, and an unfinished one resumes after its last finished epoch
(``checkpoint.npz`` and ``progress.json``, saved after every epoch).
Training draws fresh poses every epoch (a pure function of the seed and
the epoch); validation and test poses are fixed by the seed. Writes
``--json`` (both units, the configuration, the machine) and draws
``--figure`` from the finished runs: for a few test digits, the input
volume's three projections and the transformer's output projection. The
record's ``tilt``: how far the ST turns the test plates toward face-on
(:func:`tilt`).
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from experiments import ROOT, cpu_model, relative

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOCALIZERS = ("conv3d", "projections")  # stn.volume_model.LOCALIZERS (not imported: no TF for --help)
HEADS = ("affine", "similarity")  # stn.volume_model.HEADS


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one study trains: the same for both models."""
    seed: int = 0
    # 3 epochs of 600 steps of 64 (the first record was 1 epoch: results/volumes_1epoch.json):
    # the ST model's steps take 0.90 s with 2 iterations (median, 2-core AMD EPYC,
    # TensorFlow's row-gather sampler; 0.21 s with one), 28 min in all, the baseline's 0.07 s.
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    train_size: int | None = 38400  # None: the whole split (55,000)
    validation_size: int | None = None  # None: 5,000
    test_size: int | None = None  # None: MNIST's 10,000 test digits
    localization_lr_scale: float = 1.0  # the localization net's Adam steps, times the rate
    # Training poses grow from upright to the full ranges over this many epochs
    # (stn.data.pipeline.warp_strength; 0: full from the start). Validation and test: full.
    pose_ramp_epochs: float = 0.0
    # The ST model's localization net (stn.volume_model.LOCALIZERS; "projections" chosen on
    # validation over "conv3d", results/screen_volumes_localization.json, whose first record
    # is results/volumes_conv3d.json); the baseline's Dense width follows it, so that the
    # two keep about the same number of parameters.
    localization: str = "projections"
    # The ST model's transformer refined this many times, its net reading the volume warped
    # by the map so far (the inverse compositional STN; stn.volume_model.build_st). 2 chosen
    # on validation over 1 (results/screen_volumes_iterations.json; the one-pass record is
    # results/volumes_1pass.json).
    iterations: int = 2
    # The localization net's last layer (stn.volume_model.HEADS): the 12 affine3d parameters
    # free, or a rotation, an isotropic scale and a shift (7), which can undo a tilted
    # plate's foreshortening only by turning the view.
    head: str = "affine"
    # Weight of the view prior (ours, label-free; stn.volume_model.view_spread): the share of
    # each input's ink spread along the direction the ST's projection looks, added to the
    # loss. 0: off (the paper's, classification alone).
    view_prior: float = 0.0


TINY = Plan(epochs=1, batch_size=8, train_size=32, validation_size=16, test_size=16)
"""The smoke plan the tests run (seconds of CPU)."""

# The screens (--screen NAME), validation only: the ST model at each value of one
# Plan field, the default plan's value read from the study's record. Rule, written
# before their runs (docs/history/volumes.md): the value with the lowest validation
# error after the plan's epochs; within 0.3 point, the earliest value listed (the
# smaller number; the current net). The test split is not evaluated in a screen.
SCREENS = {  # name -> (Plan field, values, record, run-dir prefix)
    "localization-rate": ("localization_lr_scale", (1.0, 3.0, 10.0), "screen_volumes.json",
                          "loc-lr"),
    "pose-ramp": ("pose_ramp_epochs", (0.0, 1.0, 2.0), "screen_volumes_pose_ramp.json",
                  "pose-ramp"),
    "localization": ("localization", LOCALIZERS, "screen_volumes_localization.json", "loc-"),
    "iterations": ("iterations", (1, 2), "screen_volumes_iterations.json", "iter-"),
    "head": ("head", HEADS, "screen_volumes_head.json", "head-"),
    "view-prior": ("view_prior", (0.0, 1.0, 10.0), "screen_volumes_view_prior.json",
                   "view-prior"),
}
SCREEN_MARGIN = 0.3  # points of validation error


def _renderer():
    import tensorflow as tf

    from stn.data import volumes
    return tf.function(volumes.render, jit_compile=True)


def _batches(split, poses, batch_size: int, order=None):
    import numpy as np
    order = np.arange(len(split.labels)) if order is None else order
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield split.digits[index], poses[index], split.labels[index]


def error_rate(model, split, batch_size: int, render) -> float:
    """Test (or validation) error of ``model`` on ``split`` at its fixed poses."""
    import numpy as np
    wrong = 0
    for digits, poses, labels in _batches(split, split.poses, batch_size):
        logits = model.predict_on_batch(render(digits, poses))
        wrong += int(np.sum(np.argmax(logits, axis=-1) != labels))
    return wrong / len(split.labels)


LEGACY_PLAN = {"localization": "conv3d", "iterations": 1}
"""What a record written before a field existed ran with, where the field's default has changed
since (the others ran at today's defaults)."""


def kept_plan(recorded: dict) -> dict:
    """A record's plan as a dict of every field: a field added after it holds the value it ran
    with (:data:`LEGACY_PLAN`, else the default)."""
    from stn.train import runs
    return runs.as_recorded(recorded, LEGACY_PLAN, dataclasses.asdict(Plan()))


ST_ONLY_FIELDS = ("localization_lr_scale", "iterations", "head", "view_prior")
"""Plan fields the baseline does not read: its finished unit serves any value of them."""


def unit_plan(name: str, plan: dict) -> dict:
    """The part of a plan (a dict of every field) that unit ``name`` depends on."""
    return {k: v for k, v in plan.items() if name == "st" or k not in ST_ONLY_FIELDS}


def check_plan(name: str, plan: Plan, run_dir: Path) -> None:
    """Refuses a started or finished unit of another plan in ``run_dir`` (before any data is
    built)."""
    from stn.train import runs

    config = run_dir / "config.json"
    if not config.exists():
        return
    kept = unit_plan(name, kept_plan(json.loads(config.read_text())["plan"]))
    wanted = unit_plan(name, dataclasses.asdict(plan))
    if kept != wanted:
        state = "finished" if (run_dir / "metrics.json").exists() else "unfinished"
        raise runs.RunError(f"{run_dir} holds a {state} {name} unit of another plan "
                            f"({runs.changes_text(kept, wanted)}): pass "
                            "another --run-dir (and --json, --figure) for this plan")


PROGRESS = "progress.json"
"""Beside a unit's checkpoint.npz: the finished epochs' history and step times."""


def train_unit(name: str, splits: dict, plan: Plan, run_dir: Path, test: bool = True) -> dict:
    """Trains model ``name`` into ``run_dir``, or reads back its finished metrics.

    After every epoch the model and optimizer are saved (``checkpoint.npz``,
    stn.train.checkpoints) with the epochs' history (:data:`PROGRESS`), so an
    interrupted unit resumes after its last finished epoch; the process holds
    the run directory's writer lock (stn.train.run_lock) while it trains.
    ``test=False`` (a screen's unit): the test split is not evaluated (``test_error`` None).
    """
    from stn.train import run_lock, runs

    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():  # of this plan: run() checked
        return json.loads(metrics_file.read_text())
    with run_lock.hold(run_dir):
        if metrics_file.exists():  # finished by the lock's last holder meanwhile
            return json.loads(metrics_file.read_text())
        if not (run_dir / "config.json").exists():
            runs.write_json(run_dir / "config.json", {
                "model": name, "plan": dataclasses.asdict(plan),
                "environment": runs.environment()})
        return _train(name, splits, plan, run_dir, test)


def _train(name: str, splits: dict, plan: Plan, run_dir: Path, test: bool) -> dict:
    """:func:`train_unit`'s training, from the unit's last checkpoint if any."""
    import keras
    import numpy as np

    from stn import volume_model
    from stn.data import volumes
    from stn.data.pipeline import warp_strength
    from stn.train import checkpoints, optimizers, runs

    keras.utils.set_random_seed(plan.seed)
    model = volume_model.BUILDERS[name](localization=plan.localization,
                                        **({"iterations": plan.iterations, "head": plan.head,
                                            "view_prior": plan.view_prior}
                                           if name == "st" else {}))
    optimizer = optimizers.localization_scaled(keras.optimizers.Adam, plan.localization_lr_scale,
                                               learning_rate=plan.learning_rate)
    model.compile(optimizer,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    optimizer.build(model.trainable_variables)
    progress_file = run_dir / PROGRESS
    progress = (json.loads(progress_file.read_text()) if progress_file.exists()
                else {"history": [], "seconds": 0.0, "step_seconds": []})
    done = checkpoints.restore_checkpoint(run_dir, model, optimizer,
                                          recorded_epochs=len(progress["history"]))
    if done:
        print(f"{name}: resuming after epoch {done} ({run_dir / runs.CHECKPOINT})", flush=True)
    history = progress["history"][:done]
    step_seconds = progress["step_seconds"][:done]  # one list per epoch
    seconds = progress["seconds"] if done else 0.0
    render, train = _renderer(), splits["train"]
    for epoch in range(done, plan.epochs):
        start = time.perf_counter()
        poses = volumes.epoch_poses(len(train.labels), plan.seed, epoch,
                                    warp_strength(epoch, plan.pose_ramp_epochs))
        order = np.random.default_rng([plan.seed, epoch]).permutation(len(train.labels))
        losses, ticks = [], []
        for digits, batch_poses, labels in _batches(train, poses, plan.batch_size, order):
            tick = time.perf_counter()
            losses.append(float(model.train_on_batch(render(digits, batch_poses), labels)))
            ticks.append(round(time.perf_counter() - tick, 5))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "validation_error": error_rate(model, splits["validation"],
                                                       plan.batch_size, render)})
        seconds += time.perf_counter() - start
        step_seconds.append(ticks)
        checkpoints.save_checkpoint(run_dir, model, optimizer, epoch + 1)
        runs.write_json(progress_file, {"history": history, "seconds": seconds,
                                        "step_seconds": step_seconds})
        print(f"{name}: epoch {epoch + 1}/{plan.epochs}: train loss {history[-1]['train_loss']:.4f}"
              f" | validation error {history[-1]['validation_error']:.4f} | "
              f"{seconds:.0f} s so far", flush=True)
    model.save(run_dir / "model.keras")
    steps = [t for ticks in step_seconds for t in ticks]
    metrics = {"model": name, "parameters": int(model.count_params()), "history": history,
               "train_seconds": seconds, "median_step_seconds": float(np.median(steps)),
               "steps": len(steps), "resumed_after": done or None,
               "test_error": (error_rate(model, splits["test"], plan.batch_size, render)
                              if test else None)}
    runs.write_json(run_dir / "metrics.json", metrics)
    return metrics


def _load_st(run_dir: Path):
    """The study's saved ST model, ``run_dir/st/model.keras``."""
    import keras

    import stn.volume_model  # noqa: F401  (registers DepthProjection for loading)
    return keras.saving.load_model(run_dir / "st" / "model.keras")


TILT_BINS_DEG = (0, 15, 30, 45, 60, 90)
"""Edges of the input tilt's bins for the errors by tilt (:func:`tilt`)."""


def tilt(run_dir: Path, split, batch_size: int, models=("st",)) -> dict:
    """How far the ST model turns the plates toward face-on on ``split``, and where each
    model's errors lie.

    The angle is between each plate's normal and the direction the depth projection looks
    along (stn.data.volumes.plate_tilt_deg), without and with the transformer, in degrees
    (0 face-on, 90 edge-on). ``error_by_bin``: each of ``models`` (its ``model.keras`` in
    ``run_dir/<name>/``) on the digits in each bin of the input's angle (:data:`TILT_BINS_DEG`).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from stn.data import volumes
    loaded = {name: _load_st(run_dir) if name == "st" else
              keras.saving.load_model(run_dir / name / "model.keras") for name in models}
    layer = (loaded["st"] if "st" in loaded else _load_st(run_dir)).get_layer("transformer")
    params, render = tf.function(lambda x: layer.params(x, training=False)), _renderer()
    thetas, wrong = [], {name: [] for name in models}
    for digits, poses, labels in _batches(split, split.poses, batch_size):
        seen = render(digits, poses)
        thetas.append(np.asarray(params(seen)))
        for name, model in loaded.items():
            wrong[name].append(np.argmax(model.predict_on_batch(seen), axis=-1) != labels)
    before = volumes.plate_tilt_deg(split.poses)
    after = volumes.plate_tilt_deg(split.poses, np.concatenate(thetas))
    bins = np.digitize(before, TILT_BINS_DEG[1:-1])
    wrong = {name: np.concatenate(w) for name, w in wrong.items()}
    return {"digits": len(before), "input_mean_deg": round(float(before.mean()), 2),
            "output_mean_deg": round(float(after.mean()), 2),
            "turned_toward_face_on": round(float(np.mean(after < before)), 4),
            "bins_deg": list(TILT_BINS_DEG),
            "digits_by_bin": [int(np.sum(bins == k)) for k in range(len(TILT_BINS_DEG) - 1)],
            "error_by_bin": {name: [round(float(w[bins == k].mean()), 4) if np.any(bins == k)
                                    else None for k in range(len(TILT_BINS_DEG) - 1)]
                             for name, w in wrong.items()}}


def draw(run_dir: Path, split, path: Path, count: int = 4) -> None:
    """The figure: each digit's volume seen along depth, height and width, and the ST's output."""
    import keras
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    model = _load_st(run_dir)
    projection = keras.Model(model.inputs, model.get_layer("projection").output)
    volumes = np.asarray(_renderer()(split.digits[:count], split.poses[:count]))[..., 0]
    seen = np.asarray(projection.predict_on_batch(volumes[..., None]))[..., 0]
    titles = ("input, along depth", "input, along height", "input, along width",
              "transformer output")
    fig, axes = plt.subplots(count, 4, figsize=(8, 2 * count), squeeze=False)
    for row in range(count):
        images = [volumes[row].sum(axis=a) for a in (0, 1, 2)] + [seen[row]]
        for col, image in enumerate(images):
            axes[row, col].imshow(image, cmap="gray")
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(titles[col], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(plan: Plan, run_dir: Path, json_path: Path, figure: Path, models=("st", "baseline"),
        mnist_path: str | None = None) -> dict:
    """Trains (or reads back) each model, writes ``json_path`` and draws ``figure``."""
    from stn.data import mnist, volumes
    from stn.layer.backends import require_tensorflow
    from stn.train import runs
    require_tensorflow("experiments.volumes")
    for name in models:
        check_plan(name, plan, run_dir / name)
    limits = {"train": plan.train_size, "validation": plan.validation_size,
              "test": plan.test_size}
    splits = volumes.make_splits(mnist.load_mnist(path=mnist_path), plan.seed,
                                 {k: v for k, v in limits.items() if v is not None})
    units = {name: train_unit(name, splits, plan, run_dir / name) for name in models}
    record = {"plan": dataclasses.asdict(plan), "cpu": cpu_model(), "cpus": os.cpu_count(),
              "protocol": {"canvas": volumes.CANVAS, "thickness": volumes.THICKNESS,
                           "tilt_deg": volumes.TILT_DEG, "in_plane_deg": volumes.IN_PLANE_DEG,
                           "shift_voxels": volumes.SHIFT_VOXELS},
              "models": units}
    if "st" in units:
        record["tilt"] = tilt(run_dir, splits["test"], plan.batch_size, tuple(units))
    runs.write_json(json_path, record)
    if "st" in units:
        draw(run_dir, splits["test"], figure)
    return record


def choose(rows: list[dict], field: str = "localization_lr_scale"):
    """A screen's rule: the lowest validation error; within :data:`SCREEN_MARGIN`, the
    earliest row (the screens list their values from the smallest, or the current one)."""
    best = min(r["validation_error_percent"] for r in rows)
    return next(r[field] for r in rows if r["validation_error_percent"] <= best + SCREEN_MARGIN)


def _label(value) -> str:
    """A screen value as it names a run dir and prints: ``3`` for 3.0, strings as they are."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def screen(plan: Plan, runs_dir: Path, default_json: Path, out: Path,
           mnist_path: str | None = None, name: str = "localization-rate") -> dict:
    """The screen ``name`` (:data:`SCREENS`): the ST model at each of its values on
    validation only, in ``runs_dir/<prefix><value>/st/`` (resumable), written to ``out``.

    A variant whose plan is the one ``default_json`` records (the study's own ST run) is
    read from that record, not trained again.
    """
    from stn.data import mnist, volumes
    from stn.layer.backends import require_tensorflow
    from stn.train import runs
    require_tensorflow("experiments.volumes --screen")
    field, values, _, slug = SCREENS[name]
    variants = [dataclasses.replace(plan, **{field: v}) for v in values]
    default = json.loads(default_json.read_text()) if default_json.exists() else None
    rows, splits = [], None
    for variant in variants:
        run_dir = runs_dir / f"{slug}{_label(getattr(variant, field))}" / "st"
        if default and kept_plan(default["plan"]) == dataclasses.asdict(variant) \
                and "st" in default["models"]:
            unit, source = default["models"]["st"], relative(default_json)
        else:
            check_plan("st", variant, run_dir)
            if splits is None and not (run_dir / "metrics.json").exists():
                limits = {"train": variant.train_size, "validation": variant.validation_size}
                splits = volumes.make_splits(mnist.load_mnist(path=mnist_path), variant.seed,
                                             {k: v for k, v in limits.items() if v is not None})
            unit = train_unit("st", splits, variant, run_dir, test=False)
            source = relative(run_dir)
        rows.append({field: getattr(variant, field),
                     "validation_error_percent": round(
                         100 * unit["history"][-1]["validation_error"], 2),
                     "train_seconds": round(unit["train_seconds"], 1), "run": source})
        print(json.dumps(rows[-1]), flush=True)
    earliest = (f"the smaller {field}" if isinstance(values[0], (int, float))
                else f"the earlier of {list(values)}")
    record = {"study": f"volumes-{name}", "plan": dataclasses.asdict(plan),
              "rule": f"lowest validation error; within {SCREEN_MARGIN} point, {earliest}",
              "cpu": cpu_model(), "variants": rows,
              "chosen": choose(rows, field)}
    runs.write_json(out, record)
    return record


def print_tilts(plan: Plan, run_dirs: list[Path], mnist_path: str | None = None) -> None:
    """``--tilt-of``: :func:`tilt` of each run dir's ST model on ``plan``'s validation split,
    a JSON line each (the angles, the share turned toward face-on, the errors by angle)."""
    from stn.data import mnist, volumes
    limits = {"train": plan.train_size, "validation": plan.validation_size}
    splits = volumes.make_splits(mnist.load_mnist(path=mnist_path), plan.seed,
                                 {k: v for k, v in limits.items() if v is not None})
    for run_dir in run_dirs:
        view = tilt(run_dir, splits["validation"], plan.batch_size)
        print(json.dumps({"run": relative(run_dir), "split": "validation",
                          **{k: view[k] for k in ("input_mean_deg", "output_mean_deg",
                                                  "turned_toward_face_on", "error_by_bin")}}),
              flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Plan()
    parser.add_argument("--seed", type=int, default=defaults.seed, help="poses and weights")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="passes over the training split, fresh poses each")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="volumes per step")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="Adam's learning rate")
    parser.add_argument("--train-size", type=int, default=defaults.train_size,
                        help="first N training digits (of 55,000)")
    parser.add_argument("--validation-size", type=int, default=None,
                        help="first N validation digits (default: all 5,000)")
    parser.add_argument("--test-size", type=int, default=None,
                        help="first N test digits (default: all 10,000; the poses stay "
                        "those of the full split)")
    parser.add_argument("--models", nargs="+", default=["st", "baseline"],
                        choices=["st", "baseline"], help="units to train or read back")
    parser.add_argument("--tiny", action="store_true",
                        help="a few volumes of each split, one short epoch (a smoke run)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "volumes",
                        help="one subfolder per model; finished ones are read back")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "volumes.json",
                        help="the record of both models")
    parser.add_argument("--figure", type=Path, default=ROOT / "images" / "volumes.png",
                        help="projections of a few test volumes and the transformer's output")
    parser.add_argument("--localization-lr-scale", type=float,
                        default=defaults.localization_lr_scale,
                        help="the localization net's Adam steps at this multiple of the rate")
    parser.add_argument("--pose-ramp-epochs", type=float, default=defaults.pose_ramp_epochs,
                        help="training poses grow from upright to the full ranges over this "
                        "many epochs (0: full from the start)")
    parser.add_argument("--localization", choices=list(LOCALIZERS),
                        default=defaults.localization,
                        help="the ST model's localization net: conv3d (strided 3-D convs) or "
                        "projections (2-D convs on the volume's three axis sums)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help="refine the ST model's map this many times, its net reading the "
                        "volume warped by the map so far (1: the paper's transformer)")
    parser.add_argument("--head", choices=list(HEADS), default=defaults.head,
                        help="the ST localization net's last layer: affine (12 free "
                        "parameters) or similarity (rotation, isotropic scale, shift)")
    parser.add_argument("--view-prior", type=float, default=defaults.view_prior,
                        help="weight of the label-free view prior (ours): the share of each "
                        "input's ink spread along the direction the ST's projection looks, "
                        "added to the loss (0: off, the paper's)")
    parser.add_argument("--screen", nargs="?", const="localization-rate", choices=list(SCREENS),
                        help="train the ST model at each value of one setting on validation "
                        "only and name the rule's choice: " + "; ".join(
                            f"{k}: {f} in {v}, record results/{r}"
                            for k, (f, v, r, _) in SCREENS.items())
                        + " (runs in RUN_DIR/../volumes_screen/; default: localization-rate)")
    parser.add_argument("--tilt-of", type=Path, nargs="+", metavar="RUN_DIR",
                        help="only measure the view of each study or screen run dir's ST "
                        "model (RUN_DIR/st/model.keras) on the validation split (tilt()), "
                        "print it as JSON and exit; its plan's seed and sizes from the flags")
    parser.add_argument("--mnist", default=None, help="a Keras mnist.npz or IDX folder")
    args = parser.parse_args(argv)
    if args.localization_lr_scale <= 0:
        parser.error("--localization-lr-scale must be positive")
    if args.pose_ramp_epochs < 0:
        parser.error("--pose-ramp-epochs must be 0 or more")
    if args.iterations < 1:
        parser.error("--iterations must be 1 or more")
    if not args.view_prior >= 0:
        parser.error(f"--view-prior must be 0 or more, got {args.view_prior}")
    plan = TINY if args.tiny else Plan(args.seed, args.epochs, args.batch_size,
                                       args.learning_rate, args.train_size,
                                       args.validation_size, args.test_size,
                                       args.localization_lr_scale, args.pose_ramp_epochs,
                                       args.localization, args.iterations, args.head,
                                       args.view_prior)
    from stn.train import runs
    if args.tilt_of:
        print_tilts(plan, args.tilt_of, args.mnist)
        return
    if args.screen:
        try:
            record = screen(plan, args.run_dir.parent / "volumes_screen", args.json,
                            args.json.parent / SCREENS[args.screen][2], args.mnist,
                            args.screen)
        except runs.RunError as e:
            parser.exit(2, f"volumes.py: error: {e}\n")
        print(f"chosen: {SCREENS[args.screen][0]} {_label(record['chosen'])}")
        return
    try:
        record = run(plan, args.run_dir, args.json, args.figure, tuple(args.models), args.mnist)
    except runs.RunError as e:
        parser.exit(2, f"volumes.py: error: {e}\n")
    for name, unit in record["models"].items():
        print(f"{name}: test error {unit['test_error']:.4f}, {unit['parameters']} parameters, "
              f"{unit['train_seconds']:.0f} s of training ({unit['steps']} steps, "
              f"median {unit['median_step_seconds']:.3f} s)")


if __name__ == "__main__":
    main()
