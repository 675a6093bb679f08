"""Trains a spatial transformer classifier on warped MNIST.

    python train.py                                  # the default run (make train)
    python train.py --preset predecessor --recipe predecessor  # the TF 1.14 predecessor's
    python train.py --preset st-cnn-tps --protocol e # the paper's ST-CNN TPS on E
    python train.py --dry-run                        # a few steps, a smoke test

Runs resume: the same command continues an interrupted run from its last
completed epoch. See README.md and docs/training.md for the presets, protocols and results.
"""

import argparse
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

DEFAULT_RUN_DIR = "runs/default"
"""The run dir of the default run (no --preset, --protocol or --recipe given, or the
defaults'): the Makefile's RUN. Any other run: runs/<preset>_<protocol>."""
ALIASES_HELP = ("old names, still accepted: presets {presets}; protocols {protocols}; "
                "recipes {recipes}")
DRY_RUN_EXAMPLES = 1000  # --dry-run's cap on the images trained, validated and tested
# Config fields that have a flag of their name besides the training settings.
OTHER_FLAGS = ("seed", "max_train_examples", "max_eval_examples")
# ModelConfig fields that have a flag, each replacing the preset's value:
# the parts of the alignment methods that live in the model (docs/alignment.md).
MODEL_FLAGS = {
    "output_jitter": (float, "S", "training only: the transformer's output read through a "
                      "random affine near the identity, its entries N(0, S^2) (0: off)"),
    "transformer_iterations": (int, "K", "the transformer refined K - 1 times by its own "
                               "localization net (1: the paper's single pass)"),
}


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a value Config refuses is an argparse error (exit 2) here."""
    from stn.train import cli
    from stn.train import config as C
    from stn.data import protocols

    p = argparse.ArgumentParser(description=__doc__, epilog=ALIASES_HELP.format(
        **{kind: ", ".join(f"{old} = {new}" for old, new in aliases.items())
           for kind, aliases in (("presets", C.PRESET_ALIASES), ("protocols", protocols.ALIASES),
                                 ("recipes", C.RECIPE_ALIASES))}),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # type=: an old name becomes its new one before argparse checks the choices.
    p.add_argument("--preset", default=C.DEFAULT_PRESET, choices=list(C.MODEL_PRESETS),
                   type=C.canonical_preset, metavar="PRESET",
                   help="model preset: " + ", ".join(C.MODEL_PRESETS) + " (default: %(default)s)")
    p.add_argument("--protocol", default=C.DEFAULT_PROTOCOL, choices=list(protocols.PROTOCOLS),
                   type=protocols.canonical_name, metavar="PROTOCOL",
                   help="warp protocol of the data: " + ", ".join(protocols.PROTOCOLS)
                   + " (default: %(default)s)")
    p.add_argument("--recipe", default=C.DEFAULT_RECIPE, choices=list(C.RECIPES),
                   type=C.canonical_recipe,
                   help="training recipe: a named bundle of the training settings, each of "
                   "which a flag overrides (default: %(default)s). "
                   + "; ".join(f"{name}: {r.description}" for name, r in C.RECIPES.items()))
    p.add_argument("--seed", type=int, default=0,
                   help="seeds Python, NumPy, TensorFlow and the warps (default: %(default)s)")
    p.add_argument("--run-dir", help="where the run is written and resumed from (default: "
                   f"{DEFAULT_RUN_DIR} for the default preset, protocol and recipe, else "
                   "runs/<preset>_<protocol>; a temporary one for --dry-run)")
    cli.add_data_flags(p, precision=False)
    p.add_argument("--data-dir", help="MNIST cache (default: $STN_DATA_DIR or ~/.keras/datasets)")
    p.add_argument("--max-train-examples", type=int, metavar="N",
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--max-eval-examples", type=int, metavar="N",
                   help="validate and test on the first N images of each split only "
                   "(quick runs; the numbers are then not the whole split's)")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism: same seed, identical metrics")
    p.add_argument("--strategy", default="default", choices=["default", "mirrored"],
                   help="'mirrored': tf.distribute.MirroredStrategy over all GPUs")
    p.add_argument("--precision", default="auto", choices=list(C.PRECISIONS),
                   help=cli.PRECISION_HELP)
    p.add_argument("--xla", action="store_true",
                   help="compile the whole train step with XLA (the sampler always is); "
                   "slower on CPU, see docs/performance.md")
    p.add_argument("--dry-run", action="store_true",
                   help="smoke test: 1 epoch of 2 steps on 1,000 images, validated and "
                   "tested on 1,000, in a temporary run dir (removed at the end) unless "
                   "--run-dir is given")
    p.add_argument("--keep", action="store_true",
                   help="with --dry-run and no --run-dir: keep the temporary run dir")
    cli.add_settings(p)
    group = p.add_argument_group(f"{cli.RESEARCH_GROUP}: model changes",
                                 "research options of the studies (experiments/screen.py); "
                                 "each flag given replaces the preset's value")
    for name, (kind, metavar, text) in MODEL_FLAGS.items():
        group.add_argument(cli.flag(name), type=kind, metavar=metavar,
                           help=f"{text} (default: the preset's)")
    args = p.parse_args(argv)
    if args.keep and not (args.dry_run and not args.run_dir):
        p.error("argument --keep: only applies to --dry-run without --run-dir "
                "(a --run-dir is always kept)")
    cli.check(p, lambda: make_run_config(args, "float32"), flags=(*C.SETTINGS, *OTHER_FLAGS))
    return args


def default_run_dir(args: argparse.Namespace) -> str:
    """Where a run without --run-dir goes: :data:`DEFAULT_RUN_DIR` for the default
    preset, protocol and recipe, else ``runs/<preset>_<protocol>`` (their current names)."""
    from stn.train.config import DEFAULT_PRESET, DEFAULT_PROTOCOL, DEFAULT_RECIPE

    if (args.preset, args.protocol, args.recipe) == (DEFAULT_PRESET, DEFAULT_PROTOCOL,
                                                     DEFAULT_RECIPE):
        return DEFAULT_RUN_DIR
    return f"runs/{args.preset}_{args.protocol}"


def make_run_config(args: argparse.Namespace, precision: str):
    """The run's Config: the recipe, with the flags given, the classifier in ``precision``."""
    from stn.train import cli
    from stn.train.config import make_config

    fields = dict(cli.settings(args), seed=args.seed, max_train_examples=args.max_train_examples,
                  max_eval_examples=args.max_eval_examples, deterministic=args.deterministic,
                  strategy=args.strategy, jit_compile=args.xla)
    if args.dry_run:
        fields.update(epochs=1, max_steps_per_epoch=2,
                      **{name: DRY_RUN_EXAMPLES if fields[name] is None
                         else min(fields[name], DRY_RUN_EXAMPLES)
                         for name in ("max_train_examples", "max_eval_examples")})
    model = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    return make_config(args.preset, args.protocol, {"dtype": precision, **model},
                       recipe=args.recipe, **fields)


def remove_dry_run(run_dir: str, keep: bool) -> None:
    """Deletes a dry run's temporary run dir (400 MB for the default model) unless kept."""
    if keep:
        print(f"kept the dry run's directory {run_dir}")
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"removed the dry run's directory {run_dir} (--keep keeps it)")


def main(argv=None) -> int:
    args = parse_args(argv)
    from stn.data.mnist import MnistError
    from stn.train.precision import resolve_precision
    from stn.train.runs import RunError
    from stn.train.training import TrainingDiverged, train_and_evaluate

    temporary = args.dry_run and not args.run_dir
    run_dir = args.run_dir or (tempfile.mkdtemp(prefix="stn-dry-run-") if temporary
                               else default_run_dir(args))
    try:
        precision, why = resolve_precision(args.precision)
        print(f"precision: {precision} ({why})", flush=True)
        config = make_run_config(args, precision)
        train_and_evaluate(config, run_dir, mnist_path=args.mnist, cache_dir=args.data_dir,
                           command=[os.path.basename(sys.executable), *sys.argv])
    except (ValueError, RunError, MnistError, TrainingDiverged) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    finally:  # also on KeyboardInterrupt
        if temporary:
            remove_dry_run(run_dir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
