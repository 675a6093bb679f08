"""What a perfect transformer would hand the classifier: each warp undone exactly.

    python -m experiments.perfect_transformer                  # R and RTS, validation
    python -m experiments.perfect_transformer --protocols r --json out.json

Each digit of an affine protocol's split is read back through the exact
inverse of its ground-truth warp onto the classifier's 28 x 28 canvas, with
the sampler the transformers use (:func:`stn.layer.kinds.warp`): the digit is
resampled twice, as a transformer's output is. A classifier trained on
undistorted digits (the jittered floor, ``python -m experiments.alignment
--only floor-jitter``) then reads it, and the same digits undistorted. The
two errors tell what the double resampling costs; against an ST-CNN's error,
the rest is what its transformer's imperfect alignment costs. A diagnostic:
it reads the ground-truth warps, which training never does.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLOOR_RUN = "runs/alignment/st-cnn-affine_none-28_jitter"
SIZE = 28  # the classifier's canvas: MNIST's own


def perfect_params(warps, canvas: int, size: int = SIZE):
    """``[N, 6]``: the maps that read a ``canvas`` image back onto the digit's ``size`` canvas.

    A warped image is ``W(q) = C(A q)`` for the digit padded to ``canvas``,
    ``C``, and its warp ``A`` (output to input, normalized units). The
    digit's own ``size x size`` canvas is the central ``size / canvas`` of
    ``C``'s, so output point ``p`` must read ``W`` at ``A^-1 (s p)``, ``s =
    size / canvas``.

    Args:
      warps: float ``[N, 6]`` affine warps (row-major 2 x 3).
      canvas: the warped images' side.
      size: the output's side.
    """
    import numpy as np

    forward = np.concatenate([np.reshape(warps, (-1, 2, 3)),
                              np.tile([[[0.0, 0.0, 1.0]]], (len(warps), 1, 1))], axis=1)
    shrink = np.diag([size / canvas, size / canvas, 1.0])
    return (np.linalg.inv(forward) @ shrink)[:, :2, :].reshape(-1, 6).astype(np.float32)


def undo(split, size: int = SIZE, chunk: int = 1000):
    """The split's images read through :func:`perfect_params`: float32 ``[N, size, size, 1]``."""
    import numpy as np
    import tensorflow as tf

    from stn.layer import kinds

    params = perfect_params(split.warps, split.images.shape[1], size)
    return np.concatenate([
        kinds.warp(tf.constant(split.images[i:i + chunk]), tf.constant(params[i:i + chunk]),
                   out_size=(size, size)).numpy() for i in range(0, len(split), chunk)])


def measure(model, protocol: str, split_name: str, mnist_path=None) -> dict:
    """The floor classifier's (``model``) error on one protocol's digits, undone and
    undistorted."""
    import numpy as np

    from stn.data import pipeline as stn_data
    from stn.analysis import evaluation
    from stn.data import protocols

    if protocols.PROTOCOLS[protocol].kind != "affine":
        raise ValueError(f"protocol {protocol!r} is not affine: its warps have no exact inverse "
                         "here")
    if split_name == "test":
        split = evaluation.load_test_split(protocol, 0, mnist_path)
    else:
        split = stn_data.load_data(protocol, 0, mnist_path=mnist_path,
                                   max_train_examples=1).validation
    clean = np.asarray(split.canonical, np.float32)[..., None] / 255.0

    def error(images):
        wrong = evaluation.predict(model, images).argmax(-1) != np.asarray(split.labels)
        return round(100 * float(np.mean(wrong)), 2)

    return {"protocol": protocol, "split": split_name, "n": len(split),
            "undistorted_error_percent": error(clean), "undone_error_percent": error(undo(split))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocols", nargs="+", default=["r", "rts"],
                   help="affine protocols (default: %(default)s)")
    p.add_argument("--floor-run", default=FLOOR_RUN,
                   help="a run of a classifier on undistorted 28 x 28 digits (default: %(default)s)")
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--mnist", metavar="PATH", help="MNIST file or folder (see docs/protocols.md)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    from stn.train import runs

    rows = []
    try:
        model = runs.load_model(Path(args.floor_run))
        for protocol in args.protocols:
            rows.append(measure(model, protocol, args.split, args.mnist))
            print(rows[-1], flush=True)
    except (runs.RunError, ValueError, KeyError) as e:
        print(f"perfect_transformer.py: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        runs.write_json(Path(args.json), {"floor_run": args.floor_run, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
