"""Co-localisation of MNIST digits (paper, appendix A.2, Table 5, Fig. 4), one command.

    python -m experiments.colocalisation                       # T and TC, all classes
    python -m experiments.colocalisation --datasets T --digits 1
    python -m experiments.colocalisation --list                # units and their state
    python -m experiments.colocalisation --table-only          # rewrite the record, figure

A unit is one class on one dataset with one seed: 100 test digits of the
class on 84 x 84 canvases (T; TC adds clutter), a fresh attention
transformer fitted to them by the triplet loss (stn.colocalisation,
stn.colocalisation_fit), scored by the fraction of digits whose box has
IoU > 0.5 with the truth. A finished unit's record,
``results/colocalisation/<dataset>_digit<d>_seed<s>.json``, is read back
when its settings and embedding CNN match; after each unit
``results/colocalisation.json`` (``{"embedding_cnn": ..., "runs": [{"dataset",
"digit", "seed", "localised_fraction", "mean_iou", "steps", "seconds"}]}``)
and ``images/colocalisation.png`` are rewritten.

The embedding CNN (``paper-cnn`` on 28 x 28 training digits, with an eleventh class of
off-centre crops of them by default) is trained once and cached in
``runs/colocalisation/embedding_cnn_offcentre.keras`` with its record (test accuracy) beside it.

The paper's loss alone (``--no-normalise --box-penalty 0``) collapses on the
validation split: the transformer zooms out past the canvas, where every
crop is nearly black and alike. The defaults add things of ours, chosen on 100
validation-split digits per class (docs/colocalisation.md): unit-length embeddings, a
penalty on the part of the box outside the canvas, a margin of 4 (``--margin``), the
embedding CNN's off-centre class (``--cnn-offcentre``), which puts the loss's minimum at the
digits, and a searched start (``--init search``), which puts the transformer in its basin.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CNN_FILE, CNN_RECORD = "embedding_cnn.keras", "embedding_cnn.json"
RUN_KEYS = ("dataset", "digit", "seed", "localised_fraction", "mean_iou", "steps", "seconds")
LEGACY_SETTINGS = {"margin": 1.0, "blur": 0.0, "flat": 0.0, "per_layer": False,
                   "init": "identity"}
"""What a unit record written before these settings existed ran with (the paper's margin, no
blur, no flat term, the embedding unit length as a whole)."""
EMBEDDING_LAYERS = ("pool1", "pool2", "logits")  # stn.train.colocalisation's (no Keras for --help)
PAPER = {"T": "100% for every class", "TC": "75-93% depending on the class"}


def embedding_cnn(runs_dir: Path, mnist, epochs: int, max_examples=None,
                  augment: bool = False, offcentre: bool = False):
    """``(cnn, record)``: the cached embedding CNN, trained first if missing or different
    (the one trained on distorted digits, ``augment``, and the one with an off-centre class,
    ``offcentre``, cached beside the plain one)."""
    import keras

    from stn.train import colocalisation_fit as F
    from stn.train import runs

    stem = ("_augmented" if augment else "") + ("_offcentre" if offcentre else "")
    path = runs_dir / CNN_FILE.replace(".keras", f"{stem}.keras")
    record_path = runs_dir / CNN_RECORD.replace(".json", f"{stem}.json")
    wanted = {"epochs": epochs, "train_examples": max_examples, "augment": augment,
              "offcentre": offcentre}
    if path.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record["epochs"] == epochs and (max_examples is None
                                           or record["train_examples"] == max_examples) \
                and ("augment" in record) == augment and ("offcentre" in record) == offcentre:
            return keras.saving.load_model(path), record
    print(f"training the embedding CNN ({wanted}) -> {path}", flush=True)
    cnn, record = F.train_embedding_cnn(mnist, epochs=epochs, max_examples=max_examples,
                                        augment=augment, offcentre=offcentre)
    record = json.loads(json.dumps(record))  # as it reads back from its file (lists)
    runs_dir.mkdir(parents=True, exist_ok=True)
    cnn.save(path)
    runs.write_json(record_path, record)
    print(f"  test accuracy {record['test_accuracy']}", flush=True)
    return cnn, record


def unit_path(results_dir: Path, settings, split: str = "test") -> Path:
    """The unit's record; a screen's (``split="validation"``) in a folder of its own."""
    folder = "colocalisation" if split == "test" else f"colocalisation_{split}"
    return (results_dir / folder
            / f"{settings.dataset}_digit{settings.digit}_seed{settings.seed}.json")


def read_unit(path: Path, settings, cnn_record: dict) -> dict | None:
    """The unit's record if it is finished with these settings and this CNN, else None."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    same = json.loads(json.dumps(dataclasses.asdict(settings)))
    from stn.train import runs
    # A field added after the record was written holds the value it ran with.
    kept = runs.as_recorded(record.get("settings", {}), LEGACY_SETTINGS)
    if kept != same or record.get("embedding_cnn") != cnn_record:
        return None
    return record


def run_unit(settings, mnist, cnn, cnn_record: dict, results_dir: Path,
             split: str = "test") -> dict:
    """Runs (or reads back) one unit on ``split``'s digits; writes its record."""
    from stn.train import colocalisation as C
    from stn.train import colocalisation_fit as F
    from stn.train import runs

    path = unit_path(results_dir, settings, split)
    record = read_unit(path, settings, cnn_record)
    if record is not None:
        print(f"{path.name}: done, localised {record['localised_fraction']:.2f}")
        return record
    print(f"\n=== {settings.dataset}, digit {settings.digit}, seed {settings.seed} -> {path}",
          flush=True)
    images, boxes, index = F.unit_data(settings, mnist, split)
    embed = C.embedding(cnn, settings.embedding_layers, settings.normalise, settings.per_layer)
    record = {"settings": dataclasses.asdict(settings), "embedding_cnn": cnn_record,
              "test_index": index.tolist(),
              **F.optimise(settings, images, boxes, embed, log=print)}
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, record)
    print(f"  localised {record['localised_fraction']:.2f} (mean IoU {record['mean_iou']}), "
          f"{record['seconds']} s", flush=True)
    return record


def finished(results_dir: Path, cnn_record: dict | None = None) -> list[dict]:
    """Every unit record under ``results_dir`` made with this embedding CNN (any, if None),
    in order."""
    records = [json.loads(p.read_text())
               for p in sorted((results_dir / "colocalisation").glob("*_digit*_seed*.json"))]
    return sorted((r for r in records
                   if cnn_record is None or r.get("embedding_cnn") == cnn_record),
                  key=lambda r: (r["settings"]["dataset"], r["settings"]["digit"],
                                 r["settings"]["seed"]))


def write_summary(records: list[dict], cnn_record: dict, results_dir: Path) -> None:
    """``results/colocalisation.json`` from the unit records."""
    from stn.train import runs

    rows = [{k: (r["settings"][k] if k in r["settings"] else r[k]) for k in RUN_KEYS}
            for r in records]
    runs.write_json(results_dir / "colocalisation.json",
                    {"embedding_cnn": cnn_record, "paper": PAPER, "runs": rows})


PROGRESS_MIN_SNAPSHOTS = 3  # fewer recorded steps (a short descent) draw no progress figure


def write_figure(records: list[dict], mnist, path: Path) -> list[Path]:
    """The final boxes on the first two images of every class, per dataset, at ``path``;
    and, where the units recorded at least :data:`PROGRESS_MIN_SNAPSHOTS` steps, boxes on
    the first images of digit 1 as the optimisation runs, at ``<path stem>_steps.png``."""
    from stn.train import colocalisation_fit as F
    from stn.viz.colocalisation_figure import classes_figure, colocalisation_figure

    classes, progress = [], []
    for dataset in ("T", "TC"):
        chosen = [r for r in records if r["settings"]["dataset"] == dataset]
        if not chosen:
            continue
        seed = min(r["settings"]["seed"] for r in chosen)
        units = []
        for record in sorted((r for r in chosen if r["settings"]["seed"] == seed),
                             key=lambda r: r["settings"]["digit"]):
            settings = F.Settings(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in record["settings"].items()})
            units.append((record, settings, *F.unit_data(settings, mnist)[:2]))
        for i in range(2):
            classes.append((f"{dataset}, image {i + 1}",
                            [(f"digit {s.digit}", images[i], boxes[i], r["final_params"][i])
                             for r, s, images, boxes in units]))
        record, settings, images, boxes = min(units, key=lambda u: u[1].digit != 1)
        if len(record["snapshots"]) >= PROGRESS_MIN_SNAPSHOTS:
            for i in range(min(2, settings.shown)):
                snaps = [{**s, "params": s["params"][i]} for s in record["snapshots"]]
                progress.append((f"{dataset}, digit {settings.digit}", images[i], boxes[i],
                                 snaps))
    written = []
    for rows, draw, out in ((classes, classes_figure, path),
                            (progress, colocalisation_figure,
                             path.with_name(f"{path.stem}_steps{path.suffix}"))):
        if rows:
            out.parent.mkdir(parents=True, exist_ok=True)
            draw(rows).savefig(out, dpi=110)
            print(f"  {out}")
            written.append(out)
    return written


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=("T", "TC"), default=["T", "TC"],
                   help="default: both")
    p.add_argument("--digits", nargs="+", type=int, default=list(range(10)),
                   help="classes (default: 0-9)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="default: 0")
    p.add_argument("--steps", type=int, default=1, help="Adam steps per unit after the start "
                   "(default: %(default)s, with the searched start; 600 with the paper's "
                   "whole-canvas start)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="default: %(default)s")
    p.add_argument("--normalise", action=argparse.BooleanOptionalAction, default=True,
                   help="unit-length embeddings (ours, not the paper's; default: on)")
    p.add_argument("--box-penalty", type=float, default=10.0,
                   help="weight of the penalty on the box's part outside the canvas "
                   "(ours; 0 = the paper's loss alone; default: %(default)s)")
    p.add_argument("--negatives", choices=("range", "same", "away"), default="range",
                   help="random crops: scale uniform in [1/6, 2/3] inside the canvas "
                   "(range, default), at the localised crop's scale (same), or of 8 such "
                   "crops the one overlapping the localised box least (away)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="whose digits the units localise: validation (the first 5,000 "
                   "training images) for a screen, its records in "
                   "RESULTS_DIR/colocalisation_validation/ and no summary or figure "
                   "(default: %(default)s)")
    p.add_argument("--box", choices=("free", "inside"), default="free",
                   help="free: the transformer's parameters are the box (the paper); inside: "
                   "mapped to a box inside the canvas by construction (default: %(default)s)")
    p.add_argument("--margin", type=float, default=4.0,
                   help="the triplet loss's margin (the paper's 1; 4, ours, keeps the hinge "
                   "of unit-length embeddings open; default: %(default)s)")
    p.add_argument("--blur", type=float, default=0.0,
                   help="coarse to fine: the crops read the images blurred by a Gaussian of "
                   "this sigma (px) at the start, shrinking to none at half the steps "
                   "(ours; 0: off; default: %(default)s)")
    p.add_argument("--flat", type=float, default=0.0,
                   help="weight of a second triplet term whose negative is the localised "
                   "crop made flat (every pixel its mean), so that a crop with nothing in "
                   "it pays the whole margin (ours; 0: off; default: %(default)s)")
    p.add_argument("--per-layer", action=argparse.BooleanOptionalAction, default=False,
                   help="each embedding layer (pool1, pool2, logits) weighs the same: each "
                   "part unit length before the concatenation (ours; default: off, the "
                   "whole unit length)")
    p.add_argument("--embedding-layers", nargs="+", default=list(EMBEDDING_LAYERS),
                   choices=("pool1", "pool2", "dense", "logits"),
                   help="the embedding CNN's layers whose outputs, concatenated, embed a crop "
                   "(default: %(default)s, the paper's three)")
    p.add_argument("--init", choices=("identity", "search"), default="search",
                   help="where the transformer starts: the whole canvas (identity, the "
                   "paper's) or fitted to the boxes a grid search of the loss's terms picks "
                   "(search, ours; stn.train.colocalisation_search; default: %(default)s)")
    p.add_argument("--max-scale", type=float,
                   help="limit the crop's scale to this (straight-through; default: none)")
    p.add_argument("--images", type=int, default=100, help="digits per unit (default: 100)")
    p.add_argument("--cnn-epochs", type=int, default=2,
                   help="epochs of the embedding CNN (default: %(default)s)")
    p.add_argument("--cnn-augment", action=argparse.BooleanOptionalAction, default=False,
                   help="train the embedding CNN on distorted digits (rotation, zoom, shift: "
                   "stn.train.colocalisation_fit.AUGMENT) instead of plain ones "
                   "(default: plain)")
    p.add_argument("--cnn-offcentre", action=argparse.BooleanOptionalAction, default=True,
                   help="train the embedding CNN with an eleventh class of off-centre crops "
                   "of the training digits (stn.train.colocalisation_fit.OFFCENTRE; ours; "
                   "default: on; --no-cnn-offcentre: the plain 10-class CNN)")
    p.add_argument("--runs-dir", default="runs/colocalisation", help="default: %(default)s")
    p.add_argument("--results-dir", default="results", help="default: %(default)s")
    p.add_argument("--figure", default="images/colocalisation.png", help="default: %(default)s")
    p.add_argument("--mnist", help="MNIST file or folder, if not cached (stn.mnist)")
    p.add_argument("--list", action="store_true", help="list the units and their state")
    p.add_argument("--table-only", action="store_true",
                   help="only rewrite the record and the figure from every finished unit "
                   "(no embedding CNN is loaded or trained)")
    # Smoke runs (the tests): an embedding CNN trained on this many digits.
    p.add_argument("--cnn-examples", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.margin <= 0:
        p.error(f"--margin must be positive, got {args.margin}")
    if args.blur < 0 or args.flat < 0:
        p.error(f"--blur and --flat must be 0 or more, got {args.blur} and {args.flat}")
    if args.init == "search" and args.box != "free":
        p.error("--init search needs --box free (it fits the net to boxes, not to their map)")
    if any(not 0 <= d <= 9 for d in args.digits):
        p.error(f"--digits must be 0-9, got {args.digits}")
    return args


def settings_flags(args: argparse.Namespace, settings: type) -> dict:
    """The flags that are fields of ``settings`` (stn.train.colocalisation_fit.Settings),
    lists as tuples: each unit's Settings but its dataset, digit and seed. The flags'
    defaults are the fields' (tests/test_colocalisation.py holds them equal)."""
    given = vars(args)
    return {f.name: tuple(given[f.name]) if isinstance(given[f.name], list) else given[f.name]
            for f in dataclasses.fields(settings) if f.name in given}


def main(argv=None) -> int:
    args = parse_args(argv)
    from stn.train import colocalisation_fit as F
    from stn.data.mnist import load_mnist

    units = [F.Settings(dataset=d, digit=k, seed=s, **settings_flags(args, F.Settings))
             for d in args.datasets for k in args.digits for s in args.seeds]
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    mnist = load_mnist(path=args.mnist)
    if args.table_only:
        return write_tables(finished(results_dir), mnist, results_dir, Path(args.figure))
    cnn, cnn_record = embedding_cnn(runs_dir, mnist, args.cnn_epochs, args.cnn_examples,
                                    args.cnn_augment, args.cnn_offcentre)
    if args.list:
        for u in units:
            done = read_unit(unit_path(results_dir, u), u, cnn_record) is not None
            print(f"{'done' if done else 'todo'}  {u.dataset:2s} digit {u.digit} seed {u.seed}")
        return 0
    began = time.perf_counter()
    for i, u in enumerate(units):
        print(f"[unit {i + 1}/{len(units)}, {time.perf_counter() - began:.0f} s so far]")
        record = run_unit(u, mnist, cnn, cnn_record, results_dir, args.split)
        if args.split != "test":
            print(json.dumps({"dataset": u.dataset, "digit": u.digit, "box": u.box,
                              "margin": u.margin, "blur": u.blur, "negatives": u.negatives,
                              "flat": u.flat, "per_layer": u.per_layer,
                              "embedding_layers": u.embedding_layers, "init": u.init,
                              "localised_fraction": record["localised_fraction"],
                              "mean_iou": record["mean_iou"]}), flush=True)
            continue
        write_summary(finished(results_dir, cnn_record), cnn_record, results_dir)
    if args.split != "test":
        return 0
    return write_tables(finished(results_dir, cnn_record), mnist, results_dir, Path(args.figure))


def write_tables(records: list[dict], mnist, results_dir: Path, figure: Path) -> int:
    """The summary and the figures from ``records``, all made with one embedding CNN (as
    each records it); a list of each unit's result. Refuses, writing nothing, if there are
    none or their CNNs differ."""
    folder = results_dir / "colocalisation"
    cnns = {json.dumps(r.get("embedding_cnn"), sort_keys=True) for r in records}
    problem = ("no finished unit" if not records
               else f"units of {len(cnns)} embedding CNNs" if len(cnns) > 1 else None)
    if problem:
        print(f"error: {folder} holds {problem}: nothing written; run the units first, or "
              "keep one CNN's units in a --results-dir", file=sys.stderr)
        return 2
    write_summary(records, records[0]["embedding_cnn"], results_dir)
    write_figure(records, mnist, figure)
    for r in records:
        s = r["settings"]
        print(f"{s['dataset']:2s} digit {s['digit']} seed {s['seed']}: "
              f"localised {r['localised_fraction']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
