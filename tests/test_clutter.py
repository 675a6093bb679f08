"""Clutter (stn.clutter) and the paper's TC protocol: draws, pasting, splits, pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from stn.data import clutter as C
from stn.data import pipeline as D
from stn.data import protocols as P
from stn.data import warps as W

from test_data import fake_mnist


def paste_reference(images, sources, record, k):
    """Independent NumPy loop: each piece's pixels, maximum with what is there."""
    out = np.array(images, np.float32, copy=True)
    for i, pieces in enumerate(record):
        for source, crop_row, crop_col, row, col in pieces:
            piece = sources[source, crop_row:crop_row + k, crop_col:crop_col + k].astype(
                np.float32) * np.float32(1 / 255)
            region = out[i, row:row + k, col:col + k, 0]
            out[i, row:row + k, col:col + k, 0] = np.maximum(region, piece)
    return out


def random_case(n=6, canvas=60, pieces=5, k=6, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, canvas, canvas, 1)) < 0.05).astype(np.float32) * rng.random(
        (n, canvas, canvas, 1)).astype(np.float32)
    sources = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
    record = C.draw_clutter(n, len(sources), pieces, k, canvas, rng)
    return images, sources, record


# --- drawing ----------------------------------------------------------------------

def test_draw_clutter_is_pure_in_range_and_covers_it():
    n, m, pieces, k, canvas = 4000, 50, 3, 8, 60
    own = np.arange(n) % m
    record = C.draw_clutter(n, m, pieces, k, canvas, np.random.default_rng(1), own)
    again = C.draw_clutter(n, m, pieces, k, canvas, np.random.default_rng(1), own)
    np.testing.assert_array_equal(record, again)
    assert record.shape == (n, pieces, 5) and record.dtype == np.int32
    highs = {"source": m - 1, "crop_row": 28 - k, "crop_col": 28 - k,
             "row": canvas - k, "col": canvas - k}
    for column, name in enumerate(C.CLUTTER_FIELDS):
        values = record[..., column]
        assert values.min() == 0 and values.max() == highs[name], name  # every end reached
    # Pieces of *other* digits: never the image's own, the others equally often.
    assert not np.any(record[..., 0] == own[:, None])
    counts = np.bincount(record[..., 0].ravel(), minlength=m)
    assert counts.min() > 0.75 * counts.mean() and counts.max() < 1.25 * counts.mean()
    assert not np.array_equal(record, C.draw_clutter(n, m, pieces, k, canvas,
                                                     np.random.default_rng(2), own))


def test_draw_clutter_rejects_pieces_that_do_not_fit():
    for k in (0, 29):
        with pytest.raises(ValueError, match="piece_size"):
            C.draw_clutter(3, 5, 2, k, 60, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 2 sources"):
        C.draw_clutter(1, 1, 2, 6, 60, np.random.default_rng(0), own=np.zeros(1, int))


# --- pasting ----------------------------------------------------------------------

@pytest.mark.parametrize("canvas, pieces, k", [(60, 5, 6), (60, 3, 8), (84, 16, 6), (28, 2, 28)])
def test_paste_clutter_equals_a_numpy_loop(canvas, pieces, k):
    images, sources, record = random_case(canvas=canvas, pieces=pieces, k=k)
    expected = paste_reference(images, sources, record, k)
    got = C.paste_clutter(images, sources, record, k, chunk_size=4)  # 2 chunks, one short
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert np.abs(got - images).max() > 0.1  # the pieces show


def test_paste_clutter_is_the_same_eagerly_in_tf_function_and_in_tf_data():
    images, sources, record = random_case()
    expected = paste_reference(images, sources, record, 6)
    eager = C.paste_clutter(tf.constant(images), tf.constant(sources), tf.constant(record), 6)
    graph = tf.function(lambda x, r: C.paste_clutter(x, tf.constant(sources), r, 6))(
        tf.constant(images), tf.constant(record))
    ds = tf.data.Dataset.from_tensor_slices((images, record)).batch(4).map(
        lambda x, r: C.paste_clutter(x, tf.constant(sources), r, 6))
    pipeline = np.concatenate([b.numpy() for b in ds])
    for got in (eager.numpy(), graph.numpy(), pipeline):
        np.testing.assert_array_equal(got, expected)


def test_clutter_draws_then_pastes_on_any_canvas():
    # Co-localisation's TC: 16 pieces of 6 x 6 on an 84 x 84 black canvas.
    sources = np.full((5, 28, 28), 255, np.uint8)
    images, record = C.clutter(np.zeros((3, 84, 84, 1), np.float32), sources, 16, 6,
                               np.random.default_rng(4))
    assert images.shape == (3, 84, 84, 1) and record.shape == (3, 16, 5)
    np.testing.assert_array_equal(record, C.draw_clutter(3, 5, 16, 6, 84,
                                                         np.random.default_rng(4)))
    covered = np.zeros((3, 84, 84), bool)  # solid sources: exactly the pieces' squares light up
    for i, pieces in enumerate(record):
        for _, _, _, row, col in pieces:
            covered[i, row:row + 6, col:col + 6] = True
    np.testing.assert_array_equal(images[..., 0] == 1.0, covered)
    np.testing.assert_array_equal(images[..., 0][~covered], 0.0)


# --- the TC protocol and its splits -----------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    return fake_mnist()


@pytest.fixture(scope="module")
def tc(mnist):
    return D.build_data(mnist, "tc", seed=5)


def test_tc_is_registered_as_calibrated_on_60_px():
    tc = P.PROTOCOLS["tc"]
    assert (tc.canvas, tc.kind, tc.translation) == (60, "affine", (-16.0, 16.0))
    assert (tc.pieces, tc.piece_size) == P.TC_CALIBRATED
    assert (tc.rotation, tc.shear, tc.scale) == ((0, 0), (0, 0), (1, 1))
    for pieces, size in P.TC_SETTINGS:
        member = P.PROTOCOLS[P.tc_name(pieces, size)]
        assert (member.pieces, member.piece_size, member.canvas) == (pieces, size, 60)
    assert P.PROTOCOLS["t-60"].clutter_record(3, 10, np.random.default_rng(0)) is None
    # tc draws exactly the warps and clutter of its member.
    member = P.PROTOCOLS[P.tc_name(*P.TC_CALIBRATED)]
    np.testing.assert_array_equal(tc.sample(9, np.random.default_rng(0)),
                                  member.sample(9, np.random.default_rng(0)))


def test_tc_splits_shapes_range_and_records(tc, mnist):
    (x_train, _), (x_test, _) = mnist
    pieces = P.TC_CALIBRATED[0]
    for split, n in ((tc.train, len(x_train) - D.VALIDATION_SIZE),
                     (tc.validation, D.VALIDATION_SIZE), (tc.test, len(x_test))):
        assert split.images.shape == (n, 60, 60, 1) and split.images.dtype == np.float32
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
        assert split.clutter.shape == (n, pieces, 5) and split.warps.shape == (n, 6)
        assert not split.images.flags.writeable and not split.clutter.flags.writeable
    no_clutter = D.build_data(mnist, "seed", seed=5).test
    assert no_clutter.clutter is None and no_clutter.sources is None


def test_tc_digit_is_placed_wholly_inside_the_canvas(tc):
    parts = W.decompose(tc.test.warps, 60)
    assert np.abs(parts["tx"]).max() <= 16 + 1e-4 and np.abs(parts["ty"]).max() <= 16 + 1e-4
    assert np.abs(parts["tx"]).max() > 15  # the range is used
    for key, neutral in (("rotation", 0), ("shear", 0), ("scale", 1)):
        np.testing.assert_allclose(parts[key], neutral, atol=1e-5, err_msg=key)
    # A solid 28 x 28 box, so placed, keeps all of its ink on the canvas.
    box = np.ones((len(tc.test), 28, 28), np.uint8) * 255
    placed = P.apply("tc", D.pad(box, 60).numpy(), tc.test.warps)
    np.testing.assert_allclose(placed.sum(axis=(1, 2, 3)), 28 * 28, rtol=1e-4)


def test_tc_test_clutter_is_cut_from_test_digits_only(tc, mnist):
    (x_train, _), (x_test, _) = mnist
    for split, digits in ((tc.test, x_test), (tc.validation, x_train[:D.VALIDATION_SIZE]),
                          (tc.train, x_train[D.VALIDATION_SIZE:])):
        # By construction: the sources are the split's own digits, and the
        # images are exactly its digits, placed, with those sources' pieces.
        np.testing.assert_array_equal(split.sources, digits)
        record = split.clutter
        assert record[..., 0].max() < len(digits)
        assert not np.any(record[..., 0] == np.arange(len(split))[:, None])  # never its own
        placed = P.apply("tc", split.canonical_images(), split.warps)
        np.testing.assert_array_equal(split.images,
                                      paste_reference(placed, digits, record, 6))


def test_tc_test_split_is_a_pure_function_of_the_seed(tc, mnist):
    again = D.build_data(mnist, "tc", seed=5, max_train_examples=7)
    np.testing.assert_array_equal(again.test.images, tc.test.images)
    np.testing.assert_array_equal(again.test.clutter, tc.test.clutter)
    # Truncating train only drops images: the kept ones are the same.
    np.testing.assert_array_equal(again.train.images, tc.train.images[:7])
    np.testing.assert_array_equal(again.train.sources, tc.train.sources)
    other = D.build_data(mnist, "tc", seed=6, max_train_examples=7).test
    head = D.build_data(mnist, "tc", seed=5, max_eval_examples=4).test  # a smoke run's
    np.testing.assert_array_equal(head.images, tc.test.images[:4])
    np.testing.assert_array_equal(head.clutter, tc.test.clutter[:4])
    assert not np.array_equal(other.clutter, tc.test.clutter)


def test_tc_resampled_epoch_draws_fresh_clutter_from_the_split(tc):
    split = tc.validation  # any split: its own sources
    batch = next(iter(D.train_dataset(split, 32, seed=5, epoch=2, resample=True)))[0].numpy()
    index = D.epoch_order(len(split), 5, 2)[:32]
    warps = D.epoch_warps(split, 5, 2)[index]
    record = D.epoch_clutter(split, 5, 2)
    assert record.shape == (len(split), P.TC_CALIBRATED[0], 5)
    assert not np.array_equal(record, split.clutter)  # fresh, not the fixed clutter
    placed = P.apply("tc", split.canonical_images(index), warps)
    expected = paste_reference(placed, split.sources, record[index], 6)
    np.testing.assert_allclose(batch, expected, atol=1e-6)
    assert D.epoch_clutter(D.build_data(fake_mnist(), "seed").test, 5, 2) is None
