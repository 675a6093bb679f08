"""Which of two Table 1 grids is better, judged on the validation split only.

    python -m experiments.compare_grids results results/table1_ep45
    python -m experiments.compare_grids results results/table1_ep45 --json out.json

A and B are results directories of ``experiments.table1`` (each cell's
record in ``DIR/table1/<run>/``). For every run present in both (the 32
cells, the seed runs and the literal P and E cells), this reads the validation error and loss that
training recorded (``metrics.json``) and compares them pair by pair: how
many cells B improves, a two-sided sign test of that count, and the mean
change. One cell's validation error moves by about 0.1-0.2 point from seed
to seed (the table's seed runs), so a recipe change is judged on all the
cells at once, never on one. Test numbers are not read: this chooses
recipes.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from experiments import grid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sign_test(wins: int, losses: int) -> float:
    """Two-sided binomial p-value of ``wins`` against ``losses`` at even odds (ties dropped)."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def config_changes(a: Path, b: Path) -> dict:
    """``{field: [value in a, value in b]}`` for the Config fields that differ."""
    from stn.train import runs
    from stn.train.config import config_to_dict

    old, new = (config_to_dict(runs.read_config(d)) for d in (a, b))
    return {k: list(v) for k, v in runs.config_changes(old, new).items()}


def _validation(kept: Path) -> tuple[float, float]:
    metrics = json.loads((kept / "metrics.json").read_text())
    return 100 * (1 - metrics["val_accuracy"]), metrics["val_loss"]


def compare(a_dir: Path, b_dir: Path) -> dict:
    """The paired validation comparison of grid ``b_dir`` against grid ``a_dir``."""
    cells, changes = [], {}
    cells_of = [(m, p, s, grid.run_name(m, p, s, reading)) for reading in grid.READINGS
                for m, p, s in grid.all_cells(reading=reading)]
    for model, protocol, seed, name in cells_of:
        a, b = a_dir / "table1" / name, b_dir / "table1" / name
        if not ((a / "metrics.json").exists() and (b / "metrics.json").exists()):
            continue
        for field, values in config_changes(a, b).items():
            changes.setdefault(field, values)
        (err_a, loss_a), (err_b, loss_b) = _validation(a), _validation(b)
        cells.append({"model": model, "protocol": protocol, "seed": seed,
                      "val_error_percent": [round(err_a, 2), round(err_b, 2)],
                      "val_loss": [round(loss_a, 5), round(loss_b, 5)]})
    if not cells:
        raise SystemExit(f"compare_grids.py: error: no run is in both {a_dir}/table1 and "
                         f"{b_dir}/table1")
    diff = np.array([c["val_error_percent"][1] - c["val_error_percent"][0] for c in cells])
    diff = np.round(diff, 2)  # errors are multiples of 0.02 point: no float dust in ties
    loss_ratio = np.array([c["val_loss"][1] / c["val_loss"][0] for c in cells])
    wins, losses = int((diff < 0).sum()), int((diff > 0).sum())
    summary = {
        "cells": len(cells), "lower_error": wins, "higher_error": losses,
        "equal_error": len(cells) - wins - losses,
        "sign_test_p": float(f"{sign_test(wins, losses):.3g}"),
        "mean_error_change": round(float(diff.mean()), 3),
        "mean_error_change_sem": round(float(diff.std(ddof=1) / math.sqrt(len(diff))), 3)
        if len(diff) > 1 else None,
        "lower_loss": int((loss_ratio < 1).sum()),
        "loss_ratio_geomean": round(float(np.exp(np.log(loss_ratio).mean())), 4),
    }
    return {"a": str(a_dir), "b": str(b_dir), "changes": changes, "cells": cells,
            "summary": summary}


def report(result: dict) -> str:
    changes = "; ".join(f"{k} {a} -> {b}" for k, (a, b) in result["changes"].items()
                        if not k.startswith("seed"))
    lines = [f"B = {result['b']} against A = {result['a']} ({changes or 'same configs'}); "
             "validation split only",
             f"{'cell':22s} seed  err A   err B   change   loss B/A"]
    for c in result["cells"]:
        (ea, eb), (la, lb) = c["val_error_percent"], c["val_loss"]
        lines.append(f"{c['model'] + ' / ' + c['protocol']:22s} {c['seed']:4d}  {ea:5.2f}   "
                     f"{eb:5.2f}   {eb - ea:+6.2f}   {lb / la:8.3f}")
    s = result["summary"]
    sem = f" +- {s['mean_error_change_sem']:.3f}" if s["mean_error_change_sem"] is not None else ""
    lines.append(f"{s['cells']} runs in both: B's validation error is lower in {s['lower_error']}, "
                 f"higher in {s['higher_error']}, equal in {s['equal_error']} (sign test p = "
                 f"{s['sign_test_p']:.3g}); mean change {s['mean_error_change']:+.3f}{sem} "
                 f"point; validation loss lower in {s['lower_loss']}, geometric mean ratio "
                 f"B/A {s['loss_ratio_geomean']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="results directory of grid A (e.g. results)")
    p.add_argument("b", type=Path, help="results directory of grid B")
    p.add_argument("--json", help="also write the comparison here")
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not (d / "table1").is_dir():
            p.error(f"{d}/table1 is not a directory: give a results directory of "
                    "python -m experiments.table1 (--results-dir)")
    result = compare(args.a, args.b)
    print(report(result))
    if args.json:
        from stn.train import runs

        runs.write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
