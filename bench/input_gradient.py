"""Benchmark 7: what the classifier's input gradient costs, by code path.

A spatial transformer's training step differentiates the classifier with
respect to its *input* image (the gradient must reach the sampler); a plain
CNN does not. Rows, each a full compiled training step (``stn.train.training.Steps``,
batch of the recipe, random data), timed in alternation:

- ``CNN, weights only``: the baseline step;
- ``CNN + input gradient, <path>``: the same step also computing the
  gradient of the loss with respect to the images, by TensorFlow's own
  backward convolution (``tf``) or by stn.layer.conv's matrix products
  (``stn.layer.conv``);
- ``ST-CNN affine, <path>``: the ST model's step with its classifier's first
  layer on that path;
- ``its localization net alone`` and ``its sampler alone``: the ST model's
  two transformer parts, each forward and backward on its own (the net to
  its weights, the sampler to the parameters), to show where the ST step's
  time beyond ``CNN + input gradient`` goes.

Then the first layer alone (its input gradient by each formulation) and the
default model's transformer overhead.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from bench.timing import measure_interleaved, to_numpy
from stn.train import config as C
from stn.layer import conv
from stn.data import pipeline as stn_data
from stn.layer import kinds
from stn.model import build_model, find_transformer
from stn.train.precision import auto_precision
from stn.train.training import Steps, example_losses, batch_sums

PATHS = {"tf": False, "stn.conv": True}  # row labels of results/bench.txt
"""Input-gradient paths by row label: ``build_model(fast_input_gradient=...)``."""


class InputGradientSteps(Steps):
    """Steps whose training step also takes the gradient of the loss w.r.t. the images.

    The gradient is folded into the returned sums (times zero), so a
    compiled graph cannot prune it.
    """

    def _replica_train(self, images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = self.model(images, training=True)
            losses = example_losses(labels, logits)
            loss = tf.reduce_mean(losses)
        *grads, image_grad = tape.gradient(loss, [*self.model.trainable_variables, images])
        self._apply(grads)
        loss_sum, correct, count = batch_sums(losses, logits, labels)
        return loss_sum + 0.0 * tf.reduce_sum(image_grad), correct, count


def _step(model_config: C.ModelConfig, fast: bool, input_gradient: bool, batch: int):
    keras.utils.set_random_seed(0)
    model = build_model(model_config, fast_input_gradient=fast)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    steps = (InputGradientSteps if input_gradient else Steps)(model, optimizer)
    size = model_config.input_size
    images = tf.random.stateless_uniform((batch, size, size, 1), (0, 1))
    labels = tf.random.stateless_uniform((batch,), (0, 2), maxval=10, dtype=tf.int32)
    return lambda: steps.train(images, labels)


def _transformer_parts(model_config: C.ModelConfig, batch: int) -> dict:
    """The ST model's localization net and sampler, each forward + backward alone."""
    keras.utils.set_random_seed(0)
    layer = find_transformer(build_model(model_config))
    net, size = layer.localization, model_config.input_size
    images = tf.random.stateless_uniform((batch, size, size, 1), (0, 3))
    theta = kinds.identity(layer.kind, batch)
    theta = tf.constant(theta + 0.05 * np.random.default_rng(0).standard_normal(theta.shape),
                        tf.float32)
    out = (model_config.transformer_output_size,) * 2 if model_config.transformer_output_size \
        else None

    @tf.function
    def net_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(net(images, training=True)))
        return tape.gradient(loss, net.trainable_variables)

    @tf.function
    def sampler_step():
        with tf.GradientTape() as tape:
            tape.watch(theta)
            warped = kinds.warp_xla_params_grad(images, theta, layer.kind, out)
            loss = tf.reduce_sum(tf.square(warped))
        return tape.gradient(loss, theta)

    return {"its localization net alone, fwd+bwd": net_step,
            "its sampler alone, fwd+bwd (theta)": sampler_step}


def table1_rows(precision: str, size: int, repeats: int) -> dict:
    """The paper's CNN and ST-CNN (affine) at ``size``: steps by path, side by side."""
    batch = C.RECIPES["table1"].batch_size
    cnn = C.model_config("paper-cnn", input_size=size, dtype=precision)
    st = C.model_config("st-cnn-affine", input_size=size, dtype=precision)
    fns = {"CNN, weights only": _step(cnn, False, False, batch)}
    for path, fast in PATHS.items():
        fns[f"CNN + input gradient, {path}"] = _step(cnn, fast, True, batch)
    for path, fast in PATHS.items():
        fns[f"ST-CNN affine, {path}"] = _step(st, fast, False, batch)
    fns.update(_transformer_parts(st, batch))
    return _report(f"Table 1 models, {size}x{size}, batch {batch}, {precision}",
                   measure_interleaved(fns, repeats, sync=to_numpy), "CNN, weights only")


def default_rows(precision: str, repeats: int) -> dict:
    """The default model (preset seed, 40x40) against its classifier alone, by path."""
    batch = C.RECIPES["cosine"].batch_size
    fns = {"cnn (no transformer), weights only": _step(
        C.model_config("cnn", dtype=precision), False, False, batch)}
    for path, fast in PATHS.items():
        fns[f"seed (default model), {path}"] = _step(
            C.model_config("predecessor", dtype=precision), fast, False, batch)
    return _report(f"default model, 40x40, batch {batch}, {precision}",
                   measure_interleaved(fns, repeats, sync=to_numpy),
                   "cnn (no transformer), weights only")


def layer_rows(precision: str, repeats: int) -> dict:
    """The first layer's input gradient alone: TensorFlow's vs each stn.layer.conv formulation."""
    dtype = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32
    results = {}
    for name, size, k, filters, padding in (("paper 9x9x64, 28x28", 28, 9, 64, "VALID"),
                                            ("paper 9x9x64, 42x42", 42, 9, 64, "VALID"),
                                            ("seed 3x3x16 same, 40x40", 40, 3, 16, "SAME")):
        batch = C.RECIPES["cosine" if name.startswith("seed") else "table1"].batch_size
        kernel = tf.cast(tf.random.stateless_normal((k, k, 1, filters), (1, 2)), dtype)
        out = size - k + 1 if padding == "VALID" else size
        dy = tf.cast(tf.random.stateless_normal((batch, out, out, filters), (3, 4)), dtype)
        pads = (0, 0) if padding == "VALID" else (conv.same_padding(size, k, 1),) * 2
        fns = {"forward": tf.function(lambda x=tf.zeros((batch, size, size, 1), dtype),
                                      w=kernel, p=padding: tf.nn.conv2d(x, w, 1, p)),
               "tf backward-data": tf.function(
                   lambda dy=dy, w=kernel, s=size, b=batch, p=padding:
                   tf.compat.v1.nn.conv2d_backprop_input([b, s, s, 1], w, dy, [1, 1, 1, 1], p))}
        for method in conv.METHODS:
            fns[f"stn.conv {method}"] = tf.function(
                lambda dy=dy, w=kernel, s=size, pads=pads, m=method:
                conv.input_gradient(dy, w, (s, s), 1, pads, m))
        chosen = conv.choose_method(dy.shape, kernel.shape, (size, size), dtype=dtype)
        results[name] = _report(f"first layer alone: {name}, batch {batch}, {precision}; "
                                f"auto chooses {chosen}",
                                measure_interleaved(fns, repeats, sync=to_numpy), "forward")
    return results


def epoch_rows(precision: str, epochs: int = 2) -> dict:
    """Whole training epochs (input pipeline included) by path, alternating paths.

    The old default run's epoch (preset predecessor, its protocol, recipe cosine) and
    a Table 1 ST-CNN cell's (ST-CNN Aff on R, recipe table1): what the
    change saves in the runs users make.
    """
    results = {}
    for name, preset, protocol, recipe in (("default run (seed on seed)", "predecessor",
                                            "predecessor", "cosine"),
                                           ("Table 1 cell (ST-CNN Aff on R)", "st-cnn-affine",
                                            "r", "table1")):
        config = C.make_config(preset, protocol, {"dtype": precision}, recipe=recipe)
        train = stn_data.load_data(protocol, 0).train
        steps = {}
        for path, fast in PATHS.items():
            keras.utils.set_random_seed(0)
            model = build_model(config.model, fast_input_gradient=fast)
            optimizer = keras.optimizers.Adam(1e-4)
            optimizer.build(model.trainable_variables)
            steps[path] = Steps(model, optimizer)
        times = {path: [] for path in PATHS}
        for epoch in range(epochs + 1):  # epoch 0 compiles, untimed
            for path, step in steps.items():
                start = time.perf_counter()
                for images, labels in stn_data.train_dataset(train, config.batch_size, seed=0,
                                                              epoch=epoch, resample=True,
                                                              protocol=protocol):
                    step.train(images, labels)
                to_numpy(step.optimizer.iterations)
                if epoch:
                    times[path].append(time.perf_counter() - start)
        base = float(np.median(times["tf"]))
        print(f"\n== 7. one epoch of the {name}, {precision}, batch {config.batch_size}; "
              f"median of {epochs} ==")
        results[name] = {}
        for path, seconds in times.items():
            median = float(np.median(seconds))
            print(f"{path:12s} {median:7.1f} s  ({median / base:.2f}x)  "
                  f"x {config.epochs} epochs = {median * config.epochs / 60:.1f} min")
            results[name][path] = {"seconds": median, "ratio": median / base}
    return results


def _report(title: str, rows: dict, base: str) -> dict:
    print(f"\n== 7. {title}; (x) = time / '{base}' ==")
    results = {}
    for name, timing in rows.items():
        ratio = timing.median / rows[base].median
        print(f"{name:40s} {timing}  ({ratio:.2f}x)")
        results[name] = {"seconds": timing.median, "ratio": ratio}
    return results


def run(repeats: int = 15) -> dict:
    """Benchmark 7 in the precision train.py picks here, then in float32."""
    results = {}
    for precision in dict.fromkeys((auto_precision(), "float32")):
        results[precision] = {
            "table1_28": table1_rows(precision, 28, repeats),
            "table1_42": table1_rows(precision, 42, repeats),
            "default": default_rows(precision, repeats),
            "layer": layer_rows(precision, repeats),
        }
        if precision == auto_precision():
            results[precision]["epochs"] = epoch_rows(precision)
        rows = results[precision]["table1_28"]
        base = rows["CNN, weights only"]["seconds"]
        for path in PATHS:
            extra = rows[f"CNN + input gradient, {path}"]["seconds"] / base - 1
            print(f"{precision}, 28x28: the input gradient by {path} adds {100 * extra:+.0f}% "
                  "to the CNN's step (target <= +15%); the ST-CNN step is "
                  f"{rows[f'ST-CNN affine, {path}']['ratio']:.2f}x the CNN's (target <= 1.25x)")
        rows = results[precision]["default"]
        for path in PATHS:
            print(f"{precision}, default model: transformer overhead by {path} "
                  f"{100 * (rows[f'seed (default model), {path}']['ratio'] - 1):+.1f}% "
                  "(target <= +5%)")
    return results
