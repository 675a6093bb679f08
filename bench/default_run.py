"""Benchmark 8: one epoch of ``make train``'s default run against the previous default.

The default run may change its model and loss (issue 26: the paper's conv
localization net and the label-free alignment term, so that it straightens
digits); its training time must stay within 1.2x of the run it replaces.
Both are trained here epoch by epoch in alternation, input pipeline and
the alignment term's extra localization pass included, as ``train.py``
trains them (``stn.train.training.make_steps``, ``train_epoch``).
"""

import time

import keras
import numpy as np

from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.model import build_model
from stn.train.precision import auto_precision
from stn.train.optimizers import make_optimizer, steps_per_epoch
from stn.train.training import make_steps, train_epoch

TARGET = 1.2


def configs(precision: str) -> dict:
    """``name -> Config``: the previous default run, the candidates' parts, today's default.

    The candidates of the screen (``experiments.screen upright-default``)
    cost the same whatever the term's weight: ``seed-conv`` alone and with
    the term (weight 1) are timed, and train.py's defaults if they differ.
    """
    # What `make train` ran before the alignment term (issue 26): preset seed, term off.
    previous = C.make_config("seed", "seed", {"dtype": precision}, alignment_weight=0.0)
    conv = C.make_config("seed-conv", "seed", {"dtype": precision}, alignment_weight=0.0)
    term = C.make_config("seed-conv", "seed", {"dtype": precision}, alignment_weight=1.0)
    today = C.make_config(C.DEFAULT_PRESET, "seed", {"dtype": precision}, recipe=C.DEFAULT_RECIPE)
    named = {"previous default (seed, no alignment term)": previous,
             "seed-conv, no alignment term": conv,
             "seed-conv with the alignment term": term}
    if today not in named.values():
        named[f"make train ({C.DEFAULT_PRESET}, recipe {C.DEFAULT_RECIPE})"] = today
    return named


def run(epochs: int = 2) -> dict:
    """Median seconds per epoch of each, over ``epochs`` after an untimed first one."""
    precision = auto_precision()
    train = stn_data.load_data("seed", 0).train
    steps = {}
    for name, config in configs(precision).items():
        keras.utils.set_random_seed(0)
        model = build_model(config.model)
        optimizer = make_optimizer(config, steps_per_epoch(config, len(train)))
        optimizer.build(model.trainable_variables)
        steps[name] = (config, make_steps(config, model, optimizer))
    times = {name: [] for name in steps}
    for epoch in range(epochs + 1):  # epoch 0 compiles, untimed
        for name, (config, step) in steps.items():
            start = time.perf_counter()
            train_epoch(step, train, config, epoch, verbose=0)
            if epoch:
                times[name].append(time.perf_counter() - start)
    first = next(iter(times))
    base = float(np.median(times[first]))
    print(f"\n== 8. one epoch of the default run, {precision}, batch "
          f"{C.RECIPES['default'].batch_size}, {len(train):,} images; median of {epochs}, in "
          f"alternation ==")
    results = {}
    for name, seconds in times.items():
        median = float(np.median(seconds))
        config = steps[name][0]
        print(f"{name:56s} {median:6.1f} s  ({median / base:.2f}x)  x {config.epochs} epochs "
              f"= {median * config.epochs / 60:.1f} min")
        results[name] = {"seconds": median, "ratio": median / base}
    today = list(results)[-1]  # make train's run (the term's row if it is the same config)
    print(f"{today}: its epoch is {results[today]['ratio']:.2f}x the previous default's "
          f"(target <= {TARGET}x)")
    return results
