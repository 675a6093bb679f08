"""Why is rotation not undone? Per class, how much of each turn the transformer undoes.

A rotation-spread ratio well above 0 (stn.analysis.pose) has two readings: the
transformer may bring each *class* to a pose of its own (consistent but not
upright), or it may turn every digit back only part of the way. This tells
them apart on a trained run's test split: for all digits and for each class,
the circular mean and std of the residual rotation, and the *slope* of the
residual on the raw rotation (least squares): 1 means the transformer
leaves the rotation as it is, 0 that it undoes it whatever its size.

What the slope leaves may still follow the digit itself: the *tilt* of each
canonical (unwarped) digit, the angle of its ink's principal axis from the
vertical (:func:`principal_tilt`). Over the elongated digits, the least
squares coefficient of the residual's deviations (after the slope) on the
tilt is 0 for a transformer blind to the digit's own slant and 1 for one that
stands every digit on its principal axis: the residual the pose metric counts
(it measures against MNIST's own orientation, slant included) though the
digit looks straighter. And the error rate in three equal groups of the
raw turn's size: what the turns left cost the classifier.

    python -m experiments.rotation                    # the Table 1 ST cells on R
    python -m experiments.rotation runs/table1/st-cnn-affine_r --json out.json
    python -m experiments.rotation RUN... --split validation

The runs need their ``model.keras`` (``runs/``, rebuilt by
``experiments/table1.py``); rotation is measured as in ``stn.analysis.pose``.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ELONGATED = 0.5
"""Digits whose ink's eccentricity (:func:`principal_tilt`) exceeds this have a tilt."""
DEFAULT_RUNS = [f"runs/table1/st-{net}-{kind}_r" for net in ("cnn", "fcn")
                for kind in ("affine", "projective", "tps")]


def rotation_stats(raw, residual) -> dict:
    """Circular mean, std and slope of ``residual`` rotations (degrees) on ``raw``.

    Args:
      raw, residual: float ``[n]`` rotations in degrees, finite.

    Returns:
      ``{"n", "mean", "std", "slope"}``: the residual's circular mean and the
      std of its deviations from it (stn.analysis.pose.centre_angles), and the least
      squares slope of those deviations on the raw rotations' deviations.
    """
    import numpy as np

    from stn.analysis import pose

    mean, deviation = pose.centre_angles(residual)
    _, raw_deviation = pose.centre_angles(raw)
    slope = float(np.polyfit(raw_deviation, deviation, 1)[0]) if len(raw) > 1 else float("nan")
    return {"n": int(len(raw)), "mean": mean, "std": float(np.std(deviation)), "slope": slope}


def principal_tilt(digits):
    """Each digit's tilt and elongation, from its ink's second moments.

    Args:
      digits: ``[n, h, w]`` ink intensities (MNIST's canonical digits).

    Returns:
      ``(tilt, eccentricity)``, float ``[n]`` each: the angle (degrees) of
      the principal axis from the vertical (rows grow downward), positive
      when the top leans left (-x), the sign that :mod:`stn.analysis.pose` gives the
      residual rotation of a map standing the digit up; and ``(l1 - l2) / (l1 + l2)``
      of the moments' eigenvalues, 0 for round ink, 1 for a line.
    """
    import numpy as np

    ink = np.asarray(digits, np.float64)
    y, x = np.mgrid[:ink.shape[1], :ink.shape[2]]
    mass = ink.sum((1, 2))
    dx = x - ((ink * x).sum((1, 2)) / mass)[:, None, None]
    dy = y - ((ink * y).sum((1, 2)) / mass)[:, None, None]
    xx, yy, xy = ((ink * m).sum((1, 2)) / mass for m in (dx * dx, dy * dy, dx * dy))
    tilt = 0.5 * np.degrees(np.arctan2(2 * xy, yy - xx))
    return tilt, np.hypot(yy - xx, 2 * xy) / (xx + yy)


def tilt_stats(raw, residual, tilt) -> dict:
    """How much of the digits' own tilt is in the residual rotation (degrees, ``[n]`` each).

    Returns:
      ``{"n", "tilt_std", "left_std", "coefficient", "correlation", "left_std_after"}``:
      the residual's deviations less the slope's share (:func:`rotation_stats`)
      regressed on the tilt's deviations: their std before and after.
    """
    import numpy as np

    from stn.analysis import pose

    _, deviation = pose.centre_angles(residual)
    _, raw_deviation = pose.centre_angles(raw)
    left = deviation - np.polyfit(raw_deviation, deviation, 1)[0] * raw_deviation
    own = tilt - np.mean(tilt)
    coefficient = float(np.polyfit(own, left, 1)[0])
    return {"n": int(len(raw)), "tilt_std": float(np.std(own)), "left_std": float(np.std(left)),
            "coefficient": coefficient, "correlation": float(np.corrcoef(own, left)[0, 1]),
            "left_std_after": float(np.std(left - coefficient * own))}


def errors_by_turn(raw, wrong, bins: int = 3) -> dict:
    """The error rate in each of ``bins`` equal-count groups of the raw turn's size.

    Args:
      raw: float ``[n]``, the warps' rotations (degrees).
      wrong: bool ``[n]``, misclassified examples.

    Returns:
      ``{"edges": [bins + 1] degrees of |raw|, "error_percent": [bins]}``.
    """
    import numpy as np

    size = np.abs(raw)
    edges = np.quantile(size, np.linspace(0.0, 1.0, bins + 1))
    group = np.clip(np.searchsorted(edges, size, side="right") - 1, 0, bins - 1)
    return {"edges": [float(e) for e in edges],
            "error_percent": [float(100 * np.mean(wrong[group == g])) for g in range(bins)]}


def diagnose(run_dir: Path, mnist_path=None, split: str = "test") -> dict:
    """Rotation statistics of one run's transformer on a split, overall and per class."""
    import numpy as np

    from stn.data import pipeline as stn_data
    from stn.analysis import evaluation
    from stn.train import runs

    config = runs.read_config(run_dir)
    if split == "test":
        test = evaluation.load_test_split(config.protocol, config.seed, mnist_path)
    else:
        test = stn_data.load_data(config.protocol, config.seed, mnist_path=mnist_path,
                                  max_train_examples=1).validation
    model = runs.load_model(run_dir)
    alignment = evaluation.split_pose(model, test)
    wrong = evaluation.predict(model, test.images).argmax(-1) != np.asarray(test.labels)
    raw = alignment.raw["rotation"][alignment.valid]
    residual = alignment.residual["rotation"][alignment.valid]
    labels = np.asarray(test.labels)[alignment.valid]
    tilt, eccentricity = principal_tilt(np.asarray(test.canonical)[alignment.valid])
    long = eccentricity > ELONGATED
    return {"run": str(run_dir), "preset": config.model.preset, "protocol": config.protocol,
            "split": split,
            "raw_std": alignment.stats["parameters"]["rotation"]["raw"]["std"],
            "all": rotation_stats(raw, residual),
            "tilt": tilt_stats(raw[long], residual[long], tilt[long]),
            "errors_by_turn": errors_by_turn(alignment.raw["rotation"], wrong),
            "classes": {int(c): rotation_stats(raw[labels == c], residual[labels == c])
                        for c in range(10)}}


def report_lines(report: dict) -> list[str]:
    overall = report["all"]
    lines = [f"{report['preset']} on {report['protocol']} ({report['run']}): raw rotation std "
             f"{report['raw_std']:.1f} deg; residual std {overall['std']:.1f} deg "
             f"(ratio {overall['std'] / report['raw_std']:.2f}), slope {overall['slope']:.2f}, "
             f"mean {overall['mean']:+.1f} deg",
             "  class:  " + " ".join(f"{c:>6d}" for c in range(10)),
             "  mean:   " + " ".join(f"{s['mean']:+6.1f}" for s in report["classes"].values()),
             "  std:    " + " ".join(f"{s['std']:6.1f}" for s in report["classes"].values()),
             "  slope:  " + " ".join(f"{s['slope']:6.2f}" for s in report["classes"].values())]
    if "errors_by_turn" in report:
        turn = report["errors_by_turn"]
        lines.append("  error by the raw turn's size: " + ", ".join(
            f"{lo:.0f}-{hi:.0f} deg {e:.2f}%" for lo, hi, e in
            zip(turn["edges"], turn["edges"][1:], turn["error_percent"])))
    if "tilt" in report:
        t = report["tilt"]
        lines.append(f"  own tilt ({t['n']} elongated digits, std {t['tilt_std']:.1f} deg): "
                     f"coefficient {t['coefficient']:+.2f} (r {t['correlation']:+.2f}); the "
                     f"residual left by the slope, std {t['left_std']:.1f} deg, "
                     f"{t['left_std_after']:.1f} without the tilt's share")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=DEFAULT_RUNS,
                   help="run directories with a model.keras (default: the Table 1 ST cells on R)")
    p.add_argument("--mnist", metavar="PATH", help="MNIST file or folder (see docs/protocols.md)")
    p.add_argument("--json", help="also write the statistics to this file")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="the split measured (default: %(default)s)")
    args = p.parse_args(argv)
    from stn.train import runs

    reports = []
    for run in args.runs:
        try:
            reports.append(diagnose(Path(run), args.mnist, args.split))
        except runs.RunError as e:
            print(f"rotation.py: error: {e}", file=sys.stderr)
            return 2
        print("\n".join(report_lines(reports[-1])), flush=True)
    if args.json:
        runs.write_json(Path(args.json), {"runs": reports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
