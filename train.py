"""Trains a spatial transformer classifier on warped MNIST.

    python train.py                                  # the default run (make train)
    python train.py --recipe predecessor             # the TF 1.14 predecessor's training
    python train.py --preset st-cnn-tps --protocol e # the paper's ST-CNN TPS on E
    python train.py --dry-run                        # a few steps, a smoke test

Runs resume: the same command continues an interrupted run from its last
completed epoch. See README.md for the presets, protocols and results.
"""

import argparse
import math
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):  # rejects NaN, inf and 1e999 (= inf)
        infinite = " (infinite)" if math.isinf(value) else ""
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}{infinite}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):  # rejects NaN and inf
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    from stn.config import MODEL_PRESETS, PRECISIONS, RECIPES, SCHEDULES
    from stn.protocols import PROTOCOLS

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="seed", choices=list(MODEL_PRESETS),
                   help="model preset (default: %(default)s)")
    p.add_argument("--protocol", default="seed", choices=list(PROTOCOLS),
                   help="warp protocol of the data (default: %(default)s)")
    p.add_argument("--recipe", default="default", choices=list(RECIPES),
                   help="training recipe: a named bundle of the settings below, each of "
                   "which a flag overrides (default: %(default)s). "
                   + "; ".join(f"{name}: {r.description}" for name, r in RECIPES.items()))
    recipe = "(default: the recipe's)"
    p.add_argument("--epochs", type=positive_int, help=recipe)
    p.add_argument("--batch-size", type=positive_int, help=recipe)
    p.add_argument("--learning-rate", type=positive_float,
                   help=f"Adam's learning rate, the peak of the schedule {recipe}")
    p.add_argument("--schedule", choices=list(SCHEDULES),
                   help=f"'constant', or 'cosine': warm-up then cosine decay to 0 {recipe}")
    p.add_argument("--warmup-epochs", type=non_negative_float,
                   help=f"linear warm-up of the cosine schedule, in epochs {recipe}")
    p.add_argument("--weight-decay", type=non_negative_float,
                   help=f"decoupled weight decay (AdamW) {recipe}")
    p.add_argument("--label-smoothing", type=non_negative_float, help=recipe)
    p.add_argument("--localization-lr-scale", type=positive_float, metavar="K",
                   help=f"the localization net's learning rate as a multiple of the rest's "
                   f"{recipe}")
    p.add_argument("--warp-ramp-epochs", type=non_negative_float, metavar="K",
                   help="warp curriculum: the fresh warps grow linearly from none at epoch 0 "
                   f"to the protocol's full strength at epoch K; 0 is off {recipe}")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds Python, NumPy, TensorFlow and the warps (default: %(default)s)")
    p.add_argument("--run-dir", help="where the run is written and resumed from "
                   "(default: runs/<preset>_<protocol>; a temporary one for --dry-run)")
    p.add_argument("--mnist", metavar="PATH",
                   help="MNIST as a Keras mnist.npz or a folder of the four IDX files, "
                   "if it cannot be downloaded (see README)")
    p.add_argument("--data-dir", help="MNIST cache (default: $STN_DATA_DIR or ~/.keras/datasets)")
    p.add_argument("--max-train-examples", type=positive_int,
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--resample-warps", action=argparse.BooleanOptionalAction,
                   help=f"draw fresh warps every epoch (augmentation), or warp each training "
                   f"image once {recipe}")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism: same seed, identical metrics")
    p.add_argument("--strategy", default="default", choices=["default", "mirrored"],
                   help="'mirrored': tf.distribute.MirroredStrategy over all GPUs")
    p.add_argument("--precision", default="auto",
                   choices=list(PRECISIONS),
                   help="classifier arithmetic; 'auto' (default) picks mixed_bfloat16 where "
                   "it is native (AVX512-BF16/AMX CPUs, GPUs of compute capability >= 8.0), "
                   "mixed_float16 on GPUs of compute capability 7.x, else float32, and "
                   "prints why. The transformer always runs in float32")
    p.add_argument("--xla", action="store_true",
                   help="compile the whole train step with XLA (the sampler always is); "
                   "slower on CPU, see README")
    p.add_argument("--dry-run", action="store_true",
                   help="smoke test: 1 epoch of 2 steps on 1,000 images, in a temporary "
                   "run dir (removed at the end) unless --run-dir is given")
    p.add_argument("--keep", action="store_true",
                   help="with --dry-run and no --run-dir: keep the temporary run dir")
    args = p.parse_args(argv)
    if args.seed < 0:
        p.error(f"argument --seed: must be non-negative, got {args.seed}")
    if args.keep and not (args.dry_run and not args.run_dir):
        p.error("argument --keep: only applies to --dry-run without --run-dir "
                "(a --run-dir is always kept)")
    return args


def remove_dry_run(run_dir: str, keep: bool) -> None:
    """Deletes a dry run's temporary run dir (400 MB for the default model) unless kept."""
    if keep:
        print(f"kept the dry run's directory {run_dir}")
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"removed the dry run's directory {run_dir} (--keep keeps it)")


def main(argv=None) -> int:
    args = parse_args(argv)
    from stn.config import make_config
    from stn.mnist import MnistError
    from stn.precision import resolve_precision
    from stn.runs import RunError
    from stn.training import TrainingDiverged, train_and_evaluate

    recipe = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                ("learning_rate", args.learning_rate),
                                ("schedule", args.schedule),
                                ("warmup_epochs", args.warmup_epochs),
                                ("weight_decay", args.weight_decay),
                                ("label_smoothing", args.label_smoothing),
                                ("localization_lr_scale", args.localization_lr_scale),
                                ("warp_ramp_epochs", args.warp_ramp_epochs),
                                ("resample_warps", args.resample_warps)) if v is not None}
    fields = dict(recipe, seed=args.seed, max_train_examples=args.max_train_examples,
                  deterministic=args.deterministic, strategy=args.strategy,
                  jit_compile=args.xla)
    if args.dry_run:
        fields.update(epochs=1, max_train_examples=min(args.max_train_examples or 1000, 1000),
                      max_steps_per_epoch=2)
    temporary = args.dry_run and not args.run_dir
    run_dir = args.run_dir or (tempfile.mkdtemp(prefix="stn-dry-run-") if temporary
                               else f"runs/{args.preset}_{args.protocol}")
    try:
        precision, why = resolve_precision(args.precision)
        print(f"precision: {precision} ({why})", flush=True)
        config = make_config(args.preset, args.protocol, {"dtype": precision},
                             recipe=args.recipe, **fields)
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
