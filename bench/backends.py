"""Benchmark: the layer's warp on each Keras backend (JAX, PyTorch, TensorFlow), CPU.

What ``SpatialTransformer`` runs on each backend, timed side by side:
``stn.layer.kinds.keras_warp(images, params, kind, image_gradient=False)`` on a
batch of 500 40x40x1 float32 images (the default training batch), forward
and forward + backward with respect to the parameters only (a training
step's transformer on the raw input). On TensorFlow that is today's fast
path (``kinds.warp_xla_params_grad`` inside a plain ``tf.function`` + tape,
what ``make train`` runs); on JAX the ``keras.ops`` sampler under
``jax.jit`` (as ``model.fit`` compiles it); on PyTorch the same sampler
eagerly (Keras's default on torch). Each backend lives in its own process
(``KERAS_BACKEND`` is fixed at import), timed in alternation
(bench.timing.measure_in_processes), so the ratios to TensorFlow are
measured side by side.

Runs where only JAX or PyTorch is installed (a missing backend prints as
such): ``python -m bench.backends [kinds...]``. On a GPU the same command
times each backend on its default device.
"""

import importlib.util
import os
import sys

from bench.timing import contender_table, decline, measure_in_processes, serve

BACKENDS = ("tensorflow", "jax", "torch")
BATCH, SIZE = 500, 40
KINDS = ("affine", "projective", "tps")
PATH = {
    "tensorflow": "tf.function + tape -> kinds.warp_xla_params_grad (the training path)",
    "jax": "jax.jit(jax.grad) of kinds.warp_ops (keras.ops)",
    "torch": "eager kinds.warp_ops (keras.ops) + backward()",
}


def _inputs(kind: str):
    import numpy as np

    from stn.layer import kinds as K
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, SIZE, SIZE, 1)).astype(np.float32)
    params = K.identity(kind, BATCH) + rng.uniform(-0.3, 0.3, (BATCH, K.get_kind(kind).size))
    return images, params.astype(np.float32)


def _tensorflow(kind, images, params):
    import tensorflow as tf

    from stn.layer import kinds as K
    x, p = tf.constant(images), tf.constant(params)

    @tf.function
    def forward():
        return K.keras_warp(x, p, kind, image_gradient=False)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = tf.reduce_sum(tf.square(K.keras_warp(x, p, kind, image_gradient=False)))
        return tape.gradient(loss, p)

    return f"TF {tf.__version__}", forward, forward_backward, lambda r: r.numpy()


def _jax(kind, images, params):
    import jax
    import jax.numpy as jnp

    from stn.layer import kinds as K
    x, p = jnp.asarray(images), jnp.asarray(params)
    warp = jax.jit(lambda x, p: K.keras_warp(x, p, kind, image_gradient=False))
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.square(
        K.keras_warp(x, p, kind, image_gradient=False)))))
    return (f"JAX {jax.__version__}", lambda: warp(x, p), lambda: grad(p, x),
            lambda r: r.block_until_ready())


def _torch(kind, images, params):
    import torch

    from stn.layer import kinds as K
    x, p = torch.from_numpy(images), torch.from_numpy(params)

    def forward():
        with torch.no_grad():
            return K.keras_warp(x, p, kind, image_gradient=False)

    def forward_backward():
        q = p.clone().requires_grad_(True)
        K.keras_warp(x, q, kind, image_gradient=False).square().sum().backward()
        return q.grad

    threads = torch.get_num_threads()
    return f"torch {torch.__version__}, {threads} threads", forward, forward_backward, lambda r: r


CONTENDERS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
"""Backend -> ``(kind, images, params) -> (label, forward, forward_backward, sync)``."""


def _serve(backend: str, kind: str) -> None:
    """Worker: ``python -m bench.backends <backend> <kind>``, one backend per process."""
    if importlib.util.find_spec(backend) is None:
        decline(f"{backend} is not installed (pip install \"stn[{backend}]\")")
        return
    os.environ["KERAS_BACKEND"] = backend  # before Keras is first imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    label, forward, forward_backward, sync = CONTENDERS[backend](kind, *_inputs(kind))
    serve(label, {"forward": forward, "forward_backward": forward_backward}, sync=sync)


def run(repeats: int = 30, kinds=KINDS) -> dict:
    """Prints one table per kind, with ratios to TensorFlow; returns the seconds."""
    print(f"\n== backends: the layer's warp (kinds.keras_warp), batch {BATCH}, {SIZE}x{SIZE}x1, "
          f"float32, gradient to the parameters; medians of {repeats} rounds, the backends "
          "timed in alternation, one process each ==")
    results = {}
    for kind in kinds:
        served = measure_in_processes("bench.backends", [[b, kind] for b in BACKENDS], repeats)
        print(f"-- {kind}\n{'backend: code path':72s} {'forward':31s}   fwd+bwd (params)")
        rows = contender_table(served, BACKENDS, kind, PATH, "tensorflow", 72)
        results[kind] = rows
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in BACKENDS:
        _serve(*sys.argv[1:])
    else:
        run(kinds=tuple(sys.argv[1:]) or KINDS)
