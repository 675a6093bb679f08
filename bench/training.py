"""Benchmarks 2-5: the training step, its baselines, warping, a full epoch.

2. one training step of the default model vs the same classifier with no
   transformer (preset ``cnn``): the transformer's overhead;
3. the same step vs the same layers trained by ``model.fit``, the code a
   user would write first; and (2b) the step of the paper's Table 1 models;
4. generating a whole warped split set (70,000 images);
5. one full epoch end to end (tf.data pipeline included) vs the time spent
   in its steps, timed in the same loop: whether the input pipeline starves
   the step.

Plus the achieved FLOP/s of the default step as a fraction of this
machine's matrix-multiply peak, measured here.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from bench.timing import Timing, measure, measure_interleaved, to_numpy
from stn.train import config as C
from stn.layer import kinds
from stn.data import pipeline as stn_data
from stn.data import protocols
from stn.layer.layers import SpatialTransformer
from stn.model import build_model
from stn.train.precision import auto_precision
from stn.train.training import Steps

BATCH = C.RECIPES["cosine"].batch_size  # as `make train` trains


def _batch(size: int, seed: int = 0, batch: int = BATCH):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 1)).astype(np.float32)
    return tf.constant(images), tf.constant(rng.integers(0, 10, batch).astype(np.int32))


def _model_and_steps(model_config: C.ModelConfig, jit_compile: bool = False,
                     xla_update: bool = True):
    keras.utils.set_random_seed(0)
    model = build_model(model_config)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    return model, Steps(model, optimizer, jit_compile=jit_compile, xla_update=xla_update)


def step_times(model_configs: dict[str, tuple[C.ModelConfig, bool] | tuple[C.ModelConfig, bool, bool]],
               repeats: int, batch: int = BATCH) -> dict[str, Timing]:
    """Our compiled train step on one batch, for each ``(config, xla[, xla_update])``.

    The steps are timed in alternation (``measure_interleaved``), so their
    ratios are measured side by side.
    """
    fns = {}
    for name, (model_config, jit_compile, *update) in model_configs.items():
        _, steps = _model_and_steps(model_config, jit_compile, *update)
        images, labels = _batch(model_config.input_size, batch=batch)
        fns[name] = lambda steps=steps, images=images, labels=labels: steps.train(images, labels)
    return measure_interleaved(fns, repeats, sync=to_numpy)


class _BatchTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times, self._start = [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def fit_step_time(model_config: C.ModelConfig, repeats: int, warmup: int = 5) -> Timing:
    """Median time per batch of ``model.fit`` on the same layers (float32)."""
    keras.utils.set_random_seed(0)
    model = build_model(model_config)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    n = BATCH * (warmup + repeats)
    size = model_config.input_size
    images = rng.random((n, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(np.int32)
    timer = _BatchTimer()
    model.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[timer])
    q25, median, q75 = np.percentile(timer.times[warmup:], [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), repeats)


def model_flops(model: keras.Model) -> float:
    """Forward FLOPs per image (2 per multiply-add) of convolutions and matmuls."""
    layers = list(model.layers)
    for layer in model.layers:
        if isinstance(layer, SpatialTransformer):
            layers += layer.localization.layers
    flops = 0.0
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w = layer.kernel_size
            flops += 2.0 * h * w * c_out * k_h * k_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return flops


def matmul_peak(dtype=tf.float32, n: int = 2048, repeats: int = 20) -> float:
    """Measured FLOP/s of an n x n matrix product (TensorFlow, this machine)."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda: tf.matmul(a, a))
    timing = measure(product, repeats, sync=to_numpy)
    return 2.0 * n ** 3 / timing.median


def warp_time(repeats: int = 5) -> Timing:
    """Warping all 70,000 MNIST digits once (seed protocol), from padded arrays."""
    (x_train, _), (x_test, _) = stn_data.load_mnist()
    canonical = stn_data.pad(np.concatenate([x_train, x_test])).numpy()
    params = protocols.PROTOCOLS["predecessor"].sample(len(canonical), np.random.default_rng(0))
    return measure(lambda: protocols.apply("predecessor", canonical, params), repeats, warmup=1)


def epoch_times(model_config: C.ModelConfig, train: stn_data.Split, resample: bool,
                epochs: int = 2) -> list[tuple[float, float, int]]:
    """Consecutive full training epochs on ``train`` (pipeline + steps), as in train.py.

    Returns, per epoch, its wall seconds, the seconds spent in its steps (the
    rest is waiting for the input pipeline), and its number of steps.
    """
    _, steps = _model_and_steps(model_config)
    for images, labels in stn_data.train_dataset(train, BATCH, seed=0, epoch=0).take(2):
        to_numpy(steps.train(images, labels))  # compile outside the timing
    results = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        in_steps, n = 0.0, 0
        for images, labels in stn_data.train_dataset(train, BATCH, seed=0, epoch=epoch,
                                                      resample=resample):
            step_start = time.perf_counter()
            to_numpy(steps.train(images, labels))
            in_steps += time.perf_counter() - step_start
            n += 1
        results.append((time.perf_counter() - start, in_steps, n))
    return results


def table1_steps(precision: str, repeats: int) -> dict:
    """2b. The Table 1 models' step (batch of the ``table1`` recipe), side by side.

    The baseline CNN (9x9 and 7x7 convolutions) on 28 x 28 and on RTS's 42 x
    42 canvas, the ST-CNN of each kind on 28 x 28, and the CNN in float32:
    what a cell's epoch costs, and what the transformer and the precision add.
    """
    batch = C.RECIPES["table1"].batch_size
    cnn28 = C.model_config("paper-cnn", input_size=28, dtype=precision)
    configs = {"CNN, 28x28": (cnn28, False),
               "CNN, 42x42 (RTS)": (C.model_config("paper-cnn", input_size=42,
                                                    dtype=precision), False),
               "CNN, 28x28, float32": (C.model_config("paper-cnn", input_size=28), False)}
    for kind in kinds.KINDS:
        configs[f"ST-CNN {kind}, 28x28"] = (C.model_config(f"st-cnn-{kind}", input_size=28,
                                                           dtype=precision), False)
    print(f"\n== 2b. Table 1 models: training step, batch {batch} ({precision}); "
          "(x) = time / the CNN's on 28x28 ==")
    rows = step_times(configs, repeats, batch=batch)
    base = rows["CNN, 28x28"].median
    results = {}
    for name, timing in rows.items():
        print(f"{name:36s} {timing}  {batch / timing.median:7.0f} images/s  "
              f"({timing.median / base:.2f}x)")
        results[name] = {"seconds": timing.median, "vs_cnn_28": timing.median / base}
    return results


def run(repeats: int = 15) -> dict:
    """Runs benchmarks 2-5, prints them with ratios, returns the numbers."""
    precision = auto_precision()  # what train.py uses by default
    default = C.model_config("predecessor", dtype=precision)
    results = {"precision": precision}
    print(f"\n== 2-3. training step, batch {BATCH}, 40x40 (preset seed, {precision}) ==")
    rows = step_times({
        "seed, our step": (default, False),
        "cnn (no transformer), our step": (C.model_config("cnn", dtype=precision), False),
        # The levers, one at a time: precision, and XLA for the whole step.
        "seed, our step in float32": (C.model_config("predecessor"), False),
        "seed, our step, whole step XLA (--xla)": (default, True),
        "seed, our step, Adam update op by op": (default, False, False),
    }, repeats)
    rows["seed, plain model.fit (float32)"] = fit_step_time(
        C.model_config("predecessor", dtype="float32"), repeats)
    for name, timing in rows.items():
        print(f"{name:36s} {timing}  {BATCH / timing.median:7.0f} images/s")
        results[name] = {"seconds": timing.median, "images_per_s": BATCH / timing.median}
    ours = rows["seed, our step"].median
    results["transformer_overhead"] = ours / rows["cnn (no transformer), our step"].median - 1
    results["speedup_vs_fit"] = rows["seed, plain model.fit (float32)"].median / ours
    print(f"transformer overhead: {100 * results['transformer_overhead']:+.1f}% (target <= 10%)")
    print(f"our step vs model.fit: {results['speedup_vs_fit']:.2f}x (target >= 1.5x "
          "and >= 1,200 images/s)")
    for name in ("seed, our step in float32", "seed, our step, whole step XLA (--xla)",
                 "seed, our step, Adam update op by op"):
        print(f"{name}: {rows[name].median / ours:.2f}x the time of our default step")

    flops = 3 * model_flops(build_model(default)) * BATCH  # forward + backward ~ 3x
    peak32, peak16 = matmul_peak(tf.float32), matmul_peak(tf.bfloat16)
    achieved = flops / ours
    peak = peak16 if precision == "mixed_bfloat16" else peak32
    results.update(step_flops=flops, achieved_flops=achieved, matmul_peak_float32=peak32,
                   matmul_peak_bfloat16=peak16, fraction_of_peak=achieved / peak)
    print(f"step: {flops / 1e9:.1f} GFLOP, achieved {achieved / 1e9:.0f} GFLOP/s = "
          f"{100 * achieved / peak:.0f}% of this machine's {precision.split('_')[-1]} matmul "
          f"peak, {achieved / peak32:.2f}x its float32 peak "
          f"(measured: float32 {peak32 / 1e9:.0f}, bfloat16 {peak16 / 1e9:.0f} GFLOP/s)")

    results["table1"] = table1_steps(precision, repeats)

    print("\n== 4. warping all 70,000 digits (seed protocol) ==")
    timing = warp_time()
    results["warp_70k_seconds"] = timing.median
    print(f"protocols.apply: {timing}  {70000 / timing.median:,.0f} images/s")

    print("\n== 5. one full epoch, 55,000 images, pipeline included ==")
    train = stn_data.load_data("predecessor", 0).train
    for resample in (False, True):
        key = "epoch_resampled" if resample else "epoch_fixed"
        results[key] = []
        for i, (seconds, in_steps, n) in enumerate(epoch_times(default, train, resample), 1):
            ratio = seconds / in_steps
            results[key].append({"seconds": seconds, "steps": n, "vs_steps": ratio})
            print(f"{'resampled' if resample else 'fixed'} warps, epoch {i}: {seconds:.1f} s "
                  f"for {n} steps, {ratio:.3f}x the time spent in its steps, i.e. "
                  f"{seconds - in_steps:.2f} s waiting for data ({55000 / seconds:.0f} images/s)")
    return results
