"""Clutter: pieces of other digits pasted on an image (the paper's TC, co-localisation).

Pure functions, used by :class:`stn.protocols.ClutteredProtocol` (the
paper's TC, whose splits keep the record of their clutter) and reusable on
any canvas (co-localisation's 84 x 84 with 16 pieces of 6 x 6 px):

* :func:`draw_clutter`: where each piece comes from and where it goes, a
  record int32 ``[N, P, 5]`` (columns :data:`CLUTTER_FIELDS`), a pure
  function of a NumPy generator;
* :func:`paste_clutter`: the pieces pasted by pixelwise maximum, in plain
  TensorFlow ops (eagerly on NumPy arrays, or inside tf.data);
* :func:`clutter`: both, on NumPy images.

Coordinates are pixel rows and columns of the arrays (row 0 at the top).
"""

import numpy as np

CLUTTER_FIELDS = ("source", "crop_row", "crop_col", "row", "col")
"""The 5 columns of a clutter record: the source digit's index, the piece's
top-left corner in that 28 x 28 digit, and its top-left corner on the canvas."""


def draw_clutter(n: int, n_sources: int, pieces: int, piece_size: int, canvas: int,
                 rng: np.random.Generator, own=None) -> np.ndarray:
    """Draws where ``n`` images' clutter pieces come from and where they go.

    Each piece is a ``piece_size`` square crop of a source digit at a
    uniform random place of the digit's 28 x 28 box (it may catch little or
    no ink, as a crop of a real scene would), pasted at a uniform random
    place of the canvas, wholly inside it. The draws are made in a fixed
    order (sources, crop rows, crop columns, rows, columns), ``[n, pieces]``
    at a time, so the record is a pure function of the generator's state.

    Args:
      n: number of images.
      n_sources: number of digits to cut from (indices ``0 .. n_sources - 1``).
      pieces: pieces per image.
      piece_size: side of a piece in pixels, at most 28 and the canvas.
      canvas: side of the images in pixels.
      rng: NumPy generator, the only source of randomness (advanced).
      own: optional int ``[n]``: image ``i``'s own digit, never one of its
        sources (the pieces are of *other* digits); needs ``n_sources >= 2``.

    Returns:
      int32 ``[n, pieces, 5]``, columns :data:`CLUTTER_FIELDS`.
    """
    if not 0 < piece_size <= min(28, canvas):
        raise ValueError(f"piece_size must be in 1..{min(28, canvas)}, got {piece_size}")
    shape = (n, pieces)
    if own is None:
        source = rng.integers(0, n_sources, size=shape)
    else:
        if n_sources < 2:
            raise ValueError("cutting other digits' pieces needs at least 2 sources")
        source = rng.integers(0, n_sources - 1, size=shape)  # skip over the image's own
        source += source >= np.asarray(own).reshape(n, 1)
    crop = rng.integers(0, 28 - piece_size + 1, size=(2, *shape))
    place = rng.integers(0, canvas - piece_size + 1, size=(2, *shape))
    return np.stack([source, crop[0], crop[1], place[0], place[1]], -1).astype(np.int32)


def paste_clutter(images, sources, record, piece_size: int, chunk_size: int = 4096):
    """Pastes the clutter pieces a record describes onto images, by pixelwise maximum.

    Plain TensorFlow ops: the same code runs eagerly on the fixed splits and
    inside the tf.data pipeline on fresh clutter. The maximum keeps the
    images in [0, 1] and leaves the digit's own strokes as they were where a
    piece falls on them.

    Args:
      images: float32 ``[N, S, S, 1]`` in [0, 1]: a NumPy array (done in
        chunks of ``chunk_size``) or a tensor (one call).
      sources: uint8 ``[M, 28, 28]`` digits the record's indices point into
        (array or tensor).
      record: int ``[N, P, 5]`` from :func:`draw_clutter`.
      piece_size: the record's piece side in pixels.

    Returns:
      float32 ``[N, S, S, 1]``: a NumPy array for NumPy images, a tensor for tensors.
    """
    import tensorflow as tf  # here: the registry itself is NumPy

    if tf.is_tensor(images):
        return _paste(images, sources, record, piece_size)
    out = np.empty_like(np.asarray(images, np.float32))
    sources = tf.constant(sources)
    for start in range(0, len(out), chunk_size):
        part = slice(start, start + chunk_size)
        out[part] = _paste(tf.constant(images[part], tf.float32), sources,
                           tf.constant(record[part]), piece_size).numpy()
    return out


def _paste(images, sources, record, k: int):
    """:func:`paste_clutter` on tensors."""
    import tensorflow as tf

    record = tf.cast(record, tf.int32)
    b, p = tf.shape(record)[0], tf.shape(record)[1]
    steps = tf.range(k)
    digits = tf.gather(sources, record[..., 0])  # (b, p, 28, 28)
    cut = tf.gather(digits, record[..., 1:2] + steps, axis=2, batch_dims=2)  # (b, p, k, 28)
    cut = tf.gather(cut, record[..., 2:3] + steps, axis=3, batch_dims=2)  # (b, p, k, k)
    shape = [b, p, k, k]
    index = tf.stack([  # (b, p, k, k, 3): image, canvas row, canvas column of each pixel
        tf.broadcast_to(tf.range(b)[:, None, None, None], shape),
        tf.broadcast_to((record[..., 3:4] + steps)[..., :, None], shape),
        tf.broadcast_to((record[..., 4:5] + steps)[..., None, :], shape)], -1)
    size = tf.shape(images)[1]
    # A product, not a quotient: graph optimizers turn x / 255 into x * (1 / 255),
    # which rounds differently; written so, eager, tf.function and tf.data agree.
    scale = tf.constant(1.0 / 255.0, images.dtype)
    layer = tf.tensor_scatter_nd_max(tf.zeros([b, size, size], images.dtype), index,
                                     tf.cast(cut, images.dtype) * scale)
    return tf.maximum(images, layer[..., None])


def clutter(images, sources, pieces: int, piece_size: int, rng: np.random.Generator,
            own=None) -> tuple[np.ndarray, np.ndarray]:
    """Adds ``pieces`` random crops of ``sources`` to each image (draw, then paste).

    The reusable form of TC's clutter, on any canvas (e.g. co-localisation's
    84 x 84 with 16 pieces of 6 x 6 px).

    Args:
      images: float32 ``[N, S, S, 1]`` in [0, 1] (NumPy).
      sources: uint8 ``[M, 28, 28]`` digits to cut the pieces from.
      pieces, piece_size: pieces per image and their side in pixels.
      rng: NumPy generator (advanced by :func:`draw_clutter`).
      own: optional int ``[N]``, each image's own digit among ``sources``.

    Returns:
      ``(cluttered float32 [N, S, S, 1], record int32 [N, pieces, 5])``.
    """
    images = np.asarray(images, np.float32)
    record = draw_clutter(len(images), len(sources), pieces, piece_size, images.shape[1], rng,
                          own)
    return paste_clutter(images, sources, record, piece_size), record
