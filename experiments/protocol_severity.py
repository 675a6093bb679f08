"""How much of each digit do a protocol's warps push off the canvas?

A warp that moves part of the digit outside the canvas destroys it: no
transformer can bring it back. For each protocol, the test split's
ground-truth warps are followed as maps (``stn.layer.kinds``: each output point
reads the input at the warp's point map): an input pixel that no output
point inside the canvas reads (on a grid 4x finer than the canvas, nearest
pixel) is lost. Reported over the 10,000 test digits: the share of the
digits' ink (canonical pixel values) lost, and the share of digits that
lose more than 5% and 20% of theirs.

With ``--runs``, each trained run's test error is also split by how much of
its ink the digit lost: how much of a model's error the destroyed digits
explain.

    python -m experiments.protocol_severity               # r, rts, p, e
    python -m experiments.protocol_severity p --json out.json
    python -m experiments.protocol_severity p --runs runs/table1/*_p
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FINER = 4  # output points per pixel, per axis


def reached(params, kind: str, canvas: int, chunk: int = 500):
    """bool ``[n, S, S]``: the input pixels that some output point reads.

    Args:
      params: ``[n, P]`` sampling parameters of ``kind`` (output -> input).
      kind: a name in stn.layer.kinds.KINDS.
      canvas: side ``S`` of the square canvas, input and output.
      chunk: warps per batch (bounds the memory of the point maps).
    """
    import numpy as np

    from stn.layer import kinds

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


BINS = ((0.0, 0.05), (0.05, 0.20), (0.20, 1.0))
"""Ink-loss bins ``(low, high]`` (the first includes 0) for the error split of ``--runs``."""


def ink_lost(split):
    """float64 ``[n]``: the share of each digit's ink its warp pushes off the canvas."""
    import numpy as np

    ink = np.asarray(split.canonical_images(), np.float64)[..., 0]  # (n, S, S), padded
    hit = reached(np.asarray(split.warps, np.float64), split.kind, split.canvas)
    return (ink * ~hit).sum(axis=(1, 2)) / ink.sum(axis=(1, 2))


def severity(protocol: str, lost) -> dict:
    """The protocol's row: the ink its test warps push off the canvas (``lost``, from
    :func:`ink_lost`), overall and as the share of digits losing over 5% and 20%."""
    import numpy as np

    return {"protocol": protocol, "digits": int(len(lost)), "ink_lost": float(lost.mean()),
            "digits_losing_over_5%": float(np.mean(lost > 0.05)),
            "digits_losing_over_20%": float(np.mean(lost > 0.20))}


def errors_by_loss(wrong, lost) -> list[dict]:
    """A model's test errors split by the digits' ink loss.

    Args:
      wrong: bool ``[n]``, the misclassified test digits.
      lost: float ``[n]``, their ink lost (:func:`ink_lost`).

    Returns:
      One dict per bin of :data:`BINS`: ``ink_lost`` ``[low, high]``, ``digits``,
      ``errors``, ``error_percent`` within the bin (None if empty), and
      ``share_of_errors`` (None if the model makes none).
    """
    import numpy as np

    wrong, lost = np.asarray(wrong, bool), np.asarray(lost)
    rows = []
    for low, high in BINS:
        inside = (lost <= high) & ((lost > low) if low > 0 else True)
        n, errors = int(inside.sum()), int((wrong & inside).sum())
        rows.append({"ink_lost": [low, high], "digits": n, "errors": errors,
                     "error_percent": round(100 * errors / n, 2) if n else None,
                     "share_of_errors": round(errors / wrong.sum(), 3) if wrong.any() else None})
    return rows


def run_errors(run_dir: Path, lost, split, seed: int) -> dict:
    """The run's test errors on ``split`` (of its protocol and ``seed``), split by ink loss."""
    import numpy as np

    from stn.analysis import evaluation
    from stn.train import runs

    config = runs.read_config(run_dir)
    if (config.protocol, config.seed) != (split.protocol, seed):
        raise runs.RunError(f"{run_dir} is a run on protocol {config.protocol!r} seed "
                            f"{config.seed}, not {split.protocol!r} seed {seed}; give its "
                            "protocol and --seed")
    logits = evaluation.predict(runs.load_model(run_dir), np.asarray(split.images))
    wrong = logits.argmax(-1) != np.asarray(split.labels)
    return {"run": str(run_dir), "error_percent": round(100 * float(wrong.mean()), 2),
            "bins": errors_by_loss(wrong, lost)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("protocols", nargs="*", default=["r", "rts", "p", "e"],
                   help="warp protocols (default: those of Table 1)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--mnist", metavar="PATH", help="MNIST file or folder (see docs/protocols.md)")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN",
                   help="trained run directories, all on the one protocol given (and --seed): "
                        "their test errors split by the digits' ink loss")
    args = p.parse_args(argv)
    from stn.analysis import evaluation
    from stn.data import protocols
    from stn.train import runs

    unknown = [name for name in args.protocols if name not in protocols.PROTOCOLS]
    if unknown:
        p.error(f"unknown protocol {unknown[0]!r}; choose from {', '.join(protocols.PROTOCOLS)}")
    if args.runs and len(args.protocols) != 1:
        p.error("--runs needs exactly one protocol (that of the runs)")
    rows, errors = [], []
    print(f"{'protocol':9s} {'ink lost':>9s} {'digits losing > 5%':>19s} {'> 20%':>7s}")
    for name in args.protocols:
        split = evaluation.load_test_split(name, args.seed, args.mnist)
        lost = ink_lost(split)
        row = severity(name, lost)
        rows.append(row)
        print(f"{name:9s} {100 * row['ink_lost']:8.2f}% {100 * row['digits_losing_over_5%']:18.1f}% "
              f"{100 * row['digits_losing_over_20%']:6.1f}%", flush=True)
    if args.runs:  # one protocol: its split and lost from the loop
        print("\ntest error % by ink lost:   " + "  ".join(
            f"{f'{100 * lo:.0f}-{100 * hi:.0f}%':>13s}" for lo, hi in BINS))
        for run_dir in args.runs:
            try:
                record = run_errors(Path(run_dir), lost, split, args.seed)
            except runs.RunError as e:
                print(f"protocol_severity.py: error: {e}", file=sys.stderr)
                return 2
            errors.append(record)
            cells = "  ".join(
                f"{b['error_percent']:6.2f} ({100 * (b['share_of_errors'] or 0):3.0f}%)"
                for b in record["bins"])
            print(f"{Path(run_dir).name:22s} {record['error_percent']:5.2f}  {cells}", flush=True)
    if args.json:
        out = {"seed": args.seed, "protocols": rows}
        if errors:
            out["runs"] = errors
        runs.write_json(Path(args.json), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
