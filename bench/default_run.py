"""Benchmark 8: ``make train``'s default run against the previous default, epoch by epoch.

The default's model was chosen by its training FLOPs (stn.flops; the
fast-default screen, docs/performance.md); what a user waits for is the
time. Both runs are trained here epoch by epoch in alternation, input
pipeline and the alignment term's extra localization pass included, as
``train.py`` trains them (``stn.train.training.make_steps``, ``train_epoch``);
a whole run is its epochs times the median epoch.

Two environment variables make it affordable on a slow CPU and let one
machine stand in for another: ``STN_BENCH_STEPS=K`` times the first K steps
of each epoch (the epoch's time is then K steps' times its step count), and
``STN_BENCH_PRECISION=float32`` trains in float32 whatever the CPU (what a
CPU without bf16 arithmetic runs; add ``ONEDNN_MAX_CPU_ISA=AVX2`` to keep
oneDNN's kernels to AVX2, as on a CPU without AVX-512).
"""

import dataclasses
import os
import time

import keras
import numpy as np

from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.train.flops import training_flops
from stn.model import build_model
from stn.train.precision import auto_precision
from stn.train.optimizers import make_optimizer, steps_per_epoch
from stn.train.training import make_steps, train_epoch

TARGET = 0.2  # make train's training time, as a fraction of the previous default's
PREVIOUS = ("seed-conv", "upright")  # make train's preset and recipe before the screen


def configs(precision: str) -> dict:
    """``name -> Config``: the previous default run, then make train's."""
    previous = C.make_config(PREVIOUS[0], C.DEFAULT_PROTOCOL, {"dtype": precision},
                             recipe=PREVIOUS[1])
    today = C.make_config(C.DEFAULT_PRESET, C.DEFAULT_PROTOCOL, {"dtype": precision},
                          recipe=C.DEFAULT_RECIPE)
    return {f"previous default ({PREVIOUS[0]}, recipe {PREVIOUS[1]})": previous,
            f"make train ({C.DEFAULT_PRESET}, recipe {C.DEFAULT_RECIPE})": today}


def run(epochs: int = 2) -> dict:
    """Median seconds per epoch of each, over ``epochs`` after an untimed first one."""
    precision = os.environ.get("STN_BENCH_PRECISION") or auto_precision()
    timed_steps = int(os.environ.get("STN_BENCH_STEPS", 0)) or None
    train = stn_data.load_data(C.DEFAULT_PROTOCOL, 0).train
    steps, scale = {}, {}
    for name, config in configs(precision).items():
        full = steps_per_epoch(config, len(train))
        scale[name] = full / min(timed_steps, full) if timed_steps else 1.0
        config = dataclasses.replace(config, max_steps_per_epoch=timed_steps)
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
                times[name].append((time.perf_counter() - start) * scale[name])
    first = next(iter(times))
    base = float(np.median(times[first])) * steps[first][0].epochs
    base_flops = training_flops(steps[first][0])["run"]
    part = f" (first {timed_steps} steps of each, scaled)" if timed_steps else ""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    print(f"\n== 8. the default run's training, {precision}{', oneDNN ' + isa if isa else ''}, "
          f"{len(train):,} images; epochs{part} timed in alternation, median of {epochs} ==")
    results = {}
    for name, seconds in times.items():
        config = steps[name][0]
        median, flops = float(np.median(seconds)), training_flops(config)["run"]
        whole = median * config.epochs
        print(f"{name:48s} epoch {median:6.1f} s x {config.epochs} = {whole / 60:5.1f} min "
              f"({whole / base:.2f}x) | {flops / 1e12:6.1f} TFLOP ({flops / base_flops:.3f}x)")
        results[name] = {"epoch_seconds": median, "epochs": config.epochs,
                         "run_seconds": whole, "ratio": whole / base, "run_flops": flops,
                         "flops_ratio": flops / base_flops}
    today = list(results)[-1]
    print(f"{today}: its training is {results[today]['ratio']:.2f}x the previous default's "
          f"(target <= {TARGET}x)")
    return results
