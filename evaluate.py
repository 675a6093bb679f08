"""Evaluates a finished training run: test metrics, pose alignment, figures.

    python evaluate.py --run-dir runs/default --images images   # the README's figures
    python evaluate.py --run-dir runs/seed-original_seed          # figures in RUN/images

Writes RUN/results.json (accuracy, confusion matrix, per-class recall, pose
alignment; definitions in stn/analysis/evaluation.py) and the figures as PNG files.
The test set is rebuilt from the run's protocol and seed, so it is the one
the run was tested on.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

DPI = 120


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True,
                   help="run directory written by train.py (needs config.json and model.keras)")
    p.add_argument("--images", metavar="DIR",
                   help="where the PNG figures go (default: RUN/images)")
    p.add_argument("--mnist", metavar="PATH",
                   help="MNIST as a Keras mnist.npz or a folder of the four IDX files, "
                   "if it cannot be downloaded (see docs/protocols.md)")
    p.add_argument("--data-dir", help="MNIST cache (default: $STN_DATA_DIR or ~/.keras/datasets)")
    return p.parse_args(argv)


def say(message: str) -> None:
    print(message, flush=True)


def save_figures(evaluation, images: Path) -> tuple[list[Path], list[str]]:
    """Renders every figure of the run into ``images`` as PNG.

    Returns:
      The paths written, and one sentence per figure that could not be
      drawn (the others are drawn all the same).
    """
    from stn.viz import figures

    images.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    for name, make in figures.evaluation_figures(evaluation).items():
        began = time.perf_counter()
        path = images / f"{name}.png"
        try:
            make().savefig(path, dpi=DPI)
        except Exception as e:  # a broken model's arrays: draw the other figures
            failed.append(f"could not draw {path.name} ({type(e).__name__}: {e})")
            say(f"  {path}: not drawn ({type(e).__name__}: {e})")
            continue
        say(f"  {path} ({time.perf_counter() - began:.1f} s)")
        written.append(path)
    return written, failed


def check_outputs(run_dir: Path, images: Path) -> None:
    """Raises RunError now if results.json or the figures could not be written at the end."""
    from stn.train.runs import check_writable_dir

    if run_dir.is_dir():  # else evaluate_run says it is not a run directory
        check_writable_dir(run_dir, "--run-dir")  # results.json goes there
        check_writable_dir(images, "--images")


def main(argv=None) -> int:
    args = parse_args(argv)
    from stn.analysis import evaluation
    from stn.data.mnist import MnistError
    from stn.train.runs import RunError

    run_dir = Path(args.run_dir)
    images = Path(args.images) if args.images else run_dir / "images"
    try:
        check_outputs(run_dir, images)
        result = evaluation.evaluate_run(run_dir, mnist_path=args.mnist,
                                         cache_dir=args.data_dir, progress=say)
    except (RunError, MnistError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    results_path = evaluation.write_results(result)
    say(f"writing figures to {images}/ ...")
    failed = save_figures(result, images)[1]
    from stn.viz import animation
    began = time.perf_counter()
    try:
        gif = animation.render_run(run_dir, images)  # None for a model with no transformer
    except RunError as e:  # a damaged trace.npz: the other figures stand
        gif = None
        failed.append(f"could not draw the animation: {e}")
    if gif:
        say(f"  {gif} ({time.perf_counter() - began:.1f} s)")
    if result.pose is None:
        say("  (no transformer in this model: stn_outputs.png and pose_alignment.png skipped)")
    say(evaluation.summary_text(evaluation.results(result)))
    say(f"results: {results_path}")
    return report_problems(evaluation.problems(result), failed, run_dir)


def report_problems(problems: list[str], failed: list[str], run_dir: Path) -> int:
    """Prints what went wrong after the evaluation was written; returns the exit status."""
    if not problems and not failed:
        return 0
    text = "; ".join(problems + failed)
    advice = (f" results.json records it and every figure that could be drawn is written. "
              f"Train a sound model: delete {run_dir / 'model.keras'} and run train.py with "
              "the run's flags to rewrite it from checkpoint.npz, or train a new --run-dir "
              "with a lower --learning-rate" if problems else "")
    print(f"evaluate.py: error: {text}.{advice}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
