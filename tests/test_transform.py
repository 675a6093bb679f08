"""The sampler against analytic cases, SciPy, finite differences, and modes."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from stn.layer import kinds
from stn.layer import sampler as S
from stn.layer import transform as T
from stn.layer import transform_grids as G

RNG = np.random.default_rng(0)


def reference(images, theta, out_size):
    """Independent NumPy/SciPy version of the convention in stn.layer.transform.

    Builds the normalized output grid, maps it with theta, converts to
    SciPy's pixel coordinates (centres at integers) and samples with
    ``map_coordinates(order=1, mode="grid-constant")``, which interpolates
    against the zero border like our zero padding does.
    """
    images = np.asarray(images, np.float64)
    theta = np.asarray(theta, np.float64).reshape(-1, 2, 3)
    batch, height, width, channels = images.shape
    h, w = out_size
    x = (2 * np.arange(w) + 1) / w - 1
    y = (2 * np.arange(h) + 1) / h - 1
    xx, yy = np.meshgrid(x, y)
    points = np.stack([xx, yy, np.ones_like(xx)])  # (3, h, w)
    out = np.zeros((batch, h, w, channels))
    for b in range(batch):
        xs, ys = np.einsum("jk,khw->jhw", theta[b], points)
        cols = ((xs + 1) * width - 1) / 2
        rows = ((ys + 1) * height - 1) / 2
        for c in range(channels):
            out[b, ..., c] = ndimage.map_coordinates(
                images[b, ..., c], [rows, cols], order=1, mode="grid-constant", cval=0.0)
    return out


def random_theta(batch, scale=0.4, dtype=np.float32):
    """Identity plus a random affine perturbation: a mix of inside and outside."""
    theta = np.array(T.IDENTITY) + RNG.uniform(-scale, scale, size=(batch, 6))
    return theta.astype(dtype)


def tile(values, batch, dtype=np.float32):
    return np.tile(np.asarray(values, dtype), (batch, 1))


# --- analytic cases -------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 40, 40, 1), (2, 21, 23, 3), (1, 1, 1, 2), (2, 7, 5, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_returns_input_exactly(shape, dtype):
    images = RNG.random(shape).astype(dtype)
    out = T.transform(images, tile(T.IDENTITY, shape[0], dtype))
    np.testing.assert_array_equal(out.numpy(), images)


@pytest.mark.parametrize("shape", [(3, 40, 40, 1), (2, 21, 23, 3)])
def test_identity_through_normalized_grid_to_rounding(shape):
    # The normalized grid itself is rounded to float32 (x = (2j + 1)/W - 1 is
    # not a binary fraction), so the two-step path is exact to rounding only.
    images = RNG.random(shape).astype(np.float32)
    grid = T.affine_grid(tile(T.IDENTITY, shape[0]), shape[1], shape[2])
    out = T.bilinear_sample(images, grid)
    np.testing.assert_allclose(out, images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 40, 40, 1), (2, 21, 23, 3)])
def test_flips_are_exact(shape):
    images = RNG.random(shape).astype(np.float32)
    batch = shape[0]
    both = T.transform(images, tile([-1, 0, 0, 0, -1, 0], batch))
    np.testing.assert_array_equal(both.numpy(), images[:, ::-1, ::-1])
    horizontal = T.transform(images, tile([-1, 0, 0, 0, 1, 0], batch))
    np.testing.assert_array_equal(horizontal.numpy(), images[:, :, ::-1])


@pytest.mark.parametrize("dx, dy", [(2, -1), (-3, 4), (0, 5), (39, 0), (40, -40)])
def test_whole_pixel_translation_shifts_exactly(dx, dy):
    height = width = 40
    images = RNG.random((2, height, width, 2)).astype(np.float32)
    # Reading the input dx pixels to the right moves the content left.
    theta = tile([1, 0, 2 * dx / width, 0, 1, 2 * dy / height], 2)
    expected = np.zeros_like(images)
    src = images[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)]
    expected[:, max(-dy, 0):max(-dy, 0) + src.shape[1],
             max(-dx, 0):max(-dx, 0) + src.shape[2]] = src
    np.testing.assert_array_equal(T.transform(images, theta).numpy(), expected)


def test_half_pixel_outside_blends_with_zero():
    # Shift by half a pixel: the last column reads halfway between the last
    # pixel centre and the zero border.
    images = np.ones((1, 4, 4, 1), np.float32)
    out = T.transform(images, tile([1, 0, 2 * 0.5 / 4, 0, 1, 0], 1)).numpy()
    np.testing.assert_allclose(out[0, :, :3, 0], 1.0)
    np.testing.assert_allclose(out[0, :, 3, 0], 0.5)


def test_affine_grid_matches_convention():
    theta = np.array([[1, 0, 0, 0, 1, 0], [0.5, 0, 0.25, 0, 2, -1]], np.float32)
    grid = T.affine_grid(theta, 2, 4).numpy()
    assert grid.shape == (2, 2, 4, 2)
    np.testing.assert_allclose(grid[0, 0, :, 0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(grid[0, :, 0, 1], [-0.5, 0.5])
    np.testing.assert_allclose(grid[1, 1, 3], [0.5 * 0.75 + 0.25, 2 * 0.5 - 1])
    np.testing.assert_allclose(T.affine_grid(theta.reshape(2, 2, 3), 2, 4), grid)


# --- against SciPy --------------------------------------------------------

def _tolerance(dtype, *sizes):
    """Float precision of a bilinear sample of values in [0, 1].

    A coordinate of magnitude up to ``max(sizes)`` pixels carries a rounding
    error of a few ulps of that magnitude, and the sample's error is that
    times the largest pixel-to-pixel step (1 here).
    """
    return 8 * np.finfo(dtype).eps * max(max(s) for s in sizes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("in_size, out_size", [((40, 40), (40, 40)), ((17, 23), (9, 31)),
                                               ((12, 12), (30, 20))])
def test_random_thetas_match_scipy(dtype, channels, in_size, out_size):
    images = RNG.random((4, *in_size, channels)).astype(dtype)
    theta = random_theta(4, dtype=dtype)
    expected = reference(images, theta, out_size)
    atol = _tolerance(dtype, in_size, out_size)
    out = T.transform(images, theta, out_size)
    assert out.shape == (4, *out_size, channels) and out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)
    grid = T.affine_grid(theta, *out_size)
    np.testing.assert_allclose(T.bilinear_sample(images, grid), expected, rtol=0, atol=atol)


def test_theta_shapes_agree():
    images = RNG.random((3, 9, 9, 1)).astype(np.float32)
    theta = random_theta(3)
    np.testing.assert_array_equal(T.transform(images, theta),
                                  T.transform(images, theta.reshape(3, 2, 3)))


def test_bad_theta_shape_is_rejected():
    with pytest.raises(ValueError, match="theta must be"):
        T.transform(np.zeros((1, 4, 4, 1), np.float32), np.zeros((6,), np.float32))


# --- gradients ------------------------------------------------------------

def _off_kinks(theta, in_size, out_size, margin=1e-3):
    """True if no sample point is within `margin` pixels of a kink."""
    grid = T.affine_grid(theta, *out_size).numpy()
    h, w = in_size
    cols = ((grid[..., 0] + 1) * w - 1) / 2
    rows = ((grid[..., 1] + 1) * h - 1) / 2
    dist = np.minimum(np.abs(cols - np.round(cols)), np.abs(rows - np.round(rows)))
    return dist.min() > margin


@pytest.mark.parametrize("out_size", [(6, 5), (4, 7)])
def test_gradients_match_finite_differences(out_size):
    in_size = (6, 5)
    images = RNG.random((2, *in_size, 2))
    theta = random_theta(2, dtype=np.float64)
    while not _off_kinks(theta, in_size, out_size):
        theta = random_theta(2, dtype=np.float64)

    # Traced once (tf.function), not run op by op for each of the ~400
    # evaluations: 3x faster. The eager gradients equal the traced ones
    # (test_eager_function_xla_and_tf1_session_agree).
    @tf.function
    def f(images, theta):
        return T.transform(images, theta, out_size)

    analytic, numeric = tf.test.compute_gradient(f, [images, theta], delta=1e-6)
    for a, n in zip(analytic, numeric):
        assert np.abs(a).max() > 0  # the check is not vacuous
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-6)

    @tf.function
    def g(images, theta):
        return T.bilinear_sample(images, T.affine_grid(theta, *out_size))

    analytic2, _ = tf.test.compute_gradient(g, [images, theta], delta=1e-6)
    for a, a2 in zip(analytic, analytic2):
        np.testing.assert_allclose(a, a2, rtol=1e-9, atol=1e-9)


# --- execution modes ------------------------------------------------------

def _value_and_grad(images, theta):
    """The output and its loss's gradients in the images and in theta."""
    with tf.GradientTape() as tape:
        tape.watch([images, theta])
        out = T.transform(images, theta, (13, 11))
        loss = tf.reduce_sum(out * out)
    return out, *tape.gradient(loss, [images, theta])


@pytest.mark.parametrize("dtype, rtol", [(tf.float64, 1e-10), (tf.float32, 2e-4)])
def test_eager_function_xla_and_tf1_session_agree(dtype, rtol):
    # float32 gradients are sums over many pixels whose order differs
    # between the executors, hence the looser float32 tolerance, relative
    # to each array's largest value (the rounding of a sum scales with its
    # terms, not with the small sum it may end at).
    rng = np.random.default_rng(11)  # its own draws, whatever ran before
    images = tf.constant(rng.random((3, 12, 10, 2)), dtype)
    theta = tf.constant(np.array(T.IDENTITY) + rng.uniform(-0.4, 0.4, (3, 6)), dtype)
    eager = _value_and_grad(images, theta)
    graph = tf.function(_value_and_grad)(images, theta)
    xla = tf.function(_value_and_grad, jit_compile=True)(images, theta)
    with tf.Graph().as_default():
        # Unknown batch, height and width: old graph-mode code feeds these.
        x = tf.compat.v1.placeholder(dtype, [None, None, None, 2])
        t = tf.compat.v1.placeholder(dtype, [None, 6])
        fetch = _value_and_grad(x, t)
        with tf.compat.v1.Session() as sess:
            session = sess.run(fetch, {x: images.numpy(), t: theta.numpy()})
    for other in (graph, xla, session):
        for a, b in zip(eager, other):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()))


def test_static_shape_is_kept_in_graphs():
    @tf.function(input_signature=[tf.TensorSpec([None, 40, 40, 3]), tf.TensorSpec([None, 6])])
    def f(images, theta):
        out = T.transform(images, theta, (20, 30))
        assert out.shape.as_list() == [None, 20, 30, 3]
        return out

    f.get_concrete_function()


# --- robustness -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 4])
def test_far_outside_thetas_are_finite(dtype, batch):
    images = tf.constant(RNG.random((batch, 8, 8, 1)), dtype)
    theta = tf.constant(RNG.uniform(-1e3, 1e3, (batch, 6)), dtype)
    for t in (theta, tf.fill(tf.shape(theta), tf.constant(1e30, dtype))):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([images, t])
            out = T.transform(images, t)
            loss = tf.reduce_sum(out)
        assert out.dtype == dtype
        for value in (out, tape.gradient(loss, t), tape.gradient(loss, images)):
            assert np.all(np.isfinite(value.numpy()))


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_nan_theta_gives_nan_not_a_crash(mode):
    images = tf.ones((2, 4, 4, 1))
    theta = tf.constant([[np.nan] * 6, [1, 0, np.nan, 0, 1, 0]], tf.float32)
    run = {"eager": T.transform, "graph": tf.function(T.transform),
           "xla": tf.function(T.transform, jit_compile=True)}[mode]
    assert np.all(np.isnan(run(images, theta).numpy()))


# --- the written-out gradients (tf.custom_gradient) -----------------------------

def _sample_by_autodiff(images, u, v):
    """The sampler's forward pass, differentiated by TensorFlow itself."""
    rows, weights, _ = T._neighbours(u, v, T.image_dims(images))
    corners = tf.gather(T._quads(images), rows)  # (B, h, w, 4, C)
    return tf.reduce_sum(corners * weights[..., None], axis=3)


def _pixel_coordinates(shape, size):
    """Random pixel coordinates plus every edge case of the clipping: far
    outside, on the clip bounds -1 and ``size``, in the padding band, on
    integers, and NaN."""
    coords = RNG.uniform(-3.0, size + 2.0, shape)
    coords.flat[:8] = [-1e3, -1.0, -0.5, 0.0, size - 1.0, size - 0.25, size, 1e3]
    coords.flat[8] = np.nan
    return coords


@pytest.mark.parametrize("channels", [1, 3])
def test_sampler_gradient_equals_tensorflows_own(channels):
    images = tf.constant(RNG.random((2, 6, 7, channels)))
    u = tf.constant(_pixel_coordinates((2, 5, 4), 7))
    v = tf.constant(_pixel_coordinates((2, 5, 4), 6)[::-1])
    upstream = tf.constant(RNG.normal(size=(2, 5, 4, channels)))
    results = []
    for sample in (T._sample_pixels, _sample_by_autodiff):
        with tf.GradientTape() as tape:
            tape.watch([images, u, v])
            out = sample(images, u, v)
        results.append([out, *tape.gradient(out, [images, u, v], output_gradients=upstream)])
    for ours, theirs in zip(*results):
        ours, theirs = ours.numpy(), theirs.numpy()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_sampler_gradient_matches_finite_differences():
    images = RNG.random((2, 5, 6, 2))
    # Away from the kinks (integers and the clip bounds) by more than delta.
    u = RNG.integers(-2, 7, (2, 3, 4)) + RNG.uniform(0.05, 0.95, (2, 3, 4))
    v = RNG.integers(-2, 6, (2, 3, 4)) + RNG.uniform(0.05, 0.95, (2, 3, 4))
    analytic, numeric = tf.test.compute_gradient(T._sample_pixels, [images, u, v], delta=1e-6)
    for a, n in zip(analytic, numeric):
        assert np.abs(a).max() > 0  # the check is not vacuous
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-6)


def _projective_grid_by_autodiff(theta, height, width):
    """The projective grid as an einsum, differentiated by TensorFlow itself."""
    theta = G.as_homography(theta)
    points = G.pixel_centre_points(height, width, theta.dtype)  # (h, w, 2)
    target = tf.concat([points, tf.ones_like(points[..., :1])], axis=-1)  # (h, w, 3)
    mapped = tf.einsum("hwk,bjk->bhwj", target, theta)  # (B, h, w, 3)
    numerator, d = mapped[..., :2], mapped[..., 2:]
    valid = tf.abs(d) >= T.MIN_DENOMINATOR
    ratio = numerator / tf.where(valid, d, tf.ones_like(d))
    grid = tf.where(valid, ratio, -S.FAR * tf.ones_like(ratio))
    return G.keep_nan(numerator + d, tf.clip_by_value(grid, -S.FAR, S.FAR))


def _homographies():
    theta = np.tile(T.PROJECTIVE_IDENTITY, (4, 1)) + RNG.normal(0, 0.3, (4, 8))
    theta[1, 6:] = [8.0, 0.0]  # d = 0 on the pixel centres x = -1/8: masked
    theta[2, 6:] = [8.00001, 0.0]  # |d| ~ 1.3e-6 there: |ratio| > 1e4, clipped
    theta[3, :2] = [1e6, 1e6]  # x clipped nearly everywhere
    return theta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_projective_grid_gradient_equals_tensorflows_own(dtype):
    theta = tf.constant(_homographies(), dtype)
    upstream = tf.constant(RNG.normal(size=(4, 6, 8, 2)), dtype)
    results = []
    for grid in (T.projective_grid, _projective_grid_by_autodiff):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            out = grid(theta, 6, 8)
        results.append((out.numpy(), tape.gradient(out, theta, output_gradients=upstream).numpy()))
    (ours, ours_grad), (theirs, theirs_grad) = results
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol)  # einsum: other rounding
    np.testing.assert_allclose(ours_grad, theirs_grad, rtol=rtol, atol=rtol * np.abs(theirs_grad).max())


def test_projective_grid_gradient_matches_finite_differences():
    theta = np.tile(T.PROJECTIVE_IDENTITY, (3, 1)) + RNG.normal(0, 0.2, (3, 8))
    theta[2, 6:] = [0.9, 0.3]  # a steep but finite perspective
    analytic, numeric = tf.test.compute_gradient(
        lambda t: T.projective_grid(t, 5, 6), [theta], delta=1e-7)
    np.testing.assert_allclose(analytic[0], numeric[0], rtol=1e-5, atol=1e-6)


def test_theta_gradient_across_the_xla_boundary_equals_eager():
    # The path training takes: a step that is not compiled calls the
    # XLA-compiled sampler, whose backward pass is a second XLA call.
    images = tf.constant(RNG.random((3, 9, 8, 2)))
    theta = tf.constant(random_theta(3, dtype=np.float64))

    def value_and_grad(sample, images, theta):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss = tf.reduce_sum(tf.square(sample(images, theta, (7, 10))))
        return loss, tape.gradient(loss, theta)

    eager = value_and_grad(T.transform, images, theta)
    def sample(x, t, size):
        return kinds.warp_xla_params_grad(x, t, "affine", size)

    step = tf.function(lambda x, t: value_and_grad(sample, x, t))
    for a, b in zip(eager, step(images, theta)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
