"""Projective and thin-plate-spline kinds against independent references.

References: a NumPy homography and ``scipy.interpolate.RBFInterpolator`` for
the grids, ``scipy.ndimage.map_coordinates`` for the sampling (as in
test_transform.py), float64 central differences for the gradients; plus
identity, execution modes, extreme parameters, the registry, and the NumPy
maps that evaluation fits affines to.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import interpolate, ndimage

from stn.layer import kinds as K
from stn.layer.kinds3d import image_kinds
from stn.layer import transform as T
from stn.data import warps as W

RNG = np.random.default_rng(0)
IN_SIZE, OUT_SIZE = (12, 14), (9, 11)


# --- independent references ---------------------------------------------------

def centres(h, w):
    """``[h * w, 2]`` normalized ``(x, y)`` of the pixel centres, row by row."""
    xx, yy = np.meshgrid((2 * np.arange(w) + 1) / w - 1, (2 * np.arange(h) + 1) / h - 1)
    return np.stack([xx.ravel(), yy.ravel()], axis=-1)


def homography_grid(params, out_size):
    """``[B, h, w, 2]`` float64: the 3x3 matrix ``(params, 1)`` applied, then divided."""
    params = np.asarray(params, np.float64)
    matrices = np.concatenate([params, np.ones((len(params), 1))], 1).reshape(-1, 3, 3)
    points = np.concatenate([centres(*out_size), np.ones((np.prod(out_size), 1))], 1)
    mapped = np.einsum("bjk,pk->bpj", matrices, points)  # (B, h * w, 3)
    return (mapped[..., :2] / mapped[..., 2:]).reshape(-1, *out_size, 2)


def spline_grid(control, out_size, n=4):
    """``[B, h, w, 2]`` float64: SciPy's thin-plate spline through the ``n * n`` pairs."""
    control = np.asarray(control, np.float64).reshape(-1, n * n, 2)
    grids = [interpolate.RBFInterpolator(T.tps_targets(n), c, kernel="thin_plate_spline",
                                         degree=1)(centres(*out_size)) for c in control]
    return np.stack(grids).reshape(-1, *out_size, 2)


def sample(images, grid):
    """Bilinear, zero-padded sampling of ``images`` at normalized ``grid``, by SciPy."""
    images = np.asarray(images, np.float64)
    batch, height, width, channels = images.shape
    cols = ((grid[..., 0] + 1) * width - 1) / 2
    rows = ((grid[..., 1] + 1) * height - 1) / 2
    out = np.zeros((*grid.shape[:3], channels))
    for b in range(batch):
        for c in range(channels):
            out[b, ..., c] = ndimage.map_coordinates(
                images[b, ..., c], [rows[b], cols[b]], order=1, mode="grid-constant", cval=0.0)
    return out


def random_projective(batch, scale=0.1, horizon=0.2):
    """Near-identity homographies with perspective terms ``t6, t7`` up to ``horizon``."""
    params = np.array(T.PROJECTIVE_IDENTITY) + RNG.uniform(-scale, scale, (batch, 8))
    params[:, 6:] = RNG.uniform(-horizon, horizon, (batch, 2))
    return params


def affine_control(theta):
    """``[B, 16, 2]``: the TPS targets moved by the affine maps ``theta`` ``[B, 6]``."""
    matrices = np.asarray(theta, np.float64).reshape(-1, 2, 3)
    return np.einsum("bjk,pk->bpj", matrices[:, :, :2], T.tps_targets()) + matrices[:, None, :, 2]


def random_tps(batch, scale=0.1, n=4):
    """Control points of an ``n x n`` TPS displaced from the identity by up to ``scale``."""
    return (T.tps_targets(n) + RNG.uniform(-scale, scale, (batch, n * n, 2))).reshape(batch, -1)


def random_attention(batch):
    """``(s, tx, ty)``: scales 0.6-1.2 (zoom in and out), shifts up to 0.3."""
    return np.stack([RNG.uniform(0.6, 1.2, batch), *RNG.uniform(-0.3, 0.3, (2, batch))], axis=1)


RANDOM = {"affine": lambda b: np.array(T.IDENTITY) + RNG.uniform(-0.2, 0.2, (b, 6)),
          "attention": random_attention, "projective": random_projective, "tps": random_tps,
          "tps3": lambda b: random_tps(b, n=3), "tps5": lambda b: random_tps(b, n=5)}


def tolerance(dtype):
    """Bilinear samples of values in [0, 1] at coordinates rounded to ``dtype``."""
    return 16 * np.finfo(dtype).eps * max(IN_SIZE + OUT_SIZE)


# --- projective against the NumPy homography ------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_projective_matches_numpy_homography_and_scipy(dtype, channels):
    images = RNG.random((3, *IN_SIZE, channels)).astype(dtype)
    params = random_projective(3)
    params[0, 6:] = [0.2, -0.2]  # a strong perspective in every run
    expected_grid = homography_grid(params, OUT_SIZE)
    expected = sample(images, expected_grid)

    grid = T.projective_grid(params.astype(dtype), *OUT_SIZE)
    assert grid.dtype == dtype and grid.shape == (3, *OUT_SIZE, 2)
    np.testing.assert_allclose(grid, expected_grid, rtol=0, atol=8 * np.finfo(dtype).eps)
    for out in (T.bilinear_sample(images, grid),
                K.warp(images, params.astype(dtype), "projective", OUT_SIZE)):
        assert out.dtype == dtype and out.shape == (3, *OUT_SIZE, channels)
        np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(dtype))


@pytest.mark.parametrize("last", [2.0, -0.7])
def test_projective_3x3_form_is_divided_by_its_last_entry(last):
    images = RNG.random((2, *IN_SIZE, 2))
    params = random_projective(2)
    matrices = last * np.concatenate([params, np.ones((2, 1))], 1).reshape(2, 3, 3)
    np.testing.assert_allclose(T.projective_grid(matrices, *OUT_SIZE),
                               T.projective_grid(params, *OUT_SIZE), rtol=0, atol=1e-14)
    np.testing.assert_allclose(K.warp(images, matrices, "projective", OUT_SIZE),
                               K.warp(images, params, "projective", OUT_SIZE),
                               rtol=0, atol=1e-13)


def test_bad_projective_shape_is_rejected():
    with pytest.raises(ValueError, match="theta must be"):
        T.projective_grid(np.zeros((8,)), 4, 4)


# --- thin-plate spline against SciPy ---------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_tps_grid_matches_scipy_rbf_interpolator(dtype, atol):
    # SciPy's kernel is r^2 log r, ours r^2 log r^2: twice as large, so the
    # fitted weights are halved and the interpolant is the same function.
    control = random_tps(3, scale=0.2)
    expected = spline_grid(control, OUT_SIZE)
    grid = T.tps_grid(control.astype(dtype), *OUT_SIZE)
    assert grid.dtype == dtype and grid.shape == (3, *OUT_SIZE, 2)
    np.testing.assert_allclose(grid, expected, rtol=0, atol=atol)
    np.testing.assert_allclose(T.tps_grid(control.reshape(3, 16, 2).astype(dtype), *OUT_SIZE),
                               grid, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tps_warp_matches_scipy(dtype):
    images = RNG.random((2, *IN_SIZE, 3)).astype(dtype)
    control = random_tps(2, scale=0.2)
    expected = sample(images, spline_grid(control, OUT_SIZE))
    out = K.warp(images, control.astype(dtype), "tps", OUT_SIZE)
    assert out.dtype == dtype and out.shape == (2, *OUT_SIZE, 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(dtype))


def test_tps_passes_through_the_control_points():
    control = random_tps(1, scale=0.3).reshape(16, 2)
    matrix = T.tps_matrix(T.tps_targets())
    np.testing.assert_allclose(matrix, np.eye(16), rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrix @ control, control, rtol=0, atol=1e-12)
    # The targets lie on the image edges, never on pixel centres: check the
    # kind's point map (the same matrix) there.
    points = K.get_kind("tps").points(control.reshape(1, 32), T.tps_targets())[0]
    np.testing.assert_allclose(points, control, rtol=0, atol=1e-12)


def test_tps_of_an_affine_displacement_is_the_affine_grid():
    theta = np.array(T.IDENTITY) + RNG.uniform(-0.3, 0.3, (2, 6))
    np.testing.assert_allclose(T.tps_grid(affine_control(theta), *OUT_SIZE),
                               T.affine_grid(theta, *OUT_SIZE), rtol=0, atol=1e-12)


# --- identity -------------------------------------------------------------------

@pytest.mark.parametrize("kind", image_kinds())
@pytest.mark.parametrize("shape", [(2, 12, 14, 1), (1, 7, 5, 3), (3, 1, 1, 2), (1, 16, 16, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_returns_input(kind, shape, dtype):
    images = RNG.random(shape).astype(dtype)
    out = K.warp(images, K.identity(kind, shape[0]), kind).numpy()
    assert out.dtype == dtype and out.shape == shape
    if kind == "affine":
        np.testing.assert_array_equal(out, images)
    else:
        np.testing.assert_allclose(out, images, rtol=0, atol=1e-6)


# --- gradients against finite differences ---------------------------------------

def _off_kinks(grid, in_size, margin=1e-3):
    """True if no sample point is within ``margin`` pixels of a kink of the sampler."""
    height, width = in_size
    cols = ((grid[..., 0] + 1) * width - 1) / 2
    rows = ((grid[..., 1] + 1) * height - 1) / 2
    dist = np.minimum(np.abs(cols - np.round(cols)), np.abs(rows - np.round(rows)))
    return dist.min() > margin


def _central_differences(f, x, delta=1e-6):
    """d f_b / d x[b, ...] for a per-example ``f: [B, ...] -> [B]``, float64.

    Examples are independent, so one entry is perturbed in all of them at once.
    """
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape[1:]):
        step = np.zeros_like(x)
        step[(slice(None), *index)] = delta
        grad[(slice(None), *index)] = (f(x + step) - f(x - step)) / (2 * delta)
    return grad


@pytest.mark.parametrize("kind, out_size", [("projective", (7, 4)), ("projective", (5, 6)),
                                            ("tps", (4, 7)), ("tps", (5, 6))])
def test_gradients_match_finite_differences(kind, out_size):
    in_size = (5, 6)
    images = RNG.random((2, *in_size, 1))
    weights = RNG.normal(size=(2, *out_size, 1))
    params = RANDOM[kind](2)
    while not _off_kinks(K.get_kind(kind).tf_grid(params, *out_size).numpy(), in_size):
        params = RANDOM[kind](2)

    def loss(images, params):  # (B,): one independent loss per example
        return np.sum(K.warp(images, params, kind, out_size).numpy() * weights, axis=(1, 2, 3))

    images_t, params_t = tf.constant(images), tf.constant(params)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([images_t, params_t])
        total = tf.reduce_sum(K.warp(images_t, params_t, kind, out_size) * weights)
    numeric_params = _central_differences(lambda p: loss(images, p), params)
    numeric_images = _central_differences(lambda x: loss(x, params), images)
    for analytic, numeric in [(tape.gradient(total, params_t), numeric_params),
                              (tape.gradient(total, images_t), numeric_images)]:
        assert np.abs(numeric).max() > 0.1  # the check is not vacuous
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


# --- execution modes ------------------------------------------------------------

def _value_and_grad(warp, images, params, kind, out_size=(7, 9)):
    with tf.GradientTape() as tape:
        tape.watch(params)
        out = warp(images, params, kind, out_size)
        loss = tf.reduce_sum(out * out)
    return out, tape.gradient(loss, params)


def _tf1_session(images, params, kind, image_shape, out_size):
    """``_value_and_grad`` of :func:`stn.layer.kinds.warp` in a TF1 graph and session."""
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(images.dtype, image_shape)
        t = tf.compat.v1.placeholder(params.dtype, [None, params.shape[1]])
        fetch = _value_and_grad(K.warp, x, t, kind, out_size)
        with tf.compat.v1.Session() as sess:
            return sess.run(fetch, {x: images.numpy(), t: params.numpy()})


@pytest.mark.parametrize("kind", ["projective", "tps"])
@pytest.mark.parametrize("dtype, rtol", [(tf.float64, 1e-10), (tf.float32, 2e-4)])
def test_eager_function_xla_and_tf1_session_agree(kind, dtype, rtol):
    # float32 gradients are sums over many pixels whose order differs
    # between the executors, hence the looser float32 tolerance.
    shape = (3, *IN_SIZE, 2)
    images = tf.constant(RNG.random(shape), dtype)
    params = tf.constant(RANDOM[kind](3), dtype)
    eager = _value_and_grad(K.warp, images, params, kind)
    graph = tf.function(_value_and_grad, autograph=False)(K.warp, images, params, kind)
    xla = _value_and_grad(K.warp_xla, images, params, kind)
    session = _tf1_session(images, params, kind, [None, *shape[1:]], (7, 9))
    others = [graph, xla, session]
    if dtype == tf.float64:  # the same graph as warp_xla: one dtype is enough
        others.append(_value_and_grad(K.warp_xla_params_grad, images, params, kind))
    assert np.abs(eager[1]).max() > 0
    for other in others:
        for a, b in zip(eager, other):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kind", ["projective", "tps"])
def test_tf1_session_with_unknown_image_size(kind):
    # Old graph-mode code feeds placeholders of unknown size; the output size
    # then defaults to the dynamic input size (TPS builds its basis in TF ops).
    images = tf.constant(RNG.random((2, *IN_SIZE, 1)))
    params = tf.constant(RANDOM[kind](2))
    eager = _value_and_grad(K.warp, images, params, kind, None)
    session = _tf1_session(images, params, kind, [None, None, None, 1], None)
    for a, b in zip(eager, session):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_xla_warp_follows_image_sizes():
    # reduce_retracing relaxes the image size to None from the second size
    # on (for tensors): the TPS grid must then take the size from the tensor.
    for shape in [(2, 10, 11, 1), (1, 6, 5, 2)]:
        images = tf.constant(RNG.random(shape), tf.float32)  # tensors, as layers pass
        params = tf.constant(K.identity("tps", shape[0]), tf.float32)
        np.testing.assert_allclose(K.warp_xla(images, params, "tps"), images, rtol=0, atol=1e-6)


# --- robustness -----------------------------------------------------------------

def _extreme(kind, batch, dtype):
    """Parameter sets far from the identity, each ``[batch, P]`` of ``dtype``."""
    size = K.get_kind(kind).size
    if kind == "projective":
        horizon = np.tile(np.array(T.PROJECTIVE_IDENTITY), (batch, 1))
        horizon[:, 6] = 3.0  # d = 3x + 1 crosses zero at x = -1/3, inside the image
        steep = horizon.copy()
        steep[:, 7] = -2.0  # the horizon is a slanted line through the image
        exact = horizon.copy()
        exact[:, 6] = 8.0  # d = 0 exactly at the pixel centres x = -1/8 (8 columns)
        sets = [horizon, steep, exact, RNG.uniform(-1e3, 1e3, (batch, size)),
                np.full((batch, size), 1e30)]
    else:
        sets = [K.identity(kind, batch) + RNG.uniform(-1e3, 1e3, (batch, size)),
                np.full((batch, size), 1e20), RNG.choice([-1e20, 1e20], (batch, size))]
    return [tf.constant(s, dtype) for s in sets]


@pytest.mark.parametrize("kind", ["projective", "tps"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_extreme_params_are_finite(kind, dtype):
    images = tf.constant(RNG.random((2, 8, 8, 1)), dtype)
    params = [tf.constant(RANDOM[kind](2) + RNG.normal(0, 1, (2, K.get_kind(kind).size)),
                          dtype)] + _extreme(kind, 2, dtype)
    for p in params:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([images, p])
            out = K.warp(images, p, kind)
            loss = tf.reduce_sum(out)
        assert out.dtype == dtype
        for value in (out, tape.gradient(loss, p), tape.gradient(loss, images)):
            assert np.all(np.isfinite(value.numpy())), (kind, p.numpy()[0, :4])


def test_projective_across_the_horizon_matches_numpy():
    # d = 4x + 1 changes sign inside the image and is exactly 0 on the pixel
    # centres x = -1/4 (column 4 of 12): NumPy's map is undefined there and
    # the sampler reads zero; on either side of it the homography holds.
    images = RNG.random((1, 6, 12, 2))
    params = np.array([[1, 0.2, 0, -0.1, 1, 0, 4.0, 0]])
    out = K.warp(images, params, "projective").numpy()
    on_horizon = np.isclose(centres(6, 12)[:12, 0], -0.25)
    assert on_horizon.sum() == 1
    np.testing.assert_array_equal(out[:, :, on_horizon], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = sample(images, homography_grid(params, (6, 12)))
    np.testing.assert_allclose(out[:, :, ~on_horizon], expected[:, :, ~on_horizon],
                               rtol=0, atol=1e-12)
    points = K.get_kind("projective").points(params, centres(6, 12))[0].reshape(6, 12, 2)
    assert np.all(np.isnan(points[:, on_horizon])) and np.all(np.isfinite(points[:, ~on_horizon]))


@pytest.mark.parametrize("kind", ["projective", "tps"])
@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_nan_params_give_nan_not_a_blank_image(kind, mode):
    images = tf.ones((2, 6, 7, 1))
    params = K.identity(kind, 2).astype(np.float32)
    params[0] = np.nan
    params[1, -1] = np.nan  # one entry: t7 of the homography, y of the last control point
    run = {"eager": K.warp, "xla": K.warp_xla}[mode]
    assert np.all(np.isnan(run(images, params, kind).numpy()))


# --- the NumPy maps: points, composition, affine fit ------------------------------

@pytest.mark.parametrize("kind", image_kinds())
def test_numpy_points_match_the_tf_grid(kind):
    params = RANDOM[kind](3)
    grid = K.get_kind(kind).tf_grid(params, *OUT_SIZE).numpy().reshape(3, -1, 2)
    np.testing.assert_allclose(K.get_kind(kind).points(params, centres(*OUT_SIZE)), grid,
                               rtol=0, atol=1e-12)


def test_affine_fit_is_exact_for_affine_chains():
    a, b, c = (RANDOM["affine"](4) for _ in range(3))
    np.testing.assert_allclose(K.affine_fit(("affine", a)), a.reshape(4, 2, 3), rtol=0, atol=1e-12)
    np.testing.assert_allclose(K.affine_fit(("affine", a), ("affine", b)), W.chain(a, b),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(K.affine_fit(("affine", a), ("affine", b), ("affine", c)),
                               W.chain(W.chain(a, b), c), rtol=0, atol=1e-12)


def test_affine_fit_of_affine_projective_and_tps_maps():
    theta = RANDOM["affine"](3)
    matrices = theta.reshape(3, 2, 3)
    # A homography with no perspective row is the affine map itself ...
    projective = np.concatenate([theta, np.zeros((3, 2))], axis=1)
    np.testing.assert_allclose(K.affine_fit(("projective", projective)), matrices,
                               rtol=0, atol=1e-12)
    # ... and with a small one, close to it (the error is of the order of t6, t7).
    for eps in (1e-2, 1e-3):
        tilted = projective + np.array([0] * 6 + [eps, -eps])
        error = np.abs(K.affine_fit(("projective", tilted)) - matrices).max()
        assert 0 < error < 3 * eps
    # A spline through affinely displaced control points is that affine map.
    control = affine_control(theta)
    np.testing.assert_allclose(K.affine_fit(("tps", control.reshape(3, 32))), matrices,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(K.affine_fit(("tps", control.reshape(3, 32)), ("affine", theta)),
                               W.chain(theta, theta), rtol=0, atol=1e-12)


def _smooth_images(size=24):
    """``[1, size, size, 1]`` float64: a wide bump, smooth on the pixel scale."""
    xy = centres(size, size)
    bump = np.exp(-((xy[:, 0] - 0.1) ** 2 + (xy[:, 1] + 0.05) ** 2) / (2 * 0.35 ** 2))
    return (bump * (1 + 0.5 * np.sin(3 * xy[:, 0]))).reshape(1, size, size, 1)


@pytest.mark.parametrize("first, second", [("affine", "projective"), ("projective", "tps"),
                                           ("tps", "affine")])
def test_compose_points_reads_where_two_successive_warps_read(first, second):
    images = _smooth_images()
    params = {"affine": np.array([[0.9, -0.3, 0.1, 0.3, 0.9, -0.05]]),
              "projective": np.array([[1.0, 0.1, -0.1, -0.05, 0.95, 0.05, 0.2, -0.15]]),
              "tps": (T.tps_targets() * [[0.85, 1.0]]
                      + 0.1 * np.sin(4 * T.tps_targets()[:, ::-1])).reshape(1, 32)}
    a, b = params[first], params[second]
    twice = K.warp(K.warp(images, a, first), b, second).numpy()
    size = images.shape[1:3]

    def once(*maps):
        return sample(images, K.compose_points(*maps, points=centres(*size)).reshape(1, *size, 2))

    right, wrong = once((first, a), (second, b)), once((second, b), (first, a))
    # Where the second warp reads near the edge of the first's output, the
    # zero padding of the intermediate image differs from the one-step read.
    inner = np.all(np.abs(K.compose_points((second, b), points=centres(*size))) < 0.85, axis=-1)
    inner = inner.reshape(1, *size)
    assert inner.mean() > 0.7
    # Two interpolations instead of one: close, not equal.
    error = np.abs(twice - right)[inner].max()
    assert error < 0.03 and error < np.abs(twice - wrong)[inner].max() / 4


# --- attention, n x n TPS, and the matrix helpers ------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_matches_a_numpy_scale_and_shift_and_scipy(dtype):
    params = random_attention(3)
    s, tx, ty = (params[:, i, None, None] for i in range(3))
    points = centres(*OUT_SIZE).reshape(*OUT_SIZE, 2)
    grid = np.stack([s * points[..., 0] + tx, s * points[..., 1] + ty], axis=-1)  # (B, h, w, 2)
    np.testing.assert_allclose(T.attention_grid(params.astype(dtype), *OUT_SIZE), grid,
                               rtol=0, atol=tolerance(dtype))
    images = RNG.random((3, *IN_SIZE, 2)).astype(dtype)
    for out in (K.warp(images, params.astype(dtype), "attention", OUT_SIZE),
                K.warp_ops(images, params.astype(dtype), "attention", OUT_SIZE)):
        np.testing.assert_allclose(out, sample(images, grid), rtol=0, atol=tolerance(dtype))
    assert K.get_kind("attention").size == 3 and K.get_kind("attention").identity == (1, 0, 0)


@pytest.mark.parametrize("n", [3, 5])
def test_tps_of_n_by_n_control_points_matches_scipy(n):
    control = random_tps(3, n=n)
    kind = K.get_kind(f"tps{n}")
    assert kind.size == 2 * n * n and np.allclose(kind.identity, T.tps_targets(n).ravel())
    expected = spline_grid(control, OUT_SIZE, n)
    for grid in (T.tps_grid(control, *OUT_SIZE), kind.grid(control, *OUT_SIZE)):
        np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-10)
    images = RNG.random((3, *IN_SIZE, 1))
    np.testing.assert_allclose(K.warp(images, control, kind, OUT_SIZE),
                               sample(images, expected), rtol=0, atol=1e-10)


def test_tps_kind_rejects_a_grid_of_one():
    with pytest.raises(ValueError, match="n \\* n control points"):
        K.tps_kind(1)


@pytest.mark.parametrize("kind", ["affine", "attention", "projective"])
def test_to_pixels_maps_output_pixels_where_the_grid_reads(kind):
    params = RANDOM[kind](3)
    grid = K.get_kind(kind).tf_grid(params, *OUT_SIZE).numpy()  # (B, h, w, 2) normalized
    expected = np.stack([((grid[..., 0] + 1) * IN_SIZE[1] - 1) / 2,
                         ((grid[..., 1] + 1) * IN_SIZE[0] - 1) / 2], axis=-1)
    rows, cols = np.meshgrid(np.arange(OUT_SIZE[0]), np.arange(OUT_SIZE[1]), indexing="ij")
    pixels = np.stack([cols, rows, np.ones_like(cols)], axis=-1).astype(np.float64)  # (h, w, 3)
    matrices = K.to_pixels(params, kind, IN_SIZE, OUT_SIZE)
    mapped = np.einsum("bjk,hwk->bhwj", matrices, pixels)
    np.testing.assert_allclose(mapped[..., :2] / mapped[..., 2:], expected, atol=1e-12)
    # TF tensors go through keras.ops, in their own dtype: the same matrices.
    np.testing.assert_allclose(K.to_pixels(tf.constant(params), kind, IN_SIZE, OUT_SIZE),
                               matrices, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["affine", "attention", "projective"])
def test_invert_undoes_the_map(kind):
    params = RANDOM[kind](4)
    inverse = K.invert(params, kind)
    assert inverse.shape == params.shape
    points = centres(5, 6)
    there_and_back = K.compose_points((kind, inverse), (kind, params), points=points)
    np.testing.assert_allclose(there_and_back, np.broadcast_to(points, (4, *points.shape)),
                               atol=1e-12)
    np.testing.assert_allclose(K.invert(inverse, kind), params, atol=1e-12)
    np.testing.assert_allclose(K.invert(tf.constant(params), kind), inverse, atol=1e-12)
    identity = K.identity(kind, 2)
    np.testing.assert_allclose(K.invert(identity, kind), identity, atol=0)


def test_helpers_refuse_a_spline():
    with pytest.raises(ValueError, match="'tps' is not a matrix transform; .*affine"):
        K.invert(K.identity("tps"), "tps")


# --- registry -------------------------------------------------------------------

@pytest.mark.parametrize("name", image_kinds())  # the 3-D ones: test_volumes.py
def test_registry_entries_are_consistent(name):
    kind = K.get_kind(name)
    assert kind.name == name and K.get_kind(kind) is kind
    assert len(kind.identity) == kind.size
    assert K.identity(name, 3).shape == (3, kind.size)
    grid = kind.grid(K.identity(name, 2), 3, 4)
    assert grid.shape == (2, 3, 4, 2)
    np.testing.assert_allclose(grid, T.affine_grid(K.identity("affine", 2), 3, 4),
                               rtol=0, atol=1e-15)


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(ValueError, match="unknown transformer kind 'spline'") as error:
        K.get_kind("spline")
    assert all(name in str(error.value) for name in K.KINDS)
    with pytest.raises(ValueError, match=", ".join(K.KINDS)):
        K.warp(np.zeros((1, 4, 4, 1)), np.zeros((1, 6)), "bogus")
