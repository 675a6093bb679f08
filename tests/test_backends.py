"""The layer on every Keras backend: JAX, PyTorch and TensorFlow.

Each other backend runs in its own subprocess (``KERAS_BACKEND`` is read once,
at import), ``tests/backend_worker.py``, which runs :func:`worker` here (and
tests/test_volumes.py's) once per backend: it writes its numbers to a
directory, and the tests here (on TensorFlow) check them against the TF
sampler (:mod:`stn.layer.transform`, through ``stn.layer.kinds.warp``):

* the ``keras.ops`` warp (:mod:`stn.layer.sampler`) of every kind equals the TF
  sampler's within 1e-5 (float32);
* its gradients, in images and in parameters, match float64 central
  differences;
* a small ST-CNN (``stn.model.build_model``) takes one ``model.fit`` epoch,
  and its gradient reaches the localization net through the sampler;
* ``stn.layers`` and ``stn.layer.kinds`` import without TensorFlow;
* a ``.keras`` file saved on TensorFlow loads there with the same outputs,
  and the file it saves loads here with the same outputs.

On TensorFlow itself, the fast path the layer runs (``stn.layer.kinds.keras_warp``:
XLA, hand-written gradients) is held equal to the ``keras.ops`` path.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from stn.layer import kinds as K  # imports Keras: its backend is fixed from here on
from stn.layer.kinds3d import image_kinds

BACKENDS = ("jax", "torch")
KINDS = image_kinds()  # the 2-D ones; tests/test_volumes.py holds the others
IN_SIZE, OUT_SIZE = (12, 14), (9, 11)
MODEL_SIZE = 28  # the conv localization net needs 28 px or more


# --- shared by both processes -------------------------------------------------

def case(kind: str, dtype=np.float32):
    """Images ``[3, 12, 14, 2]`` and parameters ``[3, P]`` near the identity, seeded."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    images = rng.random((3, *IN_SIZE, 2))
    params = K.identity(kind, 3) + rng.uniform(-0.15, 0.15, (3, K.get_kind(kind).size))
    if kind == "projective":
        params[:, 6:] *= 0.5  # keep the horizon well outside the image
    return images.astype(dtype), params.astype(dtype)


def small_st_cnn(kind: str = "projective"):
    """A small ST-CNN made of stn.layers only; the theta layer's kernel made non-zero."""
    import keras

    from stn.layer.layers import SpatialTransformer, conv_localization
    keras.utils.set_random_seed(0)
    inputs = keras.Input((MODEL_SIZE, MODEL_SIZE, 1))
    x = SpatialTransformer(conv_localization(kind=kind), kind=kind, name="transformer")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    theta = model.get_layer("transformer").localization.get_layer("theta")
    kernel, bias = theta.get_weights()
    rng = np.random.default_rng(1)
    theta.set_weights([rng.normal(0, 0.02, kernel.shape).astype("float32"), bias])
    return model


def model_inputs():
    return np.random.default_rng(2).random((4, MODEL_SIZE, MODEL_SIZE, 1)).astype("float32")


# --- the worker: run as a script under another backend ---------------------------

def _gradients(f, images, params):
    """``(d f / d images, d f / d params)`` by the backend's own autodiff."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        return [np.asarray(g) for g in jax.grad(f, argnums=(0, 1))(images, params)]
    import torch
    x, p = (torch.tensor(a, requires_grad=True) for a in (images, params))
    f(x, p).backward()
    return [x.grad.numpy(), p.grad.numpy()]


def _gradient_errors(kind: str, directions: int = 2) -> dict:
    """Relative errors of autodiff against float64 central differences.

    Directional: along random directions in images and in parameters, a
    few evaluations each (eager on JAX and PyTorch: each costs a dispatch per op).
    """
    import keras
    images, params = case(kind, np.float64)
    rng = np.random.default_rng(3)
    weights = keras.ops.convert_to_tensor(rng.normal(size=(3, *OUT_SIZE, 2)))

    def f(x, p):
        out = K.warp_ops(x, p, kind, OUT_SIZE)
        assert str(out.dtype).endswith("float64"), out.dtype
        return keras.ops.sum(out * weights)

    def value(x, p):
        return float(keras.ops.convert_to_numpy(f(x, p)))

    grads = _gradients(f, images, params)
    errors = {}
    for name, grad in zip(("images", "params"), grads):
        worst = 0.0
        for _ in range(directions):
            step = 1e-6 * rng.normal(size=grad.shape)
            moved = [(images + s, params) if name == "images" else (images, params + s)
                     for s in (step, -step)]
            numeric = value(*moved[0]) - value(*moved[1])
            worst = max(worst, abs(2 * float(np.sum(grad * step)) - numeric) / abs(numeric))
        errors[name] = worst
    return errors


def _fit_and_save(out: Path, tf_file: Path) -> dict:
    import keras

    import stn  # noqa: F401  (registers the layer for load_model)
    results = {}
    loaded = keras.saving.load_model(tf_file)
    results["loaded_from_tensorflow"] = np.asarray(loaded.predict(model_inputs(), verbose=0))
    model = small_st_cnn()
    results["own"] = np.asarray(model.predict(model_inputs(), verbose=0))
    model.save(out / "model.keras")
    # One epoch of a small ST-CNN of stn.model, the paper's architecture.
    import stn.model
    model = stn.model.build_model("st-cnn-affine", input_size=MODEL_SIZE, conv_filters=(4, 4),
                                  dense_units=16)
    theta = model.get_layer("transformer").localization.get_layer("theta")
    before = theta.get_weights()[0].copy()
    rng = np.random.default_rng(5)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(rng.random((32, MODEL_SIZE, MODEL_SIZE, 1)).astype("float32"),
                        rng.integers(0, 10, 32), batch_size=16, epochs=1, verbose=0)
    results["fit_loss"] = np.asarray(history.history["loss"])
    results["theta_moved"] = np.asarray(np.abs(theta.get_weights()[0] - before).max())
    return results


def worker(out: Path, tf_file: Path) -> None:
    """Everything a backend is checked on, written to ``out`` as .npz and .json."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)  # float64 for the finite differences

    forward = {}
    for kind in KINDS:
        images, params = case(kind)
        result = K.warp_ops(images, params, kind, OUT_SIZE)
        assert str(result.dtype).endswith("float32"), result.dtype
        forward[kind] = keras.ops.convert_to_numpy(result)
    np.savez(out / "forward.npz", **forward)
    import stn.layer.layers  # noqa: F401
    import stn.model  # noqa: F401  (the builders, and stn.train.config with the protocol registry)
    (out / "imports.json").write_text(json.dumps({"tensorflow": "tensorflow" in sys.modules}))
    errors = {kind: _gradient_errors(kind) for kind in KINDS}
    (out / "gradients.json").write_text(json.dumps(errors))
    np.savez(out / "model.npz", **_fit_and_save(out, tf_file))
    import stn.train.config
    import stn.train.training
    try:  # TensorFlow only: a clear error, and nothing written
        stn.train.training.train_and_evaluate(stn.train.config.make_config("st-cnn-affine", "r",
                                                                           recipe="cosine"),
                                        out / "run", verbose=0)
        message = None
    except RuntimeError as e:
        message = str(e)
    (out / "training.json").write_text(json.dumps({"error": message,
                                                   "run_dir": (out / "run").exists()}))


# --- the tests (TensorFlow backend) ------------------------------------------------

def save_tensorflow_model(stem: Path) -> None:
    """A small ST-CNN saved on TensorFlow (``stem.keras``) and its outputs (``stem.npy``)."""
    model = small_st_cnn()
    model.save(stem.with_suffix(".keras"))
    np.save(stem.with_suffix(".npy"), model.predict(model_inputs(), verbose=0))


@pytest.fixture(scope="module")
def tf_model_file(tmp_path_factory):
    """The small ST-CNN saved on TensorFlow, and its outputs."""
    import helpers  # here: the worker's own process imports no more than it needs

    folder = helpers.tensorflow_models(tmp_path_factory)
    return folder / "layer.keras", np.load(folder / "layer.npy")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory):
    """``(name, out_dir)``: the worker's results on that backend."""
    import helpers

    return request.param, helpers.backend_outputs(tmp_path_factory, request.param) / "layer"


def test_the_training_loop_says_it_needs_tensorflow(backend):
    result = json.loads((backend[1] / "training.json").read_text())
    assert "KERAS_BACKEND=tensorflow" in result["error"] and not result["run_dir"]


@pytest.mark.parametrize("kind", KINDS)
def test_keras_ops_warp_equals_the_tensorflow_sampler(backend, kind):
    images, params = case(kind)
    expected = K.warp(images, params, kind, OUT_SIZE).numpy()
    got = np.load(backend[1] / "forward.npz")[kind]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_the_layer_and_the_kinds_need_no_tensorflow(backend):
    assert json.loads((backend[1] / "imports.json").read_text()) == {"tensorflow": False}


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(backend, kind):
    errors = json.loads((backend[1] / "gradients.json").read_text())[kind]
    assert errors["params"] < 1e-6 and errors["images"] < 1e-6, errors


def test_st_cnn_fits_and_its_gradient_reaches_the_localization_net(backend):
    results = np.load(backend[1] / "model.npz")
    assert np.all(np.isfinite(results["fit_loss"]))
    assert results["theta_moved"] > 1e-5  # through the sampler into the parameters


def test_keras_files_load_across_backends(backend, tf_model_file):
    import keras

    import stn  # noqa: F401
    results = np.load(backend[1] / "model.npz")
    np.testing.assert_allclose(results["loaded_from_tensorflow"], tf_model_file[1],
                               rtol=0, atol=1e-5)
    theirs = keras.saving.load_model(backend[1] / "model.keras")
    np.testing.assert_allclose(theirs.predict(model_inputs(), verbose=0), results["own"],
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind, image_gradient",
                         [(kind, True) for kind in KINDS] + [("affine", False), ("tps", False)])
def test_the_tensorflow_fast_path_equals_the_keras_ops_path(kind, image_gradient):
    """The one seam: on TF, keras_warp runs stn.layer.transform under XLA."""
    import tensorflow as tf

    images, params = case(kind)
    weights = tf.constant(np.random.default_rng(3).normal(size=(3, *OUT_SIZE, 2)), tf.float32)
    results = []
    for warp in (K.warp_ops, lambda *a: K.keras_warp(*a, image_gradient=image_gradient)):
        x, p = tf.constant(images), tf.constant(params)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, p])
            out = warp(x, p, kind, OUT_SIZE)
            total = tf.reduce_sum(out * weights)
        grad_x, grad_p = tape.gradient(total, [x, p])
        results.append((out, grad_x if image_gradient else tf.zeros_like(x), grad_p))
    (out, *grads), (fast_out, *fast_grads) = results
    np.testing.assert_allclose(fast_out, out, rtol=0, atol=1e-5)
    for portable, fast in zip(grads, fast_grads):  # sums over pixels: float32 rounding
        scale = max(1.0, float(np.abs(portable).max()))
        np.testing.assert_allclose(fast, portable, rtol=0, atol=1e-5 * scale)

