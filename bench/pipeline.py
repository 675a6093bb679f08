"""Benchmark 6: the end of an epoch, tf.data's autotuner on and off.

Each epoch builds a new input pipeline and deletes it at the end. With
``tf.data`` autotuning on, deleting the iterator can wait for the
autotuner's thread to wake up: on this CPU, 20 s and 38 s in some epochs
of a busy training loop (the default run's epochs took 42 s instead of 27 s, 5
times in 20). ``stn.data`` turns autotuning off and prepares a fixed
``PIPELINE_DEPTH`` batches ahead. This benchmark runs epochs of the
training pipeline against a busy consumer (a matrix product per batch, as
long as a training step), alternating the two settings, and times the
deletion of each epoch's iterator.
"""

import time

import numpy as np
import tensorflow as tf

from stn.train import config as C
from stn.data import pipeline as stn_data

BATCH = C.RECIPES["cosine"].batch_size  # the default run's epoch:
STEPS = -(-55_000 // BATCH)  # its 55,000 training images


def _epoch(split, epoch: int, autotune: bool, work) -> tuple[float, float]:
    """Seconds of one epoch's steps, and of deleting its iterator."""
    dataset = stn_data.train_dataset(split, BATCH, seed=0, epoch=epoch, resample=True)
    if autotune:
        options = tf.data.Options()
        options.autotune.enabled = True
        dataset = dataset.with_options(options)
    start = time.perf_counter()
    iterator = iter(dataset.take(STEPS))
    for _ in iterator:
        float(work())
    loop = time.perf_counter()
    del iterator
    return loop - start, time.perf_counter() - loop


def run(epochs: int = 3) -> dict:
    """Deletion times of ``epochs`` epochs per setting, interleaved."""
    print(f"\n== 6. end of an epoch: deleting the input pipeline ({STEPS} batches of {BATCH}, "
          "a busy consumer) ==")
    split = stn_data.load_data("predecessor", 0).train
    a = tf.random.normal([2000, 2000])
    work = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    deletions = {True: [], False: []}
    for epoch in range(epochs):
        for autotune in (True, False):
            loop, deleted = _epoch(split, epoch, autotune, work)
            deletions[autotune].append(deleted)
            print(f"autotune {'on ' if autotune else 'off'} epoch {epoch + 1}: {loop:.1f} s of "
                  f"steps, iterator deleted in {deleted:.2f} s")
    results = {}
    for autotune, times in deletions.items():
        key = "autotune_on" if autotune else "autotune_off (stn.data)"
        results[key] = {"max_seconds": max(times), "total_seconds": float(np.sum(times))}
        print(f"{key}: deletion max {max(times):.2f} s, total {np.sum(times):.2f} s "
              f"over {epochs} epochs")
    return results
