"""The 3-D and dense-flow kinds against independent references.

References: ``scipy.ndimage.affine_transform`` and ``map_coordinates``
(order 1), PyTorch's ``affine_grid`` + ``grid_sample`` on 5-D inputs
(``align_corners=False``), float64 central differences, analytic cases
(identity, integer shifts). The JAX and PyTorch backends run :func:`worker` here
in a subprocess (``tests/backend_worker.py``, with tests/test_backends.py's) and write their
numbers, which the tests here hold to the TensorFlow backend's.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import stn  # noqa: F401  (registers the 3-D kinds and the layer)
from stn.layer import kinds as K

IN_SIZE, OUT_SIZE = (5, 6, 7), (4, 8, 5)  # (D, H, W), (d, h, w)
BACKENDS = ("jax", "torch")


# --- shared by both processes -------------------------------------------------

def case(dtype=np.float32, channels=3, seed=0, spread=0.3):
    """Volumes ``[2, 5, 6, 7, C]`` and thetas ``[2, 12]`` around the identity, seeded."""
    rng = np.random.default_rng(seed)
    volumes = rng.random((2, *IN_SIZE, channels))
    theta = K.identity("affine3d", 2) + rng.uniform(-spread, spread, (2, 12))
    return volumes.astype(dtype), theta.astype(dtype)


def flow_case(dtype=np.float32, seed=1):
    """Volumes ``[2, 5, 6, 7, 2]`` and a random field ``[2, 5, 6, 7, 3]`` (up to ~1.5 voxels)."""
    rng = np.random.default_rng(seed)
    volumes = rng.random((2, *IN_SIZE, 2))
    field = rng.uniform(-1.5, 1.5, (2, *IN_SIZE, 3)) * 2.0 / np.array(IN_SIZE[::-1])
    return volumes.astype(dtype), field.astype(dtype)


def volume_model(kind: str = "affine3d"):
    """A small model with a 3-D transformer; its last localization layer made non-zero."""
    import keras

    from stn.layer.flows import flow_localization
    from stn.layers import SpatialTransformer, theta_layer
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*IN_SIZE, 2))
    if kind == "affine3d":
        localization = keras.Sequential([keras.layers.Conv3D(4, 3, strides=2),
                                         keras.layers.Flatten(), theta_layer(kind="affine3d")])
        size = OUT_SIZE
    else:
        localization, size = flow_localization(3, filters=4), None
    x = SpatialTransformer(localization, kind=kind, output_size=size, name="transformer")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    last = model.get_layer("transformer").localization.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([np.random.default_rng(1).normal(0, 0.05, kernel.shape).astype("float32"),
                      bias])
    return model


def model_inputs():
    return np.random.default_rng(2).random((3, *IN_SIZE, 2)).astype("float32")


def gradient_errors(kind: str, warp) -> dict:
    """Worst relative error of autodiff against float64 central differences, per input.

    ``warp(volumes, params) -> out`` (backend tensors); two random directions
    in the volumes and two in the parameters.
    """
    import keras
    volumes, params = case(np.float64, 2) if kind == "affine3d" else flow_case(np.float64)
    out_shape = tuple(keras.ops.shape(warp(volumes, params)))
    rng = np.random.default_rng(3)
    weights = keras.ops.convert_to_tensor(rng.normal(size=out_shape))

    def f(x, p):
        return keras.ops.sum(warp(x, p) * weights)

    grads = _gradients(f, volumes, params)
    errors = {}
    for name, grad in zip(("volumes", "params"), grads):
        worst = 0.0
        for _ in range(2):
            step = 1e-6 * rng.normal(size=grad.shape)
            plus, minus = ((volumes + s, params) if name == "volumes" else (volumes, params + s)
                           for s in (step, -step))
            numeric = float(keras.ops.convert_to_numpy(f(*plus) - f(*minus)))
            worst = max(worst, abs(2 * float(np.sum(grad * step)) - numeric) / abs(numeric))
        errors[name] = worst
    return errors


def _gradients(f, volumes, params):
    """``(d f / d volumes, d f / d params)`` by the backend's autodiff, as NumPy."""
    import keras
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return [np.asarray(g) for g in jax.grad(f, argnums=(0, 1))(volumes, params)]
    if backend == "torch":
        import torch
        x, p = (torch.tensor(a, requires_grad=True) for a in (volumes, params))
        f(x, p).backward()
        return [x.grad.numpy(), p.grad.numpy()]
    import tensorflow as tf
    x, p = tf.constant(volumes), tf.constant(params)
    with tf.GradientTape() as tape:
        tape.watch([x, p])
        total = f(x, p)
    return [g.numpy() for g in tape.gradient(total, [x, p])]


# --- the worker: run as a script under another backend ---------------------------

def worker(out: Path, tf_file: Path) -> None:
    """Forward outputs, gradient errors and the saved model of this backend, into ``out``."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)  # float64 for the finite differences
    forward = {"affine3d": K.warp_ops(*case(), "affine3d", OUT_SIZE),
               "flow3d": K.warp_ops(*flow_case(), "flow3d")}
    from stn.layer import sampler3d
    volumes, theta = case()
    grid = sampler3d.affine3d_grid(keras.ops.convert_to_tensor(theta), *OUT_SIZE)
    forward["portable"] = sampler3d.trilinear_sample(keras.ops.convert_to_tensor(volumes), grid)
    forward["seam"] = sampler3d.sample(keras.ops.convert_to_tensor(volumes), grid)
    np.savez(out / "forward.npz", **{k: keras.ops.convert_to_numpy(v) for k, v in forward.items()})
    errors = {kind: gradient_errors(kind, lambda x, p, kind=kind: K.warp_ops(
        x, p, kind, OUT_SIZE if kind == "affine3d" else None)) for kind in ("affine3d", "flow3d")}
    (out / "gradients.json").write_text(json.dumps(errors))
    loaded = keras.saving.load_model(tf_file)
    model = volume_model()
    model.save(out / "model.keras")
    np.savez(out / "model.npz", loaded_from_tensorflow=np.asarray(loaded.predict(model_inputs(),
                                                                                 verbose=0)),
             own=np.asarray(model.predict(model_inputs(), verbose=0)))


# --- references --------------------------------------------------------------------

def scipy_matrix(theta, in_size, out_size):
    """``[4, 4]``: our normalized 3-D affine as SciPy's map of voxel indices ``(k, i, j)``.

    SciPy reads the input at ``matrix @ (k, i, j, 1)``, indices with voxel
    centres at integers, axes in array order (depth, height, width); ours
    maps normalized ``(x, y, z)`` (width first, +-1 at the outer faces).
    """
    def to_normalized(size):  # array index (k, i, j, 1) -> (x, y, z, 1)
        m = np.zeros((4, 4))
        for axis, n in enumerate(size):  # index axis -> coordinate 2 - axis
            m[2 - axis, axis], m[2 - axis, 3] = 2.0 / n, 1.0 / n - 1.0
        m[3, 3] = 1.0
        return m

    full = np.vstack([np.asarray(theta, np.float64).reshape(3, 4), [0, 0, 0, 1]])
    return np.linalg.inv(to_normalized(in_size)) @ full @ to_normalized(out_size)


def scipy_affine(volumes, theta, out_size, mode="grid-constant"):
    from scipy import ndimage
    out = np.zeros((len(volumes), *out_size, volumes.shape[-1]))
    for b in range(len(volumes)):
        matrix = scipy_matrix(theta[b], volumes.shape[1:4], out_size)
        for c in range(volumes.shape[-1]):
            out[b, ..., c] = ndimage.affine_transform(
                volumes[b, ..., c].astype(np.float64), matrix, output_shape=out_size, order=1,
                mode=mode, cval=0.0)
    return out


def torch_affine(volumes, theta, out_size):
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(np.asarray(volumes, np.float64)).permute(0, 4, 1, 2, 3)
    t = torch.from_numpy(np.asarray(theta, np.float64)).reshape(-1, 3, 4)
    grid = F.affine_grid(t, (len(volumes), volumes.shape[-1], *out_size), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(0, 2, 3, 4, 1).numpy()


def warps(volumes, params, kind, out_size=None):
    """The layer's TF path (XLA) and the portable keras.ops path, as NumPy."""
    return [np.asarray(K.keras_warp(volumes, params, kind, out_size)),
            np.asarray(K.warp_ops(volumes, params, kind, out_size))]


# --- affine3d ------------------------------------------------------------------------

def test_the_registry_knows_each_kinds_rank():
    assert [K.get_kind(k).ndim for k in ("affine3d", "flow3d", "flow", "affine", "tps")] == \
        [3, 3, 2, 2, 2]
    assert K.get_kind("affine3d").size == 12 and not K.get_kind("affine3d").dense
    assert K.get_kind("flow").dense and K.get_kind("flow3d").dense


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_is_exact(channels):
    volumes, _ = case(channels=channels)
    for out in warps(volumes, K.identity("affine3d", 2).astype(np.float32), "affine3d"):
        np.testing.assert_array_equal(out, volumes)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("out_size", [IN_SIZE, OUT_SIZE])
def test_affine3d_matches_scipy_and_torch(seed, channels, out_size):
    volumes, theta = case(channels=channels, seed=seed)
    scipy_out = scipy_affine(volumes, theta, out_size)
    torch_out = torch_affine(volumes, theta, out_size)
    np.testing.assert_allclose(torch_out, scipy_out, rtol=0, atol=1e-12)  # the references agree
    assert np.abs(scipy_out).max() > 0.1  # the maps read inside the volume
    for out in warps(volumes, theta, "affine3d", out_size):
        assert out.shape == (2, *out_size, channels) and out.dtype == np.float32
        np.testing.assert_allclose(out, scipy_out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels, out_size", [(1, OUT_SIZE), (3, IN_SIZE)])
def test_the_row_gather_sampler_equals_the_eight_gathers(channels, out_size):
    # TensorFlow's form (stn.layer.sampler3d.sample) against the portable one, in
    # float64: the outputs and both gradients, with a map that reads outside the volume.
    import keras
    import tensorflow as tf

    from stn.layer import sampler3d
    volumes, theta = case(np.float64, channels, spread=0.6)
    weights = tf.constant(np.random.default_rng(4).normal(size=(2, *out_size, channels)))

    def outputs_and_gradients(sampler):
        x, t = tf.constant(volumes), tf.constant(theta)
        with tf.GradientTape() as tape:
            tape.watch([x, t])
            out = sampler(x, sampler3d.affine3d_grid(t, *out_size))
            loss = tf.reduce_sum(out * weights)
        return [out.numpy(), *(g.numpy() for g in tape.gradient(loss, [x, t]))]

    rows = outputs_and_gradients(sampler3d.trilinear_sample_rows)
    for got, expected in zip(rows, outputs_and_gradients(sampler3d.trilinear_sample)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(rows[0]).max() > 0.1 and np.abs(rows[1]).max() > 0.1
    assert keras.backend.backend() == "tensorflow"
    np.testing.assert_array_equal(sampler3d.sample(tf.constant(volumes),
                                                   sampler3d.affine3d_grid(theta, *out_size)),
                                  rows[0])  # the seam takes the row form on TensorFlow


def test_scipy_constant_mode_agrees_away_from_the_border_band():
    """SciPy's ``mode="constant"`` does not interpolate beyond the outer centres.

    Ours (and PyTorch's) blends the face voxels with the zero padding there,
    SciPy's ``grid-constant``; the two modes agree wherever every sample
    point of a voxel lies between the outer voxel centres.
    """
    volumes, theta = case(channels=1)
    constant = scipy_affine(volumes, theta, OUT_SIZE, mode="constant")
    inside = np.ones(constant.shape[:-1], bool)
    for b in range(2):
        matrix = scipy_matrix(theta[b], IN_SIZE, OUT_SIZE)
        index = np.stack(np.meshgrid(*map(np.arange, OUT_SIZE), indexing="ij"), -1)
        read = index @ matrix[:3, :3].T + matrix[:3, 3]
        inside[b] = np.all((read >= 0) & (read <= np.array(IN_SIZE) - 1), axis=-1)
    assert inside.sum() > 20
    ours = warps(volumes, theta, "affine3d", OUT_SIZE)[0]
    np.testing.assert_allclose(ours[inside], constant[inside], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["affine3d", "flow3d"])
def test_gradients_match_finite_differences(kind):
    size = OUT_SIZE if kind == "affine3d" else None
    for warp in (K.warp_ops, K.keras_warp):
        errors = gradient_errors(kind, lambda x, p: warp(x, p, kind, size))
        assert errors["params"] < 1e-4 and errors["volumes"] < 1e-4, errors


@pytest.mark.parametrize("kind", ["affine3d", "flow3d"])
def test_the_tensorflow_seam_equals_the_keras_ops_path(kind):
    """keras_warp on TF (the sampler's own XLA function, with or without the volumes'
    gradient, or not compiled) against warp_ops: outputs and the parameters' gradient."""
    import tensorflow as tf
    volumes, params = case() if kind == "affine3d" else flow_case()
    size = OUT_SIZE if kind == "affine3d" else None
    results = []
    for options in ({}, {"image_gradient": False}, {"jit_compile": False}, None):
        x, p = tf.constant(volumes), tf.constant(params)
        with tf.GradientTape() as tape:
            tape.watch([x, p])
            out = (K.warp_ops(x, p, kind, size) if options is None
                   else K.keras_warp(x, p, kind, size, **options))
            total = tf.reduce_sum(out ** 2)
        grad_x, grad_p = tape.gradient(total, [x, p])
        results.append((out.numpy(), grad_p.numpy(), grad_x))
    reference = results[-1]
    for out, grad_p, grad_x in results[:-1]:
        np.testing.assert_allclose(out, reference[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(grad_p, reference[1], rtol=0,
                                   atol=1e-5 * max(1.0, np.abs(reference[1]).max()))
    assert results[1][2] is None or not np.any(results[1][2].numpy())  # image_gradient=False
    np.testing.assert_allclose(results[0][2].numpy(), reference[2].numpy(), rtol=0, atol=1e-4)


def test_the_affine3d_numpy_map_is_the_grid():
    from stn.layer.sampler3d import centre_points3d
    _, theta = case(np.float64)
    grid = np.asarray(K.get_kind("affine3d").grid(theta, *OUT_SIZE))
    points = K.get_kind("affine3d").points(theta, centre_points3d(*OUT_SIZE).reshape(-1, 3))
    np.testing.assert_allclose(points, grid.reshape(2, -1, 3), rtol=0, atol=1e-12)


def test_composed_affine3d_maps_read_the_first_at_the_seconds_image():
    from stn.layer.layers import compose
    from stn.layer.sampler3d import centre_points3d
    _, theta = case(np.float64, seed=1)
    _, other = case(np.float64, seed=2)
    points = centre_points3d(*OUT_SIZE).reshape(-1, 3)
    kind = K.get_kind("affine3d")
    want = np.stack([kind.points(theta[i:i + 1], kind.points(other[i:i + 1], points)[0])[0]
                     for i in range(2)])
    got = kind.points(np.asarray(compose(theta, other, "affine3d")), points)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_iterations_refine_a_3d_transformer_by_composition():
    import keras
    from stn.layer.layers import SpatialTransformer, compose
    _, theta = case(np.float32, seed=3, spread=0.1)
    net = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(
        12, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(theta[0]))])
    layer = SpatialTransformer(net, kind="affine3d", output_size=OUT_SIZE, iterations=2)
    volumes = model_inputs()
    twice = np.asarray(compose(theta[:1], theta[:1], "affine3d"))
    np.testing.assert_allclose(layer.params(volumes), np.tile(twice, (3, 1)), atol=1e-6)
    np.testing.assert_allclose(layer(volumes), K.warp_ops(volumes, np.tile(twice, (3, 1)),
                                                          "affine3d", OUT_SIZE), atol=1e-5)
    with pytest.raises(ValueError, match="output_jitter needs"):
        SpatialTransformer(net, kind="affine3d", output_jitter=0.1)


def test_keras_file_round_trip(tmp_path):
    import keras
    for kind in ("affine3d", "flow3d"):
        model = volume_model(kind)
        expected = model.predict(model_inputs(), verbose=0)
        model.save(tmp_path / f"{kind}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{kind}.keras")
        np.testing.assert_allclose(loaded.predict(model_inputs(), verbose=0), expected,
                                   rtol=0, atol=1e-6)
        assert loaded.get_layer("transformer").kind == kind


def test_the_layer_takes_volumes_and_a_3d_output_size():
    import keras
    model = volume_model()
    layer = model.get_layer("transformer")
    assert layer.compute_output_shape((None, *IN_SIZE, 2)) == (None, *OUT_SIZE, 2)
    out = layer(model_inputs())
    assert tuple(out.shape) == (3, *OUT_SIZE, 2)
    params = keras.ops.convert_to_numpy(layer.params(model_inputs()))
    assert params.shape == (3, 12)


# --- flows -----------------------------------------------------------------------------

def shifted(volumes, shift):
    """``volumes`` read at ``index + shift`` (integers per spatial axis), zero outside."""
    out = np.zeros_like(volumes)
    src = tuple(slice(max(s, 0), n + min(s, 0)) for s, n in zip(shift, volumes.shape[1:-1]))
    dst = tuple(slice(max(-s, 0), n + min(-s, 0)) for s, n in zip(shift, volumes.shape[1:-1]))
    out[(slice(None), *dst)] = volumes[(slice(None), *src)]
    return out


@pytest.mark.parametrize("kind, ndim", [("flow", 2), ("flow3d", 3)])
def test_zero_flow_is_the_identity_and_an_integer_flow_a_shift(kind, ndim):
    volumes, _ = flow_case()
    if ndim == 2:
        volumes = volumes[:, 0]
    size = volumes.shape[1:-1]
    for out in warps(volumes, np.zeros((2, *size, ndim), np.float32), kind):
        np.testing.assert_array_equal(out, volumes)
    shift = (1, -2, 2)[-ndim:]  # array axes: (depth,) height, width
    field = np.broadcast_to(2.0 * np.array(shift[::-1]) / np.array(size[::-1]),
                            (2, *size, ndim)).astype(np.float32)  # (dx, dy[, dz])
    for out in warps(volumes, field, kind):
        np.testing.assert_allclose(out, shifted(volumes, shift), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind, ndim", [("flow", 2), ("flow3d", 3)])
def test_random_flow_matches_scipy_map_coordinates(kind, ndim):
    from scipy import ndimage
    volumes, field = flow_case()
    if ndim == 2:
        volumes, field = volumes[:, 0], field[:, 0, ..., :2]
    size = np.array(volumes.shape[1:-1])
    centres = np.stack(np.meshgrid(*map(np.arange, size), indexing="ij"), 0)  # (ndim, *size)
    expected = np.zeros(volumes.shape)
    for b in range(2):
        # Normalized displacement (x first) -> voxel indices (array order).
        read = centres + np.moveaxis(field[b, ..., ::-1], -1, 0) * (size / 2.0).reshape(
            -1, *(1,) * ndim)
        for c in range(volumes.shape[-1]):
            expected[b, ..., c] = ndimage.map_coordinates(volumes[b, ..., c].astype(np.float64),
                                                          read, order=1, mode="grid-constant")
    for out in warps(volumes, field, kind):
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_flow_points_are_the_field_at_the_pixel_centres():
    from stn.layer.sampler import centre_points
    field = np.random.default_rng(4).normal(0, 0.1, (2, 4, 5, 2))
    points = centre_points(4, 5).reshape(-1, 2)
    got = K.get_kind("flow").points(field, points)
    np.testing.assert_allclose(got, points + field.reshape(2, -1, 2), rtol=0, atol=1e-12)


def test_a_field_of_the_wrong_size_says_what_to_do():
    volumes, field = flow_case()
    with pytest.raises(ValueError, match="one displacement per output pixel"):
        K.warp_ops(volumes, field[:, :, :3], "flow3d")


# --- every backend ------------------------------------------------------------------

def save_tensorflow_model(stem: Path) -> None:
    """A small volume model saved on TensorFlow (``stem.keras``) and its outputs (``stem.npy``)."""
    model = volume_model()
    model.save(stem.with_suffix(".keras"))
    np.save(stem.with_suffix(".npy"), model.predict(model_inputs(), verbose=0))


@pytest.fixture(scope="module")
def tf_model_file(tmp_path_factory):
    import helpers  # here: the worker's own process imports no more than it needs

    folder = helpers.tensorflow_models(tmp_path_factory)
    return folder / "volumes.keras", np.load(folder / "volumes.npy")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory):
    import helpers

    return request.param, helpers.backend_outputs(tmp_path_factory, request.param) / "volumes"


def test_every_backend_gives_the_same_warps(backend):
    got = np.load(backend[1] / "forward.npz")
    np.testing.assert_allclose(got["affine3d"], warps(*case(), "affine3d", OUT_SIZE)[0],
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["flow3d"], warps(*flow_case(), "flow3d")[0], rtol=0, atol=1e-5)
    # The backend's own kernel (PyTorch's grid_sample) against the keras.ops sampler.
    np.testing.assert_allclose(got["seam"], got["portable"], rtol=0, atol=1e-5)


def test_every_backends_gradients_match_finite_differences(backend):
    for kind, errors in json.loads((backend[1] / "gradients.json").read_text()).items():
        assert errors["params"] < 1e-4 and errors["volumes"] < 1e-4, (kind, errors)


def test_volume_models_load_across_backends(backend, tf_model_file):
    import keras
    results = np.load(backend[1] / "model.npz")
    np.testing.assert_allclose(results["loaded_from_tensorflow"], tf_model_file[1],
                               rtol=0, atol=1e-5)
    theirs = keras.saving.load_model(backend[1] / "model.keras")
    np.testing.assert_allclose(theirs.predict(model_inputs(), verbose=0), results["own"],
                               rtol=0, atol=1e-5)

