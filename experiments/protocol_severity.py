"""How much of each digit do a protocol's warps push off the canvas?

A warp that moves part of the digit outside the canvas destroys it: no
transformer can bring it back. For each protocol, the test split's
ground-truth warps are followed as maps (``stn.kinds``: each output point
reads the input at the warp's point map): an input pixel that no output
point inside the canvas reads (on a grid 4x finer than the canvas, nearest
pixel) is lost. Reported over the 10,000 test digits: the share of the
digits' ink (canonical pixel values) lost, and the share of digits that
lose more than 5% and 20% of theirs.

    python experiments/protocol_severity.py               # r, rts, p, e
    python experiments/protocol_severity.py p --json out.json
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FINER = 4  # output points per pixel, per axis


def reached(params, kind: str, canvas: int, chunk: int = 500):
    """bool ``[n, S, S]``: the input pixels that some output point reads.

    Args:
      params: ``[n, P]`` sampling parameters of ``kind`` (output -> input).
      kind: a name in stn.kinds.KINDS.
      canvas: side ``S`` of the square canvas, input and output.
      chunk: warps per batch (bounds the memory of the point maps).
    """
    import numpy as np

    from stn import kinds

    side = canvas * FINER
    axis = (np.arange(side) + 0.5) * 2.0 / side - 1.0  # fine output points, normalized
    points = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)  # (m, 2) as (x, y)
    hit = np.zeros((len(params), canvas, canvas), bool)
    for start in range(0, len(params), chunk):
        mapped = kinds.get_kind(kind).points(params[start:start + chunk], points)  # (c, m, 2)
        pixel = np.rint((mapped + 1.0) * canvas / 2.0 - 0.5)  # nearest input pixel
        with np.errstate(invalid="ignore"):
            inside = np.all((pixel >= 0) & (pixel < canvas), axis=-1)  # NaN -> False
        example, point = np.nonzero(inside)
        xy = pixel[example, point].astype(np.int64)
        hit[start + example, xy[:, 1], xy[:, 0]] = True
    return hit


def severity(protocol: str, seed: int = 0, mnist_path=None) -> dict:
    """Ink lost off the canvas by the protocol's test warps (module docstring)."""
    import numpy as np

    from stn import data as stn_data

    test = stn_data.load_data(protocol, seed, mnist_path=mnist_path, max_train_examples=1).test
    ink = np.asarray(test.canonical_images(), np.float64)[..., 0]  # (n, S, S), padded
    hit = reached(np.asarray(test.warps, np.float64), test.kind, test.canvas)
    lost = (ink * ~hit).sum(axis=(1, 2)) / ink.sum(axis=(1, 2))
    return {"protocol": protocol, "digits": int(len(lost)), "ink_lost": float(lost.mean()),
            "digits_losing_over_5%": float(np.mean(lost > 0.05)),
            "digits_losing_over_20%": float(np.mean(lost > 0.20))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("protocols", nargs="*", default=["r", "rts", "p", "e"],
                   help="warp protocols (default: those of Table 1)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--mnist", metavar="PATH", help="MNIST file or folder (see README)")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    from stn import protocols, runs

    unknown = [name for name in args.protocols if name not in protocols.PROTOCOLS]
    if unknown:
        p.error(f"unknown protocol {unknown[0]!r}; choose from {', '.join(protocols.PROTOCOLS)}")
    rows = []
    print(f"{'protocol':9s} {'ink lost':>9s} {'digits losing > 5%':>19s} {'> 20%':>7s}")
    for name in args.protocols:
        row = severity(name, args.seed, args.mnist)
        rows.append(row)
        print(f"{name:9s} {100 * row['ink_lost']:8.2f}% {100 * row['digits_losing_over_5%']:18.1f}% "
              f"{100 * row['digits_losing_over_20%']:6.1f}%", flush=True)
    if args.json:
        runs.write_json(Path(args.json), {"seed": args.seed, "protocols": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
