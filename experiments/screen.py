"""Screens of Table 1 cells with one setting changed, judged on the validation split only.

    python -m experiments.screen localization-lr   # the localization net's learning-rate scale
    python -m experiments.screen recipe            # regularisation and step size on RTS
    python -m experiments.screen curriculum        # warps growing from none over K epochs
    python -m experiments.screen epochs            # the ST-CNN on RTS over twice the epochs
    python -m experiments.screen upright-default   # the default run, made to straighten
    python -m experiments.screen image-pull        # each digit's own angle pulled upright
    python -m experiments.screen alignment-zoom    # the term's g a rotation and a zoom
    python -m experiments.screen alignment-rate    # the term with a faster localization net
    python -m experiments.screen tc-output         # the transformer's output side on TC
    python -m experiments.screen recipe --list     # the variants and whether they are done

A variant is a Table 1 cell (``experiments/grid.py``: ``cell_config``, the
``table1`` recipe) with some Config fields replaced: first the study's base
(``BASES``: the recipe as it was when the study ran), then the variant's own
changes. It is trained in ``runs/screen/<study>/<variant>/`` (resumable: a
finished variant is read back, not retrained; so is a finished run of a Table
1 grid, ``runs/table1*/<cell>`` as ``experiments.table1`` trains them,
whose config is exactly the variant's); each is a unit of
:mod:`experiments.runner`, its record in its run directory. For each,
``results/screen_<study>.json`` records the validation error and the
rotation-spread ratio of its transformer on the validation split
(``stn.analysis.pose``). These screens choose methods and recipes: the
test split is not evaluated (``train_and_evaluate(test=False)``) unless
``--test`` asks, which adds each variant's ``test_error_percent``. A
variant of ``DEFAULT_RUN`` instead of a Table 1 row is the default run
(``make train``: the ``seed`` protocol, the ``default`` recipe; a
``preset`` field replaces its ``seed`` model).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from experiments import grid, runner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_RUN = "default run"  # not a Table 1 row: make train's run (variant_config)
# Where the recipe is screened over full runs: the two seeded cells, and R.
SCREENED_CELLS = (("ST-CNN Aff", "RTS"), ("CNN", "RTS"), ("ST-CNN Aff", "R"))
# The upright default run (make train's until the fast-default screen).
FAST_BASE = {"preset": "seed-conv", "recipe": "upright"}
STUDIES = {
    # Does a faster localization net undo more of R's rotation?
    "localization-lr": [
        *[("ST-FCN Aff", "R", {"localization_lr_scale": s}) for s in (1.0, 3.0, 10.0, 30.0)],
        *[("ST-CNN Aff", "R", {"epochs": 10, "localization_lr_scale": s})
          for s in (0.1, 1.0, 10.0, 30.0, 100.0)],
        *[("ST-CNN Aff", "R", {"localization_lr_scale": s}) for s in (1.0, 10.0)],
        *[("ST-CNN Aff", "RTS", {"epochs": 10, "localization_lr_scale": s}) for s in (1.0, 10.0)],
    ],
    # Cheap changes to the table1 recipe: 10 epochs of the ST-CNN Aff on RTS,
    # then the promising one over the full 30 epochs on three cells.
    "recipe": [
        *[("ST-CNN Aff", "RTS", {"epochs": 10, **change})
          for change in ({}, {"label_smoothing": 0.1}, {"weight_decay": 0.05},
                         {"learning_rate": 3e-3}, {"batch_size": 128})],
        *[(model, protocol, change) for model, protocol in SCREENED_CELLS
          for change in ({}, {"learning_rate": 3e-3})],
    ],
    # A warp curriculum (--warp-ramp-epochs): does a classifier that first
    # learns upright digits leave the transformer the rotation to undo?
    "curriculum": [
        *[("ST-CNN Aff", "R", {"warp_ramp_epochs": k} if k else {}) for k in (0, 10, 20)],
        *[("ST-CNN Aff", "R", {"warp_ramp_epochs": 10, "localization_lr_scale": s})
          for s in (3.0, 10.0)],
        *[("ST-FCN Aff", "R", {"warp_ramp_epochs": k} if k else {}) for k in (0, 10)],
        *[("ST-CNN Aff", "RTS", {"warp_ramp_epochs": k} if k else {}) for k in (0, 10)],
    ],
    # Is the ST-CNN on RTS held back by the recipe's length? Twice the epochs
    # (18 min, over the 15-minute cell budget): a test of length, not a recipe.
    "epochs": [("ST-CNN Aff", "RTS", {}), ("ST-CNN Aff", "RTS", {"epochs": 90})],
    # The label-free alignment term (stn.train.alignment): its weight and
    # the range of its rotations, against the paper's method (weight 0), over
    # 15 epochs (a third of the recipe) to screen cheaply.
    "alignment": [
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": w}) for w in (1.0, 10.0)],
        ("ST-CNN Aff", "R", {"epochs": 15}),
        ("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "alignment_degrees": 90.0}),
        ("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 0.1}),
        ("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 3.0}),
        # The ablation: each of the two terms alone, at the chosen weight.
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "alignment_terms": t})
          for t in ("consistency", "angle")],
    ],
    # The classifier's regularization (the paper's CNN overfits
    # undistorted digits, floor 0.58%): dropout before the logits, with and
    # without the alignment term, against the 15-epoch rows of "alignment".
    "alignment-dropout": [
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "classifier_dropout": r})
          for r in (0.5, 0.3)],
        ("ST-CNN Aff", "R", {"epochs": 15, "classifier_dropout": 0.5}),
    ],
    # The consistency gap shrinks with the maps: the aligned RTS runs zoom in
    # until digits are cropped (images/alignment_rts.png). The scale-free gap
    # (--alignment-scale-free) against the plain one and the paper's method,
    # over 15 epochs.
    "alignment-scale": [
        ("ST-CNN Aff", "RTS", {"epochs": 15}),
        ("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0}),
        ("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0,
                               "alignment_scale_free": True}),
        ("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0,
                             "alignment_scale_free": True}),
        # The plain gap with a gauge on the batch's common scale
        # (--alignment-scale-gauge), as the mean angle has one.
        *[("ST-CNN Aff", protocol, {"epochs": 15, "alignment_weight": 1.0,
                                    "alignment_scale_gauge": True}) for protocol in ("RTS", "R")],
    ],
    # The aligned classifier memorizes its digits (training accuracy 0.999,
    # like the floor's 1.0): the transformer's output drawn through a mild
    # random affine (output_jitter, stn.layers), with and without the term,
    # against the 15-epoch rows of "alignment" and "alignment-scale".
    "alignment-jitter": [
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": j})
          for j in (0.05, 0.1)],
        ("ST-CNN Aff", "R", {"epochs": 15, "output_jitter": 0.05}),
        *[("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": j})
          for j in (0.05, 0.1)],
    ],
    # The localization net's single pass limits the turn (supervised bound
    # 0.25 on R): the transformer refined by a second pass of its own net
    # (transformer_iterations, an inverse compositional STN), against the
    # 15-epoch rows of "alignment" and "alignment-scale".
    "alignment-iterations": [
        ("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "transformer_iterations": 2}),
        ("ST-CNN Aff", "R", {"epochs": 15, "transformer_iterations": 2}),
        ("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0,
                               "transformer_iterations": 2}),
    ],
    # The two that came closest on R, together: the term with jitter 0.05
    # (0.80%) and with two passes (0.78%).
    "alignment-combined": [
        ("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.05,
                             "transformer_iterations": 2}),

        # On RTS, where more jitter lowered the error (0.05: 0.88%, 0.1: 0.76%):
        # stronger jitter, and jitter 0.1 with two passes (one pass leaves
        # 0.31 of each turn, results/rotation_tilt.json).
        *[("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": j})
          for j in (0.15, 0.2)],
        ("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.1,
                               "transformer_iterations": 2}),
    ],
    # The mean-angle pull fixes only the batch's common rotation; each image's
    # own angle pulled to zero (--alignment-image-pull R) picks every digit's
    # pose, upright. On the best setting so far of each protocol (the term
    # with output jitter), against its row of "alignment-jitter".
    "image-pull": [
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.05,
                               "alignment_image_pull": r}) for r in (0.003, 0.01, 0.03)],
        *[("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.1,
                                 "alignment_image_pull": r}) for r in (0.01, 0.03)],

        # The pull picks MNIST's pose (less of the digit's own slant straightened)
        # but shrinks the turn: decayed to 0 over the epochs, the gap alone
        # restores the turn late.
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.05,
                               "alignment_image_pull": r, "alignment_pull_decay": True})
          for r in (0.03, 0.1)],
        # Decayed over all epochs the pull's shrunk turn is not restored: the
        # cosine schedule's last epochs are too slow. Gone by epoch 5 of 15.
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.05,
                               "alignment_image_pull": r, "alignment_pull_decay": True,
                               "alignment_pull_epochs": 5.0}) for r in (0.1, 0.3)],
    ],
    # RTS's scale is not undone (scale-spread ratio 0.88 with the paper's
    # method, 1.24 with the term and jitter): g made a similarity (rotation
    # and a zoom in [1/1.3, 1.3]), with the plain and the scale-free gap.
    "alignment-zoom": [
        *[("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.1,
                                 "alignment_zoom": 1.3, **free}) for free in
          ({"alignment_scale_free": True}, {})],
    ],
    # The jittered classifier memorizes less (training accuracy 0.997 at epoch
    # 45 on R) and its validation error still falls over the last epochs: the
    # term with jitter 0.05 on R over twice the epochs, within the cell budget.
    "alignment-length": [
        ("ST-CNN Aff", "R", {"epochs": 90, "alignment_weight": 1.0, "output_jitter": 0.05}),
    ],
    # The default run straightened once its localization net learned at 3x the
    # rate (upright-default): the same on R and RTS, against "alignment-jitter".
    "alignment-rate": [
        *[("ST-CNN Aff", "R", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.05,
                               "localization_lr_scale": k}) for k in (3.0, 10.0)],
        ("ST-CNN Aff", "RTS", {"epochs": 15, "alignment_weight": 1.0, "output_jitter": 0.1,
                               "localization_lr_scale": 3.0}),
    ],
    # TC (60x60): the transformer crops and downsamples, as the paper's
    # attention does. Its output side, for every ST cell of the TC column
    # (experiments.grid.TC_TRANSFORMER_OUTPUT), chosen on the ST-CNN Aff cell
    # as the TC column trains it. The rule, written before any run
    # (docs/protocols.md, "TC"): the lowest validation error; within 0.1 point
    # of it, the smaller side.
    "tc-output": [("ST-CNN Aff", "TC", {"transformer_output_size": size}) for size in (28, 40)],
    # The default run made to straighten: the alignment
    # term with the seed's Dense 20 localization net or the paper's conv one
    # (preset seed-conv), and the conv net alone.
    "upright-default": [
        (DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 1.0}),
        (DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 3.0}),
        (DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 2.0}),
        # The term zooms in (median scale 2.0-2.5 above): its scale-free gap.
        *[(DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": w,
                                 "alignment_scale_free": True}) for w in (2.0, 3.0, 10.0)],
        # The scale-free gap does not straighten: the plain gap, whose
        # common zoom a gauge now holds at the identity's.
        *[(DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": w,
                                 "alignment_scale_gauge": True}) for w in (2.0, 3.0)],
        # Equivariance leaves each digit's angle free: a class-congealing
        # term pulls each output toward its class's mean output instead.
        *[(DEFAULT_RUN, "seed", {"preset": "seed-conv", "congeal_weight": w}) for w in (1.0, 5.0)],
        # The gauged term turned nothing back (its mean-angle pull leaves each
        # digit's own angle free): each image's angle pulled to zero too.
        *[(DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 2.0,
                                 "alignment_scale_gauge": True, "alignment_image_pull": r})
          for r in (0.03, 0.1, 0.3, 1.0)],
        # The scale-free gap had the lowest error (0.58%) but turned little
        # (0.869): with the pull, which turned the gauged term (0.995 -> 0.844).
        *[(DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 2.0,
                                 "alignment_scale_free": True, "alignment_image_pull": r})
          for r in (0.1, 0.3, 0.6)],
        # The pull's choice of pose grows with W * R, its shrinking with R alone.
        (DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 3.0,
                               "alignment_scale_free": True, "alignment_image_pull": 0.3}),
        # The plateau at 0.71: on R a faster localization net turned more (0.53 ->
        # 0.41); and a g drawn over +-90 deg asks the maps to agree over wider turns.
        *[(DEFAULT_RUN, "seed", {"preset": "seed-conv", "alignment_weight": 2.0,
                                 "alignment_scale_free": True, "alignment_image_pull": 0.3,
                                 **extra})
          for extra in ({"localization_lr_scale": 3.0}, {"alignment_degrees": 90.0},
                        {"localization_lr_scale": 3.0, "alignment_degrees": 90.0})],
        (DEFAULT_RUN, "seed", {"alignment_weight": 1.0}),
        (DEFAULT_RUN, "seed", {"preset": "seed-conv"}),
        (DEFAULT_RUN, "seed", {}),
    ],
    # A default that trains in minutes on any CPU: the upright default run's
    # method with a cheaper classifier, cheapest first (training FLOPs,
    # stn.flops). The predecessor's text gives its two convolutions strides
    # (2, 2): the dense layer then reads 1,600 features, not 25,600. Seed 0
    # of each; the first to pass the rule's first stage gets seeds 1 and 2
    # (docs/performance.md, "The default's cost").
    "fast-default": [
        *[(DEFAULT_RUN, "seed", {**FAST_BASE, "conv_strides": 2, **change})
          for change in ({"dense_units": 256, "epochs": 10}, {"epochs": 10},
                         {"dense_units": 256}, {})],
        # Added once A-C had missed stage 1, before these ran: a 2x2 max-pool
        # after each convolution instead of the strides (G: Dense 256, F: 1024).
        *[(DEFAULT_RUN, "seed", {**FAST_BASE, "conv_pooling": True, **change})
          for change in ({"dense_units": 256}, {})],
        # E (the transformer's output 20x20, strides 1; 55.4 TFLOP) was not run: F,
        # cheaper, passed both stages first, and the rule cannot pick a dearer one.
        # Stage 2: F, the cheapest to pass stage 1 (A-D and G missed it).
        *[(DEFAULT_RUN, "seed", {**FAST_BASE, "conv_pooling": True, "seed": s}) for s in (1, 2)],
    ],
}
# The studies ran before the table1 recipe's peak rate went from 1e-3 to 3e-3
# (chosen by the "recipe" study) and its epochs from 30 to 45 (chosen on whole
# grids, experiments/compare_grids.py): they keep the rate and epochs they ran with.
BASES = {"localization-lr": {"learning_rate": 1e-3, "epochs": 30},
         "recipe": {"learning_rate": 1e-3, "epochs": 30}}


def variant_name(model: str, protocol: str, fields: dict) -> str:
    """``<cell run name>[_<field><value>...]``, e.g. ``st-cnn-affine_r_epochs10``."""
    changes = "".join(f"_{k}{v}" for k, v in sorted(fields.items()))
    return ("default" if model == DEFAULT_RUN else grid.run_name(model, protocol)) + changes


def variant_config(model: str, protocol: str, fields: dict, precision: str, base: dict):
    """The cell's Config with the study's ``base`` fields, then ``fields``, replaced."""
    if model == DEFAULT_RUN:
        from stn.train.config import make_config

        fields = {"preset": "seed", "recipe": "default", "seed": 0, **base, **fields}
        return make_config(fields.pop("preset"), protocol, {"dtype": precision}, **fields)
    return grid.cell_config(model, protocol, 0, "table1", precision, **{**base, **fields})


def variant_dir(model: str, protocol: str, fields: dict, precision: str, runs_dir: Path,
                base: dict) -> Path:
    """Where the variant is trained: ``runs_dir/<variant>``, unless it is not done there
    and a Table 1 grid (``runs/table1*/``, as ``experiments.table1`` trains them)
    holds a finished run of exactly the variant's config, which is then read back."""
    from stn.train import runs

    own = runs_dir / variant_name(model, protocol, fields)
    if (own / runs.METRICS).exists() or model == DEFAULT_RUN:
        return own
    config = variant_config(model, protocol, fields, precision, base)
    for grid_dir in sorted(Path("runs").glob("table1*")):
        if grid.is_done(config, grid_dir / grid.run_name(model, protocol)):
            return grid_dir / grid.run_name(model, protocol)
    return own


def variant_unit(model: str, protocol: str, fields: dict, precision: str, runs_dir: Path,
                 base: dict) -> runner.Unit:
    """The variant as a unit of the runner: its record stays in its run directory."""
    return runner.Unit(f"{model} on {protocol}, {fields or 'the cell as it is'}",
                       variant_config(model, protocol, fields, precision, base),
                       variant_dir(model, protocol, fields, precision, runs_dir, base))


def _rounded(value, digits: int):
    return None if value is None else round(value, digits)


def run_variant(model: str, protocol: str, fields: dict, precision: str, runs_dir: Path,
                base: dict, mnist_path=None, test: bool = False) -> dict:
    """Trains (or reads back) one variant; its validation error and rotation ratio.

    ``test``: also evaluate its test split (``test_error_percent`` in the row).
    """
    from stn.data import pipeline as stn_data
    from stn.analysis import evaluation
    from stn.train import flops, runs

    unit = variant_unit(model, protocol, fields, precision, runs_dir, base)
    config, run_dir = unit.config, unit.run_dir
    record = runner.run(unit, test=test, mnist_path=mnist_path)
    history = runs.read_history(run_dir)
    ratio = scale = shift = scale_ratio = None
    if config.model.transformer:
        validation = stn_data.load_data(config.protocol, config.seed, mnist_path=mnist_path,
                                        max_train_examples=1,
                                        max_eval_examples=config.max_eval_examples).validation
        pose = evaluation.split_pose(runs.load_model(run_dir), validation)
        parameters = pose.stats["parameters"]
        # A ratio is None where the protocol does not spread that parameter (TC: no rotation).
        ratio = _rounded(parameters["rotation"]["ratio"], 3)
        scale = round(parameters["scale"]["residual"]["median"], 3)
        shift = round(max(parameters[k]["residual"]["std"] for k in ("tx", "ty")), 2)
        scale_ratio = _rounded(parameters["scale"]["ratio"], 3)
    return {"model": model, "protocol": protocol, "fields": fields, "run": str(run_dir),
            "val_error_percent": round(100 * (1 - history[-1]["val_accuracy"]), 2),
            "val_rotation_spread_ratio": ratio,
            # The median scale of what the classifier sees (stn.analysis.pose's residual
            # map): below 1, the transformer zooms in.
            "val_median_scale": scale,
            "val_shift_std_px": shift,  # the larger of the two axes' (stn.analysis.pose)
            # The spread of the digits' scale against the raw warps' (stn.analysis.pose).
            "val_scale_spread_ratio": scale_ratio,
            "train_seconds": round(sum(row["seconds"] for row in history), 1),
            "train_flops": flops.training_flops(config)["run"],
            **({"test_error_percent": runner.error_percent(record.metrics, "test")}
               if test else {})}


def main(argv=None) -> int:
    from stn.train import cli

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=list(STUDIES))
    p.add_argument("--list", action="store_true", help="list the variants and their state")
    p.add_argument("--runs-dir", default="runs/screen", help="default: %(default)s/<study>")
    p.add_argument("--json", help="default: results/screen_<study>.json")
    cli.add_data_flags(p)
    runner.add_test_flag(p)
    args = p.parse_args(argv)
    from stn.train import runs
    from stn.train.precision import resolve_precision

    precision = resolve_precision(args.precision)[0]
    runs_dir = Path(args.runs_dir) / args.study
    variants, base = STUDIES[args.study], BASES.get(args.study, {})
    if args.list:
        for model, protocol, fields in variants:
            unit = variant_unit(model, protocol, fields, precision, runs_dir, base)
            try:
                done = runner.finished(unit)
            except runs.RunError as e:
                print(f"screen.py: error: {e}", file=sys.stderr)
                return 2
            print(f"{'done' if done else 'todo'}  {unit.run_dir}")
        return 0
    rows = []
    for model, protocol, fields in variants:
        try:
            rows.append(run_variant(model, protocol, fields, precision, runs_dir, base,
                                    args.mnist, test=args.test))
        except runs.RunError as e:
            print(f"screen.py: error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(rows[-1]), flush=True)
        # After every variant, so a long study's finished part is on disk.
        runs.write_json(Path(args.json or f"results/screen_{args.study.replace('-', '_')}.json"),
                        {"study": args.study, "precision": precision, "base": base,
                         "variants": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
