"""stn.train.alignment: the label-free consistency term, its zero, and training with it."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from stn.train import alignment as align
from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.layer import kinds
from stn.train import runs
from stn.train import training
from stn.model import build_model, find_transformer

_MAKE_STEPS = training.make_steps


def _random_affine(n: int, rng) -> np.ndarray:
    return (np.array([1, 0, 0, 0, 1, 0]) + 0.3 * rng.standard_normal((n, 6))).astype(np.float32)


def _compose_inverse_rotation(params: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """``R(angle)^-1 A`` for affine ``A`` as ``[n, 6]``, by hand in NumPy."""
    c, s = np.cos(-angles), np.sin(-angles)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)
    return np.einsum("nij,njk->nik", rot, params.reshape(-1, 2, 3)).reshape(-1, 6)


def test_consistency_is_zero_for_the_inverse_rotation_composed_by_hand():
    rng = np.random.default_rng(0)
    params = _random_affine(16, rng)
    angles = rng.uniform(-math.pi, math.pi, 16).astype(np.float32)
    exact = _compose_inverse_rotation(params, angles).astype(np.float32)
    gap = align.consistency(tf.constant(params), tf.constant(exact), tf.constant(angles), "affine")
    np.testing.assert_allclose(gap, 0.0, atol=1e-11)
    # ... and not for another map: the term is not blind.
    wrong = align.consistency(tf.constant(params), tf.constant(params), tf.constant(angles),
                              "affine")
    assert np.all(wrong.numpy()[np.abs(angles) > 0.1] > 1e-3)


def test_with_zooms_the_gap_is_zero_for_the_inverse_similarity_composed_by_hand():
    rng = np.random.default_rng(5)
    params = _random_affine(16, rng)
    angles = rng.uniform(-1.0, 1.0, 16).astype(np.float32)
    zooms = np.exp(rng.uniform(-0.3, 0.3, 16)).astype(np.float32)
    g = align.rotation_params(tf.constant(angles), tf.constant(zooms)).numpy().reshape(-1, 2, 3)
    np.testing.assert_allclose(g[:, :, :2], zooms[:, None, None] * np.stack(
        [[np.cos(angles), -np.sin(angles)], [np.sin(angles), np.cos(angles)]]).transpose(2, 0, 1),
        atol=1e-6)
    exact = _compose_inverse_rotation(params, angles) / zooms[:, None]  # G^-1 A = R^-1 A / s
    args = [tf.constant(a, tf.float32) for a in (params, exact, angles)]
    np.testing.assert_allclose(align.consistency(*args, "affine", tf.constant(zooms)), 0.0,
                               atol=1e-11)
    rotation_only = align.consistency(*args, "affine")  # the zoom is not ignored
    assert np.all(rotation_only.numpy()[np.abs(np.log(zooms)) > 0.05] > 1e-4)
    seed = tf.constant([0, 7], tf.int64)
    drawn = align.draw_zooms(1000, 1.3, seed).numpy()
    assert drawn.min() >= 1 / 1.3 - 1e-6 and drawn.max() <= 1.3 + 1e-6
    assert abs(np.mean(np.log(drawn))) < 0.02  # log-uniform about 1
    assert not np.allclose(np.log(drawn) / np.log(1.3),
                           align.draw_angles(1000, 1.0, seed).numpy() / np.radians(1.0))


def test_zooms_change_the_update_and_need_the_term():
    split = helpers.synthetic_split(16, np.random.default_rng(2))
    after = {z: [] for z in (1.0, 1.5)}
    sums = {z: _one_step(split, align.Alignment(1.0, zoom=z), after[z]) for z in after}
    assert sums[1.0][3] != sums[1.5][3]  # the gap of the zoomed g is another number
    assert any(not np.allclose(a, b) for a, b in zip(after[1.0], after[1.5]))
    assert C.make_config("st-cnn-affine", "rts", alignment_weight=1.0,
                         alignment_zoom=1.3, recipe="cosine").alignment.zoom == 1.3
    for bad, message in ((0.8, "must be finite and in"), (math.nan, "must be finite and in")):
        with pytest.raises(ValueError, match=message):
            C.make_config("st-cnn-affine", "rts", alignment_weight=1.0, alignment_zoom=bad,
                          recipe="cosine")
    with pytest.raises(ValueError, match="acts on alignment_weight"):
        C.make_config("st-cnn-affine", "rts", alignment_zoom=1.3, recipe="cosine")


def test_that_zero_means_equal_outputs_in_our_samplers_convention():
    # A quarter turn maps pixel centres onto pixel centres, so the sampler
    # rotates exactly: then the transformer's output on the rotated image
    # with the consistent map R^-1 A is its output on the image with A.
    rng = np.random.default_rng(1)
    images = tf.constant(rng.random((4, 28, 28, 1)), tf.float32)
    quarter = np.full(4, math.pi / 2, np.float32)
    rotated = kinds.warp(images, align.rotation_params(tf.constant(quarter)))
    np.testing.assert_allclose(rotated[0, :, :, 0], np.rot90(images[0, :, :, 0], k=1), atol=1e-5)
    params = _random_affine(4, rng)
    direct = kinds.warp(images, params)
    through = kinds.warp(rotated, _compose_inverse_rotation(params, quarter).astype(np.float32))
    np.testing.assert_allclose(through, direct, atol=1e-5)


@pytest.mark.parametrize("kind", ["affine", "projective", "tps"])
def test_mean_angle_reads_the_rotation_of_every_kind(kind):
    angles = np.array([0.3, -0.1, 0.2], np.float32)
    points = align.map_points(tf.constant(kinds.identity(kind, 3), tf.float32), kind)
    if kind == "affine":
        params = align.rotation_params(tf.constant(angles))
    else:  # the rotated identity, fitted by the kind's own parameters
        params = _rotated_kind_params(kind, angles)
    np.testing.assert_allclose(align.mean_angle(params, kind), angles.mean(), atol=1e-5)
    assert points.shape == (3, align.POINTS ** 2, 2)


def _rotated_kind_params(kind: str, angles: np.ndarray) -> tf.Tensor:
    c, s = np.cos(angles), np.sin(angles)
    if kind == "projective":
        return tf.constant(np.stack([c, -s, 0 * c, s, c, 0 * c, 0 * c, 0 * c], -1), tf.float32)
    control = kinds.identity(kind, 1).reshape(-1, 2)  # the TPS's control points, (x, y)
    turned = np.einsum("nij,mj->nmi", np.stack([np.stack([c, -s], -1),
                                                np.stack([s, c], -1)], -2), control)
    return tf.constant(turned.reshape(len(angles), -1), tf.float32)


def test_image_angles_read_each_maps_own_rotation_and_the_pull_sums_their_squares():
    angles = np.array([0.3, -0.1, 0.2, -0.5], np.float32)
    zoomed = align.rotation_params(tf.constant(angles)).numpy().reshape(-1, 2, 3)
    zoomed *= [[0.6], [0.6]]  # each map zoomed and shifted: its angle is unchanged
    zoomed[..., 2] += 0.2
    got = align.image_angles(tf.constant(zoomed.reshape(-1, 6)), "affine")
    np.testing.assert_allclose(got, angles, atol=1e-5)
    np.testing.assert_allclose(align.mean_angle(tf.constant(zoomed.reshape(-1, 6)), "affine"),
                               angles.mean(), atol=1e-5)
    # In the penalty: W * (... + R * sum(angle_i^2) / global batch size).
    t = align.Terms(tf.constant([0.5, 1.5]), tf.ones(2), tf.constant(0.1), tf.constant(0.0),
                    tf.constant([0.3, -0.4]))
    on, off = (float(align.Alignment(2.0, image_pull=r).penalty(t, 4.0, 2)) for r in (0.5, 0.0))
    np.testing.assert_allclose(on - off, 2.0 * 0.5 * (0.09 + 0.16) / 4.0, rtol=1e-6)


def test_the_decayed_pull_falls_linearly_to_zero_over_the_epochs():
    decayed = align.Alignment(1.0, image_pull=0.5, pull_decay=True)
    assert [decayed.pull_scale(e, 5) for e in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert align.Alignment(1.0, image_pull=0.5).pull_scale(4, 5) == 1.0  # no decay: constant
    early = align.Alignment(1.0, image_pull=0.5, pull_decay=True, pull_epochs=2)
    assert [early.pull_scale(e, 5) for e in range(5)] == [1.0, 0.5, 0.0, 0.0, 0.0]
    t = align.Terms(tf.constant([0.5, 1.5]), tf.ones(2), tf.constant(0.1), tf.constant(0.0),
                    tf.constant([0.3, -0.4]))
    full, half = (float(decayed.penalty(t, 4.0, 1, scale)) for scale in (1.0, 0.5))
    none = float(align.Alignment(1.0).penalty(t, 4.0, 1))
    np.testing.assert_allclose(half - none, (full - none) / 2, rtol=1e-6)
    # In training: the factor is set each epoch, so a resumed run gets the same.
    config = C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_image_pull=0.1,
                           alignment_pull_decay=True, epochs=3, recipe="cosine")
    assert config.alignment.pull_decay
    with pytest.raises(ValueError, match="acts on alignment_image_pull"):
        C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_pull_decay=True,
                      recipe="cosine")
    for bad, message in ((4.0, "must be finite and in"), (math.nan, "must be finite and in")):
        with pytest.raises(ValueError, match=message):
            C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_image_pull=0.1,
                          alignment_pull_decay=True, alignment_pull_epochs=bad, epochs=3,
                          recipe="cosine")
    with pytest.raises(ValueError, match="acts on alignment_pull_decay"):
        C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_image_pull=0.1,
                      alignment_pull_epochs=2.0, recipe="cosine")


def test_the_image_pull_changes_the_update_not_the_logged_gap():
    split = helpers.synthetic_split(16, np.random.default_rng(2))
    after = {r: [] for r in (0.0, 1.0)}
    sums = {r: _one_step(split, align.Alignment(1.0, image_pull=r), after[r], steps=2)
            for r in after}
    assert sums[0.0] == sums[1.0]
    assert any(not np.allclose(a, b) for a, b in zip(after[0.0], after[1.0]))
    assert C.make_config("st-cnn-affine", "r", alignment_weight=1.0,
                         alignment_image_pull=0.01, recipe="cosine").alignment.image_pull == 0.01
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="alignment_image_pull"):
            C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_image_pull=bad,
                          recipe="cosine")
    with pytest.raises(ValueError, match="acts on alignment_weight"):
        C.make_config("st-cnn-affine", "r", alignment_image_pull=0.01, recipe="cosine")


def _one_step(split, alignment, weights=None, steps=1):
    """The sums of a training step (the last of ``steps`` on one batch); with
    ``weights=[]``, the weights after it appended."""
    keras.utils.set_random_seed(0)
    model = build_model("st-cnn-affine", input_size=split.images.shape[1],
                        conv_filters=(4, 4), dense_units=8)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    train = training.Steps(model, optimizer, alignment=alignment, seed=0)
    images, labels = next(iter(stn_data.train_dataset(split, 8, seed=0, epoch=0)))
    for _ in range(steps):
        sums = [float(v) for v in train.train(images, labels)]
    if weights is not None:
        weights += [w.numpy() for w in model.trainable_variables]
    return sums


def test_one_localization_pass_serves_the_loss_and_the_term(monkeypatch):
    # The step runs the transformer itself and hands its map to the term: the
    # loss, logits and gradients are those of the model's own forward plus the
    # term's own pass on the same images, with one localization pass fewer.
    split = helpers.synthetic_split(16, np.random.default_rng(3))
    keras.utils.set_random_seed(0)
    model = build_model("st-cnn-affine", input_size=split.images.shape[1],
                        conv_filters=(4, 4), dense_units=8)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    term = align.Alignment(1.0, scale_free=True, image_pull=0.3)
    steps = training.Steps(model, optimizer, alignment=term, seed=5)
    images, labels = next(iter(stn_data.train_dataset(split, 8, seed=0, epoch=0)))
    layer, size = find_transformer(model), tf.constant(8.0)
    angles = align.draw_angles(8, term.degrees, tf.constant([5, 0], tf.int64))  # step 0's draw
    passes = []
    predict = layer._predict
    monkeypatch.setattr(layer, "_predict", lambda *a: passes.append(1) or predict(*a))
    with tf.GradientTape(persistent=True) as tape:
        loss, _, logits, (gaps,) = steps._loss(images, labels, size)
        assert len(passes) == 2  # x and g.x; the model's forward and the term shared x's
        reference_logits = model(images, training=True)
        t = align.terms(layer, images, angles)
        reference = (tf.reduce_sum(training.example_losses(labels, reference_logits)) / size
                     + term.penalty(t, size, 1))
    np.testing.assert_allclose(logits, reference_logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gaps, tf.reduce_sum(t.gaps), rtol=1e-5)
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    for a, b, v in zip(tape.gradient(loss, model.trainable_variables),
                       tape.gradient(reference, model.trainable_variables),
                       model.trainable_variables):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(b).max()),
                                   err_msg=v.path)


def test_training_never_reads_the_warps_shuffling_them_changes_nothing():
    split = helpers.synthetic_split(16, np.random.default_rng(2))
    shuffled = dataclasses.replace(split, warps=split.warps[::-1].copy())
    term = align.Alignment(weight=1.0)
    # The training pipeline yields images and labels only.
    element = stn_data.train_dataset(split, 8, seed=0, epoch=0).element_spec
    assert len(element) == 2
    first, second = _one_step(split, term), _one_step(shuffled, term)
    assert len(first) == 4 and first[3] > 0  # loss, correct, count, consistency gap
    assert first == second


def test_the_scale_free_gap_does_not_reward_zooming_in():
    rng = np.random.default_rng(3)
    params = _random_affine(8, rng)
    angles = rng.uniform(-1.0, 1.0, 8).astype(np.float32)
    other = _random_affine(8, rng)  # an inconsistent map of the rotated images
    ident = align.map_points(tf.constant(kinds.identity("affine", 1)), "affine")
    np.testing.assert_allclose(align.relative_size(ident, ident, "affine"), [1.0], rtol=1e-6)
    term, plain = align.Alignment(1.0, scale_free=True), align.Alignment(1.0)
    for zoom in (1.0, 0.5):  # both maps zoomed in about the centre by a factor 2
        scaled = [p.reshape(-1, 2, 3) * [[zoom], [zoom]] for p in (params, other)]
        points = [align.map_points(tf.constant(p.reshape(-1, 6), tf.float32), "affine")
                  for p in scaled]
        t = align.Terms(align._gap(*points, tf.constant(angles)),
                        align.relative_size(*points, "affine"), tf.constant(0.0),
                        tf.constant(0.0))
        penalty = float(term.penalty(t, 8.0, 1))
        unnormalized = float(plain.penalty(t, 8.0, 1))
        if zoom == 1.0:
            reference, reference_plain = penalty, unnormalized
    np.testing.assert_allclose(penalty, reference, rtol=1e-5)  # the same gap, scale-free
    np.testing.assert_allclose(unnormalized, reference_plain / 4.0, rtol=1e-5)  # else / zoom^2
    config = C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_scale_free=True,
                           recipe="cosine")
    assert config.alignment.scale_free


def test_the_scale_gauge_pulls_the_batchs_common_zoom_to_the_identity():
    rng = np.random.default_rng(4)
    params = _random_affine(8, rng)
    angles = tf.constant(rng.uniform(-1.0, 1.0, 8).astype(np.float32))
    ident = align.map_points(tf.constant(kinds.identity("affine", 8)), "affine")
    np.testing.assert_allclose(align.mean_log_size(ident, "affine"), 0.0, atol=1e-6)
    logs = []
    for zoom in (1.0, 0.5):  # the maps zoomed in about their centres by a factor 2
        zoomed = params.reshape(-1, 2, 3) * [[zoom, zoom, 1.0]]
        points = align.map_points(tf.constant(zoomed.reshape(-1, 6), tf.float32), "affine")
        logs.append(float(align.mean_log_size(points, "affine")))
    np.testing.assert_allclose(logs[1] - logs[0], math.log(0.25), rtol=1e-5)  # log(zoom^2)
    # In the penalty: the gauge adds W * log_size^2, shared among the replicas.
    t = align.Terms(tf.constant([0.5, 1.5]), tf.ones(2), tf.constant(0.0), tf.constant(-0.6))
    on, off = (float(align.Alignment(2.0, scale_gauge=g).penalty(t, 4.0, 2)) for g in (True, False))
    np.testing.assert_allclose(on - off, 2.0 * 0.36 / 2, rtol=1e-6)
    # In training: the gauge changes the update, not the logged gap. (Its
    # gradient is zero at the identity, where every run starts: two steps.)
    split = helpers.synthetic_split(16, np.random.default_rng(2))
    after = {g: [] for g in (False, True)}
    sums = {g: _one_step(split, align.Alignment(1.0, scale_gauge=g), after[g], steps=2)
            for g in after}
    assert sums[False] == sums[True]
    assert any(not np.allclose(a, b) for a, b in zip(after[False], after[True]))
    assert C.make_config("st-cnn-affine", "r", alignment_weight=1.0,
                         alignment_scale_gauge=True, recipe="cosine").alignment.scale_gauge


def test_congealing_is_the_distance_to_the_class_mean_in_numpy():
    rng = np.random.default_rng(8)
    outputs = rng.random((12, 5, 5, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 12)
    got = align.congealing(tf.constant(outputs), tf.constant(labels), classes=10).numpy()
    flat = outputs.reshape(12, -1)
    want = [np.mean((flat[i] - flat[labels == labels[i]].mean(0)) ** 2) for i in range(12)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    same = np.repeat(outputs[:3], 4, axis=0)  # every class's outputs equal: zero
    zero = align.congealing(tf.constant(same), tf.constant(np.repeat([0, 1, 2], 4)))
    np.testing.assert_allclose(zero, 0.0, atol=1e-12)
    # In a step: it changes the update; the config checks it.
    split = helpers.synthetic_split(16, np.random.default_rng(2))
    after = {}
    for w in (0.0, 5.0):
        keras.utils.set_random_seed(0)
        model = build_model("st-cnn-affine", input_size=split.images.shape[1],
                            conv_filters=(4, 4), dense_units=8)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        steps = training.Steps(model, optimizer, congeal_weight=w)
        images, labels = next(iter(stn_data.train_dataset(split, 8, seed=0, epoch=0)))
        steps.train(images, labels)
        after[w] = [v.numpy() for v in model.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(after[0.0], after[5.0]))
    assert C.make_config("st-cnn-affine", "r", congeal_weight=1.0,
                         recipe="cosine").congeal_weight == 1.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(C.ConfigError, match="congeal_weight"):
            C.make_config("st-cnn-affine", "r", congeal_weight=bad, recipe="cosine")
    with pytest.raises(C.ConfigError, match="needs a model with a transformer"):
        C.make_config("paper-cnn", "r", congeal_weight=1.0, recipe="cosine")


def test_the_ablation_switches_each_term_off_and_logs_the_gap_anyway():
    t = align.Terms(tf.constant([0.5, 1.5]), tf.ones(2), tf.constant(0.2), tf.constant(0.0))
    penalties = {terms: float(align.Alignment(2.0, terms=terms).penalty(t, 4.0, 1))
                 for terms in ("both", "consistency", "angle")}
    np.testing.assert_allclose([penalties["consistency"], penalties["angle"], penalties["both"]],
                               [2.0 * 2.0 / 4.0, 2.0 * 0.04, 2.0 * (0.5 + 0.04)], rtol=1e-6)
    # With the consistency off, the step still reports its gap (the monitor)
    # but its update differs: the term is off, not its measurement.
    split = helpers.synthetic_split(16, np.random.default_rng(2))
    after = {t: [] for t in ("both", "angle")}
    sums = {t: _one_step(split, align.Alignment(1.0, terms=t), after[t]) for t in after}
    assert sums["angle"] == sums["both"] and sums["both"][3] > 0
    assert any(not np.allclose(a, b) for a, b in zip(after["both"], after["angle"]))
    config = C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_terms="angle",
                           recipe="cosine")
    assert config.alignment.terms == "angle"
    with pytest.raises(ValueError, match="alignment_terms"):
        C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_terms="gauge",
                      recipe="cosine")


def test_the_alignment_term_needs_a_transformer_reading_the_images():
    with pytest.raises(C.ConfigError, match="needs a model with a transformer"):
        C.make_config("paper-cnn", "r", alignment_weight=1.0, recipe="cosine")
    for bad in (-1.0, float("nan")):
        with pytest.raises(C.ConfigError, match="alignment_weight"):
            C.make_config("st-cnn-affine", "r", alignment_weight=bad, recipe="cosine")
    with pytest.raises(C.ConfigError, match="alignment_degrees"):
        C.make_config("st-cnn-affine", "r", alignment_weight=1.0, alignment_degrees=0.0,
                      recipe="cosine")


def test_the_upright_recipe_is_the_default_run_and_drops_its_term_where_it_is_off():
    # make train: the seed classifier behind the conv localization net, with the
    # term chosen by the upright-default screen (its row is this config).
    config = C.make_config(C.DEFAULT_PRESET, recipe=C.DEFAULT_RECIPE)
    chosen = C.make_config(C.DEFAULT_PRESET, recipe="cosine", alignment_weight=2.0,
                           alignment_scale_free=True, alignment_image_pull=0.3,
                           localization_lr_scale=3.0)
    assert config == dataclasses.replace(chosen, recipe="upright")
    # A model without a transformer, or the term turned off by a flag, takes
    # the recipe's training without the term's parts (no error for settings the
    # user never gave); the localization rate goes only with the transformer.
    plain = C.make_config("cnn", recipe="upright")
    assert plain == dataclasses.replace(C.make_config("cnn", recipe="cosine"), recipe="upright")
    off = C.make_config("seed-conv", recipe="upright", alignment_weight=0.0)
    assert (off.alignment, off.localization_lr_scale) == (None, 3.0)
    with pytest.raises(C.ConfigError, match="acts on alignment_weight"):  # given: refused
        C.make_config("seed-conv", recipe="upright", alignment_weight=0.0,
                      alignment_image_pull=0.3)
    assert C.make_config("predecessor", recipe="upright").model == C.model_config("predecessor")


@pytest.mark.slow
def test_a_tiny_run_with_the_term_logs_its_gap(tmp_path, monkeypatch):
    # Every part of the term on: the image pull decayed over the epochs, zooms.
    config = C.make_config("st-cnn-affine", "r", {"conv_filters": (4, 4), "dense_units": 16},
                           recipe="table1", epochs=2, batch_size=64, max_train_examples=256,
                           max_eval_examples=256,
                           alignment_weight=1.0, alignment_image_pull=0.1,
                           alignment_pull_decay=True, alignment_zoom=1.3)
    made = []
    monkeypatch.setattr(training, "make_steps",
                        lambda *a, **k: made.append(_MAKE_STEPS(*a, **k)) or made[-1])
    training.train_and_evaluate(config, tmp_path / "run", verbose=0)
    assert float(made[0].pull_scale.numpy()) == 0.0  # the last epoch's: decayed to 0
    history = runs.read_history(tmp_path / "run")
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["train_consistency_px"]) and row["train_consistency_px"] > 0
               for row in history)


def test_the_alignment_json_has_the_issues_shape(tmp_path):
    from experiments import alignment as study

    rows = study.collect(tmp_path, "mixed_bfloat16")  # no runs of the method here yet
    keys = {"model", "method", "protocol", "seed", "error_percent", "rotation_ratio",
            "shift_std_px", "run"}
    assert rows and all(set(row) == keys for row in rows)
    paper = [r for r in rows if r["method"] == "paper" and r["model"] == "ST-CNN Aff"]
    assert sorted((r["protocol"], r["seed"]) for r in paper) == [
        ("R", 0), ("R", 1), ("R", 2), ("RTS", 0), ("RTS", 1), ("RTS", 2)]
    names = [u[0] for group in study.units().values() for u in group]
    assert len(names) == len(set(names))  # one run directory per unit
