"""stn.train.checkpoints: keyed by variable path, and the older index-keyed ones."""

import keras
import numpy as np
import pytest

from stn.train import checkpoints
from stn.train import runs
from stn.model import build_model


def two_dense(order=("a", "b"), units=4):
    """A model of two equal Dense layers named ``order``, in that order, and its Adam."""
    inputs = keras.Input((units,))
    x = inputs
    for name in order:
        x = keras.layers.Dense(units, name=name)(x)
    model = keras.Model(inputs, x)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    return model, optimizer


def fill(model, optimizer, rng):
    """Gives every variable distinct random values; returns them by variable path."""
    for v in [*model.variables, *optimizer.variables]:
        if v.dtype.startswith("float"):
            v.assign(rng.random(v.shape).astype(v.dtype))
    return {v.path: v.numpy() for v in model.variables}


def save(run_dir, model, optimizer, epoch=1):
    checkpoints.save_checkpoint(run_dir, model, optimizer, epoch)
    runs.write_history(run_dir, [dict.fromkeys(runs.HISTORY_FIELDS, e)
                                 for e in range(1, epoch + 1)])


def save_by_index(run_dir, model, optimizer, epoch=1):
    """A checkpoint as stn wrote them before they were keyed by path."""
    arrays = {"epoch": np.int64(epoch),
              **{f"model/{i}": v.numpy() for i, v in enumerate(model.variables)},
              **{f"optimizer/{i}": v.numpy() for i, v in enumerate(optimizer.variables)}}
    np.savez(run_dir / runs.CHECKPOINT, **arrays)
    runs.write_history(run_dir, [dict.fromkeys(runs.HISTORY_FIELDS, e)
                                 for e in range(1, epoch + 1)])


def test_keys_are_variable_paths_the_same_in_any_process(tmp_path):
    # The second model's unnamed layers are numbered on (dense_1, adam_1, ...):
    # its keys, and so the checkpoint, must not depend on what came before.
    model, optimizer = build_model("seed", dense_units=8), keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    weights = fill(model, optimizer, np.random.default_rng(0))
    save(tmp_path, model, optimizer, epoch=2)
    with np.load(tmp_path / runs.CHECKPOINT) as saved:
        names = set(saved.files)
    assert {"epoch", "model/conv1/kernel", "model/transformer/localization/theta/bias",
            "optimizer/adam/iteration", "optimizer/adam/conv1_kernel_momentum"} <= names

    again, again_optimizer = build_model("seed", dense_units=8), keras.optimizers.Adam()
    again_optimizer.build(again.trainable_variables)
    assert [v.path for v in again.variables] != list(weights)  # numbered on
    assert checkpoints.restore_checkpoint(tmp_path, again, again_optimizer) == 2
    for before, v in zip(weights.values(), again.variables):
        np.testing.assert_array_equal(before, v.numpy())
    for before, v in zip(optimizer.variables, again_optimizer.variables):
        np.testing.assert_array_equal(before.numpy(), v.numpy())


def test_stable_paths_rank_numbered_names_among_siblings():
    assert checkpoints.stable_paths(["dense_12/kernel", "dense_9/kernel", "conv1/bias", "adam_3/x",
                              "t/dense_4/kernel"]) == {
        "dense_12/kernel": "dense_1/kernel", "dense_9/kernel": "dense/kernel",
        "conv1/bias": "conv1/bias", "adam_3/x": "adam/x", "t/dense_4/kernel": "t/dense/kernel"}


def test_reordered_layers_get_their_own_values(tmp_path):
    # Same shapes in another order: keyed by index, a's values went to b.
    model, optimizer = two_dense(("a", "b"))
    weights = fill(model, optimizer, np.random.default_rng(1))
    save(tmp_path, model, optimizer)
    reordered, reordered_optimizer = two_dense(("b", "a"))
    assert [v.path for v in reordered.variables] != list(weights)
    checkpoints.restore_checkpoint(tmp_path, reordered, reordered_optimizer)
    for v in reordered.variables:
        np.testing.assert_array_equal(v.numpy(), weights[v.path])


def test_renamed_layer_is_refused_naming_the_paths(tmp_path):
    model, optimizer = two_dense(("a", "b"))
    save(tmp_path, model, optimizer)
    other, other_optimizer = two_dense(("a", "c"))
    before = [v.numpy() for v in other.variables]
    with pytest.raises(runs.RunError, match=r"does not fit this model \(not in the checkpoint: "
                       r"model/c/bias, model/c/kernel.*not in this model: model/b/bias"):
        checkpoints.restore_checkpoint(tmp_path, other, other_optimizer)
    for v, b in zip(other.variables, before):  # left unchanged
        np.testing.assert_array_equal(v.numpy(), b)


def test_wrong_shape_is_refused_naming_the_path(tmp_path):
    model, optimizer = two_dense(("a", "b"), units=4)
    save(tmp_path, model, optimizer)
    wider, wider_optimizer = two_dense(("a", "b"), units=5)
    with pytest.raises(runs.RunError, match=r"model/a/kernel has shape \(4, 4\), expected"):
        checkpoints.restore_checkpoint(tmp_path, wider, wider_optimizer)


def test_index_keyed_checkpoint_loads_in_order_when_every_shape_matches(tmp_path, capsys):
    model, optimizer = build_model("seed", dense_units=8), keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    weights = fill(model, optimizer, np.random.default_rng(2))
    save_by_index(tmp_path, model, optimizer, epoch=3)
    again, again_optimizer = build_model("seed", dense_units=8), keras.optimizers.Adam()
    again_optimizer.build(again.trainable_variables)
    assert checkpoints.restore_checkpoint(tmp_path, again, again_optimizer) == 3
    assert "keyed by variable order (an older stn)" in capsys.readouterr().err
    for before, v in zip(weights.values(), again.variables):
        np.testing.assert_array_equal(before, v.numpy())
    # The next save writes the new keys, which the same model reads back.
    save(tmp_path, again, again_optimizer, epoch=3)
    assert checkpoints.restore_checkpoint(tmp_path, model, optimizer) == 3


def test_index_keyed_checkpoint_of_another_model_is_refused(tmp_path):
    model, optimizer = build_model("seed", dense_units=8), keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    save_by_index(tmp_path, model, optimizer)
    wider, wider_optimizer = build_model("seed", dense_units=16), keras.optimizers.Adam()
    wider_optimizer.build(wider.trainable_variables)
    with pytest.raises(runs.RunError, match=r"older checkpoint, keyed by variable order.*"
                       r"stn commit that wrote it \(git_commit in config.json\), or delete"):
        checkpoints.restore_checkpoint(tmp_path, wider, wider_optimizer)
