"""Co-localisation: data, boxes against analytic cases, the loss against NumPy, a tiny run."""

import dataclasses
import json

import numpy as np
import pytest

from stn.train import colocalisation as C
from stn.train import colocalisation_fit as F
from stn.layer import kinds


def test_place_digits_puts_each_digit_in_its_box():
    rng = np.random.default_rng(0)
    digits = rng.integers(1, 256, (5, 28, 28)).astype(np.uint8)  # no zero pixel
    images, boxes = C.place_digits(digits, np.random.default_rng(1))
    assert images.shape == (5, 84, 84) and images.dtype == np.float32
    for image, digit, (x0, y0, x1, y1) in zip(images, digits, boxes.astype(int)):
        assert (x1 - x0, y1 - y0) == (28, 28)
        np.testing.assert_array_equal(image[y0:y1, x0:x1], np.float32(digit / 255.0))
        assert image.sum() == pytest.approx(digit.sum() / 255.0, rel=1e-5)  # black elsewhere
    again, same = C.place_digits(digits, np.random.default_rng(1))
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(same, boxes)


def test_clutter_pastes_square_pieces_of_the_sources():
    blank = np.zeros((3, 84, 84), np.float32)
    sources = np.full((2, 28, 28), 255, np.uint8)
    one = C.add_clutter(blank, sources, np.random.default_rng(0), pieces=1)
    for image in one:  # exactly one 6x6 square of ones
        rows, cols = np.nonzero(image)
        assert len(rows) == 36 and np.all(image[rows, cols] == 1.0)
        assert rows.max() - rows.min() == 5 and cols.max() - cols.min() == 5
    assert blank.sum() == 0  # the input is not changed
    many = C.add_clutter(blank, sources, np.random.default_rng(0))
    assert many.max() == 1.0 and np.all((many > 0).sum(axis=(1, 2)) <= C.PIECES * 36)
    assert np.all((many > 0).sum(axis=(1, 2)) >= 36)


def test_iou_of_analytic_boxes():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 1, 1], [5, 5, 9, 9]], float)
    b = np.array([[1, 0, 3, 2], [1, 1, 3, 3], [2, 2, 3, 3], [5, 5, 9, 9]], float)
    np.testing.assert_allclose(C.iou(a, b), [2 / 6, 4 / 16, 0.0, 1.0])
    np.testing.assert_allclose(C.iou(b, a), C.iou(a, b))


def test_identity_parameters_box_the_whole_canvas():
    np.testing.assert_allclose(C.predicted_boxes(kinds.identity("attention", 2)),
                               [[0, 0, 84, 84]] * 2, atol=1e-12)


def _digit_params(col, row):
    """Attention parameters of the 28 x 28 box at (col, row) on 84 x 84."""
    return np.array([[1 / 3, (col + 14) / 42 - 1, (row + 14) / 42 - 1]])


def test_the_true_boxes_parameters_box_the_digit_and_crop_it_exactly():
    rng = np.random.default_rng(3)
    digits = rng.integers(0, 256, (1, 28, 28)).astype(np.uint8)
    images, boxes = C.place_digits(digits, rng)
    x0, y0 = boxes[0, :2]
    params = _digit_params(x0, y0)
    np.testing.assert_allclose(C.predicted_boxes(params), boxes, atol=1e-9)
    # The sampler reads the digit's own pixel centres: the crop is the digit.
    crop = kinds.warp_ops(images[..., None], params.astype(np.float32), "attention", (28, 28))
    np.testing.assert_allclose(np.asarray(crop)[0, ..., 0], digits[0] / 255.0, atol=1e-5)
    half = _digit_params(x0 + 14, y0)  # shifted by half a box: IoU 14 * 28 / (42 * 28)
    np.testing.assert_allclose(C.iou(C.predicted_boxes(half), boxes), [1 / 3], atol=1e-9)


def test_crop_params_invert_predicted_boxes():
    rng = np.random.default_rng(3)
    corner, side = rng.integers(0, 50, (5, 2)), rng.integers(6, 34, 5)
    boxes = np.concatenate([corner, corner + side[:, None]], axis=1).astype(np.float64)
    np.testing.assert_allclose(C.predicted_boxes(C.crop_params(boxes)), boxes, atol=1e-4)
    np.testing.assert_allclose(C.crop_params([[0, 0, 84, 84]]), [[1.0, 0.0, 0.0]])


def test_triplet_loss_matches_numpy():
    rng = np.random.default_rng(0)
    a, p, r = (rng.normal(size=(7, 5)).astype(np.float32) for _ in range(3))
    expected = np.mean([max(0.0, np.sum((a[i] - p[i]) ** 2) - np.sum((a[i] - r[i]) ** 2) + 1.0)
                        for i in range(7)])
    assert float(C.triplet_loss(a, p, r)) == pytest.approx(expected, rel=1e-5)
    assert float(C.triplet_loss(a, a, a + 10.0)) == 0.0  # far negatives: no loss


def test_random_crops_and_partners():
    rng = np.random.default_rng(0)
    crops = C.random_crops(rng, 500)
    boxes = C.predicted_boxes(crops)
    assert np.all(boxes >= -1e-4) and np.all(boxes <= 84 + 1e-4)
    side = boxes[:, 2] - boxes[:, 0]
    assert side.min() >= 14 - 1e-3 and side.max() <= 56 + 1e-3
    partner = C.partners(rng, 10)
    assert np.all(partner != np.arange(10)) and partner.min() >= 0 and partner.max() < 10


def test_localization_net_starts_at_the_identity():
    net = C.localization_net()
    out = np.asarray(net(np.random.default_rng(0).random((3, 84, 84, 1)).astype(np.float32)))
    np.testing.assert_allclose(out, kinds.identity("attention", 3), atol=1e-7)
    assert net.count_params() == 656 + 5192 + 72 + 27


def test_the_runners_embedding_layers_are_the_libraries():
    from experiments import colocalisation as E

    assert E.EMBEDDING_LAYERS == C.EMBEDDING_LAYERS


def test_embedding_concatenates_the_named_layers():
    import keras

    from stn.model import build_model

    cnn = build_model("paper-cnn", input_size=28)
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
    got = np.asarray(C.embedding(cnn)(x))
    parts = keras.Model(cnn.inputs, [cnn.get_layer(n).output for n in C.EMBEDDING_LAYERS])(x)
    want = np.concatenate([np.asarray(p).reshape(2, -1) for p in parts], axis=1)
    assert got.shape == (2, 6400 + 256 + 10)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_per_layer_embedding_weighs_each_layer_the_same():
    from stn.model import build_model

    cnn = build_model("paper-cnn", input_size=28)
    x = np.random.default_rng(1).random((3, 28, 28, 1)).astype(np.float32)
    got = np.asarray(C.embedding(cnn, per_layer=True)(x))
    plain = np.asarray(C.embedding(cnn)(x))
    bounds = np.cumsum([0, 6400, 256, 10])
    for low, high in zip(bounds[:-1], bounds[1:]):
        part = plain[:, low:high]
        np.testing.assert_allclose(got[:, low:high],
                                   part / np.linalg.norm(part, axis=1, keepdims=True) / np.sqrt(3),
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_flat_crops_hold_their_mean_and_a_blank_crop_is_its_own():
    rng = np.random.default_rng(2)
    x = rng.random((2, 5, 4, 1)).astype(np.float32)
    got = np.asarray(C.flat(x))
    np.testing.assert_allclose(got, np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True),
                                                    x.shape), rtol=1e-6)
    blank = np.zeros_like(x)
    blank[1] = 0.3  # a box shrunk to a point on a stroke: one value everywhere
    np.testing.assert_allclose(np.asarray(C.flat(blank)), blank, rtol=1e-6)


def test_unit_data_is_pure_in_its_settings():
    from stn.train import colocalisation_fit as F

    rng = np.random.default_rng(0)
    mnist = ((rng.integers(0, 256, (5100, 28, 28)).astype(np.uint8),
              np.tile(np.arange(10, dtype=np.uint8), 510)),
             (rng.integers(0, 256, (200, 28, 28)).astype(np.uint8),
              np.tile(np.arange(10, dtype=np.uint8), 20)))
    settings = F.Settings(dataset="TC", digit=3, images=8)
    images, boxes, index = F.unit_data(settings, mnist)
    assert images.shape == (8, 84, 84, 1) and np.all(mnist[1][1][index] == 3)
    again = F.unit_data(settings, mnist)
    np.testing.assert_array_equal(again[0], images)
    other = F.unit_data(F.Settings(dataset="TC", digit=3, images=8, seed=1), mnist)
    assert not np.array_equal(other[0], images)


def test_tiny_study_runs_writes_and_resumes(tmp_path, capsys):
    from experiments import colocalisation as E

    argv = ["--datasets", "T", "TC", "--digits", "1", "--images", "6", "--steps", "4",
            "--cnn-epochs", "1", "--cnn-examples", "256",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--figure", str(tmp_path / "coloc.png")]
    assert E.main(argv) == 0
    summary = json.loads((tmp_path / "results" / "colocalisation.json").read_text())
    assert [(r["dataset"], r["digit"], r["seed"]) for r in summary["runs"]] == [
        ("T", 1, 0), ("TC", 1, 0)]
    assert 0.0 <= summary["embedding_cnn"]["test_accuracy"] <= 1.0  # 256 digits, 1 epoch
    unit = tmp_path / "results" / "colocalisation" / "T_digit1_seed0.json"
    record = json.loads(unit.read_text())
    assert record["localised_fraction"] == pytest.approx(np.mean(np.array(record["ious"]) > 0.5))
    assert [s["step"] for s in record["snapshots"]][::len(record["snapshots"]) - 1] == [0, 4]
    assert record["settings"]["init"] == "search" and "search" in record  # the default start
    assert not np.allclose(record["final_params"], kinds.identity("attention", 6))  # it moved
    assert (tmp_path / "coloc.png").stat().st_size > 0  # the final boxes, a column per class
    assert (tmp_path / "coloc_steps.png").stat().st_size > 0  # 5 recorded steps: the progress
    before = unit.stat().st_mtime_ns
    capsys.readouterr()
    assert E.main(argv) == 0
    assert "T_digit1_seed0.json: done" in capsys.readouterr().out
    assert unit.stat().st_mtime_ns == before
    # A screen unit on validation digits, boxes inside by construction: its own
    # folder, the summary of the test units untouched.
    screen = [*argv[:1], "T", *argv[3:], "--split", "validation", "--init", "identity",
              "--box", "inside"]
    assert E.main(screen) == 0
    kept = json.loads((tmp_path / "results/colocalisation_validation/T_digit1_seed0.json")
                      .read_text())
    assert kept["settings"]["box"] == "inside" and kept["test_index"] != record["test_index"]
    np.testing.assert_allclose(kept["snapshots"][0]["params"], [[7 / 12, 0.0, 0.0]] * 4,
                               atol=1e-5)
    assert json.loads((tmp_path / "results" / "colocalisation.json").read_text()) == summary
    # The default embedding CNN has an off-centre class: an eleventh logit.
    default = (tmp_path / "runs" / "embedding_cnn_offcentre.keras").read_bytes()
    cnn = json.loads((tmp_path / "runs" / "embedding_cnn_offcentre.json").read_text())
    assert cnn["offcentre"] == json.loads(json.dumps(F.OFFCENTRE)) == summary["embedding_cnn"][
        "offcentre"]
    import keras
    model = keras.saving.load_model(tmp_path / "runs" / "embedding_cnn_offcentre.keras")
    assert model.output_shape == (None, 11)
    # Embedding CNNs trained on distorted digits, or plain: cached beside the default one.
    augmented = [*screen, "--cnn-augment", "--no-cnn-offcentre", "--results-dir",
                 str(tmp_path / "augmented")]
    assert E.main(augmented) == 0
    assert (tmp_path / "runs" / "embedding_cnn_offcentre.keras").read_bytes() == default
    cnn = json.loads((tmp_path / "runs" / "embedding_cnn_augmented.json").read_text())
    assert cnn["augment"] == json.loads(json.dumps(F.AUGMENT))
    kept = json.loads((tmp_path / "augmented/colocalisation_validation/T_digit1_seed0.json")
                      .read_text())
    assert kept["embedding_cnn"] == cnn
    plain = [*screen, "--no-cnn-offcentre", "--results-dir", str(tmp_path / "plain")]
    assert E.main(plain) == 0
    cnn = json.loads((tmp_path / "runs" / "embedding_cnn.json").read_text())
    assert "offcentre" not in cnn and "augment" not in cnn
    assert 0.0 < cnn["test_accuracy"] <= 1.0
    # The margin and the blur reach the unit's settings; a record written before those
    # fields existed ran with the paper's margin and no blur, and is read back as such.
    coarse = [*screen[:-2], "--margin", "1", "--blur", "2", "--results-dir",
              str(tmp_path / "coarse")]
    assert E.main(coarse) == 0
    kept = json.loads((tmp_path / "coarse/colocalisation_validation/T_digit1_seed0.json")
                      .read_text())
    assert (kept["settings"]["margin"], kept["settings"]["blur"]) == (1.0, 2.0)
    away = [*screen[:-2], "--negatives", "away", "--results-dir", str(tmp_path / "away")]
    assert E.main(away) == 0
    kept = json.loads((tmp_path / "away/colocalisation_validation/T_digit1_seed0.json")
                      .read_text())
    assert kept["settings"]["negatives"] == "away" and np.isfinite(kept["loss_every_25_steps"] or
                                                                   [0.0]).all()
    flat = [*screen[:-2], "--flat", "1", "--per-layer", "--embedding-layers", "dense", "logits",
            "--results-dir", str(tmp_path / "flat")]
    assert E.main(flat) == 0
    kept = json.loads((tmp_path / "flat/colocalisation_validation/T_digit1_seed0.json")
                      .read_text())
    assert (kept["settings"]["flat"], kept["settings"]["per_layer"]) == (1.0, True)
    assert kept["settings"]["embedding_layers"] == ["dense", "logits"]
    searched = [*screen[:-2], "--init", "search", "--results-dir", str(tmp_path / "search")]
    assert E.main(searched) == 0
    kept = json.loads((tmp_path / "search/colocalisation_validation/T_digit1_seed0.json")
                      .read_text())
    assert kept["settings"]["init"] == "search" and 0.0 <= kept["search"]["mean_iou"] <= 1.0
    assert kept["snapshots"][0]["params"] != [[1.0, 0.0, 0.0]] * 4  # it starts where it fitted
    assert np.isfinite(kept["final_params"]).all()
    assert (record["settings"]["margin"], record["settings"]["blur"]) == (4.0, 0.0)  # defaults
    old = {k: v for k, v in record["settings"].items()
           if k not in ("margin", "blur", "flat", "per_layer", "init")}
    unit.write_text(json.dumps({**record, "settings": old}))
    settings = F.Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in old.items()})
    assert E.read_unit(unit, settings, record["embedding_cnn"]) is None  # not margin 4's
    assert E.read_unit(unit, dataclasses.replace(settings, margin=1.0, blur=0.0,
                                                 init="identity"),
                       record["embedding_cnn"]) is not None


def test_offcentre_crops_miss_the_digits_frame():
    rng = np.random.default_rng(4)
    digits = np.zeros((200, 28, 28, 1), np.float32)
    digits[:, 4:24, 4:24] = 1.0  # a bright square where MNIST puts its digit
    crops = F.offcentre_crops(digits, rng)
    assert crops.shape == digits.shape
    again = F.offcentre_crops(digits, np.random.default_rng(4))
    np.testing.assert_array_equal(again, crops)
    # None is the digit as it was: each crop moved, cut or shrank the square.
    assert np.all(np.abs(crops - digits).reshape(200, -1).max(axis=1) > 0.5)


def test_the_augmenter_distorts_each_digit_and_keeps_blank_blank():
    import keras

    digits = np.zeros((8, 28, 28, 1), np.float32)
    digits[:, 8:20, 12:16] = 1.0  # a bar
    out = keras.ops.convert_to_numpy(F.augmenter(0)(digits, training=True))
    assert out.shape == digits.shape and out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
    assert not np.allclose(out[0], digits[0]) and not np.allclose(out[0], out[1])
    blank = keras.ops.convert_to_numpy(F.augmenter(0)(np.zeros_like(digits), training=True))
    assert np.abs(blank).max() == 0.0


def test_limited_scale_clips_forward_and_passes_the_gradient():
    import tensorflow as tf

    from stn.train import colocalisation_fit as F

    theta = tf.Variable([[1.5, 0.2, -0.1], [0.5, 0.0, 0.3]])
    with tf.GradientTape() as tape:
        out = F.limited(theta, 1.0)
        total = tf.reduce_sum(out * tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_allclose(out.numpy(), [[1.0, 0.2, -0.1], [0.5, 0.0, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, theta).numpy(), [[1, 2, 3], [4, 5, 6]])
    assert F.limited(theta, None) is theta


def test_same_scale_crops_keep_their_centre_on_the_canvas():
    from stn.train import colocalisation_fit as F

    crops = F.negative_crops(np.random.default_rng(0), 50, F.Settings(negatives="same"))
    assert np.all(crops[:, 0] == 1.0) and np.all(np.abs(crops[:, 1:]) <= 1.0)
    with pytest.raises(ValueError, match="negatives"):
        F.Settings(negatives="other")


def test_away_negatives_are_the_candidates_overlapping_the_box_least():
    import tensorflow as tf

    boxes = tf.constant([[0.25, -0.5, -0.5], [-0.25, 0.5, 0.5]])  # the second mirrored
    crops = tf.constant([[[0.25, -0.5, -0.5], [0.25, -0.25, -0.5], [0.25, 0.5, 0.5]],
                         [[0.25, 0.5, 0.5], [0.5, 0.0, 0.0], [0.25, -0.5, 0.5]]])
    # Shared area: identical boxes 0.5^2; shifted by 0.25 in x 0.25 x 0.5; disjoint 0;
    # a half-side 0.5 box at the centre with one of 0.25 at (0.5, 0.5): 0.25^2.
    np.testing.assert_allclose(F.overlap(boxes, crops).numpy(),
                               [[0.25, 0.125, 0.0], [0.25, 0.0625, 0.0]], atol=1e-6)
    np.testing.assert_allclose(F.away_from(boxes, crops).numpy(),
                               [[0.25, 0.5, 0.5], [0.25, -0.5, 0.5]])
    drawn = F.negative_crops(np.random.default_rng(0), 5, F.Settings(negatives="away"))
    assert drawn.shape == (5, F.AWAY_CANDIDATES, 3)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_gaussian_blur_matches_scipy_with_zero_outside(sigma):
    import tensorflow as tf
    from scipy import ndimage

    x = np.random.default_rng(0).random((2, 30, 31, 2)).astype(np.float32)
    radius = 8
    got = F.gaussian_blur(tf.constant(x), tf.constant(sigma), radius).numpy()
    want = (ndimage.gaussian_filter(x, (0, sigma, sigma, 0), mode="constant",
                                    truncate=radius / sigma) if sigma else x)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_blur_shrinks_linearly_to_none_at_half_the_steps():
    settings = F.Settings(steps=600, blur=6.0)
    assert [F.blur_sigma(k, settings) for k in (0, 150, 300, 600)] == [6.0, 3.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="margin"):
        F.Settings(margin=0.0)


def test_outside_is_zero_inside_the_canvas_and_analytic_beyond():
    import tensorflow as tf

    from stn.train import colocalisation_fit as F

    theta = tf.constant([[1.0, 0.0, 0.0], [1 / 3, 2 / 3, -2 / 3], [0.5, 0.7, 0.0],
                         [1.2, 0.0, 0.1]])
    # Third: the right edge 0.2 past (0.7 + 0.5 - 1); fourth: scale 0.2 over
    # 1 and both |t| over 1 - s = -0.2 by 0.2 and 0.3.
    np.testing.assert_allclose(F.outside(theta).numpy(),
                               [0.0, 0.0, 0.04 / 2, (0.04 + 0.04 + 0.09) / 2], atol=1e-6)
    # A negative scale is the same box mirrored: as far outside as its twin.
    np.testing.assert_allclose(F.outside(theta * tf.constant([[-1.0, 1.0, 1.0]])).numpy(),
                               F.outside(theta).numpy(), atol=1e-6)
    np.testing.assert_allclose(F.outside(tf.constant([[-2.76, 3.565, -0.854]])).numpy(),
                               [(1.76 ** 2 + 5.325 ** 2 + 2.614 ** 2) / 2], rtol=1e-5)


def test_inside_boxes_lie_on_the_canvas_whatever_the_net_outputs():
    import tensorflow as tf

    from stn.train import colocalisation_fit as F

    raw = tf.constant(np.random.default_rng(0).normal(0, 10, (500, 3)), tf.float32)
    theta = F.inside(raw).numpy().astype(np.float64)
    assert F.outside(theta).numpy().max() < 1e-12  # zero up to float32 rounding at saturation
    assert theta[:, 0].min() >= F.INSIDE_MIN_SCALE and theta[:, 0].max() <= 1.0
    boxes = C.predicted_boxes(theta)  # pixels: inside [0, 84] on both axes
    assert boxes.min() >= -1e-4 and boxes.max() <= C.CANVAS + 1e-4
    # The net's identity start: a centred box of scale (1 + m) / 2.
    start = F.inside(tf.constant([[1.0, 0.0, 0.0]])).numpy()
    np.testing.assert_allclose(start, [[(1 + F.INSIDE_MIN_SCALE) / 2, 0.0, 0.0]], atol=1e-7)
    with tf.GradientTape() as tape:  # the gradient reaches every output of the net
        tape.watch(raw)
        total = tf.reduce_sum(F.inside(raw[:3] * 0.1))
    assert np.all(tape.gradient(total, raw)[:3].numpy() != 0.0)
    assert F.box_params(raw, F.Settings(box="inside", init="identity")).numpy() == pytest.approx(F.inside(raw).numpy())
    with pytest.raises(ValueError, match="box must be one of"):
        F.Settings(box="outside")


def test_landscape_scores_fixed_boxes_and_ranks_the_true_ones(tmp_path):
    from experiments import colocalisation_landscape as L

    out = tmp_path / "landscape.json"
    assert L.main(["--digits", "1", "--images", "6", "--draws", "2", "--cnn-examples", "256",
                   "--runs-dir", str(tmp_path / "runs"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    digit = record["digits"]["1"]
    assert digit["iou"]["true"] == pytest.approx(1.0, abs=1e-3)
    assert digit["iou"]["point on black"] == 0.0 and digit["iou"]["whole canvas"] < 0.2
    terms = digit["terms"]["pool1+pool2+logits"]
    # Crops of black are all alike and their own flat version: the flat term is the margin.
    assert terms["point on black"]["flat"] == pytest.approx(4.0, abs=1e-4)
    assert terms["true"]["outside"] == 0.0
    for row in record["summary"]:
        t = record["digits"][str(row["digit"])]["terms"][row["embedding"]]
        total = {k: v["paper"] + row["flat"] * v["flat"] + 10.0 * v["outside"]
                 for k, v in t.items()}
        assert row["best"] == min(total, key=total.get)
        assert row["true_rank"] == sorted(total, key=total.get).index("true") + 1
    assert len(record["summary"]) == 2 * len(L.LAYER_SETS)


def test_the_search_picks_the_crop_every_image_shares_and_the_net_learns_it():
    import keras

    from stn.train import colocalisation_search as S

    rng = np.random.default_rng(6)
    pattern = rng.random((28, 28)).astype(np.float32)
    places = rng.integers(0, 9, (6, 2)) * 7  # on the candidates' grid (7 px apart)
    images = np.zeros((6, 84, 84, 1), np.float32)
    for image, (r, c) in zip(images, places):
        image[r:r + 28, c:c + 28, 0] = pattern
    truth = np.concatenate([places[:, ::-1], places[:, ::-1] + 28], axis=1).astype(float)

    # An embedding whose loss is lowest on the pattern: (its match with the pattern, 1),
    # unit length; the pattern itself matches by 1, anything else less.
    weights = keras.ops.convert_to_tensor(pattern.reshape(1, -1) / np.sum(pattern ** 2))

    def embed(crops, training=False):
        match = keras.ops.sum(keras.ops.reshape(crops, (keras.ops.shape(crops)[0], -1))
                              * weights, axis=1, keepdims=True)
        pair = keras.ops.concatenate([match, keras.ops.ones_like(match)], axis=1)
        return pair / keras.ops.norm(pair, axis=1, keepdims=True)

    assert S.candidates().shape == (len(S.SCALES) * S.GRID ** 2, 3)
    found, scores = S.search_boxes(embed, images, np.random.default_rng(0), margin=4.0)
    np.testing.assert_allclose(C.iou(C.predicted_boxes(found), truth), 1.0, atol=1e-4)
    assert np.all(scores < 4.0)  # the shared crop is nearer its partners than random crops
    layer = C.transformer()
    layer.build((None, 84, 84, 1))
    before = float(np.mean((np.asarray(layer.params(images)) - found) ** 2))
    after = S.fit_to_boxes(layer, images, found, steps=300)
    assert after < 0.1 * before


def test_table_only_reads_the_records_alone_and_never_writes_an_empty_summary(tmp_path, capsys):
    from experiments import colocalisation as E

    results = tmp_path / "results"
    argv = ["--table-only", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(results),
            "--figure", str(tmp_path / "coloc.png")]
    (results / "colocalisation").mkdir(parents=True)
    summary = results / "colocalisation.json"
    summary.write_text("{}")
    assert E.main(argv) == 2
    assert "holds no finished unit: nothing written" in capsys.readouterr().err
    # Units of two CNNs: refused, the summary as it was; no CNN was trained to read them.
    for digit, accuracy in ((1, 0.98), (2, 0.97)):
        (results / "colocalisation" / f"T_digit{digit}_seed0.json").write_text(json.dumps(
            {"settings": {"dataset": "T", "digit": digit, "seed": 0},
             "embedding_cnn": {"test_accuracy": accuracy}}))
    assert E.main(argv) == 2
    assert "units of 2 embedding CNNs" in capsys.readouterr().err
    assert summary.read_text() == "{}" and not (tmp_path / "runs").exists()


def test_the_runners_flags_default_to_the_settings_and_reach_every_unit():
    from experiments import colocalisation as runner

    flags = runner.settings_flags(runner.parse_args([]), F.Settings)
    assert {"steps", "margin", "init", "embedding_layers", "images"} <= set(flags)
    assert F.Settings(**flags) == F.Settings()  # one default, the dataclass's
    changed = runner.settings_flags(runner.parse_args(
        ["--steps", "7", "--embedding-layers", "pool1", "--no-normalise"]), F.Settings)
    assert F.Settings(**changed) == F.Settings(steps=7, embedding_layers=("pool1",),
                                               normalise=False)
