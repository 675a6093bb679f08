"""How much of a warp can a localization net see? A supervised upper bound.

A spatial transformer learns theta without labels, from the classifier's
loss alone. Here the same localization architectures are instead trained
*with* the ground-truth answer: theta = F, the forward map of each warp,
which undoes it exactly (stn.data.warps: chain(A, F) is the identity). Whatever
pose spread remains on the validation split is a floor that the
unsupervised transformer with the same localization net should not be
expected to beat.

    python -m experiments.pose_bound                   # seed protocol, the three nets
    python -m experiments.pose_bound --protocol rts --epochs 10

Affine protocols only (seed, r, rts, none): the regression target is the
6-parameter forward map F, which the projective and elastic warps of p and
e do not have.

Prints the pose-alignment statistics of stn.analysis.pose (residual std and
ratio to the raw warps) for each architecture, and writes them as JSON
with --json.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def regress_theta(localization, data, epochs: int, batch_size: int):
    """Trains ``localization`` (input -> 6) to output F; returns validation theta."""
    import keras

    from stn.data import warps

    target = warps.invert(data.train.warps).reshape(-1, 6).astype("float32")  # F
    size = data.train.canvas
    model = keras.Sequential([keras.Input((size, size, 1)), localization])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(data.train.images, target, batch_size=batch_size, epochs=epochs, verbose=2)
    return model.predict(data.validation.images, batch_size=1000, verbose=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", default="seed",
                   help="an affine warp protocol (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=20, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=250, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--json", help="write the statistics to this file")
    args = p.parse_args()

    from stn.data import protocols

    affine = [name for name, proto in protocols.PROTOCOLS.items() if proto.kind == "affine"]
    if args.protocol not in affine:
        p.error(f"--protocol {args.protocol!r}: the bound regresses the 6 affine parameters of "
                f"the true warp, so it needs an affine protocol: one of {', '.join(affine)}")

    import keras

    from stn.data import pipeline as stn_data
    from stn.analysis import pose
    from stn.train import runs
    from stn.layer.layers import conv_localization, dense_localization, fc_localization

    data = stn_data.load_data(args.protocol, args.seed)
    nets = {"seed (Flatten -> Dense 20 tanh)": dense_localization,
            "paper (conv 5x5 x2 -> Dense 50)": conv_localization,
            "st-fcn (Dense 32 x3)": fc_localization}
    report = {}
    for name, make in nets.items():
        keras.utils.set_random_seed(args.seed)
        print(f"\n== {name}, trained on the true warps of '{args.protocol}' ==", flush=True)
        theta = regress_theta(make(), data, args.epochs, args.batch_size)
        stats = pose.pose_alignment(data.validation.warps, theta,
                                    data.validation.canvas).stats
        report[name] = stats
        print("\n".join(pose.pose_lines(stats)))
    if args.json:
        runs.write_json(Path(args.json), {"protocol": args.protocol, "epochs": args.epochs,
                                          "seed": args.seed, "validation": report})


if __name__ == "__main__":
    main()
