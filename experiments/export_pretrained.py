"""Copies a finished run's model into ``pretrained/``, with what it is and how it was made.

    python -m experiments.export_pretrained runs/table1/st-cnn-affine_rts

writes ``pretrained/<run name>.keras`` (the run's ``model.keras``) and
``pretrained/<run name>.json``: the run's config and command, its metrics, and
its test accuracy, which ``tests/test_pretrained.py`` checks the file still
reaches. The run must be evaluated (``results.json``), so the figures and the
numbers beside the model come from the same run.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from experiments import ROOT


def export(run_dir: Path, out_dir: Path) -> Path:
    """Copies ``run_dir``'s model to ``out_dir``; returns the ``.keras`` path."""
    from stn.train import runs

    for name in (runs.MODEL, runs.METRICS, "results.json"):
        if not (run_dir / name).exists():
            raise SystemExit(f"export_pretrained.py: error: {run_dir / name} is missing: "
                             "train and evaluate the run first")
    record = json.loads((run_dir / runs.CONFIG).read_text())
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    results = json.loads((run_dir / "results.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / f"{run_dir.name}.keras"
    shutil.copyfile(run_dir / runs.MODEL, model)
    runs.write_json(out_dir / f"{run_dir.name}.json", {
        "model": model.name, "run": run_dir.name,
        "protocol": record["config"]["protocol"], "seed": record["config"]["seed"],
        "test_accuracy": metrics["test_accuracy"], "error_percent": results["error_percent"],
        "train_seconds": metrics["train_seconds"], "metrics": metrics,
        "pose": results.get("pose"), **record})
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a finished, evaluated run directory")
    p.add_argument("--out", type=Path, default=ROOT / "pretrained",
                   help="destination folder (default: pretrained/)")
    args = p.parse_args(argv)
    model = export(args.run_dir, args.out)
    print(f"{model} ({model.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
