"""Warp geometry: parameters, compose/decompose, directions, and warping."""

import numpy as np
import pytest

from stn import transform as T
from stn import warps as W

KEYS = ("rotation", "shear", "scale", "tx", "ty")


def blob_image(size=40, points=((0, 0),), sigma=1.5):
    """Smooth test image: Gaussian bumps at pixel offsets (dx, dy) from the centre.

    Returns float32 ``[1, size, size, 1]``.
    """
    centre = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = sum(np.exp(-((xx - centre - dx) ** 2 + (yy - centre - dy) ** 2) / (2 * sigma**2))
              for dx, dy in points)
    return img[None, ..., None].astype(np.float32)


def pixel_to_norm(col, row, size):
    return np.array([(2 * col + 1) / size - 1, (2 * row + 1) / size - 1])


def norm_to_pixel(point, size):
    return (point[0] + 1) * size / 2 - 0.5, (point[1] + 1) * size / 2 - 0.5


def params_of(n=1, **values):
    base = {"rotation": 0.0, "shear": 0.0, "scale": 1.0, "tx": 0.0, "ty": 0.0}
    base.update(values)
    return {k: np.full(n, v, np.float64) for k, v in base.items()}


# --- compose / decompose --------------------------------------------------

@pytest.mark.parametrize("name", list(W.PROTOCOLS))
def test_decompose_inverts_compose(name):
    protocol = W.PROTOCOLS[name]
    params = W.sample_params(protocol, 2000, np.random.default_rng(1))
    parts = W.decompose(W.compose(params, protocol.canvas), protocol.canvas)
    for key in KEYS:
        np.testing.assert_allclose(parts[key], params[key], atol=1e-9, err_msg=key)
    np.testing.assert_allclose(parts["aspect"], 1.0, atol=1e-12)
    assert not parts["reflected"].any()


def test_compose_with_aspect_round_trips():
    rng = np.random.default_rng(2)
    params = W.sample_params("seed", 500, rng)
    params["aspect"] = rng.uniform(0.5, 2.0, 500)
    parts = W.decompose(W.compose(params, 40), 40)
    for key in (*KEYS, "aspect"):
        np.testing.assert_allclose(parts[key], params[key], atol=1e-9, err_msg=key)


def test_decompose_pure_rotation():
    a = np.radians(30.0)
    # A = F^-1 = Rotate(-30 deg).
    sampling = [[[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0]]]
    parts = W.decompose(sampling, 40)
    np.testing.assert_allclose(parts["rotation"], [30.0])
    np.testing.assert_allclose([parts[k][0] for k in ("shear", "tx", "ty")], 0.0, atol=1e-12)
    np.testing.assert_allclose([parts["scale"][0], parts["aspect"][0]], 1.0)


def test_decompose_pure_scale_and_anisotropy():
    parts = W.decompose([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]], 40)  # F = 2 I
    np.testing.assert_allclose([parts["scale"][0], parts["aspect"][0]], [2.0, 1.0])
    parts = W.decompose([[[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]]], 40)  # F = diag(2, 1)
    np.testing.assert_allclose([parts["scale"][0], parts["aspect"][0]], [np.sqrt(2), 2.0])
    assert parts["rotation"][0] == 0 and parts["shear"][0] == 0


def test_decompose_pure_shear():
    k = np.tan(np.radians(20.0))
    # F = [[1, -k], [0, 1]], so A = [[1, k], [0, 1]].
    parts = W.decompose([[[1.0, k, 0.0], [0.0, 1.0, 0.0]]], 40)
    np.testing.assert_allclose(parts["shear"], [20.0])
    np.testing.assert_allclose([parts["rotation"][0], parts["tx"][0]], 0.0, atol=1e-12)
    np.testing.assert_allclose([parts["scale"][0], parts["aspect"][0]], 1.0)


@pytest.mark.parametrize("canvas", [40, 42])
def test_decompose_translation_in_pixels(canvas):
    # A shifts the sampling by (-0.5, +0.25): the digit moves by (+0.5, -0.25)
    # normalized units, i.e. (+canvas / 4, -canvas / 8) pixels.
    parts = W.decompose([[[1.0, 0.0, -0.5], [0.0, 1.0, 0.25]]], canvas)
    np.testing.assert_allclose([parts["tx"][0], parts["ty"][0]], [canvas / 4, -canvas / 8])
    assert W.compose(params_of(tx=10.0, ty=0.0), 40)[0, 0, 2] == -0.5  # 10 px = 0.5


def test_decompose_flags_reflection_and_survives_singular():
    parts = W.decompose([[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]], 40)
    assert parts["reflected"][0] and parts["scale"][0] == 1.0
    parts = W.decompose([[1.0, 2.0, 0.0, 2.0, 4.0, 0.0], T.IDENTITY], 40)
    assert np.isnan(parts["scale"][0]) and parts["scale"][1] == 1.0


def test_chain_of_warp_and_its_forward_map_is_identity():
    sampling = W.compose(W.sample_params("seed", 50, np.random.default_rng(3)), 40)
    residual = W.chain(sampling, W.invert(sampling))
    np.testing.assert_allclose(residual, np.tile(np.reshape(T.IDENTITY, (2, 3)), (50, 1, 1)),
                               atol=1e-12)
    parts = W.decompose(residual, 40)
    np.testing.assert_allclose(parts["scale"], 1.0)
    np.testing.assert_allclose(parts["rotation"], 0.0, atol=1e-9)


# --- protocols and sampling -----------------------------------------------

@pytest.mark.parametrize("name", list(W.PROTOCOLS))
def test_sampled_params_stay_in_and_cover_ranges(name):
    protocol = W.PROTOCOLS[name]
    params = W.sample_params(protocol, 10_000, np.random.default_rng(4))
    ranges = {"rotation": protocol.rotation, "shear": protocol.shear, "scale": protocol.scale,
              "tx": protocol.translation, "ty": protocol.translation}
    for key, (lo, hi) in ranges.items():
        values = params[key]
        assert values.shape == (10_000,)
        assert lo <= values.min() and values.max() <= hi, key
        slack = 0.002 * (hi - lo)  # 10,000 uniform draws: the extremes are this close
        assert values.min() <= lo + slack and values.max() >= hi - slack, key


def test_protocol_ranges_are_as_documented():
    seed, rts, r = W.PROTOCOLS["seed"], W.PROTOCOLS["rts"], W.PROTOCOLS["r"]
    assert (seed.canvas, seed.rotation, seed.shear, seed.translation, seed.scale) == (
        40, (-30, 30), (-20, 20), (-10, 10), (0.8, 1.2))
    assert (rts.canvas, rts.rotation, rts.shear, rts.translation, rts.scale) == (
        42, (-45, 45), (0, 0), (-7, 7), (0.7, 1.2))
    assert (r.canvas, r.rotation, r.shear, r.translation, r.scale) == (
        40, (-90, 90), (0, 0), (0, 0), (1, 1))


def test_seed_scale_is_isotropic():
    sampling = W.compose(W.sample_params("seed", 1000, np.random.default_rng(5)), 40)
    np.testing.assert_allclose(W.decompose(sampling, 40)["aspect"], 1.0, atol=1e-12)


def test_same_generator_state_gives_same_params():
    a = W.sample_params("seed", 100, np.random.default_rng(6))
    b = W.sample_params("seed", 100, np.random.default_rng(6))
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("distortion", W.DISTORTIONS)
def test_single_distortion_switches_the_others_off(distortion):
    variant = W.single_distortion("seed", distortion)
    params = W.sample_params(variant, 200, np.random.default_rng(7))
    changed = {"translation": ("tx", "ty")}.get(distortion, (distortion,))
    for key in KEYS:
        neutral = 1.0 if key == "scale" else 0.0
        assert np.all(params[key] == neutral) != (key in changed), key
    assert variant.canvas == 40 and variant.name == f"seed/{distortion}"


def test_unknown_protocol_lists_valid_names():
    with pytest.raises(ValueError, match="seed, rts, r, none"):
        W.get_protocol("rst")
    with pytest.raises(ValueError, match="distortion"):
        W.single_distortion("seed", "zoom")


# --- warping: exactness and directions --------------------------------------

def test_none_protocol_is_identity_and_warp_returns_input_exactly():
    sampling = W.compose(W.sample_params("none", 7, np.random.default_rng(8)), 40)
    np.testing.assert_array_equal(sampling, np.tile(np.reshape(T.IDENTITY, (2, 3)), (7, 1, 1)))
    images = np.random.default_rng(9).random((7, 40, 40, 1)).astype(np.float32)
    np.testing.assert_array_equal(W.warp_images(images, sampling), images)


def test_warp_images_matches_eager_sampler_and_ignores_chunking():
    rng = np.random.default_rng(10)
    images = rng.random((10, 40, 40, 1)).astype(np.float32)
    sampling = W.compose(W.sample_params("seed", 10, rng), 40).astype(np.float32)
    eager = T.transform(images, sampling).numpy()
    np.testing.assert_allclose(W.warp_images(images, sampling), eager, atol=2e-5)
    np.testing.assert_allclose(W.warp_images(images, sampling, chunk_size=3), eager, atol=2e-5)
    with pytest.raises(ValueError, match="10 images but 9 warps"):
        W.warp_images(images, sampling[:9])


@pytest.mark.parametrize("name", ["seed", "rts", "r"])
def test_warp_then_inverse_restores_the_interior(name):
    protocol = W.PROTOCOLS[name]
    size = protocol.canvas
    # A smooth "digit" near the centre stays (almost) inside the canvas under
    # every protocol warp, so undoing the warp loses only the two bilinear
    # interpolations' blur: a few percent of the peak at this width.
    digit = blob_image(size, [(-4, -4), (0, 0), (3, 4), (4, -2)], sigma=2.5)
    digit /= digit.max()
    n = 16
    images = np.repeat(digit, n, axis=0)
    sampling = W.compose(W.sample_params(protocol, n, np.random.default_rng(11)), size)
    warped = W.warp_images(images, sampling)
    restored = W.warp_images(warped, W.invert(sampling))  # theta = F undoes A
    assert np.abs(warped - images).max() > 0.3  # the warps did move the digit
    interior = slice(size // 2 - 10, size // 2 + 10)
    error = np.abs(restored - images)[:, interior, interior]
    assert error.max() < 0.08 and error.mean() < 0.01, (error.max(), error.mean())


def test_single_pixel_lands_where_the_forward_map_sends_it():
    size = 40
    # Exact case: F = rotate +90 deg, then shift by (+3, -5) px.
    canonical = np.zeros((1, size, size, 1), np.float32)
    canonical[0, 12, 27, 0] = 1.0  # row 12, column 27
    sampling = W.compose(params_of(rotation=90.0, tx=3.0, ty=-5.0), size)
    forward = W.invert(sampling)[0]
    col, row = norm_to_pixel(forward @ [*pixel_to_norm(27, 12, size), 1.0], size)
    np.testing.assert_allclose([col, row], [np.round(col), np.round(row)], atol=1e-9)
    warped = W.warp_images(canonical, sampling)[0, ..., 0]
    assert np.unravel_index(np.argmax(warped), warped.shape) == (round(row), round(col))
    np.testing.assert_allclose(warped.max(), 1.0, atol=1e-5)
    np.testing.assert_allclose(warped.sum(), 1.0, atol=1e-5)


def test_bump_centroid_follows_the_forward_map_for_random_warps():
    size, n = 40, 20
    rng = np.random.default_rng(12)
    sampling = W.compose(W.sample_params("seed", n, rng), size)
    forward = W.invert(sampling)
    images = np.repeat(blob_image(size, [(-5, 3)], sigma=1.2), n, axis=0)
    warped = W.warp_images(images, sampling)[..., 0]
    yy, xx = np.mgrid[:size, :size]
    start = pixel_to_norm((size - 1) / 2 - 5, (size - 1) / 2 + 3, size)
    for i in range(n):
        expected = norm_to_pixel(forward[i] @ [*start, 1.0], size)
        weights = warped[i] / warped[i].sum()
        centroid = (np.sum(weights * xx), np.sum(weights * yy))
        np.testing.assert_allclose(centroid, expected, atol=0.2)


def test_positive_rotation_turns_clockwise_on_screen():
    # A bar from the centre to the right; +90 deg must point it DOWN (y down).
    bar = np.zeros((1, 40, 40, 1), np.float32)
    bar[0, 19:21, 22:36] = 1.0
    out = W.warp_images(bar, W.compose(params_of(rotation=90.0), 40))[0, ..., 0]
    assert out[22:36, 19:21].sum() > 0.95 * bar.sum()  # below the centre
    out = W.warp_images(bar, W.compose(params_of(rotation=30.0), 40))[0, ..., 0]
    assert out[21:].sum() > 0.9 * bar.sum()  # tip moved down: clockwise


def test_positive_shear_slants_like_italics():
    bar = np.zeros((1, 40, 40, 1), np.float32)
    bar[0, 8:32, 19:21] = 1.0  # vertical stroke through the centre
    out = W.warp_images(bar, W.compose(params_of(shear=20.0), 40))[0, ..., 0]
    cols = np.arange(40)
    top, bottom = out[8:16], out[24:32]
    # "/": the top of the stroke is right of its bottom.
    assert (top.sum(0) @ cols) / top.sum() > (bottom.sum(0) @ cols) / bottom.sum() + 4
