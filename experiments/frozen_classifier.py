"""Can the classification loss alone turn R's digits upright? A frozen-classifier diagnostic.

Trained jointly, the ST-CNN's transformer undoes only about half of R's
rotation (docs/alignment.md): the classifier, which sees every
rotation from the first step, learns to read rotated digits and leaves the
transformer little to gain. This takes that escape away, in two stages on
the cell's model (``experiments/grid.py``: ``cell_config``, float32 or the
``--precision`` given):

1. **upright**: the whole model trains on the protocol's digits *unwarped*
   (:meth:`stn.data.protocols.Protocol.scaled` at strength 0), so the classifier
   learns upright digits only and the transformer has nothing to undo;
2. **frozen**: the classifier's weights are frozen; only the localization
   net trains, on the protocol's full warps, fresh every epoch.

After each stage it reports the validation error and the transformer's
rotation-spread ratio on the validation split (:mod:`stn.analysis.pose`; 1 = none of
the rotation undone, 0 = all). A diagnostic, not a method for the table:
the test split is never read.

    python -m experiments.frozen_classifier --json results/frozen_classifier_r.json
    python -m experiments.frozen_classifier --model "ST-FCN Aff" --frozen-epochs 5
"""

import argparse
import os
import sys
import time
from pathlib import Path

from experiments import grid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRANSFORMER_MODELS = [m for m in grid.MODELS if m.startswith("ST-")]


def set_trainable(model, transformer: bool, classifier: bool) -> None:
    """Freezes or unfreezes the transformer (with its localization net) and the rest."""
    from stn.model import find_transformer

    layer = find_transformer(model)
    for other in model.layers:
        other.trainable = transformer if other is layer else classifier


def train_stage(model, data, protocol, epochs: int, batch_size: int, learning_rate: float,
                seed: int, first_epoch: int = 0) -> list[dict]:
    """``epochs`` of Adam on fresh warps of ``protocol``; one validation row per epoch."""
    import keras

    from stn.data import pipeline as stn_data

    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    rows = []
    for epoch in range(first_epoch, first_epoch + epochs):
        dataset = stn_data.train_dataset(data.train, batch_size, seed=seed, epoch=epoch,
                                         resample=True, protocol=protocol)
        start = time.perf_counter()
        history = model.fit(dataset, epochs=1, shuffle=False, verbose=0).history
        rows.append({"epoch": epoch + 1, "train_loss": history["loss"][-1],
                     "seconds": round(time.perf_counter() - start, 1),
                     **validation_numbers(model, data.validation)})
        print(f"epoch {epoch + 1}: train loss {rows[-1]['train_loss']:.4f}, validation error "
              f"{rows[-1]['val_error_percent']:.2f}%, rotation ratio "
              f"{rows[-1]['val_rotation_spread_ratio']:.3f} ({rows[-1]['seconds']} s)",
              flush=True)
    return rows


def validation_numbers(model, split) -> dict:
    """Validation error (%) and the transformer's rotation-spread ratio."""
    import numpy as np

    from stn.analysis import evaluation

    predictions = evaluation.predict(model, split.images).argmax(-1)
    error = 100.0 * float(np.mean(predictions != split.labels))
    ratio = evaluation.split_pose(model, split).stats["parameters"]["rotation"]["ratio"]
    return {"val_error_percent": round(error, 2), "val_rotation_spread_ratio": round(ratio, 3)}


def parse_args(argv=None) -> argparse.Namespace:
    from stn.train.config import PRECISIONS

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ST-CNN Aff", choices=TRANSFORMER_MODELS,
                   help="a Table 1 model with a transformer (default: %(default)s)")
    p.add_argument("--protocol", default="R", choices=list(grid.PROTOCOLS),
                   help="a Table 1 distortion (default: %(default)s)")
    p.add_argument("--upright-epochs", type=int, default=5,
                   help="stage 1, on unwarped digits (default: %(default)s)")
    p.add_argument("--frozen-epochs", type=int, default=15,
                   help="stage 2, localization net only (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    p.add_argument("--learning-rate", type=float, default=1e-3,
                   help="Adam's, constant, both stages (default: %(default)s)")
    p.add_argument("--precision", default="auto",
                   choices=list(PRECISIONS),
                   help="the classifier's, as in train.py (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--max-train-examples", type=int, help="train on the first N images only")
    p.add_argument("--mnist", metavar="PATH", help="as in train.py")
    p.add_argument("--json", help="write the report to this file")
    args = p.parse_args(argv)
    for name in ("upright_epochs", "frozen_epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if not args.learning_rate > 0:
        p.error("--learning-rate must be positive")
    if args.max_train_examples is not None and args.max_train_examples < 1:
        p.error("--max-train-examples must be a positive integer")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    from stn.data import pipeline as stn_data
    from stn.data import protocols
    from stn.train import runs
    from stn.model import build_model
    from stn.train.precision import resolve_precision

    precision = resolve_precision(args.precision)[0]
    config = grid.cell_config(args.model, args.protocol, args.seed, precision=precision)
    protocol = protocols.get_protocol(config.protocol)
    data = stn_data.load_data(config.protocol, args.seed, mnist_path=args.mnist,
                              max_train_examples=args.max_train_examples)
    keras.utils.set_random_seed(args.seed)
    model = build_model(config.model)
    common = dict(batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)

    print(f"== {args.model} on {args.protocol}, stage 1: the whole model on unwarped digits",
          flush=True)
    set_trainable(model, transformer=True, classifier=True)
    upright = train_stage(model, data, protocol.scaled(0.0), args.upright_epochs, **common)
    print("== stage 2: classifier frozen, the localization net on the full warps", flush=True)
    set_trainable(model, transformer=True, classifier=False)
    frozen = train_stage(model, data, protocol, args.frozen_epochs,
                         first_epoch=args.upright_epochs, **common)
    report = {"model": args.model, "protocol": args.protocol, "precision": precision,
              "seed": args.seed, "max_train_examples": args.max_train_examples,
              "upright_epochs": args.upright_epochs, "frozen_epochs": args.frozen_epochs,
              "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "upright": upright, "frozen": frozen}
    if args.json:
        runs.write_json(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
