"""Warp protocols: the registry, each protocol's sampling, and the one apply."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from stn.layer import kinds as K
from stn.data import protocols as P
from stn.layer import transform as T
from stn.data import warps as W

ROOT = Path(__file__).resolve().parent.parent

NAMES = list(P.PROTOCOLS)
KEYS = ("rotation", "shear", "scale", "tx", "ty")


def canonical(n, protocol, seed=0):
    """Random float32 ``[n, S, S, 1]`` images on the protocol's canvas."""
    size = P.get_protocol(protocol).canvas
    return np.random.default_rng(seed).random((n, size, size, 1)).astype(np.float32)


# --- the registry -------------------------------------------------------------

def test_registry_names_kinds_and_canvases():
    table = {name: (p.canvas, p.kind, K.get_kind(p.kind).size)
             for name, p in P.PROTOCOLS.items()}
    family = {f"{f}-s{std}{tail}": (28, kind, size)
              for f, kind, size, stds in (("p", "projective", 8, "12345"),
                                          ("e", "tps", 32, ("1.5", "2", "2.5", "3", "4")))
              for std in stds for tail in ("", "-scale")}
    assert table == {"predecessor": (40, "affine", 6), "r": (28, "affine", 6),
                     "rts": (42, "affine", 6), "p": (28, "projective", 8),
                     "e": (28, "tps", 32), "e-scale": (28, "tps", 32),
                     "none": (40, "affine", 6), "none-28": (28, "affine", 6), **family,
                     "p-cal": (28, "projective", 8), "e-cal": (28, "tps", 32),
                     **{f"tc-{n}x{k}": (60, "affine", 6) for n, k in P.TC_SETTINGS},
                     "tc": (60, "affine", 6), "t-60": (60, "affine", 6)}
    for name, protocol in P.PROTOCOLS.items():
        assert protocol.name == name and protocol.description
        assert P.get_protocol(name) is protocol and P.get_protocol(protocol) is protocol


def test_unknown_protocol_lists_valid_names():
    with pytest.raises(ValueError, match="predecessor, r, rts, p, e, e-scale, none"):
        P.get_protocol("rst")
    with pytest.raises(ValueError, match="distortion"):
        P.PROTOCOLS["predecessor"].single_distortion("zoom")


def test_affine_protocol_ranges_are_as_documented():
    ranges = {name: (p.rotation, p.shear, p.translation, p.scale)
              for name, p in P.PROTOCOLS.items() if p.kind == "affine"}
    assert ranges == {"predecessor": ((-30, 30), (-20, 20), (-10, 10), (0.8, 1.2)),
                      "r": ((-90, 90), (0, 0), (0, 0), (1, 1)),
                      "rts": ((-45, 45), (0, 0), (-7, 7), (0.7, 1.2)),
                      "none": ((0, 0), (0, 0), (0, 0), (1, 1)),
                      "none-28": ((0, 0), (0, 0), (0, 0), (1, 1)),
                      **{name: ((0, 0), (0, 0), (-16, 16), (1, 1)) for name in (
                          "tc", "t-60", *(f"tc-{n}x{k}" for n, k in P.TC_SETTINGS))}}
    p, e = P.PROTOCOLS["p"], P.PROTOCOLS["e"]
    assert (p.scale, p.corner_std, e.control_std) == ((0.75, 1.0), 5.0, 1.5)


# --- sampling: every protocol ---------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_sample_is_a_pure_function_of_the_generator(name):
    protocol = P.PROTOCOLS[name]
    size = K.get_kind(protocol.kind).size
    first = protocol.sample(50, np.random.default_rng(1))
    np.random.seed(123)  # the global generator must play no part
    rng = np.random.default_rng(1)
    again = protocol.sample(50, rng)
    assert first.shape == (50, size) and first.dtype == np.float64
    np.testing.assert_array_equal(first, again)
    assert np.all(np.isfinite(first))
    # The generator is advanced, by the same amount each time.
    follow = rng.random()
    rng = np.random.default_rng(1)
    protocol.sample(50, rng)
    assert rng.random() == follow
    if not name.startswith("none"):
        assert not np.allclose(first, protocol.sample(50, np.random.default_rng(2)))
        assert np.ptp(first, axis=0).max() > 0  # the warps differ from each other


# The first, second and last matrices of the seed, rts and none protocols'
# split "test" (10,000 warps) at seed 0, and the first train warp (55,000)
# resampled for epoch 0, recorded with the code before the protocol registry
# (stn.data.warps.sample_params + compose, commit 1a52156), as stored (float32).
BEFORE = {
    "predecessor": ([0.88193333, 0.6321828, 0.016833311, -0.35229754, 0.9823117, 0.20037292],
             [0.77363175, -0.3289814, -0.059503894, 0.36231264, 0.75769347, -0.011792587],
             [0.7499297, -0.62709147, -0.46438783, 0.40729445, 0.85467386, 0.21819252]),
    "rts": ([0.96851647, 0.55007976, -0.003795019, -0.55007976, 0.96851647, 0.14537415],
            [0.66008705, -0.521945, -0.036682583, 0.521945, 0.66008705, -0.016396502],
            [0.7700147, -0.6063808, -0.30804297, 0.6063808, 0.7700147, 0.084739946]),
    "none": ([1, 0, 0, 0, 1, 0],) * 3,
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_affine_protocols_draw_the_warps_of_before_the_registry(name):
    from stn.data.pipeline import _rng  # the data module's keyed generators
    test_first, test_last, resample_first = BEFORE[name]
    protocol = P.PROTOCOLS[name]
    test = protocol.sample(10_000, _rng(0, "warps", "test")).astype(np.float32)
    np.testing.assert_array_equal(test[0], np.float32(test_first))
    np.testing.assert_array_equal(test[-1], np.float32(test_last))
    resampled = protocol.sample(55_000, _rng(0, "resample", 0)).astype(np.float32)
    np.testing.assert_array_equal(resampled[0], np.float32(resample_first))
    if name == "predecessor":  # and in float64, before the cast
        np.testing.assert_allclose(
            protocol.sample(10_000, _rng(0, "warps", "test"))[0],
            [0.881933324270207, 0.6321827899154845, 0.016833310458500714,
             -0.3522975434341559, 0.9823117294382144, 0.20037291227453663], rtol=1e-14)


# --- affine protocols -------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in NAMES if P.PROTOCOLS[n].kind == "affine"])
def test_sampled_params_stay_in_and_cover_ranges(name):
    protocol = P.PROTOCOLS[name]
    params = protocol.sample_params(10_000, np.random.default_rng(4))
    ranges = {"rotation": protocol.rotation, "shear": protocol.shear, "scale": protocol.scale,
              "tx": protocol.translation, "ty": protocol.translation}
    for key, (lo, hi) in ranges.items():
        values = params[key]
        assert values.shape == (10_000,)
        assert lo <= values.min() and values.max() <= hi, key
        slack = 0.002 * (hi - lo)  # 10,000 uniform draws: the extremes are this close
        assert values.min() <= lo + slack and values.max() >= hi - slack, key
    # sample() is compose(sample_params()) with the same draws, flattened.
    np.testing.assert_array_equal(
        protocol.sample(100, np.random.default_rng(4)),
        W.compose(protocol.sample_params(100, np.random.default_rng(4)),
                  protocol.canvas).reshape(100, 6))


def test_r_is_rotation_only_on_28_px():
    matrices = P.PROTOCOLS["r"].sample(2000, np.random.default_rng(5))
    parts = W.decompose(matrices, 28)
    assert np.abs(parts["rotation"]).max() <= 90 and np.abs(parts["rotation"]).max() > 89
    for key, neutral in (("shear", 0), ("tx", 0), ("ty", 0), ("scale", 1), ("aspect", 1)):
        np.testing.assert_allclose(parts[key], neutral, atol=1e-9, err_msg=key)


def test_seed_scale_is_isotropic():
    matrices = P.PROTOCOLS["predecessor"].sample(1000, np.random.default_rng(5))
    np.testing.assert_allclose(W.decompose(matrices, 40)["aspect"], 1.0, atol=1e-12)


@pytest.mark.parametrize("distortion", P.DISTORTIONS)
def test_single_distortion_switches_the_others_off(distortion):
    variant = P.PROTOCOLS["predecessor"].single_distortion(distortion)
    params = variant.sample_params(200, np.random.default_rng(7))
    changed = {"translation": ("tx", "ty")}.get(distortion, (distortion,))
    for key in KEYS:
        neutral = 1.0 if key == "scale" else 0.0
        assert np.all(params[key] == neutral) != (key in changed), key
    assert variant.canvas == 40 and variant.name == f"predecessor/{distortion}"
    assert P.get_protocol(variant) is variant and variant.kind == "affine"


@pytest.mark.parametrize("name", NAMES)
def test_scaled_protocol_ends_at_the_identity_and_at_itself(name):
    protocol = P.PROTOCOLS[name]
    assert protocol.scaled(1.0) is protocol
    zero = protocol.scaled(0.0)
    assert (zero.canvas, zero.kind, zero.name) == (protocol.canvas, protocol.kind, f"{name}@0")
    np.testing.assert_allclose(zero.sample(20, np.random.default_rng(3)),
                               K.identity(protocol.kind, 20), atol=1e-12)
    for strength in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            protocol.scaled(strength)


@pytest.mark.parametrize("name", ["predecessor", "r", "rts"])
def test_scaled_affine_protocol_shrinks_each_named_distortion(name):
    # The same draws: every distortion of the scaled warp is the full one's,
    # moved by the strength toward its neutral value.
    full = P.PROTOCOLS[name].sample_params(300, np.random.default_rng(4))
    part = P.PROTOCOLS[name].scaled(0.3).sample_params(300, np.random.default_rng(4))
    for key in KEYS:
        neutral = 1.0 if key == "scale" else 0.0
        np.testing.assert_allclose(part[key] - neutral, 0.3 * (full[key] - neutral),
                                   atol=1e-12, err_msg=key)
    rotation = W.decompose(P.PROTOCOLS[name].scaled(0.3).sample(300, np.random.default_rng(4)),
                           P.PROTOCOLS[name].canvas)["rotation"]
    np.testing.assert_allclose(rotation, 0.3 * full["rotation"], atol=1e-9)


def test_scaled_p_and_e_shrink_scale_and_noise():
    p, e = P.PROTOCOLS["p"], P.PROTOCOLS["e"]
    rng = np.random.default_rng(6)
    s, noise = rng.uniform(0.75, 1.0, 40), rng.normal(0.0, 5.0 * 2 / 28, (40, 4, 2))
    expected = P.homography((1 + 0.5 * (s - 1))[:, None, None] * P.CORNERS + 0.5 * noise,
                            P.CORNERS)
    np.testing.assert_allclose(p.scaled(0.5).sample(40, np.random.default_rng(6)), expected,
                               atol=1e-12)
    grid = T.tps_targets().reshape(1, -1)
    full = e.sample(40, np.random.default_rng(6)) - grid
    np.testing.assert_allclose(e.scaled(0.25).sample(40, np.random.default_rng(6)) - grid,
                               0.25 * full, atol=1e-12)


# --- P: projective ----------------------------------------------------------------

def dlt_homography(outputs, inputs):
    """Reference: the homography through 4 pairs as the null space of the DLT matrix."""
    rows = []
    for (x, y), (u, v) in zip(outputs, inputs):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    h = np.linalg.svd(np.array(rows))[2][-1]
    return h[:8] / h[8]


def test_p_homography_maps_the_noisy_scaled_corners_to_the_corners():
    n, std = 300, 5.0 * 2 / 28
    params = P.PROTOCOLS["p"].sample(n, np.random.default_rng(8))
    # The draws, replayed: the scale of each warp, then the corner noise.
    rng = np.random.default_rng(8)
    scale = rng.uniform(0.75, 1.0, n)
    noise = rng.normal(0.0, std, (n, 4, 2))
    outputs = scale[:, None, None] * P.CORNERS + noise  # (n, 4, 2)
    inputs = np.broadcast_to(P.CORNERS, outputs.shape)
    np.testing.assert_allclose(K.KINDS["projective"].points(params, outputs), inputs,
                               atol=1e-9)
    for i in range(0, n, 37):
        np.testing.assert_allclose(params[i], dlt_homography(outputs[i], inputs[i]),
                                   rtol=1e-7, atol=1e-9)
    # Noise-free, it is the pure scale (the digit shrinks by s about the centre).
    pure = P.homography(0.8 * P.CORNERS, P.CORNERS)
    np.testing.assert_allclose(pure, [1.25, 0, 0, 0, 1.25, 0, 0, 0], atol=1e-12)


def test_p_statistics_scale_and_corner_noise():
    n = 4000
    params = P.PROTOCOLS["p"].sample(n, np.random.default_rng(9))
    # The noise, read off the homographies at the replayed scales.
    rng = np.random.default_rng(9)
    scale = rng.uniform(0.75, 1.0, n)
    # The forward map (the inverse homography) sends the canonical corners
    # to the scaled square's corners plus the noise.
    forward = np.linalg.inv(np.concatenate([params, np.ones((n, 1))], 1).reshape(n, 3, 3))
    forward = (forward / forward[:, 2:, 2:]).reshape(n, 9)[:, :8]
    corners = K.KINDS["projective"].points(forward, P.CORNERS)
    noise_px = (corners - scale[:, None, None] * P.CORNERS) * 14.0  # normalized -> px
    assert abs(noise_px.std() - 5.0) < 0.1 and abs(noise_px.mean()) < 0.1
    assert 0.75 <= scale.min() and scale.max() <= 1.0
    # Independent coordinates and corners.
    flat = noise_px.reshape(n, 8)
    correlation = np.corrcoef(flat, rowvar=False) - np.eye(8)
    assert np.abs(correlation).max() < 0.06


# --- E: thin-plate spline ---------------------------------------------------------

def test_e_control_points_are_the_grid_plus_gaussian_noise():
    n = 4000
    params = P.PROTOCOLS["e"].sample(n, np.random.default_rng(10))
    displacement_px = (params.reshape(n, 16, 2) - T.tps_targets()) * 14.0
    assert abs(displacement_px.std() - 1.5) < 0.02
    assert np.abs(displacement_px.mean(axis=0)).max() < 0.1  # unbiased at every point
    np.testing.assert_allclose(displacement_px.std(axis=0), 1.5, atol=0.08)  # every point, x, y
    correlation = np.corrcoef(displacement_px.reshape(n, 32), rowvar=False) - np.eye(32)
    assert np.abs(correlation).max() < 0.07
    # Sampling direction: the output grid point t_k reads the input at params_k.
    points = K.KINDS["tps"].points(params[:20], T.tps_targets())
    np.testing.assert_allclose(points, params[:20].reshape(20, 16, 2), atol=1e-9)


def test_e_scale_is_e_read_from_a_digit_scaled_by_s():
    n, rng = 500, np.random.default_rng(11)
    noise = rng.normal(0.0, 1.5 * 2 / 28, (n, 16, 2))
    s = rng.uniform(0.75, 1.0, n)
    expected = (T.tps_targets() + noise) / s[:, None, None]
    params = P.PROTOCOLS["e-scale"].sample(n, np.random.default_rng(11))
    np.testing.assert_allclose(params, expected.reshape(n, 32), atol=1e-12)
    # e's warps are those of the same draws with s = 1.
    np.testing.assert_allclose(P.PROTOCOLS["e"].sample(n, np.random.default_rng(11)),
                               (T.tps_targets() + noise).reshape(n, 32), atol=1e-12)
    # Without noise, the spline is the scale about the centre: a grid point
    # t reads the digit at t / s, so the digit appears s times its size.
    scale_only = P.ElasticProtocol("x", 28, scale=(0.8, 0.8)).sample(3, rng)
    np.testing.assert_allclose(scale_only, np.tile(T.tps_targets().reshape(1, 32) / 0.8, (3, 1)))


# --- severity families: P and E at a chosen std ------------------------------------

def test_severity_families_are_registered_with_their_parameters():
    for family, stds in P.SEVERITIES.items():
        for std in stds:
            for scale in (False, True):
                protocol = P.PROTOCOLS[P.severity_name(family, std, scale)]
                noise = protocol.corner_std if family == "p" else protocol.control_std
                assert (noise, protocol.scale) == (std, (0.75, 1.0) if scale else (1.0, 1.0))
                assert protocol.canvas == 28 and f"{std:g} px" in protocol.description
    assert [P.severity_name("p", 3.0, False), P.severity_name("e", 2.5, True)] == [
        "p-s3", "e-s2.5-scale"]
    with pytest.raises(ValueError, match="severity family"):
        P.severity_protocol("r", 1.0, False)


# Reference draws (rng 2025, the second of 2 warps), computed once from the
# independent formula: for P, the DLT null space (dlt_homography below) of
# the corners s * c + std / 14 * z -> c, with s = 0.75 + 0.25 u (1 without
# scale), u = rng.random(2) then z = rng.standard_normal((2, 4, 2)); for E,
# (grid + std / 14 * z) / s, z drawn first, then u, the 4 x 4 grid from
# np.meshgrid(np.linspace(-1, 1, 4)) as (x, y) with x fastest.
REFERENCE = {
    "p-s2": [1.0207644790789285, 0.10932291756672387, -0.06273751019387216,
             0.13592574836067464, 0.9666726429958602, -0.19595191471606108,
             -0.13233843953335697, -0.0831664572380713],
    "p-s3-scale": [1.2475817544664023, 0.2690171491781931, -0.14890162264162418,
                   0.32992191132306214, 1.132708473494491, -0.35540865668935917,
                   -0.3236245843677589, -0.22547304984203448],
    # entries 0, 1, 2, 3, 30, 31: control points 0, 1 and 15, (x, y) each
    "e-s2.5": [-0.9630135760196388, -0.9720336704812371, -0.19422589256949804,
               -1.0225745789780356, 1.0277204608642063, 1.2773159548683763],
    "e-s4-scale": [-1.0577223504105742, -1.0739477504760455, -0.12452395111951271,
                   -1.1648610400789614, 1.1741174833067174, 1.6230913562520621],
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_severity_families_draw_the_reference_warps(name):
    warp = P.PROTOCOLS[name].sample(2, np.random.default_rng(2025))[1]
    if P.PROTOCOLS[name].kind == "tps":
        warp = warp[[0, 1, 2, 3, 30, 31]]
    np.testing.assert_allclose(warp, REFERENCE[name], rtol=1e-9, atol=1e-12)


def test_literal_readings_are_members_of_the_families_with_the_same_draws():
    # Same draws, so the literal readings' results stand for these settings.
    for literal, member in (("p", "p-s5-scale"), ("e", "e-s1.5"), ("e-scale", "e-s1.5-scale")):
        np.testing.assert_array_equal(P.PROTOCOLS[literal].sample(100, np.random.default_rng(3)),
                                      P.PROTOCOLS[member].sample(100, np.random.default_rng(3)))


@pytest.mark.parametrize("family", list(P.CALIBRATED))
def test_calibrated_readings_are_the_sweeps_choice_with_its_draws(family):
    import json

    chosen = json.loads((ROOT / "results" / "calibration.json").read_text())["chosen"][family]
    std, scale = P.CALIBRATED[family]
    member = P.severity_name(family, std, scale)
    assert chosen["protocol"] == member and chosen["complete"]
    calibrated = P.PROTOCOLS[f"{family}-cal"]
    assert (calibrated.kind, calibrated.canvas) == (P.PROTOCOLS[member].kind, 28)
    assert f"= {member}" in calibrated.description
    np.testing.assert_array_equal(calibrated.sample(100, np.random.default_rng(3)),
                                  P.PROTOCOLS[member].sample(100, np.random.default_rng(3)))
    # Strength 0 of the calibrated reading is the identity.
    zero = calibrated.scaled(0.0).sample(10, np.random.default_rng(3))
    np.testing.assert_allclose(zero, K.identity(calibrated.kind, 10), atol=1e-12)


@pytest.mark.parametrize("family", list(P.SEVERITIES))
def test_severity_zero_is_the_identity_or_the_pure_scale(family):
    kind = P.severity_protocol(family, 1.0, False).kind
    params = P.severity_protocol(family, 0.0, False).sample(20, np.random.default_rng(4))
    np.testing.assert_allclose(params, K.identity(kind, 20), atol=1e-12)
    images = canonical(20, "p")
    np.testing.assert_allclose(P.apply(P.severity_protocol(family, 0.0, False), images, params),
                               images, atol=1e-5)
    # With the scale and no noise: the digit scaled by s about the centre,
    # that is every point read at (its position) / s.
    scaled = P.severity_protocol(family, 0.0, True).sample(20, np.random.default_rng(4))
    replay = np.random.default_rng(4)
    if family == "e":  # E draws its noise (zero, but drawn) before the scale
        replay.normal(size=(20, 16, 2))
    s = replay.uniform(0.75, 1.0, 20)
    points = K.KINDS[kind].points(scaled, T.tps_targets())
    np.testing.assert_allclose(points, T.tps_targets() / s[:, None, None], atol=1e-9)


@pytest.mark.parametrize("name", ["p-s2", "p-s4-scale", "e-s3", "e-s2-scale", "p-cal",
                                  "e-cal"])
def test_severity_families_keep_their_ground_truth_in_the_splits(name):
    # The splits store the protocol's draws, and their images are those warps.
    from stn.data import pipeline as D

    rng = np.random.default_rng(5)
    train, test = ((rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                    (np.arange(n) % 10).astype(np.uint8)) for n in (5010, 30))
    data = D.build_data((train, test), name, seed=1, max_train_examples=4)
    protocol = P.PROTOCOLS[name]
    split = data.test
    assert (split.protocol, split.kind, data.protocol) == (name, protocol.kind, protocol)
    drawn = protocol.sample(30, D._rng(1, "warps", "test"))
    np.testing.assert_array_equal(split.warps, drawn.astype(np.float32))
    expected = K.warp(split.canonical_images(), split.warps, protocol.kind).numpy()
    np.testing.assert_allclose(split.images, expected, atol=2e-5)
    # The ground truth is the map the protocol promises: for P, the output's
    # noisy scaled corners read the input's corners; for E, each grid point
    # reads the input at its parameter.
    if protocol.kind == "projective":
        replay = D._rng(1, "warps", "test")
        s = replay.uniform(*protocol.scale, 30)
        noise = replay.normal(0.0, protocol.corner_std / 14, (30, 4, 2))
        np.testing.assert_allclose(K.KINDS["projective"].points(drawn, s[:, None, None]
                                                                * P.CORNERS + noise),
                                   np.broadcast_to(P.CORNERS, (30, 4, 2)), atol=1e-9)
    else:
        np.testing.assert_allclose(K.KINDS["tps"].points(drawn, T.tps_targets()),
                                   drawn.reshape(30, 16, 2), atol=1e-9)


# --- apply --------------------------------------------------------------------------

def assert_same_warp(actual, expected, kind):
    """Bit-identical for affine warps; projective and TPS grids round with the batch shape.

    The TPS grid is a ``[h w, 16]`` matrix product whose float32 rounding
    depends on the batch and on the kernel TensorFlow picks (which can vary
    with what ran before in the process); with control points moved by 3-4
    px (``e-s3``, ``e-s4``) one rounding of the grid moves a pixel's value by
    up to about 1.2e-5, hence 5e-5 there.
    """
    if kind == "affine":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=0, atol=5e-5 if kind == "tps" else 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_apply_is_kinds_warp_in_chunks_and_in_tf_data(name):
    protocol = P.PROTOCOLS[name]
    images = canonical(7, protocol)
    params = protocol.sample(7, np.random.default_rng(11))
    eager = K.warp(images, params.astype(np.float32), protocol.kind).numpy()
    warped = P.apply(protocol, images, params)
    assert isinstance(warped, np.ndarray) and warped.dtype == np.float32
    np.testing.assert_allclose(warped, eager, atol=2e-5)  # XLA vs eager: float32 rounding
    # An image's warp does not depend on how many are warped with it.
    np.testing.assert_array_equal(P.apply(name, images[:2], params[:2]), warped[:2])
    np.testing.assert_array_equal(P.apply(name, images[5:], params[5:]), warped[5:])
    assert_same_warp(P.apply(name, images, params, chunk_size=3), warped, protocol.kind)
    # Tensors in, tensor out: one call, as inside the resampling pipeline.
    tensor = P.apply(protocol, tf.constant(images), tf.constant(params))
    assert tf.is_tensor(tensor)
    assert_same_warp(tensor.numpy(), warped, protocol.kind)
    ds = tf.data.Dataset.from_tensors((images, params.astype(np.float32)))
    (in_pipeline,) = list(ds.map(lambda x, t: P.apply(protocol, x, t)))
    np.testing.assert_array_equal(in_pipeline.numpy(), tensor.numpy())


def test_apply_checks_sizes():
    images = canonical(10, "predecessor")
    params = P.PROTOCOLS["predecessor"].sample(10, np.random.default_rng(12))
    with pytest.raises(ValueError, match="10 images but 9 warps"):
        P.apply("predecessor", images, params[:9])
    with pytest.raises(ValueError, match="canvas is 28 px"):
        P.apply("p", images, params)


@pytest.mark.parametrize("name", ["none", "none-28"])
def test_none_protocols_return_the_input_exactly(name):
    params = P.PROTOCOLS[name].sample(7, np.random.default_rng(13))
    np.testing.assert_array_equal(params, K.identity("affine", 7))
    images = canonical(7, name)
    np.testing.assert_array_equal(P.apply(name, images, params), images)


def test_p_and_e_warps_move_the_image_and_keep_it_in_range():
    for name in ("p", "e"):
        images = np.repeat(canonical(1, name), 20, axis=0)
        warped = P.apply(name, images, P.PROTOCOLS[name].sample(20, np.random.default_rng(14)))
        assert np.abs(warped - images).mean() > 0.05, name
        assert warped.min() >= 0 and warped.max() <= 1 + 1e-6, name
    # P shrinks the image: far corners of the output read outside the input
    # (zeros) for most warps, since s <= 1 and the corner noise is small.
    ones = np.ones((200, 28, 28, 1), np.float32)
    warped = P.apply("p", ones, P.PROTOCOLS["p"].sample(200, np.random.default_rng(15)))
    assert np.mean(warped[:, 0, 0, 0] < 0.5) > 0.5


def test_tc_is_the_clutter_calibrations_choice_or_its_stated_prior():
    import json

    path = ROOT / "results" / "calibration_tc.json"
    if path.exists():  # after `python -m experiments.calibrate_tc`: its choice, complete
        chosen = json.loads(path.read_text())["chosen"]
        assert chosen["complete"]
        assert (chosen["pieces"], chosen["piece_size"]) == P.TC_CALIBRATED
    else:  # before: the prior the docstring states (A.2's density on 60 px)
        assert P.TC_CALIBRATED == (8, 6)
    assert f"= {P.tc_name(*P.TC_CALIBRATED)}" in P.PROTOCOLS["tc"].description
