"""Models: shapes and sizes of the presets, identity at init, saving, learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stn.train import config as C
from stn.layer import kinds
from stn.layer.kinds3d import image_kinds
from stn.layer import transform as T
from stn.layer.layers import SpatialTransformer, conv_localization, dense_localization
from stn.model import build_model, find_transformer, transformer_outputs

RNG = np.random.default_rng(0)


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


def conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


# Parameter counts written out from the layer sizes in the issue/paper.
SEED_LOCALIZATION = dense_params(40 * 40, 20) + dense_params(20, 6)
SEED_CLASSIFIER = (conv_params(3, 1, 16) + conv_params(3, 16, 16)
                   + dense_params(16 * 40 * 40, 1024) + dense_params(1024, 10))
# 40 -> conv3 40 -> pool 20 -> conv3 20 -> pool 10: 10 * 10 * 16 features.
POOLED_CLASSIFIER = (conv_params(3, 1, 16) + conv_params(3, 16, 16)
                     + dense_params(16 * 10 * 10, 1024) + dense_params(1024, 10))
# 42 -> pool 21 -> conv5 17 -> pool 8 -> conv5 4: 4 * 4 * 20 features.
PAPER_LOCALIZATION = (conv_params(5, 1, 20) + conv_params(5, 20, 20)
                      + dense_params(4 * 4 * 20, 50) + dense_params(50, 6))
# 42 -> conv9 34 -> pool 17 -> conv7 11 -> pool 5: 5 * 5 * 64 features.
PAPER_CLASSIFIER = (conv_params(9, 1, 64) + conv_params(7, 64, 64)
                    + dense_params(5 * 5 * 64, 128) + dense_params(128, 10))
# On 28x28: conv9 20 -> pool 10 -> conv7 4 -> pool 2: 2 * 2 * 64 features.
PAPER_CLASSIFIER_28 = (conv_params(9, 1, 64) + conv_params(7, 64, 64)
                       + dense_params(2 * 2 * 64, 128) + dense_params(128, 10))
# 28 -> pool 14 -> conv5 10 -> pool 5 -> conv5 1: 20 features; P outputs.
PAPER_LOCALIZATION_28 = (conv_params(5, 1, 20) + conv_params(5, 20, 20)
                         + dense_params(20, 50))
FCN_28 = dense_params(28 * 28, 256) + dense_params(256, 256) + dense_params(256, 10)
FC_LOCALIZATION_28 = dense_params(28 * 28, 32) + 2 * dense_params(32, 32)


@pytest.mark.parametrize("preset, size, params", [
    ("seed", 40, SEED_LOCALIZATION + SEED_CLASSIFIER),
    ("seed-original", 40, SEED_LOCALIZATION + SEED_CLASSIFIER),
    # 40 -> pool 20 -> conv5 16 -> pool 8 -> conv5 4: the same 4 * 4 * 20 features as on 42.
    ("seed-conv", 40, PAPER_LOCALIZATION + SEED_CLASSIFIER),
    ("pooled", 40, PAPER_LOCALIZATION + POOLED_CLASSIFIER),
    ("paper", 42, PAPER_LOCALIZATION + PAPER_CLASSIFIER),
    ("cnn", 40, SEED_CLASSIFIER),
    ("paper-cnn", 42, PAPER_CLASSIFIER),
])
def test_preset_shapes_and_parameter_counts(preset, size, params):
    _check_preset(preset, size, params)


@pytest.mark.parametrize("kind", image_kinds())
def test_table1_presets_per_kind(kind):
    size = kinds.KINDS[kind].size
    _check_preset(f"st-cnn-{kind}", 28,
                  PAPER_LOCALIZATION_28 + dense_params(50, size) + PAPER_CLASSIFIER_28)
    _check_preset(f"st-fcn-{kind}", 28, FC_LOCALIZATION_28 + dense_params(32, size) + FCN_28)
    _check_preset("paper-fcn", 28, FCN_28)


def test_classifier_dropout_is_one_layer_before_the_logits_and_checked():
    plain = build_model("st-cnn-affine", input_size=28)
    dropped = build_model("st-cnn-affine", input_size=28, classifier_dropout=0.5)
    assert dropped.count_params() == plain.count_params()
    names = [layer.name for layer in dropped.layers]
    assert names[-2:] == ["classifier_dropout", "logits"] and "classifier_dropout" not in [
        layer.name for layer in plain.layers]
    assert dropped.get_layer("classifier_dropout").rate == 0.5
    with pytest.raises(ValueError, match="classifier_dropout"):
        build_model("paper-cnn", classifier_dropout=1.0)
    # make_config routes a model field given with the training settings to the model.
    config = C.make_config("seed-conv", "seed", classifier_dropout=0.3, alignment_weight=1.0,
                           recipe="cosine")
    assert (config.model.classifier_dropout, config.model.localization) == (0.3, "conv")
    assert config.alignment.weight == 1.0 and config.recipe == "cosine"


def _homogeneous(params: np.ndarray, kind: str) -> np.ndarray:
    """``[B, 3, 3]``: the matrix of affine or projective ``params [B, P]``."""
    n = len(params)
    bottom = np.ones((n, 1)) if kind == "projective" else np.tile([[0.0, 0.0, 1.0]], (n, 1))
    return np.concatenate([params, bottom], 1).reshape(n, 3, 3)


@pytest.mark.parametrize("kind", ["affine", "projective"])
def test_compose_reads_the_first_map_at_the_second_maps_image_of_each_point(kind):
    from stn.layer.layers import compose

    rng = np.random.default_rng(5)
    size = kinds.KINDS[kind].size
    theta, other = (kinds.identity(kind, 4) + scale * rng.standard_normal((4, size))
                    for scale in (0.1, 0.2))
    got = kinds.KINDS[kind].tf_grid(compose(tf.constant(theta), tf.constant(other), kind),
                                     5, 7).numpy()
    # By hand: the output pixel centres p, then q = S p, then T q.
    xs, ys = (np.arange(7) + 0.5) / 7 * 2 - 1, (np.arange(5) + 0.5) / 5 * 2 - 1
    p = np.stack([*np.meshgrid(xs, ys), np.ones((5, 7))], -1)  # (5, 7, 3)
    q = np.einsum("bij,hwj->bhwi", _homogeneous(other, kind), p)
    r = np.einsum("bij,bhwj->bhwi", _homogeneous(theta, kind), q / q[..., 2:])
    np.testing.assert_allclose(got, r[..., :2] / r[..., 2:], atol=1e-10)


def test_iterations_compose_the_nets_predictions_and_start_at_the_identity():
    from stn.layer.layers import compose

    rng = np.random.default_rng(7)
    images = rng.random((4, 20, 20, 1)).astype(np.float32)
    shift = np.array([[0.9, 0.1, 0.2, -0.1, 1.1, -0.1]])  # a constant prediction A

    def constant_net():  # predicts A whatever it reads
        return keras.layers.Dense(6, kernel_initializer="zeros",
                                  bias_initializer=keras.initializers.Constant(shift[0]))

    flat = keras.Sequential([keras.layers.Flatten(), constant_net()])
    twice = SpatialTransformer(flat, iterations=2, output_size=(12, 12))
    square = compose(tf.constant(shift, tf.float32), tf.constant(shift, tf.float32), "affine")
    np.testing.assert_allclose(twice.params(images), np.tile(square, (4, 1)), atol=1e-6)
    want = T.bilinear_sample(images, kinds.KINDS["affine"].tf_grid(np.tile(square, (4, 1)), 12, 12))
    np.testing.assert_allclose(twice(images), want, atol=1e-5)
    # A model starts at the identity, refined or not, and trains end to end.
    model = build_model("st-cnn-affine", input_size=28, transformer_iterations=2)
    layer = find_transformer(model)
    digits = rng.random((4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(layer.params(digits), kinds.identity("affine", 4), atol=1e-6)
    assert SpatialTransformer.from_config(layer.get_config()).iterations == 2
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(digits, training=True) ** 2)
    grads = tape.gradient(loss, layer.localization.trainable_variables)
    assert all(g is not None for g in grads) and any(np.any(g.numpy() != 0) for g in grads)
    for bad in (dict(iterations=0), dict(iterations=2, kind="tps")):
        with pytest.raises(ValueError, match="iterations"):
            SpatialTransformer(conv_localization(kind=bad.get("kind", "affine")), **bad)
    with pytest.raises(ValueError, match="transformer_iterations"):
        build_model("st-cnn-tps", input_size=28, transformer_iterations=2)


def test_output_jitter_draws_only_in_training_and_is_checked():
    centre = np.random.default_rng(6).uniform(10, 18, (8, 1, 1, 2))
    grid = np.stack(np.meshgrid(np.arange(28), np.arange(28)), -1)  # smooth blobs
    images = np.exp(-np.sum((grid - centre) ** 2, -1, keepdims=True) / 50).astype(np.float32)
    plain = build_model("st-cnn-affine", input_size=28)
    jittered = build_model("st-cnn-affine", input_size=28, output_jitter=0.05)
    jittered.set_weights(plain.get_weights())  # the same weights: the seed state is extra
    layer = find_transformer(jittered)
    assert len(jittered.variables) == len(plain.variables) + 1 and layer.output_jitter == 0.05
    np.testing.assert_array_equal(jittered(images, training=False), plain(images, training=False))
    first, second = (layer(images, training=True).numpy() for _ in range(2))
    identity = find_transformer(plain)(images, training=True).numpy()  # the identity map
    gap = np.abs(first - identity).mean()
    assert 0.003 < gap < 0.05 and not np.allclose(first, second)  # mild, and a new draw each call
    config = SpatialTransformer.from_config(layer.get_config())
    assert (config.output_jitter, config.kind) == (0.05, "affine")
    for bad, match in ((dict(output_jitter=-0.1), "output_jitter"),
                       (dict(output_jitter=0.1, kind="tps"), "output_jitter needs")):
        with pytest.raises(ValueError, match=match):
            kind = bad.get("kind", "affine")
            SpatialTransformer(conv_localization(kind=kind), **bad)
    with pytest.raises(ValueError, match="output_jitter"):
        build_model("paper-cnn", output_jitter=0.05)
    assert C.make_config("st-cnn-affine", "r", output_jitter=0.05,
                         recipe="cosine").model.output_jitter == 0.05


def _check_preset(preset, size, params):
    model = build_model(preset, input_size=size)
    assert model.count_params() == params
    assert model.output_shape == (None, 10)
    logits = model(np.zeros((3, size, size, 1), np.float32))
    assert logits.shape == (3, 10) and logits.dtype == tf.float32
    assert (find_transformer(model) is None) == (preset in ("cnn", "paper-cnn", "paper-fcn"))


def test_seed_shapes_follow_the_predecessor():
    # 40x40 -> 16x40x40 -> 25,600 features (stride 1; see README).
    model = build_model("seed")
    assert model.get_layer("conv2").output.shape == (None, 40, 40, 16)
    assert model.get_layer("flatten").output.shape == (None, 25600)
    strided = build_model("seed", conv_strides=2)
    assert strided.get_layer("flatten").output.shape == (None, 16 * 10 * 10)


@pytest.mark.parametrize("preset, size", [("seed", 40), ("paper", 42), ("st-cnn-projective", 28),
                                          ("st-cnn-tps", 28), ("st-fcn-tps", 28)])
def test_transformer_is_the_identity_at_initialisation(preset, size):
    model = build_model(preset, input_size=size)
    images = RNG.random((5, size, size, 1)).astype(np.float32)
    theta, out = transformer_outputs(model, images)
    kind = find_transformer(model).kind
    np.testing.assert_array_equal(theta, kinds.identity(kind, 5).astype(np.float32))
    np.testing.assert_array_equal(out, images)


def test_predecessor_transformer_starts_far_from_identity():
    # Glorot init and tanh: the initial theta is random and every entry is
    # in (-1, 1), so the identity is out of reach; the output is a shrunken,
    # distorted copy, not the input.
    keras.utils.set_random_seed(0)
    model = build_model("seed-original")
    images = RNG.random((5, 40, 40, 1)).astype(np.float32)
    theta, out = transformer_outputs(model, images)
    assert np.all(np.abs(theta) < 1)
    assert np.abs(out - images).mean() > 0.1


def test_transformer_outputs_needs_a_transformer():
    with pytest.raises(ValueError, match="no SpatialTransformer"):
        transformer_outputs(build_model("cnn"), np.zeros((1, 40, 40, 1), np.float32))


def test_transformer_outputs_batches_and_matches_the_layer():
    model = build_model("seed")
    layer = find_transformer(model)
    layer.localization.get_layer("theta").bias.assign([0.9, 0.1, 0.05, -0.1, 1.1, 0.0])
    images = RNG.random((7, 40, 40, 1)).astype(np.float32)
    theta, out = transformer_outputs(model, images, batch_size=3)
    assert theta.shape == (7, 6) and out.shape == (7, 40, 40, 1)
    # Equal up to float32 rounding of 40-pixel coordinates (different graphs
    # may fuse the arithmetic differently).
    np.testing.assert_allclose(out, layer(images, training=False), rtol=0, atol=4e-5)
    np.testing.assert_allclose(out, T.transform(images, theta), rtol=0, atol=4e-5)



def test_transformer_outputs_traces_once_per_model():
    # Monitor calls it after every epoch: a new tf.function per call would
    # retrace each time. Batches of 3 and 1 generalise to one trace (or two).
    import gc
    import weakref

    from stn import model as M

    model = build_model("seed", dense_units=8)
    images = RNG.random((7, 40, 40, 1)).astype(np.float32)
    first = transformer_outputs(model, images, batch_size=3)
    for _ in range(4):
        again = transformer_outputs(model, images, batch_size=3)
    np.testing.assert_array_equal(first[1], again[1])
    assert M._TRANSFORMER_STEPS[model][None].experimental_get_tracing_count() <= 2
    # The cache holds no model alive.
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_dropout_only_in_training():
    localization = dense_localization()
    layer = SpatialTransformer(localization)
    images = RNG.random((64, 40, 40, 1)).astype(np.float32)
    layer.build(images.shape)
    # A non-zero kernel so the dropout in front of it changes theta.
    localization.get_layer("theta").kernel.assign(RNG.normal(0, 0.01, (20, 6)))
    np.testing.assert_array_equal(layer(images, training=False), layer(images, training=False))
    assert np.abs(layer(images, training=True) - layer(images, training=False)).max() > 0


@pytest.mark.parametrize("jit_compile", [True, False])
def test_image_gradient_off_stops_only_the_sampler_path(jit_compile):
    images = tf.constant(RNG.random((8, 40, 40, 1)).astype(np.float32))
    grads = {}
    for image_gradient in (True, False):
        keras.utils.set_random_seed(3)  # the same weights for both layers
        layer = SpatialTransformer(dense_localization(hidden=8), jit_compile=jit_compile,
                                   image_gradient=image_gradient)
        layer.build(images.shape)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.square(layer(images, training=False)))
        grads[image_gradient] = (tape.gradient(loss, images),
                                 tape.gradient(loss, layer.trainable_variables))
    # At initialisation theta is the identity and does not depend on the
    # images (zero kernel): through the sampler d/dx sum(x^2) = 2x exactly,
    # through the localization net nothing.
    np.testing.assert_allclose(grads[True][0], 2 * images.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(grads[False][0], np.zeros(images.shape, np.float32))
    # The weights' gradients (theta's kernel among them) do not change.
    assert any(np.any(g) for g in grads[True][1])
    for with_images, without in zip(grads[True][1], grads[False][1]):
        np.testing.assert_allclose(with_images, without, rtol=1e-5, atol=1e-7)


def _random_model(tmp_path, preset, size):
    keras.utils.set_random_seed(1)
    model = build_model(preset, input_size=size)
    # Move away from the identity so a broken reload would show.
    for variable in find_transformer(model).localization.trainable_variables:
        variable.assign(variable + RNG.normal(0, 0.01, variable.shape))
    return model


@pytest.mark.parametrize("preset, size", [("seed", 40), ("seed-original", 40), ("paper", 42),
                                          ("st-cnn-projective", 28), ("st-fcn-tps", 28)])
def test_save_load_round_trip(tmp_path, preset, size):
    model = _random_model(tmp_path, preset, size)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = RNG.random((4, size, size, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(transformer_outputs(loaded, images)[1],
                                  transformer_outputs(model, images)[1])


def test_layer_drops_into_another_model(tmp_path):
    # The layer in a user's Sequential model, with another output size and
    # three channels, survives a save -> load round trip.
    layer = SpatialTransformer(dense_localization(hidden=8), output_size=(20, 30))
    model = keras.Sequential([keras.Input((32, 32, 3)), layer, keras.layers.GlobalAveragePooling2D()])
    layer.localization.get_layer("theta").bias.assign([0.5, 0.0, 0.1, 0.0, 0.5, -0.1])
    images = RNG.random((2, 32, 32, 3)).astype(np.float32)
    assert layer(images).shape == (2, 20, 30, 3)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6, atol=1e-6)
    config = layer.get_config()
    assert config["output_size"] == (20, 30)
    clone = SpatialTransformer.from_config(config)
    assert clone.output_size == (20, 30) and clone.localization is not layer.localization


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("resnet")
    with pytest.raises(ValueError, match="ModelConfig fields"):
        build_model("seed", hidden=3)
    with pytest.raises(ValueError, match="theta_activation"):
        SpatialTransformer(dense_localization(), theta_activation="sigmoid")
    with pytest.raises(ValueError, match="expects 40"):
        C.Config(protocol="rts")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        C.make_config(batch_size=-5)
    with pytest.raises(ValueError, match="unknown protocol"):
        C.make_config(protocol="rst")


def test_config_dict_round_trip():
    config = C.make_config("paper", "rts", epochs=3, resample_warps=True, recipe="cosine")
    assert C.config_from_dict(C.config_to_dict(config)) == config


def test_model_overfits_one_batch():
    # A smaller dense layer for speed; the same code path as training.
    keras.utils.set_random_seed(0)
    model = build_model("seed", dense_units=64)
    images = RNG.random((32, 40, 40, 1)).astype(np.float32)
    labels = np.arange(32) % 10
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    first = float(step())
    for _ in range(60):
        loss = float(step())
    assert first > 2.0 and loss < 0.05
    assert np.mean(np.argmax(model(images), -1) == labels) == 1.0
    # The transformer got gradients too: its last layer moved off zero.
    assert np.abs(find_transformer(model).localization.get_layer("theta").kernel.numpy()).max() > 0


def test_mixed_bfloat16_keeps_the_transformer_and_logits_in_float32():
    model = build_model("seed", dtype="mixed_bfloat16")
    assert find_transformer(model).compute_dtype == "float32"
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("dense").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    images = RNG.random((4, 40, 40, 1)).astype(np.float32)
    logits = model(images)
    assert logits.dtype == tf.float32
    # At initialisation the transformer is still exactly the identity.
    np.testing.assert_array_equal(transformer_outputs(model, images)[1], images)
    # Same weights in float32 give nearly the same logits (bfloat16 has 8 bits).
    reference = build_model("seed")
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(logits, reference(images), atol=0.05)


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx2 avx512f avx512_bf16 amx_tile", "mixed_bfloat16"),
    ("fpu avx2 amx_bf16", "mixed_bfloat16"),
    ("fpu avx2 avx512f avx512_vnni", "float32"),
])
def test_auto_precision_reads_the_cpu_flags(tmp_path, flags, expected):
    from stn.train.precision import auto_precision

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides instead of the CPU flags")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert auto_precision(str(cpuinfo)) == expected
    assert auto_precision(str(tmp_path / "missing")) == "float32"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("kind", image_kinds())
def test_layer_under_a_global_mixed_precision_policy(policy, kind):
    # Users set a global policy (mixed_float16 on Volta/Turing GPUs): the
    # layer must build, train a step and match float32, its grid and sampler
    # staying in float32 (XLA's CPU gather has no float16 kernel).
    images = RNG.random((4, 28, 28, 1)).astype(np.float32)
    keras.utils.set_random_seed(2)
    reference = SpatialTransformer(conv_localization(kind=kind), kind=kind)
    expected = reference(images, training=False)
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(2)
        layer = SpatialTransformer(conv_localization(kind=kind), kind=kind)
        out = layer(images, training=False)
        assert out.dtype == layer.compute_dtype != "float32"
        theta = layer.transform_and_theta(images, training=False)[1]
        assert theta.dtype == tf.float32
        # Off by the output's rounding and the localization net's half
        # precision (TPS control points at +-1/3 are not exact in bfloat16).
        atol = 1e-2 if policy == "mixed_float16" else 3e-2
        np.testing.assert_allclose(tf.cast(out, tf.float32), expected, atol=atol)
        optimizer = keras.optimizers.SGD(0.1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(layer(images, training=True), tf.float32))
        grads = tape.gradient(loss, layer.trainable_variables)
        assert all(np.all(np.isfinite(g)) for g in grads)
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_model_trains_with_loss_scaling():
    from stn.train.optimizers import make_optimizer
    from stn.train.training import Steps

    keras.utils.set_random_seed(0)
    # The paper's layers with 8 filters, not 64: float16 convolutions are
    # slow on CPU, and the loss scaling does not depend on their width.
    model = build_model("paper", input_size=28, dtype="mixed_float16", conv_filters=(8, 8))
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert find_transformer(model).compute_dtype == "float32"
    optimizer = make_optimizer(C.make_config("paper", "r", model_overrides={
        "dtype": "mixed_float16"}, recipe="cosine"), steps_per_epoch=1)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer)
    images = tf.constant(RNG.random((16, 28, 28, 1)).astype(np.float32))
    labels = tf.constant(np.arange(16, dtype=np.int32) % 10)
    before = [v.numpy() for v in model.trainable_variables]
    # Dynamic loss scaling starts at 2^15 and halves on every overflow,
    # skipping that step; within a few steps the weights move.
    for _ in range(8):
        loss, correct, count = steps.train(images, labels)
    assert np.isfinite(float(loss)) and float(count) == 16
    assert any(np.any(b != v.numpy()) for b, v in zip(before, model.trainable_variables))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_localization_lr_scale_multiplies_only_the_localization_steps(dtype):
    # One Adam step from the same weights on the same batch: its step is
    # lr * g / (|g| + eps), so the localization net's must be `scale` times
    # the unscaled one's and every other step identical. A LossScaleOptimizer
    # wrapper (mixed_float16) must not lose the scaling.
    from stn.train.optimizers import make_optimizer
    from stn.train.training import Steps

    images = tf.constant(RNG.random((16, 28, 28, 1)).astype(np.float32))
    labels = tf.constant(np.arange(16, dtype=np.int32) % 10)

    def one_step(scale):
        keras.utils.set_random_seed(0)
        # The classifier's convolutions with 8 filters, not 64 (float16 ones
        # are slow on CPU): the localization net, under test, is the preset's.
        config = C.make_config("st-cnn-affine", "r", {"dtype": dtype, "conv_filters": (8, 8)},
                               recipe="table1", schedule="constant", localization_lr_scale=scale)
        model = build_model(config.model)
        # Non-zero theta kernel, so that every localization variable has a gradient.
        theta = find_transformer(model).localization.get_layer("theta")
        kernel = np.random.default_rng(1).normal(0.0, 0.01, theta.kernel.shape)
        theta.kernel.assign(kernel.astype(np.float32))
        optimizer = make_optimizer(config, steps_per_epoch=1)
        optimizer.build(model.trainable_variables)
        before = [v.numpy() for v in model.trainable_variables]
        steps = Steps(model, optimizer)
        for _ in range(20):  # float16 loss scaling skips steps until it stops overflowing
            steps.train(images, labels)
            if any(np.any(b != v.numpy()) for b, v in zip(before, model.trainable_variables)):
                break
        return [(v.path, v.numpy() - b) for v, b in zip(model.trainable_variables, before)]

    plain, scaled = one_step(1.0), one_step(7.0)
    localization = [p for p, _ in scaled if "/localization/" in p]
    assert len(localization) == 8  # 2 convs, the dense layer, theta: kernels and biases
    for (path, step), (_, step_scaled) in zip(plain, scaled):
        assert np.any(step != 0), path
        if "/localization/" in path:
            # atol: the steps are differences of float32 weights (ulp 7e-9 at 0.1).
            np.testing.assert_allclose(step_scaled, 7.0 * step, rtol=1e-3, atol=1e-7,
                                       err_msg=path)
        else:
            np.testing.assert_allclose(step_scaled, step, rtol=1e-5, atol=1e-9, err_msg=path)


def test_recipe_predecessor_is_the_predecessor_run_of_the_results():
    # results/seed_seed_predecessor was trained (test accuracy 0.9678) by the
    # code of that time, whose defaults were the predecessor's training:
    # --recipe predecessor must resolve to exactly that config.
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results/seed_seed_predecessor/config.json"
    then = C.config_from_dict(json.loads(path.read_text())["config"])
    now = C.make_config("seed", "seed", {"dtype": "mixed_bfloat16"}, recipe="predecessor")
    assert now == then
    default = C.make_config("seed", "seed", {"dtype": "mixed_bfloat16"}, recipe="default")
    assert default.recipe == "cosine" and default != then
    assert (default.schedule, default.batch_size, default.resample_warps) == ("cosine", 250, True)
