"""The co-localisation loss at fixed boxes: is the truth its minimum?

The optimisation (``python -m experiments.colocalisation``) ends far from the
digits for most classes. This study asks the loss itself, with no search: every
image's box is held at one of :data:`FAMILIES` (the true box, scaled, shifted
the same way in every image, shrunk to a point, on black, the whole canvas),
and the loss is averaged over 10 draws of partners and random crops, for each
embedding of :data:`LAYER_SETS` and with and without the flat term
(``--flat 1``). Validation digits of class 1, 3, 5 and 8 on T (the screens'
digits); the defaults' margin, crop scales and box penalty.

    python -m experiments.colocalisation_landscape

writes ``results/colocalisation_landscape.json``: per digit, each family's mean
IoU with the true boxes and its loss terms, and per digit, embedding and flat
weight the family of lowest loss and the true boxes' rank among the families.
If a family with IoU under 0.5 has a lower loss than the true boxes, a perfect
search of that loss does not localise the digits.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments import ROOT, cpu_model, relative

POINT = 0.02  # the scale of a box shrunk to a point (a 1.7 px side)
PX = 1.0 / 42.0  # one pixel in normalized units on the 84 px canvas


def _far_corner(tp, scale):
    """Boxes of ``scale`` in the canvas corner farthest from each true box ``tp [N, 3]``."""
    away = -np.where(tp[:, 1:] >= 0, 1.0, -1.0)
    return np.concatenate([np.full((len(tp), 1), scale), away * (1.0 - scale)], axis=1)


FAMILIES = {
    "true": lambda tp: tp,
    "scale x0.6": lambda tp: tp * [0.6, 1, 1],
    "scale x0.8": lambda tp: tp * [0.8, 1, 1],
    "scale x1.2": lambda tp: tp * [1.2, 1, 1],
    "scale x1.5": lambda tp: tp * [1.5, 1, 1],
    "shift 4 px right": lambda tp: tp + [0, 4 * PX, 0],
    "shift 7 px diagonal": lambda tp: tp + [0, 7 * PX, 7 * PX],
    "shift 14 px right": lambda tp: tp + [0, 14 * PX, 0],
    "point on the digit": lambda tp: tp * [POINT, 1, 1],
    "point on black": lambda tp: _far_corner(tp, POINT),
    "box on black (14 px)": lambda tp: _far_corner(tp, 1 / 6),
    "whole canvas": lambda tp: np.tile([1.0, 0.0, 0.0], (len(tp), 1)),
}
"""Boxes, each image's from its true box's attention parameters ``tp [N, 3]``."""

LAYER_SETS = (("pool1", "pool2", "logits"), ("pool2", "logits"), ("dense", "logits"),
              ("logits",))
"""The embeddings compared: the default (the paper's three layers) first."""


def landscape(settings, images, boxes, embed_for, draws: int, seed: int) -> dict:
    """One digit's record: each family's IoU, and its loss terms per layer set."""
    from stn.train import colocalisation as C
    from stn.train import colocalisation_fit as F

    truth = C.crop_params(boxes).astype(np.float64)
    params = {name: np.asarray(make(truth), np.float32) for name, make in FAMILIES.items()}
    record = {"iou": {name: round(float(np.mean(C.iou(C.predicted_boxes(p), boxes))), 3)
                      for name, p in params.items()}, "terms": {}}
    for layers in LAYER_SETS:
        embed = embed_for(layers)
        record["terms"]["+".join(layers)] = {
            name: {k: round(v, 4) for k, v in F.fixed_box_loss(
                embed, images, p, settings, np.random.default_rng([seed, 11]), draws).items()}
            for name, p in params.items()}
    return record


def summary(digit: int, record: dict, box_penalty: float) -> list[dict]:
    """Per layer set and flat weight (0, 1): the family of lowest loss, the truth's rank."""
    rows = []
    for layers, terms in record["terms"].items():
        for flat in (0.0, 1.0):
            total = {name: t["paper"] + flat * t["flat"] + box_penalty * t["outside"]
                     for name, t in terms.items()}
            order = sorted(total, key=total.get)
            rows.append({"digit": digit, "embedding": layers, "flat": flat, "best": order[0],
                         "best_iou": record["iou"][order[0]],
                         "true_rank": order.index("true") + 1,
                         "true_minus_best": round(total["true"] - total[order[0]], 4)})
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits", nargs="+", type=int, default=[1, 3, 5, 8],
                   help="classes, validation digits (default: %(default)s)")
    p.add_argument("--images", type=int, default=100, help="digits per class (default: 100)")
    p.add_argument("--draws", type=int, default=10,
                   help="draws of partners and random crops averaged over (default: 10)")
    p.add_argument("--runs-dir", default="runs/colocalisation",
                   help="where the embedding CNN is cached (default: %(default)s)")
    p.add_argument("--cnn-offcentre", action="store_true",
                   help="the embedding CNN with an off-centre class (experiments.colocalisation)")
    p.add_argument("--json", type=Path, default=ROOT / "results" / "colocalisation_landscape.json",
                   help="default: results/colocalisation_landscape.json")
    p.add_argument("--mnist", help="MNIST file or folder, if not cached (stn.data.mnist)")
    p.add_argument("--cnn-examples", type=int, help=argparse.SUPPRESS)  # smoke runs
    args = p.parse_args(argv)
    if any(not 0 <= d <= 9 for d in args.digits) or args.images < 2 or args.draws < 1:
        p.error("need digits 0-9, --images >= 2 and --draws >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from experiments.colocalisation import embedding_cnn
    from stn.data.mnist import load_mnist
    from stn.train import colocalisation as C
    from stn.train import colocalisation_fit as F
    from stn.train import runs

    mnist = load_mnist(path=args.mnist)
    cnn, cnn_record = embedding_cnn(Path(args.runs_dir), mnist, 2, args.cnn_examples,
                                    offcentre=args.cnn_offcentre)
    began, digits, rows = time.perf_counter(), {}, []
    for digit in args.digits:
        settings = F.Settings(dataset="T", digit=digit, images=args.images)
        images, boxes, _ = F.unit_data(settings, mnist, "validation")
        digits[str(digit)] = landscape(
            settings, images, boxes,
            lambda layers: C.embedding(cnn, layers, settings.normalise, settings.per_layer),
            args.draws, settings.seed)
        rows += summary(digit, digits[str(digit)], settings.box_penalty)
        for r in rows[-2 * len(LAYER_SETS):]:
            print(f"digit {digit} {r['embedding']:18s} flat {r['flat']:.0f}: lowest "
                  f"{r['best']!r} (IoU {r['best_iou']:.2f}); the true boxes rank "
                  f"{r['true_rank']} of {len(FAMILIES)}", flush=True)
    runs.write_json(args.json, {
        "study": "colocalisation-landscape", "split": "validation", "dataset": "T",
        "settings": json.loads(json.dumps(vars(F.Settings()))), "draws": args.draws,
        "embedding_cnn": cnn_record, "families": list(FAMILIES), "cpu": cpu_model(),
        "seconds": round(time.perf_counter() - began, 1), "digits": digits, "summary": rows})
    print(f"wrote {relative(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
