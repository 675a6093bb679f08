"""Export for inference: ``model.export(path, format=...)`` on TensorFlow.

Each artifact is run by its own runtime on the committed pretrained model's
test digits (the first ``N`` of the split tests/test_pretrained.py checks)
and must give the Keras model's logits within 1e-4:

* ``tf_saved_model``: reloaded with ``tf.saved_model.load`` in a fresh
  Python process that never imports ``stn``; the committed file as it is
  (mixed bfloat16 classifier, Keras's Conv2D) and its float32 copy (below),
  whose gradients (``stn.layers.Conv2D``'s and the sampler's hand-written
  ones, tensorflow #40166) reload too;
* ``onnx`` (tf2onnx, run by onnxruntime), with the layer's ``jit_compile``
  off: tf2onnx does not convert the XLA-compiled sampler;
* ``litert`` (run by ai-edge-litert's interpreter).

ONNX and LiteRT take the *float32 copy*: the same weights in a model that
``stn.model.build_model`` builds from the committed config with
``dtype="float32"`` (so its first convolution is ``stn.layers.Conv2D``, with
its custom gradient). A bfloat16 graph does not run there: onnxruntime has no
bfloat16 Conv, and LiteRT needs TensorFlow's Flex ops for it. docs/backends.md's
"Export" section says so, and what the other backends can export.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
import stn  # noqa: F401  (registers the layers load_model needs)
from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.layer.layers import Conv2D
from stn.model import build_model, find_transformer

PRETRAINED = helpers.ROOT / "pretrained"
NAME = "st-cnn-affine_rts"
N = 256  # test digits: enough to cover every class, cheap to run
TOLERANCE = 1e-4
GRAD_N = 16  # digits whose input gradient is compared after the reload
pytestmark = pytest.mark.slow  # real MNIST

# Run with a fresh interpreter, in a temporary directory: only TensorFlow and NumPy.
RELOAD = """
import sys
import numpy as np
import tensorflow as tf

folder, grad_n, *names = sys.argv[1:]
images = tf.constant(np.load(f"{folder}/images.npy"))
for name in names:
    loaded = tf.saved_model.load(f"{folder}/{name}")
    np.save(f"{folder}/{name}_logits.npy", loaded.serve(images).numpy())
few = images[:int(grad_n)]
with tf.GradientTape() as tape:  # through the last model's hand-written gradients
    tape.watch(few)
    total = tf.reduce_sum(loaded.serve(few))
np.save(f"{folder}/{name}_grad.npy", tape.gradient(total, few).numpy())
assert "stn" not in sys.modules, "the SavedModel needed stn"
"""


@pytest.fixture(scope="module")
def record():
    return json.loads((PRETRAINED / f"{NAME}.json").read_text())


@pytest.fixture(scope="module")
def images(record):
    """float32 ``[N, 42, 42, 1]``: the first N digits of the pretrained model's test split."""
    test = stn_data.load_data(record["protocol"], record["seed"], max_train_examples=1).test
    return np.asarray(test.images[:N], np.float32)


@pytest.fixture(scope="module")
def pretrained():
    """The committed model as it is: the classifier in mixed bfloat16."""
    return keras.saving.load_model(PRETRAINED / f"{NAME}.keras")


@pytest.fixture(scope="module")
def float32_copy(record, pretrained):
    """A fresh ``build_model`` of the committed config in float32, with its weights."""
    config = C.config_from_dict(record["config"]).model
    model = build_model(config, dtype="float32")
    model.set_weights(pretrained.get_weights())
    return model


def reference(model, images):
    """The Keras model's logits, as evaluation computes them (a graph, not eager:
    under mixed bfloat16 the two differ by ~0.06, oneDNN's fusions)."""
    return model.predict(images, batch_size=N, verbose=0)


def max_diff(a, b, what: str) -> float:
    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    print(f"{what}: max abs diff {diff:.2e}")  # shown with pytest -s
    return diff


def run_onnx(path, images) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_float32_copy_is_the_committed_model(pretrained, float32_copy, images):
    assert pretrained.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    assert type(float32_copy.get_layer("conv1")) is Conv2D
    assert float32_copy.get_layer("conv1").dtype_policy.name == "float32"
    # The same argmax on all but a few digits: bfloat16 rounding of the classifier.
    same = reference(pretrained, images).argmax(1) == reference(float32_copy, images).argmax(1)
    assert same.mean() > 0.99


def test_saved_model_reloads_without_stn(pretrained, float32_copy, images, tmp_path):
    models = {"committed": pretrained, "float32": float32_copy}
    for name, model in models.items():
        assert find_transformer(model).jit_compile  # the XLA sampler exports as it is
        model.export(str(tmp_path / name), format="tf_saved_model", verbose=False)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path), str(GRAD_N), *models],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, model in models.items():
        logits = np.load(tmp_path / f"{name}_logits.npy")
        assert max_diff(logits, reference(model, images), f"tf_saved_model {name}") < TOLERANCE
    # Gradients through the hand-written ones reload too (tensorflow #40166).
    x = tf.constant(images[:GRAD_N])
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(float32_copy(x, training=False))
    expected = tape.gradient(total, x).numpy()
    assert max_diff(np.load(tmp_path / "float32_grad.npy"), expected, "gradient") < TOLERANCE


def test_onnx_runs_in_onnxruntime_with_the_plain_sampler(float32_copy, images, tmp_path):
    expected = reference(float32_copy, images)
    transformer = find_transformer(float32_copy)
    transformer.jit_compile = False  # tf2onnx cannot convert the XLA-compiled sampler
    try:
        float32_copy.export(str(tmp_path / "model.onnx"), format="onnx", verbose=False)
    finally:
        transformer.jit_compile = True
    assert max_diff(run_onnx(tmp_path / "model.onnx", images), expected, "onnx") < TOLERANCE


def test_onnx_of_the_xla_sampler_does_not_load(float32_copy, tmp_path):
    """Why docs/backends.md asks for ``jit_compile=False``: tf2onnx leaves the XLA
    function as a ``PartitionedCall`` node, which onnxruntime refuses. If this
    starts passing through, its Export section can drop that step."""
    assert find_transformer(float32_copy).jit_compile
    float32_copy.export(str(tmp_path / "model.onnx"), format="onnx", verbose=False)
    with pytest.raises(Exception, match="PartitionedCall"):
        run_onnx(tmp_path / "model.onnx", np.zeros((1, 42, 42, 1), np.float32))


def test_litert_runs_in_its_interpreter(float32_copy, images, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    assert find_transformer(float32_copy).jit_compile  # the converter inlines the XLA sampler
    float32_copy.export(str(tmp_path / "model.tflite"), format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(tmp_path / "model.tflite"))
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inputs["index"], images.shape)  # exported for batch 1
    interpreter.allocate_tensors()
    interpreter.set_tensor(inputs["index"], images)
    interpreter.invoke()
    logits = interpreter.get_tensor(outputs["index"])
    assert max_diff(logits, reference(float32_copy, images), "litert") < TOLERANCE
