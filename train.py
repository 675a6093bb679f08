"""Trains a spatial transformer classifier on warped MNIST.

    python train.py                                  # the default run
    python train.py --preset paper --protocol rts    # the paper's ST-CNN on RTS
    python train.py --dry-run                        # a few steps, a smoke test

Runs resume: the same command continues an interrupted run from its last
completed epoch. See README.md for the presets, protocols and results.
"""

import argparse
import os
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
    if not value > 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    from stn.config import MODEL_PRESETS
    from stn.warps import PROTOCOLS

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="seed", choices=list(MODEL_PRESETS),
                   help="model preset (default: %(default)s)")
    p.add_argument("--protocol", default="seed", choices=list(PROTOCOLS),
                   help="warp protocol of the data (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=20, help="default: %(default)s")
    p.add_argument("--batch-size", type=positive_int, default=500, help="default: %(default)s")
    p.add_argument("--learning-rate", type=positive_float, default=1e-4,
                   help="Adam learning rate (default: %(default)s)")
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
    p.add_argument("--resample-warps", action="store_true",
                   help="draw fresh warps every epoch (augmentation) instead of fixed ones")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism: same seed, identical metrics")
    p.add_argument("--strategy", default="default", choices=["default", "mirrored"],
                   help="'mirrored': tf.distribute.MirroredStrategy over all GPUs")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16"],
                   help="classifier arithmetic; 'auto' (default) picks mixed_bfloat16 where "
                   "it is native (AVX512-BF16/AMX CPUs, GPUs of compute capability >= 8.0), "
                   "else float32. The transformer always runs in float32")
    p.add_argument("--xla", action="store_true",
                   help="compile the whole train step with XLA (the sampler always is); "
                   "slower on CPU, see README")
    p.add_argument("--dry-run", action="store_true",
                   help="smoke test: 1 epoch of 2 steps on 1,000 images, in a temporary "
                   "run dir unless --run-dir is given")
    args = p.parse_args(argv)
    if args.seed < 0:
        p.error(f"argument --seed: must be non-negative, got {args.seed}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from stn.config import make_config
    from stn.mnist import MnistError
    from stn.runs import RunError
    from stn.training import TrainingDiverged, auto_precision, train_and_evaluate

    fields = dict(epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, seed=args.seed,
                  max_train_examples=args.max_train_examples,
                  resample_warps=args.resample_warps, deterministic=args.deterministic,
                  strategy=args.strategy, jit_compile=args.xla)
    if args.dry_run:
        fields.update(epochs=1, max_train_examples=min(args.max_train_examples or 1000, 1000),
                      max_steps_per_epoch=2)
    run_dir = args.run_dir or (tempfile.mkdtemp(prefix="stn-dry-run-") if args.dry_run
                               else f"runs/{args.preset}_{args.protocol}")
    try:
        precision = auto_precision() if args.precision == "auto" else args.precision
        config = make_config(args.preset, args.protocol, {"dtype": precision}, **fields)
        train_and_evaluate(config, run_dir, mnist_path=args.mnist, cache_dir=args.data_dir,
                           command=[os.path.basename(sys.executable), *sys.argv])
    except (ValueError, RunError, MnistError, TrainingDiverged) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
