"""Step time of Table 1 cells' models on this machine, and the full cell it implies.

    python -m experiments.cell_timing                    # every TC cell, 20 timed steps each
    python -m experiments.cell_timing --models FCN CNN --column RTS   # beside known cells

For each model of a column of Table 1 (``experiments.grid.cell_config``,
its recipe's batch and epochs), one model at a time: 5 untimed training steps
(tracing), then ``--steps`` timed ones through the real path (the resampling
pipeline with fresh clutter, ``stn.training``'s step), then the same for the
evaluation step. A full cell is estimated as ``epochs * (steps_per_epoch *
train_step + validation_batches * eval_step) + test_batches * eval_step``.
Prints one JSON line per model; nothing is written.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments import grid


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def time_cell(model_name: str, column: str, steps: int, precision: str, mnist_path=None,
              **fields) -> dict:
    """Seconds per training and evaluation step of one cell's model, and the cell's estimate.

    ``fields``: Config or ModelConfig fields replaced in the cell (a screen's variant).
    """
    import keras

    from stn.data import pipeline as stn_data
    from stn.model import build_model
    from stn.train.optimizers import make_optimizer, steps_per_epoch
    from stn.train.training import make_steps

    config = grid.cell_config(model_name, column, 0, "table1", precision, **fields)
    batch, warmup = config.batch_size, 5
    data = stn_data.load_data(config.protocol, 0, mnist_path=mnist_path,
                              max_train_examples=batch * (warmup + steps))
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    optimizer = make_optimizer(config, steps_per_epoch(config, 55_000))
    optimizer.build(model.trainable_variables)
    runner = make_steps(config, model, optimizer)
    batches = list(stn_data.train_dataset(data.train, batch, seed=0, epoch=0, resample=True))
    for images, labels in batches[:warmup]:
        runner.train(images, labels)
    began = time.perf_counter()
    for images, labels in batches[warmup:]:
        out = runner.train(images, labels)
    keras.ops.convert_to_numpy(out[0] if isinstance(out, (tuple, list)) else out)
    train_step = (time.perf_counter() - began) / steps
    evaluation = stn_data.eval_dataset(data.validation, batch)
    runner.evaluate(evaluation.take(2))
    began = time.perf_counter()
    runner.evaluate(evaluation)
    eval_step = (time.perf_counter() - began) / math.ceil(len(data.validation) / batch)
    per_epoch = math.ceil(55_000 / batch) * train_step + math.ceil(5_000 / batch) * eval_step
    cell = config.epochs * per_epoch + math.ceil(10_000 / batch) * eval_step
    return {"model": model_name, "column": column, "preset": config.model.preset,
            "transformer_output_size": config.model.transformer_output_size,
            "parameters": model.count_params(), "precision": precision, "batch": batch,
            "timed_steps": steps, "train_step_ms": round(1e3 * train_step, 1),
            "eval_step_ms": round(1e3 * eval_step, 1), "epoch_s": round(per_epoch, 1),
            "epochs": config.epochs, "cell_min": round(cell / 60, 1), "cpu": _cpu(),
            "cores": os.cpu_count()}


def main(argv=None) -> int:
    from stn.train import cli
    from stn.train.precision import resolve_precision

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(grid.MODELS), choices=list(grid.MODELS),
                   help="Table 1 rows to time (default: all)")
    p.add_argument("--column", default="TC", choices=list(grid.PROTOCOLS),
                   help="Table 1 column (default: %(default)s)")
    p.add_argument("--transformer-output-size", type=int, metavar="PX",
                   help="the ST models' output side replaced (the tc-output screen's variants)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default: %(default)s)")
    cli.add_data_flags(p)
    args = p.parse_args(argv)
    precision = resolve_precision(args.precision)[0]
    fields = ({"transformer_output_size": args.transformer_output_size}
              if args.transformer_output_size else {})
    for name in args.models:
        print(json.dumps(time_cell(name, args.column, args.steps, precision, args.mnist,
                                   **fields)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
