"""SpatialTransformer refuses what it cannot use, before any step (stn.layer.checks).

Each case names the argument, the kind and what it needs; before the checks
they failed deep inside TensorFlow (Reshape, XLA, tf.range) or, for
``output_size=(0, 5)`` and a net of twice the kind's width, silently.
"""

import keras
import numpy as np
import pytest

from stn.layer import checks as layer_checks
from stn.layer import kinds
from stn.layers import SpatialTransformer, theta_layer

IMAGES = np.zeros((2, 28, 28, 1), np.float32)


def net(width: int) -> keras.Sequential:
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(width)])


@pytest.mark.parametrize("output_size, message", [
    ((0, 5), "its height 0 is not positive"),
    ((-3, 5), "its height -3 is not positive"),
    ((5, 0), "its width 0 is not positive"),
    ((2.5, 5), "its height 2.5 is not an int"),
    ((5, True), "its width True is not an int"),
    ((5,), "(1 values)"),
    (7, "got 7"),
])
def test_output_size_must_be_positive_ints(output_size, message):
    with pytest.raises(ValueError, match="output_size of a SpatialTransformer of kind 'affine' "
                       "must be None or 2 positive ints") as info:
        SpatialTransformer(net(6), output_size=output_size)
    assert message in str(info.value)


def test_output_size_accepts_numpy_ints_and_lists():
    layer = SpatialTransformer(net(6), output_size=[np.int64(10), 12])
    assert layer.output_size == (10, 12) and type(layer.output_size[0]) is int
    assert tuple(layer(IMAGES).shape) == (2, 10, 12, 1)


@pytest.mark.parametrize("kind", ["affine", "attention", "projective", "tps"])
@pytest.mark.parametrize("factor", [2, 0.5, "+1", "-1"])
def test_localization_width_must_be_the_kinds_parameter_count(kind, factor):
    size = kinds.get_kind(kind).size
    width = {"+1": size + 1, "-1": size - 1}.get(factor) or int(size * factor)
    inputs = keras.Input((28, 28, 1))
    with pytest.raises(ValueError, match=rf"outputs {width} values per image .*the kind "
                       rf"'{kind}' needs {size} parameters per image.*Dense\({size}\)") as info:
        SpatialTransformer(net(width), kind=kind)(inputs)  # at build, symbolically
    assert ("times the batch" in str(info.value)) == (width % size == 0)


def test_width_is_also_checked_on_an_eager_first_call():
    with pytest.raises(ValueError, match="outputs 12 values per image.*2 times the batch"):
        SpatialTransformer(net(12))(IMAGES)


def test_localization_of_the_right_size_in_another_shape_is_accepted():
    # [B, 2, 3] holds the affine's 6 entries per image, read row-major.
    loc = keras.Sequential([keras.layers.Flatten(), theta_layer(), keras.layers.Reshape((2, 3))])
    out = SpatialTransformer(loc)(IMAGES + 1.0)
    np.testing.assert_allclose(out, IMAGES + 1.0, atol=1e-5)  # the identity


@pytest.mark.parametrize("shape, hint", [((2, 28, 28), "no channel axis"),
                                          ((2, 1, 28, 28, 1), "")])
def test_input_rank_must_be_4(shape, hint):
    with pytest.raises(ValueError, match=r"kind 'affine' takes 4-D images \[batch, height, "
                       rf"width, channels\], got shape \({shape[0]}, ") as info:
        SpatialTransformer(net(6))(np.zeros(shape, np.float32))
    assert hint in str(info.value)


def test_a_kind_may_declare_another_rank(monkeypatch):
    volumes = kinds.get_kind("affine")
    monkeypatch.setattr(kinds, "get_kind", lambda kind: type("Kind3D", (), {
        "ndim": 3, "name": "volume", "size": volumes.size})())
    assert layer_checks.spatial_axes("volume") == 3
    layer_checks.check_input_shape((None, 8, 8, 8, 1), "volume")
    with pytest.raises(ValueError, match=r"takes 5-D images \[batch, 3 spatial axes, channels\]"):
        layer_checks.check_input_shape((None, 8, 8, 1), "volume")
    assert layer_checks.check_output_size((4, 5, 6), "volume") == (4, 5, 6)


def test_a_saved_model_still_loads_through_the_checks(tmp_path):
    from stn.model import build_model

    model = build_model("seed", dense_units=8)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(np.ones((1, 40, 40, 1), np.float32)),
                               model(np.ones((1, 40, 40, 1), np.float32)), atol=1e-6)
