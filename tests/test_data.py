"""Data: padding, splits, fixed and resampled warps, tf.data pipelines."""

import numpy as np
import pytest
import tensorflow as tf

from stn.data import pipeline as D
from stn.layer import kinds as K
from stn.data import protocols as P

N_TRAIN, N_TEST = D.VALIDATION_SIZE + 120, 40


def fake_mnist(n_train=N_TRAIN, n_test=N_TEST, seed=0):
    """MNIST-shaped uint8 arrays; pixel (0, 0) and (0, 1) encode the index."""
    rng = np.random.default_rng(seed)

    def part(n):
        x = np.zeros((n, 28, 28), np.uint8)
        x[:, 6:22, 8:20] = rng.integers(1, 256, (n, 16, 12), dtype=np.uint8)
        x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        return x, (np.arange(n) % 10).astype(np.uint8)
    return part(n_train), part(n_test)


@pytest.fixture(scope="module")
def mnist():
    return fake_mnist()


@pytest.fixture(scope="module")
def data(mnist):
    return D.build_data(mnist, "predecessor", seed=3)


def tiny_split(n=10, protocol="predecessor"):
    """A Split whose labels are the example indices (to read the order)."""
    protocol = P.get_protocol(protocol)
    rng = np.random.default_rng(n)
    canonical = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    params = protocol.sample(n, rng).astype(np.float32)
    images = P.apply(protocol, D.pad(canonical, protocol.canvas).numpy(), params)
    return D.Split(images=images, labels=np.arange(n, dtype=np.int32), warps=params,
                   canonical=canonical, protocol=protocol.name, kind=protocol.kind)


def collect(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels), [len(y) for y in labels]


# --- padding and splits ---------------------------------------------------

@pytest.mark.parametrize("canvas, margin", [(40, 6), (42, 7), (28, 0)])
def test_pad_centres_the_digit_with_an_exact_zero_border(canvas, margin):
    digits = np.full((2, 28, 28), 255, np.uint8)
    digits[1, 3, 5] = 51
    padded = D.pad(digits, canvas).numpy()
    assert padded.shape == (2, canvas, canvas, 1) and padded.dtype == np.float32
    inside = (slice(None), slice(margin, margin + 28), slice(margin, margin + 28))
    np.testing.assert_array_equal(padded[inside][..., 0], digits / np.float32(255))
    border = padded.copy()
    border[inside] = 0
    assert np.all(border == 0)  # exactly zero, the sampler's padding value
    with pytest.raises(ValueError, match="centre"):
        D.pad(digits, 41)


def test_constants():
    assert (D.MNIST_SIZE, D.IMAGE_SIZE, D.NUM_CLASSES, D.VALIDATION_SIZE) == (28, 40, 10, 5000)
    assert P.PROTOCOLS["predecessor"].canvas == D.IMAGE_SIZE


def test_split_sizes_and_validation_is_the_first_5000(data, mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert (len(data.train), len(data.validation), len(data.test)) == (120, 5000, N_TEST)
    np.testing.assert_array_equal(data.validation.canonical, x_train[:5000])
    np.testing.assert_array_equal(data.train.canonical, x_train[5000:])
    np.testing.assert_array_equal(data.test.canonical, x_test)
    np.testing.assert_array_equal(data.validation.labels, y_train[:5000])
    for split in (data.train, data.validation, data.test):
        n = len(split)
        assert split.images.shape == (n, 40, 40, 1) and split.images.dtype == np.float32
        assert split.labels.dtype == np.int32 and split.warps.shape == (n, 6)
        assert split.warps.dtype == np.float32 and split.canvas == 40
        assert split.protocol == "predecessor" and split.kind == "affine"
        assert not split.images.flags.writeable and not split.warps.flags.writeable
    assert data.protocol.name == "predecessor" and data.seed == 3


def test_split_images_are_the_canonical_digits_warped(data):
    split = data.test
    expected = K.warp(split.canonical_images(), split.warps, split.kind).numpy()
    np.testing.assert_allclose(split.images, expected, atol=2e-5)
    assert split.images.min() >= 0 and split.images.max() <= 1 + 1e-6
    np.testing.assert_array_equal(split.canonical_images([3])[0], D.pad(split.canonical[3:4])[0])


@pytest.mark.parametrize("name, canvas, kind, size", [
    ("rts", 42, "affine", 6), ("r", 28, "affine", 6), ("p", 28, "projective", 8),
    ("e", 28, "tps", 32)])
def test_each_protocol_makes_its_canvas_kind_and_warps(mnist, name, canvas, kind, size):
    data = D.build_data(mnist, name, seed=0, max_train_examples=5)
    split = data.test
    assert split.images.shape == (N_TEST, canvas, canvas, 1) and split.canvas == canvas
    assert data.train.canonical_images().shape == (5, canvas, canvas, 1)
    assert split.warps.shape == (N_TEST, size) and split.warps.dtype == np.float32
    assert (split.protocol, split.kind, data.protocol) == (name, kind, P.PROTOCOLS[name])
    # The protocol's own draws, from the split's keyed generator, as stored.
    drawn = P.PROTOCOLS[name].sample(N_TEST, D._rng(0, "warps", "test"))
    np.testing.assert_array_equal(split.warps, drawn.astype(np.float32))
    expected = K.warp(split.canonical_images(), split.warps, kind).numpy()
    np.testing.assert_allclose(split.images, expected, atol=2e-5)


@pytest.mark.parametrize("protocol", ["predecessor", "p", "e"])
def test_test_warps_are_a_pure_function_of_the_seed(data, mnist, protocol):
    if protocol != "predecessor":
        data = D.build_data(mnist, protocol, seed=3)
    again = D.build_data(mnist, protocol, seed=3)
    other = D.build_data(mnist, protocol, seed=4)
    short = D.build_data(mnist, protocol, seed=3, max_train_examples=7)
    for name in D.SPLITS[1:]:
        a, b = getattr(data, name), getattr(again, name)
        np.testing.assert_array_equal(a.warps, b.warps)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.warps, getattr(short, name).warps)
        np.testing.assert_array_equal(a.images, getattr(short, name).images)
        assert not np.allclose(a.warps, getattr(other, name).warps)
    # Truncating keeps the first images and their warps as they were.
    assert len(short.train) == 7
    np.testing.assert_array_equal(short.train.warps, data.train.warps[:7])
    np.testing.assert_array_equal(short.train.images, data.train.images[:7])
    head = D.build_data(mnist, protocol, seed=3, max_eval_examples=9)  # a smoke run's
    for name in D.SPLITS[1:]:
        assert len(getattr(head, name)) == 9
        for field in ("images", "warps", "labels"):
            np.testing.assert_array_equal(getattr(getattr(head, name), field),
                                          getattr(getattr(data, name), field)[:9])
    assert len(head.train) == len(data.train)
    # The splits draw from different streams.
    assert not np.allclose(data.test.warps, data.validation.warps[:N_TEST])


@pytest.mark.parametrize("protocol", ["predecessor", "e", "tc"])
def test_images_are_built_on_first_read_equal_to_a_one_call_build(monkeypatch, mnist, protocol):
    # Chunks of 1024 (5 for validation's 5,000, the last one short) against
    # one call over the whole split, clutter pasted after: the split's own
    # arrays give the same images, bit for bit, however they are cut.
    monkeypatch.setattr(D, "WARP_CHUNK", 1024)
    data = D.build_data(mnist, protocol, seed=2, max_train_examples=50)
    canvas = data.protocol.canvas
    for name in D.SPLITS:
        split = getattr(data, name)
        assert not split.images_built and split.canvas == canvas  # the canvas builds nothing
        assert not split.images_built
        eager = P.apply(protocol, D.pad(split.canonical, canvas).numpy(), split.warps)
        if split.clutter is not None:
            eager = data.protocol.paste(eager, split.sources, split.clutter)
        lazy = split.images
        assert split.images_built and split.images is lazy and not lazy.flags.writeable
        assert lazy.shape == (len(split), canvas, canvas, 1) and lazy.dtype == np.float32
        np.testing.assert_array_equal(lazy, eager)
    assert data.train.clutter is None or np.any(data.train.images > 0)


def test_split_given_an_array_holds_it_and_deferred_builds_once():
    split = tiny_split(4)
    assert split.images_built
    calls = []

    def build():
        calls.append(1)
        return np.array(split.images)
    lazy = D.Split(D.Deferred(build, split.images.shape), split.labels, split.warps,
                   split.canonical, split.protocol)
    assert lazy.canvas == 40 and not calls and not lazy.images_built
    np.testing.assert_array_equal(lazy.images, split.images)
    np.testing.assert_array_equal(lazy.images, split.images)
    assert calls == [1] and lazy.images_built


def test_a_resampling_epoch_never_builds_the_train_images(mnist):
    data = D.build_data(mnist, "predecessor", seed=0, max_train_examples=30)
    collect(D.train_dataset(data.train, 8, seed=0, epoch=0, resample=True))
    assert not data.train.images_built
    images, _, _ = collect(D.train_dataset(data.train, 8, seed=0, epoch=0))
    assert data.train.images_built  # the fixed pipeline reads them
    np.testing.assert_array_equal(images, data.train.images[D.epoch_order(30, 0, 0)])


def test_unknown_protocol_is_a_value_error_listing_names(mnist):
    with pytest.raises(ValueError, match="predecessor, r, rts, p, e, e-scale, none"):
        D.load_data("bogus")  # fails before looking for MNIST
    with pytest.raises(ValueError, match="predecessor, r, rts, p, e, e-scale, none"):
        D.build_data(mnist, "RTS")


def test_bad_arguments_are_value_errors(mnist):
    with pytest.raises(ValueError, match="max_train_examples"):
        D.build_data(mnist, max_train_examples=0)
    with pytest.raises(ValueError, match="max_eval_examples must be >= 1, got 0"):
        D.build_data(mnist, max_eval_examples=0)
    with pytest.raises(ValueError, match="validation"):
        D.build_data(fake_mnist(n_train=100), "predecessor")
    with pytest.raises(ValueError, match="batch_size"):
        D.eval_dataset(tiny_split(), 0)
    with pytest.raises(ValueError, match="canvas"):
        D.train_dataset(tiny_split(), 4, seed=0, epoch=0, resample=True, protocol="rts")


# --- pipelines --------------------------------------------------------------

def test_datasets_yield_float_images_and_int_labels():
    split = tiny_split()
    for ds in (D.eval_dataset(split, 4), D.train_dataset(split, 4, seed=0, epoch=0),
               D.train_dataset(split, 4, seed=0, epoch=0, resample=True)):
        images_spec, labels_spec = ds.element_spec
        assert images_spec.dtype == tf.float32 and images_spec.shape.as_list() == [None, 40, 40, 1]
        assert labels_spec.dtype == tf.int32 and labels_spec.shape.as_list() == [None]


def test_eval_dataset_is_in_natural_order_and_keeps_the_last_batch():
    split = tiny_split(10)
    images, labels, sizes = collect(D.eval_dataset(split, 4))
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(labels, np.arange(10))
    np.testing.assert_array_equal(images, split.images)


def test_warp_strength_ramps_linearly_then_stays_full():
    assert [D.warp_strength(e, 4) for e in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [D.warp_strength(e, 2.5) for e in (0, 1, 3)] == [0.0, 0.4, 1.0]
    assert D.warp_strength(0, 0) == 1.0  # no curriculum


def test_resampled_warps_of_strength_zero_are_the_padded_digits():
    split = tiny_split(12)
    identity = P.get_protocol(split.protocol).scaled(0.0)
    images, labels, _ = collect(D.train_dataset(split, 5, seed=1, epoch=3, resample=True,
                                                protocol=identity))
    order = D.epoch_order(12, 1, 3)
    np.testing.assert_array_equal(labels, split.labels[order])
    np.testing.assert_allclose(images, split.canonical_images(order), atol=1e-6)


@pytest.mark.parametrize("resample", [False, True])
def test_train_order_is_a_pure_function_of_seed_and_epoch(resample):
    split = tiny_split(50)
    run = lambda seed, epoch: collect(
        D.train_dataset(split, 8, seed=seed, epoch=epoch, resample=resample))
    images, labels, sizes = run(1, 5)
    again_images, again_labels, _ = run(1, 5)
    assert sizes == [8] * 6 + [2]  # the last partial batch is kept
    np.testing.assert_array_equal(labels, again_labels)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(np.sort(labels), np.arange(50))
    np.testing.assert_array_equal(labels, D.epoch_order(50, 1, 5))
    assert not np.array_equal(labels, run(1, 6)[1])
    assert not np.array_equal(labels, run(2, 5)[1])


def test_fixed_train_dataset_serves_the_split_images():
    split = tiny_split(20)
    images, labels, _ = collect(D.train_dataset(split, 6, seed=0, epoch=2))
    np.testing.assert_array_equal(images, split.images[labels])


@pytest.mark.parametrize("protocol", ["predecessor", "p", "e"])
def test_resampled_warps_differ_per_epoch_and_match_the_eager_sampler(protocol):
    split = tiny_split(20, protocol)
    seen = []
    for epoch in (0, 1):
        images, labels, _ = collect(D.train_dataset(split, 6, seed=7, epoch=epoch, resample=True))
        params = D.epoch_warps(split, 7, epoch)
        assert params.shape == split.warps.shape and params.dtype == np.float32
        # The same op eagerly, outside tf.data, on the same digits and warps.
        eager = K.warp(D.pad(split.canonical[labels], split.canvas), params[labels],
                       split.kind).numpy()
        # The pipeline runs the sampler under XLA: equal to float32 rounding
        # of pixel coordinates.
        np.testing.assert_allclose(images, eager, atol=4e-5)
        seen.append(images[np.argsort(labels)])
        assert not np.allclose(params, split.warps)  # fresh, not the fixed ones
    assert np.abs(seen[0] - seen[1]).max() > 0.2
    assert not np.allclose(D.epoch_warps(split, 7, 0), D.epoch_warps(split, 7, 1))
    np.testing.assert_array_equal(D.epoch_warps(split, 7, 1), D.epoch_warps(split, 7, 1))


@pytest.mark.parametrize("protocol", ["predecessor", "rts", "r", "p", "e"])
def test_resampling_with_the_split_warps_gives_the_split_images(monkeypatch, mnist, protocol):
    # The fixed splits and the resampler warp through the one protocols.apply:
    # resampling with the split's own warps serves the split's own images.
    data = D.build_data(mnist, protocol, seed=0, max_train_examples=30)
    monkeypatch.setattr(D, "epoch_warps", lambda split, *args, **kwargs: split.warps)
    images, _, _ = collect(D.train_dataset(data.train, 8, seed=0, epoch=0, resample=True))
    expected = data.train.images[D.epoch_order(30, seed=0, epoch=0)]
    if data.train.kind == "affine":
        np.testing.assert_array_equal(images, expected)
    else:  # projective and TPS grids round with the batch shape (protocols.apply)
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)


def test_resample_under_the_none_protocol_gives_the_padded_digits():
    split = tiny_split(9, protocol="none")
    images, labels, _ = collect(D.train_dataset(split, 4, seed=0, epoch=0, resample=True))
    np.testing.assert_array_equal(images, split.canonical_images(labels))


# --- real MNIST -------------------------------------------------------------

@pytest.mark.slow
def test_load_data_seed_on_real_mnist():
    data = D.load_data("predecessor", seed=0, max_train_examples=1000)
    (x_train, y_train), (x_test, _) = D.load_mnist()
    assert (len(data.train), len(data.validation), len(data.test)) == (1000, 5000, 10000)
    np.testing.assert_array_equal(data.validation.canonical, x_train[:5000])
    np.testing.assert_array_equal(data.train.labels, y_train[5000:6000])
    for split in (data.train, data.validation, data.test):
        assert split.images.shape[1:] == (40, 40, 1) and split.images.dtype == np.float32
        assert split.labels.dtype == np.int32 and set(np.unique(split.labels)) == set(range(10))
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0 + 1e-6
        assert split.images.max() > 0.99
    canonical = data.test.canonical_images()
    assert np.all(canonical[:, :6] == 0) and np.all(canonical[:, -6:] == 0)
    assert np.all(canonical[:, :, :6] == 0) and np.all(canonical[:, :, -6:] == 0)
    # Centred: the mean ink centre moves by exactly the 6 px margin. (MNIST
    # puts it near pixel 14, half a pixel past the box centre 13.5.)
    centre = ink_centre(canonical[..., 0])
    np.testing.assert_allclose(centre, ink_centre(x_test / 255.0) + 6, atol=1e-6)
    np.testing.assert_allclose(centre, (19.5, 19.5), atol=1.0)


def ink_centre(images):
    """Mean (row, col) of the ink of ``[N, H, W]`` images, in pixels."""
    ink = np.sum(images, axis=0, dtype=np.float64)
    rows, cols = np.mgrid[:ink.shape[0], :ink.shape[1]]
    return np.array([np.sum(ink * rows), np.sum(ink * cols)]) / ink.sum()
