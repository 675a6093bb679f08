"""Affine grid generator and bilinear sampler (paper Sec. 3.2 and 3.3), pure TF.

Coordinate convention: written here once, used by the whole package.

* **Normalized coordinates.** ``x`` runs along the width (columns, left to
  right) and ``y`` along the height (rows, top to bottom), each in [-1, 1],
  where -1 and +1 are the *outer edges* of the image, not the centres of the
  corner pixels. Pixel column ``j`` of an image ``W`` pixels wide covers
  ``[2j/W - 1, 2(j+1)/W - 1]`` and its centre is at ``x = (2j + 1)/W - 1``;
  rows likewise with ``H``.
* **Direction of theta.** ``theta`` (``[B, 2, 3]``, or ``[B, 6]`` row-major)
  maps *output* coordinates to *input* coordinates: the output pixel at
  ``(x, y)`` reads the input at ``theta @ (x, y, 1)`` (paper, Eq. 1). The
  identity ``[[1, 0, 0], [0, 1, 0]]`` returns the input unchanged.
* **Interpolation.** Bilinear, between the four input pixel centres around
  the sample point (paper, Eq. 5).
* **Padding.** Zeros: the input is treated as if surrounded by zeros, so a
  sample point half a pixel outside the image blends its edge pixel half and
  half with zero, and a point a pixel or more outside reads exactly zero.

This is the convention of ``affine_grid``/``grid_sample`` with
``align_corners=False, padding_mode="zeros"`` in PyTorch, so weights and
intuition carry over. Everything here is plain TensorFlow ops: it runs
eagerly, in ``tf.function`` (with or without ``jit_compile``), and in a TF1
``tf.Graph`` executed by ``tf.compat.v1.Session``.
"""

import tensorflow as tf

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""The identity transform, row-major ``[2, 3]`` flattened."""


def _as_matrix(theta: tf.Tensor) -> tf.Tensor:
    """``theta`` ``[B, 6]`` or ``[B, 2, 3]`` -> ``[B, 2, 3]``."""
    theta = tf.convert_to_tensor(theta)
    if theta.shape.rank == 2:
        return tf.reshape(theta, [-1, 2, 3])
    if theta.shape.rank == 3:
        return theta
    raise ValueError(f"theta must be [B, 6] or [B, 2, 3], got shape {theta.shape}")


def _dims(images: tf.Tensor):
    """``(B, H, W, C)``: static ints where known, else scalar tensors.

    Static sizes keep the output's static shape (Keras layers after the
    sampler need the channel count); dynamic ones keep placeholders of
    unknown size working in graph mode.
    """
    dynamic = tf.shape(images)
    return tuple(images.shape[i] if images.shape[i] is not None else dynamic[i]
                 for i in range(4))


def pixel_centers(size, dtype=tf.float32) -> tf.Tensor:
    """Normalized coordinates of the pixel centres along one axis.

    Args:
      size: number of pixels along the axis (int or scalar int tensor).
      dtype: float dtype of the result.

    Returns:
      ``[size]`` values ``(2 * i + 1) / size - 1`` for ``i = 0 .. size - 1``.
    """
    size = tf.cast(size, dtype)
    return (2.0 * tf.range(size, dtype=dtype) + 1.0) / size - 1.0


def affine_grid(theta: tf.Tensor, height, width) -> tf.Tensor:
    """Sampling grid of an affine transform (paper, Eq. 1).

    Args:
      theta: float ``[B, 2, 3]`` or ``[B, 6]``, output -> input coordinates.
      height: output height ``h`` (int or scalar int tensor).
      width: output width ``w`` (int or scalar int tensor).

    Returns:
      ``[B, h, w, 2]`` of theta's dtype: the input coordinates ``(x, y)`` that
      each output pixel centre reads, in normalized coordinates.
    """
    theta = _as_matrix(theta)
    xs = pixel_centers(width, theta.dtype)  # (w,)
    ys = pixel_centers(height, theta.dtype)  # (h,)
    x, y = tf.meshgrid(xs, ys)  # (h, w) each
    ones = tf.ones_like(x)
    target = tf.stack([x, y, ones], axis=-1)  # (h, w, 3)
    return tf.einsum("hwk,bjk->bhwj", target, theta)  # (B, h, w, 2)


def _corner(coord: tf.Tensor, size):
    """Pixel coordinate -> index of the lower neighbour and the two weights.

    ``coord`` is in pixel units with pixel centres at integers (the image
    spans ``[-0.5, size - 0.5]``). The index refers to the image padded with
    one zero pixel before and two after, i.e. it is shifted by +1 and lies in
    ``[0, size + 1]``; the upper neighbour is ``index + 1``.
    """
    # Beyond one pixel outside, the sample reads only zeros: clipping there
    # changes no value, keeps the indices in range and stops huge or
    # infinite coordinates from overflowing the integer cast.
    clipped = tf.clip_by_value(coord, -1.0, tf.cast(size, coord.dtype))
    # Keep NaN: some kernels clamp it to a bound (XLA in TF 2.16), which
    # would turn a NaN theta into a silently blank image; NaN must show.
    coord = tf.where(tf.math.is_nan(coord), coord, clipped)
    low = tf.floor(coord)
    w_high = coord - low  # differentiable part: d w_high / d coord = 1
    # NaN coordinates cast to arbitrary integers; clamp so the gather stays
    # in range (the NaN still reaches the output through the weights).
    index = tf.clip_by_value(tf.cast(low, tf.int32) + 1, 0, size + 1)
    return index, 1.0 - w_high, w_high


def _sample_pixels(images: tf.Tensor, u: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """Bilinear sampling at pixel coordinates (pixel centres at integers).

    Args:
      images: float ``[B, H, W, C]``.
      u: ``[B, h, w]`` column coordinates, same dtype as ``images``.
      v: ``[B, h, w]`` row coordinates.

    Returns:
      ``[B, h, w, C]``, zero-padded outside the image.
    """
    batch, height, width, channels = _dims(images)
    x0, wx0, wx1 = _corner(u, width)  # (B, h, w) each
    y0, wy0, wy1 = _corner(v, height)

    # Every 2x2 neighbourhood of the zero-padded image, laid out as one row,
    # so a single gather of B*h*w rows fetches all four corners. On CPU under
    # XLA this is several times faster than gathering single pixels (and
    # 4 separate gather_nd calls are slower still), for the forward pass and
    # for the gradient with respect to theta alike.
    padded = tf.pad(images, [[0, 0], [1, 2], [1, 2], [0, 0]])
    quads = tf.stack([padded[:, :-1, :-1], padded[:, :-1, 1:],
                      padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=3)
    quads = tf.reshape(quads, [-1, 4, channels])  # (B * (H+2) * (W+2), 4, C)
    row = width + 2
    base = tf.reshape(tf.range(batch) * (height + 2) * row, [-1, 1, 1])
    corners = tf.gather(quads, base + y0 * row + x0)  # (B, h, w, 4, C)
    weight = tf.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], axis=-1)
    return tf.reduce_sum(corners * weight[..., None], axis=3)  # (B, h, w, C)


def bilinear_sample(images: tf.Tensor, grid: tf.Tensor) -> tf.Tensor:
    """Samples ``images`` at ``grid`` with bilinear interpolation (Eq. 5).

    Args:
      images: float ``[B, H, W, C]`` (NHWC; any ``H``, ``W``, ``C``).
      grid: ``[B, h, w, 2]`` normalized ``(x, y)`` input coordinates, as
        returned by :func:`affine_grid`; cast to the dtype of ``images``.

    Returns:
      ``[B, h, w, C]`` of the dtype of ``images``, zero-padded outside.
    """
    images = tf.convert_to_tensor(images)
    grid = tf.cast(grid, images.dtype)
    _, height, width, _ = _dims(images)
    # Normalized -> pixel units: x = -1 is the left edge, u = -0.5.
    u = (grid[..., 0] * tf.cast(width, grid.dtype) + tf.cast(width - 1, grid.dtype)) / 2.0
    v = (grid[..., 1] * tf.cast(height, grid.dtype) + tf.cast(height - 1, grid.dtype)) / 2.0
    return _sample_pixels(images, u, v)


def _pixel_affine(theta: tf.Tensor, in_size, out_size):
    """``theta`` rewritten to map output pixel indices to input pixel units.

    Composing theta with the two normalizations by hand (instead of rounding
    a normalized grid and converting back) keeps the identity, flips and
    whole-pixel shifts exact in floating point: for the identity with equal
    sizes every term below is an exact integer or half-integer.

    Args:
      theta: ``[B, 2, 3]``.
      in_size: ``(H, W)`` of the input.
      out_size: ``(h, w)`` of the output.

    Returns:
      ``(u, v)``, each ``[B, h, w]``: the input column and row read by each
      output pixel, with pixel centres at integers.
    """
    dtype = theta.dtype
    in_h, in_w = (tf.cast(s, dtype) for s in in_size)
    out_h, out_w = (tf.cast(s, dtype) for s in out_size)
    cols = tf.reshape(tf.range(out_w, dtype=dtype), [1, 1, -1])  # (1, 1, w)
    rows = tf.reshape(tf.range(out_h, dtype=dtype), [1, -1, 1])  # (1, h, 1)

    def axis(coeffs, size):
        # x_out = (2j + 1 - w) / w and u = (size * x_in + size - 1) / 2.
        kx = coeffs[:, 0] * (size / out_w)
        ky = coeffs[:, 1] * (size / out_h)
        offset = (kx * (1.0 - out_w) + ky * (1.0 - out_h)
                  + coeffs[:, 2] * size + (size - 1.0)) / 2.0
        kx, ky, offset = (tf.reshape(t, [-1, 1, 1]) for t in (kx, ky, offset))
        return kx * cols + ky * rows + offset  # (B, h, w)

    return axis(theta[:, 0], in_w), axis(theta[:, 1], in_h)


def transform(images: tf.Tensor, theta: tf.Tensor, out_size=None) -> tf.Tensor:
    """Warps ``images`` by the affine ``theta`` (grid generator + sampler).

    Equal to ``bilinear_sample(images, affine_grid(theta, h, w))`` up to
    float rounding, and exact where the geometry is (identity, flips,
    whole-pixel shifts with exactly representable theta).

    Args:
      images: float ``[B, H, W, C]``.
      theta: ``[B, 2, 3]`` or ``[B, 6]``, output -> input coordinates.
      out_size: ``(h, w)`` of the output; defaults to ``(H, W)``.

    Returns:
      ``[B, h, w, C]`` of the dtype of ``images``.
    """
    images = tf.convert_to_tensor(images)
    _, height, width, _ = _dims(images)
    if out_size is None:
        out_size = (height, width)
    theta = _as_matrix(tf.cast(theta, images.dtype))
    u, v = _pixel_affine(theta, (height, width), out_size)
    return _sample_pixels(images, u, v)


transform_xla = tf.function(transform, jit_compile=True, reduce_retracing=True)
""":func:`transform` compiled by XLA, for graphs and tf.data pipelines.

Same results up to float32 rounding. On CPU, XLA fuses the index
arithmetic and the gather: about 10x faster forward and 5x with the
gradient than the plain graph (``make bench``). Use :func:`transform` itself
in TF1 ``tf.compat.v1.Session`` code.
"""


def _transform_constant_images(images: tf.Tensor, theta: tf.Tensor, out_size=None) -> tf.Tensor:
    return transform(tf.stop_gradient(images), theta, out_size)


transform_xla_theta_grad = tf.function(_transform_constant_images, jit_compile=True,
                                       reduce_retracing=True)
""":func:`transform_xla` that passes gradients to ``theta`` only.

For images that need no gradient (a transformer on the raw input). Called
from a step that is not itself compiled, an XLA function's backward pass
computes the gradient of every input, whether used or not; for the images
that is a scatter-add as large as the batch, which this version skips.
"""
