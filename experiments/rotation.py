"""Why is rotation not undone? Per class, how much of each turn the transformer undoes.

A rotation-spread ratio well above 0 (stn.pose) has two readings: the
transformer may bring each *class* to a pose of its own (consistent but not
upright), or it may turn every digit back only part of the way. This tells
them apart on a trained run's test split: for all digits and for each class,
the circular mean and std of the residual rotation, and the *slope* of the
residual on the raw rotation (least squares): 1 means the transformer
leaves the rotation as it is, 0 that it undoes it whatever its size.

    python -m experiments.rotation                    # the Table 1 ST cells on R
    python -m experiments.rotation runs/table1/st-cnn-affine_r --json out.json

The runs need their ``model.keras`` (``runs/``, rebuilt by
``experiments/table1.py``); rotation is measured as in ``stn.pose``.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_RUNS = [f"runs/table1/st-{net}-{kind}_r" for net in ("cnn", "fcn")
                for kind in ("affine", "projective", "tps")]


def rotation_stats(raw, residual) -> dict:
    """Circular mean, std and slope of ``residual`` rotations (degrees) on ``raw``.

    Args:
      raw, residual: float ``[n]`` rotations in degrees, finite.

    Returns:
      ``{"n", "mean", "std", "slope"}``: the residual's circular mean and the
      std of its deviations from it (stn.pose.centre_angles), and the least
      squares slope of those deviations on the raw rotations' deviations.
    """
    import numpy as np

    from stn import pose

    mean, deviation = pose.centre_angles(residual)
    _, raw_deviation = pose.centre_angles(raw)
    slope = float(np.polyfit(raw_deviation, deviation, 1)[0]) if len(raw) > 1 else float("nan")
    return {"n": int(len(raw)), "mean": mean, "std": float(np.std(deviation)), "slope": slope}


def diagnose(run_dir: Path, mnist_path=None) -> dict:
    """Rotation statistics of one run's transformer on its test split, overall and per class."""
    import numpy as np

    from stn import evaluation, runs

    config = runs.read_config(run_dir)
    test = evaluation.load_test_split(config.protocol, config.seed, mnist_path)
    alignment = evaluation.split_pose(runs.load_model(run_dir), test)
    raw = alignment.raw["rotation"][alignment.valid]
    residual = alignment.residual["rotation"][alignment.valid]
    labels = np.asarray(test.labels)[alignment.valid]
    return {"run": str(run_dir), "preset": config.model.preset, "protocol": config.protocol,
            "raw_std": alignment.stats["parameters"]["rotation"]["raw"]["std"],
            "all": rotation_stats(raw, residual),
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
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=DEFAULT_RUNS,
                   help="run directories with a model.keras (default: the Table 1 ST cells on R)")
    p.add_argument("--mnist", metavar="PATH", help="MNIST file or folder (see docs/protocols.md)")
    p.add_argument("--json", help="also write the statistics to this file")
    args = p.parse_args(argv)
    from stn import runs

    reports = []
    for run in args.runs:
        try:
            reports.append(diagnose(Path(run), args.mnist))
        except runs.RunError as e:
            print(f"rotation.py: error: {e}", file=sys.stderr)
            return 2
        print("\n".join(report_lines(reports[-1])), flush=True)
    if args.json:
        runs.write_json(Path(args.json), {"runs": reports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
