"""stn.layer.conv: the first layer's input gradient by matrix products equals TensorFlow's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from stn.layer import conv
from stn.layer.layers import Conv2D
from stn.model import build_model

# (size, kernel, channels, filters, stride, padding): the paper's first layer
# (28 and RTS's 42), the seed model's (3x3 same, also strided), and odd shapes.
GEOMETRIES = [(28, 9, 1, 64, 1, "VALID"), (42, 9, 1, 8, 1, "VALID"), (40, 3, 1, 16, 1, "SAME"),
              (40, 3, 1, 16, 2, "SAME"), (13, 4, 2, 5, 3, "SAME"), (13, 5, 3, 4, 2, "VALID"),
              (9, 4, 1, 3, 1, "SAME")]


def _tf_gradients(x, kernel, stride, padding, upstream):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, stride, padding)
    return tape.gradient(y, [x, kernel], output_gradients=upstream), y


@pytest.mark.parametrize("method", conv.METHODS)
@pytest.mark.parametrize("size, k, channels, filters, stride, padding", GEOMETRIES)
def test_input_gradient_equals_tensorflows_in_float64(size, k, channels, filters, stride,
                                                      padding, method):
    rng = np.random.default_rng(size + k)
    x = tf.constant(rng.standard_normal((2, size, size, channels)))
    kernel = tf.constant(rng.standard_normal((k, k, channels, filters)))
    out = tf.nn.conv2d(x, kernel, stride, padding).shape
    upstream = tf.constant(rng.standard_normal(out))
    (want, _), _ = _tf_gradients(x, kernel, stride, padding, upstream)
    pads = (0, 0) if padding == "VALID" else (conv.same_padding(size, k, stride),) * 2
    got = conv.input_gradient(upstream, kernel, (size, size), stride, pads, method)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("size, k, channels, filters, stride, padding", GEOMETRIES[:4])
def test_conv2d_outputs_and_both_gradients_equal_tensorflows(size, k, channels, filters, stride,
                                                             padding):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, size, size, channels)), tf.float32)
    kernel = tf.constant(rng.standard_normal((k, k, channels, filters)), tf.float32)
    upstream = tf.constant(rng.standard_normal(tf.nn.conv2d(x, kernel, stride, padding).shape),
                           tf.float32)
    (want_x, want_w), want_y = _tf_gradients(x, kernel, stride, padding, upstream)
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = conv.conv2d(x, kernel, stride, padding)
    got_x, got_w = tape.gradient(y, [x, kernel], output_gradients=upstream)
    np.testing.assert_array_equal(y, want_y)  # the forward pass is TensorFlow's own
    np.testing.assert_array_equal(got_w, want_w)  # so is the kernel's gradient
    np.testing.assert_allclose(got_x, want_x, rtol=0, atol=2e-6 * np.abs(want_x).max())


def test_auto_picks_by_dtype_and_shape_and_rejects_unknown_methods():
    paper28, paper42 = ((256, 20, 20, 64), (9, 9, 1, 64), (28, 28)), ((256, 34, 34, 64),
                                                                        (9, 9, 1, 64), (42, 42))
    assert conv.choose_method(*paper28, dtype=tf.bfloat16) == "toeplitz"
    assert conv.choose_method(*paper42, dtype="bfloat16") == "toeplitz"
    assert conv.choose_method(*paper28, dtype=tf.float32) == "shift"
    seed = ((250, 40, 40, 16), (3, 3, 1, 16), (40, 40))
    assert conv.choose_method(*seed, dtype="bfloat16") == "gemm"  # 3.3x the arithmetic
    with pytest.raises(ValueError, match="unknown method"):
        conv.input_gradient(tf.zeros((1, 2, 2, 1)), tf.zeros((3, 3, 1, 1)), (4, 4), 1, (0, 0),
                            "fft")


def _twin_models(preset: str, dtype: str = "float32", size: int = 28):
    """The same weights with TensorFlow's first-layer gradient and with stn.layer.conv's."""
    keras.utils.set_random_seed(0)
    ours = build_model(preset, input_size=size, dtype=dtype)
    keras.utils.set_random_seed(0)
    theirs = build_model(preset, input_size=size, dtype=dtype, fast_input_gradient=False)
    theirs.set_weights(ours.get_weights())
    # Non-zero localization weights, so the gradient reaches theta's every entry.
    rng = np.random.default_rng(1)
    for a, b in zip(ours.trainable_variables, theirs.trainable_variables):
        value = a.numpy() + 0.01 * rng.standard_normal(a.shape).astype(a.dtype)
        a.assign(value)
        b.assign(value)
    return ours, theirs


def _gradients(model, images, labels, compile_mode: str):
    def fn(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        return tape.gradient(loss, [images, *model.trainable_variables])
    if compile_mode != "eager":
        fn = tf.function(fn, jit_compile=compile_mode == "xla")
    return [g.numpy() for g in fn(images)]


@pytest.mark.parametrize("compile_mode", ["eager", "graph", "xla"])
def test_whole_st_model_gradients_equal_tensorflows(compile_mode):
    ours, theirs = _twin_models("st-cnn-affine")
    assert type(ours.get_layer("conv1")) is Conv2D
    assert type(theirs.get_layer("conv1")) is keras.layers.Conv2D
    rng = np.random.default_rng(2)
    images = tf.constant(rng.random((8, 28, 28, 1)), tf.float32)
    labels = tf.constant(np.arange(8) % 10)
    got = _gradients(ours, images, labels, compile_mode)
    want = _gradients(theirs, images, labels, compile_mode)
    names = ["images"] + [v.path for v in ours.trainable_variables]
    for name, g, w in zip(names, got, want):
        assert np.abs(w).max() > 0, name
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * np.abs(w).max(), err_msg=name)


@pytest.mark.parametrize("preset, size", [("seed", 40), ("st-cnn-affine", 28)])
def test_mixed_bfloat16_gradients_agree_to_its_rounding(preset, size):
    ours, theirs = _twin_models(preset, "mixed_bfloat16", size)
    images = tf.constant(np.random.default_rng(3).random((8, size, size, 1)), tf.float32)
    labels = tf.constant(np.arange(8) % 10)
    got = _gradients(ours, images, labels, "graph")
    want = _gradients(theirs, images, labels, "graph")
    for g, w in zip(got, want):
        # bfloat16 keeps 8 bits: sums taken in another order differ by a few of its steps.
        np.testing.assert_allclose(g, w, rtol=0, atol=3e-2 * np.abs(w).max())


def test_a_model_saved_with_keras_conv2d_loads_and_gives_the_same_outputs(tmp_path):
    old = keras.saving.load_model(helpers.ROOT / "pretrained" / "st-cnn-affine_rts.keras")
    assert type(old.get_layer("conv1")) is keras.layers.Conv2D  # saved before stn.layer.conv
    size = old.input_shape[1]
    new = build_model("st-cnn-affine", input_size=size,
                      transformer_output_size=old.get_layer("transformer").output_size[0],
                      dtype=old.get_layer("conv1").dtype_policy.name)
    assert type(new.get_layer("conv1")) is Conv2D
    new.set_weights(old.get_weights())
    images = np.random.default_rng(4).random((16, size, size, 1)).astype(np.float32)
    np.testing.assert_array_equal(new.predict(images, verbose=0), old.predict(images, verbose=0))
    new.save(tmp_path / "new.keras")  # and the new layer round-trips itself
    again = keras.saving.load_model(tmp_path / "new.keras")
    assert type(again.get_layer("conv1")) is Conv2D
    np.testing.assert_array_equal(again.predict(images, verbose=0),
                                  new.predict(images, verbose=0))
