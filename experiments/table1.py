"""The paper's Table 1 (distorted MNIST, % test error), rebuilt by one command.

    python -m experiments.table1                      # train what is missing, write the table
    python -m experiments.table1 --cells "CNN/R" "ST-CNN Aff/R"
    python -m experiments.table1 --table-only         # rewrite results/table1.{json,md}
    python -m experiments.table1 --list               # the cells and whether they are done

Each cell (a model of the table on a distortion) is a unit of
:mod:`experiments.runner`: trained in ``runs/table1/<run>/`` with the
``table1`` recipe (stn.train.config.RECIPES), evaluated on its test split by
``stn.analysis.evaluation``; its ``config.json``, ``history.csv``,
``metrics.json`` and ``results.json`` are copied to
``results/table1/<run>/``. The grid is resumable cell by cell: a finished
cell (its record complete, with the same config) is read back, a killed
cell resumes from its last epoch, and a finished record of another config
is an error that says to remove it. After every cell the table is
rewritten, so it can be completed over several sessions.

Writes ``results/table1.json`` (``{"cells": [{"model", "protocol",
"error_percent", "paper_error_percent", "run", "epochs", "train_seconds"}]}``,
seed 0), ``results/table1_runs.json`` (every run, with its seed, validation
error and rotation-spread ratio) and ``results/table1.md`` (ours beside the
paper's in each cell, the seeds and the CPU time).

The P and E columns use the calibrated readings (protocols ``p-cal`` and
``e-cal``: ``python -m experiments.calibrate_pe``), the TC column the
calibrated clutter (protocol ``tc``: ``python -m experiments.calibrate_tc``;
60 x 60 images, the transformers' output side ``grid.TC_TRANSFORMER_OUTPUT``
chosen by ``python -m experiments.screen tc-output``); the cells of
our literal readings (``p``, ``e``) are kept as a second table,
``results/table1_literal.{json,md}``, same shape, rebuilt with
``--reading literal``.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from experiments import ROOT, runner
from experiments.grid import (EXTRA_SEEDS, MODELS, PROTOCOLS, READINGS, SEED_CELLS,
                              all_cells, cell_config, is_done, paper_error, run_name)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETTINGS = ("learning_rate", "epochs")  # the training settings it has flags for (stn.train.cli)
CELL_KEYS = ("model", "protocol", "error_percent", "paper_error_percent", "run", "epochs",
             "train_seconds")


def run_cell(model: str, protocol: str, seed: int, config, runs_dir: Path, results_dir: Path,
             mnist_path=None, verbose: int = 1, reading: str = "calibrated") -> Path:
    """Trains (or resumes) and evaluates one cell; its record in ``results_dir`` (the runner)."""
    name = run_name(model, protocol, seed, reading)
    unit = runner.Unit(f"{model} on {protocol} (seed {seed})", config, runs_dir / name,
                       results_dir / name, results=True)
    return runner.run(unit, test=True, mnist_path=mnist_path, verbose=verbose).dir


def cell_record(model: str, protocol: str, seed: int, kept: Path, root: Path = ROOT) -> dict:
    """One entry of table1.json from a cell's kept results."""
    results = json.loads((kept / "results.json").read_text())
    metrics = json.loads((kept / "metrics.json").read_text())
    pose = results.get("pose") or {}
    rotation = ((pose.get("parameters") or {}).get("rotation") or {}).get("ratio")
    try:
        run = str(kept.resolve().relative_to(root.resolve()))
    except ValueError:
        run = str(kept)
    return {"model": model, "protocol": protocol, "seed": seed,
            "error_percent": round(results["error_percent"], 2),
            "paper_error_percent": paper_error(model, protocol),
            "run": run, "epochs": metrics["epochs"],
            "train_seconds": metrics["train_seconds"],
            "val_error_percent": runner.error_percent(metrics, "val"),
            "rotation_spread_ratio": rotation}


def collect(results_dir: Path, cells, config_of, root: Path = ROOT,
            reading: str = "calibrated") -> list[dict]:
    """Records of the cells whose kept results match their config."""
    return [cell_record(m, p, s, results_dir / run_name(m, p, s, reading), root)
            for m, p, s in cells
            if is_done(config_of(m, p, s), results_dir / run_name(m, p, s, reading))]


def markdown(records: list[dict], columns=tuple(PROTOCOLS)) -> str:
    """The table, ours beside the paper's, plus the seeds and the CPU time."""
    main = {(r["model"], r["protocol"]): r for r in records if r["seed"] == 0}
    lines = ["| model | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for model in MODELS:
        cells = []
        for protocol in columns:
            paper = paper_error(model, protocol)
            r = main.get((model, protocol))
            if r is None:
                cells.append(f"- ({paper})")
            else:
                mark = "**" if r["error_percent"] <= paper else ""
                cells.append(f"{mark}{r['error_percent']:.2f}{mark} ({paper})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    seconds = sum(r["train_seconds"] for r in records)
    missing = len(main) < len(MODELS) * len(columns)
    lines += ["", f"% test error, ours (the paper's); bold: at or below the paper's"
              f"{'; -: not run yet' if missing else ''}. "
              f"{len(main)} of {len(MODELS) * len(columns)} cells; training time of "
              f"all {len(records)} runs: {seconds / 3600:.2f} CPU-hours."]
    lines += _seed_lines(records)
    return "\n".join(lines) + "\n"


def _seed_lines(records: list[dict]) -> list[str]:
    import numpy as np

    lines = []
    for model, protocol in SEED_CELLS:
        errors = [r["error_percent"] for r in records
                  if (r["model"], r["protocol"]) == (model, protocol)]
        if len(errors) > 1:
            lines.append(f"- {model} on {protocol} over {len(errors)} seeds: "
                         f"{np.mean(errors):.2f} +- {np.std(errors, ddof=1):.2f} % "
                         f"(runs: {', '.join(f'{e:.2f}' for e in errors)})")
    return ["", "Seeds:"] + lines if lines else []


def write_table(records: list[dict], results_dir: Path, reading: str = "calibrated") -> None:
    """``table1.{json,md}`` and ``table1_runs.json``; ``table1_literal.{json,md}`` (literal)."""
    from stn.train import runs

    main = [{k: r[k] for k in CELL_KEYS} for r in records if r["seed"] == 0]
    stem = "table1" if reading == "calibrated" else f"table1_{reading}"
    runs.write_json(results_dir / f"{stem}.json", {"cells": main})
    if reading == "calibrated":  # everything else (seeds, validation errors, rotation spread)
        runs.write_json(results_dir / "table1_runs.json", {"runs": records})
    runs.atomic_write(results_dir / f"{stem}.md", markdown(records, tuple(READINGS[reading])))


FIGURE_MODELS = ("ST-CNN Aff", "ST-CNN Proj", "ST-CNN TPS")


def write_figures(runs_dir: Path, images_dir: Path, mnist_path=None,
                  reading: str = "calibrated") -> list[Path]:
    """Per column: its warps, and the ST-CNN transformers' outputs on test digits.

    Files are named by the column's protocol (``r``, ``rts``, ``p-cal``, ...).
    ``<protocol>_warps.png``: four digits under random warps of the protocol
    (``stn.viz.figures.augmentation_figure``), for every column.
    ``<protocol>.png``: the paper's Figure 3 in spirit, the same test digits
    and each ST-CNN's transformer output, drawn for each protocol whose
    three ST-CNN cells are trained (their ``model.keras`` in ``runs_dir``).
    """
    import numpy as np

    from stn.data import pipeline as stn_data
    from stn.viz import figures
    from stn.train import runs
    from stn.data import tiles
    from stn.model import transformer_outputs

    written = []
    images_dir.mkdir(parents=True, exist_ok=True)
    for protocol, name in READINGS[reading].items():
        test = stn_data.load_data(name, 0, mnist_path=mnist_path,
                                  max_train_examples=1).test
        fig = figures.augmentation_figure(test.canonical_images(slice(0, 4)), seed=0,
                                          protocol=name)
        written.append(images_dir / f"{name}_warps.png")
        fig.savefig(written[-1], dpi=110)
        print(f"  {written[-1]}")
        dirs = {m: runs_dir / run_name(m, protocol, 0, reading) for m in FIGURE_MODELS}
        if not all((d / runs.MODEL).exists() for d in dirs.values()):
            continue
        shown = tiles.first_of_each_class(test.labels)
        warped = test.images[shown]
        outputs = {m: transformer_outputs(runs.load_model(d), warped)[1]
                   for m, d in dirs.items()}
        fig = figures.transformers_figure(
            warped, outputs, np.asarray(test.labels[shown]),
            f"Distortion {protocol}: the test inputs, and what each ST-CNN's transformer "
            "makes of them")
        path = images_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
        print(f"  {path}")
    return written


def parse_args(argv=None) -> argparse.Namespace:
    from stn.train import cli

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", metavar="MODEL/PROTOCOL",
                   help='only these cells, e.g. "ST-CNN TPS/E" (default: all)')
    p.add_argument("--reading", choices=list(READINGS), default="calibrated",
                   help="P and E at the calibrated readings (p-cal, e-cal: results/table1.*) "
                   "or our literal ones (p, e: results/table1_literal.*, those two columns "
                   "only) (default: %(default)s)")
    p.add_argument("--no-seeds", action="store_true",
                   help=f"skip the extra seeds {EXTRA_SEEDS} of {SEED_CELLS}")
    p.add_argument("--runs-dir", default="runs/table1", help="default: %(default)s")
    p.add_argument("--results-dir", default="results",
                   help="table1.json/.md go here, each cell's record in DIR/table1/<run>/ "
                   "(default: %(default)s)")
    p.add_argument("--recipe", default="table1",
                   help="training recipe (default: %(default)s); the settings below replace "
                   "its values in every cell (with another --runs-dir and --results-dir, "
                   "for a table beside the committed one)")
    cli.add_data_flags(p)
    p.add_argument("--table-only", action="store_true", help="only rewrite the table")
    p.add_argument("--list", action="store_true", help="list the cells and their state")
    p.add_argument("--figures", metavar="DIR", nargs="?", const="images/table1",
                   help="also draw, per protocol, the ST-CNN transformers' outputs "
                   "(default DIR: %(const)s)")
    # Smoke runs (the tests): a tiny grid.
    p.add_argument("--max-train-examples", type=int, help=argparse.SUPPRESS)
    p.add_argument("--max-steps-per-epoch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--max-eval-examples", type=int, help=argparse.SUPPRESS)
    cli.add_settings(p, SETTINGS)
    args = p.parse_args(argv)
    cli.check(p, lambda: cell_config("CNN", "R", 0, args.recipe, **overrides(args)),
              flags=(*SETTINGS, *SMOKE_FIELDS))
    return args


SMOKE_FIELDS = ("max_train_examples", "max_steps_per_epoch", "max_eval_examples")


def overrides(args) -> dict:
    """The Config fields the command line sets in every cell."""
    from stn.train import cli

    return {**cli.settings(args, SETTINGS),
            **{k: getattr(args, k) for k in SMOKE_FIELDS if getattr(args, k) is not None}}


def _selected(args) -> list[tuple[str, str, int]]:
    cells = all_cells(seeds=not args.no_seeds, reading=args.reading)
    if not args.cells:
        return cells
    wanted, columns = [], READINGS[args.reading]
    for text in args.cells:
        model, _, protocol = text.rpartition("/")
        if model not in MODELS or protocol not in columns:
            raise SystemExit(f"table1.py: error: unknown cell {text!r}; models: "
                             f"{', '.join(MODELS)}; protocols: {', '.join(columns)}")
        wanted += [c for c in cells if c[:2] == (model, protocol)]
    return wanted


def main(argv=None) -> int:
    args = parse_args(argv)
    from stn.train.precision import resolve_precision

    precision = resolve_precision(args.precision)[0]
    fields = overrides(args)

    reading = args.reading

    def config_of(model, protocol, seed):
        return cell_config(model, protocol, seed, args.recipe, precision, reading, **fields)

    def records():
        return collect(results_dir / "table1", all_cells(reading=reading), config_of,
                       reading=reading)

    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    cells = _selected(args)
    if args.list:
        for m, p, s in cells:
            name = run_name(m, p, s, reading)
            done = is_done(config_of(m, p, s), results_dir / "table1" / name)
            print(f"{'done' if done else 'todo'}  {m:12s} {p:4s} seed {s}  {name}")
        return 0
    if not args.table_only:
        began = time.perf_counter()
        for i, (m, p, s) in enumerate(cells):
            print(f"[cell {i + 1}/{len(cells)}, {time.perf_counter() - began:.0f} s so far]")
            run_cell(m, p, s, config_of(m, p, s), runs_dir, results_dir / "table1",
                     args.mnist, reading=reading)
            write_table(records(), results_dir, reading)
    final = records()
    write_table(final, results_dir, reading)
    print(markdown(final, tuple(READINGS[reading])))
    if args.figures:
        write_figures(runs_dir, Path(args.figures), args.mnist, reading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
