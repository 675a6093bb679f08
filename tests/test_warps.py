"""Affine warp geometry (stn.data.warps): compose/decompose, inverse, chain, directions.

The warp protocols themselves (sampling, ranges, apply) are tested in
test_protocols.py; here they only supply realistic parameters.
"""

import subprocess
import sys

import numpy as np
import pytest

import helpers
from stn.layer import kinds as K
from stn.data import protocols as P
from stn.layer import transform as T
from stn.data import warps as W

AFFINE = [name for name, protocol in P.PROTOCOLS.items() if protocol.kind == "affine"]

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


def sample_params(name, n, seed):
    """Named parameters of ``n`` warps of an affine protocol."""
    return P.PROTOCOLS[name].sample_params(n, np.random.default_rng(seed))


def warp(images, sampling):
    """The eager affine sampler: ``[n, 2, 3]`` sampling matrices -> NumPy images."""
    return K.warp(np.float32(images), np.reshape(sampling, (-1, 6))).numpy()


def params_of(n=1, **values):
    base = {"rotation": 0.0, "shear": 0.0, "scale": 1.0, "tx": 0.0, "ty": 0.0}
    base.update(values)
    return {k: np.full(n, v, np.float64) for k, v in base.items()}


# --- compose / decompose --------------------------------------------------

def test_warps_is_numpy_only():
    # Loaded as a lone file: `import stn` itself registers the Keras layers.
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('warps', 'stn/data/warps.py')\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "assert 'tensorflow' not in sys.modules and 'stn' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=helpers.ROOT)


@pytest.mark.parametrize("name", AFFINE)
def test_decompose_inverts_compose(name):
    protocol = P.PROTOCOLS[name]
    params = sample_params(name, 2000, 1)
    parts = W.decompose(W.compose(params, protocol.canvas), protocol.canvas)
    for key in KEYS:
        np.testing.assert_allclose(parts[key], params[key], atol=1e-9, err_msg=key)
    np.testing.assert_allclose(parts["aspect"], 1.0, atol=1e-12)
    assert not parts["reflected"].any()


def test_compose_with_aspect_round_trips():
    rng = np.random.default_rng(2)
    params = P.PROTOCOLS["predecessor"].sample_params(500, rng)
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
    sampling = W.compose(sample_params("predecessor", 50, 3), 40)
    residual = W.chain(sampling, W.invert(sampling))
    np.testing.assert_allclose(residual, np.tile(np.reshape(T.IDENTITY, (2, 3)), (50, 1, 1)),
                               atol=1e-12)
    parts = W.decompose(residual, 40)
    np.testing.assert_allclose(parts["scale"], 1.0)
    np.testing.assert_allclose(parts["rotation"], 0.0, atol=1e-9)


# --- warping: directions ------------------------------------------------

@pytest.mark.parametrize("name", ["predecessor", "rts", "r"])
def test_warp_then_inverse_restores_the_interior(name):
    protocol = P.PROTOCOLS[name]
    size = protocol.canvas
    # A smooth "digit" near the centre stays (almost) inside the canvas under
    # every protocol warp, so undoing the warp loses only the two bilinear
    # interpolations' blur: a few percent of the peak at this width.
    digit = blob_image(size, [(-4, -4), (0, 0), (3, 4), (4, -2)], sigma=2.5)
    digit /= digit.max()
    n = 16
    images = np.repeat(digit, n, axis=0)
    sampling = W.compose(sample_params(name, n, 11), size)
    warped = warp(images, sampling)
    restored = warp(warped, W.invert(sampling))  # theta = F undoes A
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
    warped = warp(canonical, sampling)[0, ..., 0]
    assert np.unravel_index(np.argmax(warped), warped.shape) == (round(row), round(col))
    np.testing.assert_allclose(warped.max(), 1.0, atol=1e-5)
    np.testing.assert_allclose(warped.sum(), 1.0, atol=1e-5)


def test_bump_centroid_follows_the_forward_map_for_random_warps():
    size, n = 40, 20
    rng = np.random.default_rng(12)
    sampling = W.compose(P.PROTOCOLS["predecessor"].sample_params(n, rng), size)
    forward = W.invert(sampling)
    images = np.repeat(blob_image(size, [(-5, 3)], sigma=1.2), n, axis=0)
    warped = warp(images, sampling)[..., 0]
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
    out = warp(bar, W.compose(params_of(rotation=90.0), 40))[0, ..., 0]
    assert out[22:36, 19:21].sum() > 0.95 * bar.sum()  # below the centre
    out = warp(bar, W.compose(params_of(rotation=30.0), 40))[0, ..., 0]
    assert out[21:].sum() > 0.9 * bar.sum()  # tip moved down: clockwise


def test_positive_shear_slants_like_italics():
    bar = np.zeros((1, 40, 40, 1), np.float32)
    bar[0, 8:32, 19:21] = 1.0  # vertical stroke through the centre
    out = warp(bar, W.compose(params_of(shear=20.0), 40))[0, ..., 0]
    cols = np.arange(40)
    top, bottom = out[8:16], out[24:32]
    # "/": the top of the stroke is right of its bottom.
    assert (top.sum(0) @ cols) / top.sum() > (bottom.sum(0) @ cols) / bottom.sum() + 4
