"""Grid generators and the bilinear sampler (paper Sec. 3.1-3.3), pure TF: the fast path.

The coordinate convention and each transformation's parameters are written
once, in the docstring of :mod:`stn.layer.sampler` (the ``keras.ops`` version of
this module, for every Keras backend); this module follows it exactly.

Everything here is plain TensorFlow ops: it runs eagerly, in ``tf.function``
(with or without ``jit_compile``), in ``tf.data`` pipelines, and in a TF1
``tf.Graph`` executed by ``tf.compat.v1.Session``. Gradients are written
out by hand where that made training faster (``make bench``); the layer uses
this module on the TensorFlow backend through ``stn.layer.kinds.keras_warp``, and
``tests/test_backends.py`` holds it equal to :mod:`stn.layer.sampler`.
:mod:`stn.layer.kinds` names the transformations and gives each its parameter
count and identity.

The grid generators (affine, projective, thin-plate spline, attention) live
in :mod:`stn.layer.transform_grids` and are re-exported here; this module holds
the sampler (paper Sec. 3.3, Eq. 5-7) and the affine fast path that skips
the grid.
"""

import tensorflow as tf

from stn.layer.sampler import (  # noqa: F401  (re-exported: the NumPy side of the convention)
    ATTENTION_IDENTITY, IDENTITY, MIN_DENOMINATOR, PROJECTIVE_IDENTITY, TPS_GRID,
    attention_to_affine, tps_matrix, tps_size, tps_solution, tps_targets)
from stn.layer.transform_grids import (  # noqa: F401  (re-exported: the grid generators)
    affine_grid, attention_grid, pixel_centers, projective_grid, tps_grid)
from stn.layer.transform_grids import as_attention, as_matrix


def image_dims(images: tf.Tensor):
    """``(B, H, W, C)``: static ints where known, else scalar tensors.

    Static sizes keep the output's static shape (Keras layers after the
    sampler need the channel count); dynamic ones keep placeholders of
    unknown size working in graph mode.
    """
    dynamic = tf.shape(images)
    return tuple(images.shape[i] if images.shape[i] is not None else dynamic[i]
                 for i in range(4))


def attention_transform(images: tf.Tensor, params: tf.Tensor, out_size=None) -> tf.Tensor:
    """Warps ``images`` by ``(s, tx, ty)`` ``[B, 3]``: :func:`affine_transform` of its affine."""
    images = tf.convert_to_tensor(images)
    return affine_transform(images, as_attention(tf.cast(params, images.dtype)), out_size)


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


def _quads(images: tf.Tensor) -> tf.Tensor:
    """``[B * (H+2) * (W+2), 4, C]``: every 2x2 neighbourhood of the padded image.

    Each row holds one neighbourhood of the image zero-padded as in
    :func:`_corner`, so a single gather of B*h*w rows fetches all four
    corners. On CPU under XLA this is several times faster than gathering
    single pixels (and 4 separate gather_nd calls are slower still).
    """
    channels = image_dims(images)[3]
    padded = tf.pad(images, [[0, 0], [1, 2], [1, 2], [0, 0]])
    quads = tf.stack([padded[:, :-1, :-1], padded[:, :-1, 1:],
                      padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=3)
    return tf.reshape(quads, [-1, 4, channels])


def _quads_to_images(grad_quads: tf.Tensor, dims) -> tf.Tensor:
    """The adjoint of :func:`_quads`: ``[B * (H+2) * (W+2), 4, C] -> [B, H, W, C]``."""
    batch, height, width, channels = dims
    g = tf.reshape(grad_quads, [batch, height + 2, width + 2, 4, channels])
    # Pixel (i, j) is corner 0 of neighbourhood (i+1, j+1), corner 1 of
    # (i+1, j), corner 2 of (i, j+1) and corner 3 of (i, j).
    return (g[:, 1:height + 1, 1:width + 1, 0] + g[:, 1:height + 1, :width, 1]
            + g[:, :height, 1:width + 1, 2] + g[:, :height, :width, 3])


def _neighbours(u: tf.Tensor, v: tf.Tensor, dims):
    """Row of each sample's neighbourhood in :func:`_quads`, and its weights.

    Returns:
      ``(rows, weights, (wx0, wx1, wy0, wy1))``: int32 ``[B, h, w]``, the
      four bilinear weights ``[B, h, w, 4]`` in corner order, and their
      factors ``[B, h, w]`` each.
    """
    batch, height, width, _ = dims
    x0, wx0, wx1 = _corner(u, width)  # (B, h, w) each
    y0, wy0, wy1 = _corner(v, height)
    row = width + 2
    base = tf.reshape(tf.range(batch) * (height + 2) * row, [-1, 1, 1])
    weights = tf.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], axis=-1)
    return base + y0 * row + x0, weights, (wx0, wx1, wy0, wy1)


def _clipped(coord: tf.Tensor, size) -> tf.Tensor:
    """bool ``coord.shape``: where :func:`_corner` clips ``coord``.

    The clipping's derivative is 0 there and 1 elsewhere (NaN included).
    """
    return (coord < -1.0) | (coord > tf.cast(size, coord.dtype))


@tf.custom_gradient
def _sample_pixels(images: tf.Tensor, u: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """Bilinear sampling at pixel coordinates (pixel centres at integers).

    The gradient is written out (paper, Eq. 6-7) rather than derived by
    TensorFlow. A step that is not compiled but calls the XLA-compiled
    sampler (a training step) carries every tensor its backward pass reads
    across the XLA boundary. Derived automatically, those were the gathered
    corners, their weights and a dozen more ``[B, h, w]`` tensors: memory
    traffic that made the step much slower than the same work compiled
    whole, and slower than linear in the number of pixels once it outgrew
    the cache. Written out, the backward pass reads only the sampler's
    inputs, and gathers the four corners again for the slopes along ``u``
    and ``v``. The images' gradient (a scatter-add) is pruned from graphs
    and XLA programs when the images need none.

    Args:
      images: float ``[B, H, W, C]``.
      u: ``[B, h, w]`` column coordinates, same dtype as ``images``.
      v: ``[B, h, w]`` row coordinates.

    Returns:
      ``[B, h, w, C]``, zero-padded outside the image.
    """
    dims = image_dims(images)
    batch, height, width, _ = dims
    rows, weights, _ = _neighbours(u, v, dims)
    corners = tf.gather(_quads(images), rows)  # (B, h, w, 4, C)
    out = tf.reduce_sum(corners * weights[..., None], axis=3)  # (B, h, w, C)

    def grad(g):  # g: (B, h, w, C)
        # Recomputed rather than kept from the forward pass: XLA then fuses
        # the gather into each consumer in both passes (measured faster).
        rows, weights, (wx0, wx1, wy0, wy1) = _neighbours(u, v, dims)
        corners = tf.gather(_quads(images), rows)
        c00, c01, c10, c11 = tf.unstack(corners, axis=3)  # (B, h, w, C) each
        du = wy0[..., None] * (c01 - c00) + wy1[..., None] * (c11 - c10)  # d out / d u
        dv = wx0[..., None] * (c10 - c00) + wx1[..., None] * (c11 - c01)
        grad_quads = tf.math.unsorted_segment_sum(
            weights[..., None] * g[..., None, :], rows, batch * (height + 2) * (width + 2))
        # Masked here rather than in the forward pass: XLA then reduces the
        # result over the pixels with its faster reduction (measured).
        grad_u, grad_v = tf.reduce_sum(g * du, axis=-1), tf.reduce_sum(g * dv, axis=-1)
        grad_u = tf.where(_clipped(u, width), tf.zeros_like(grad_u), grad_u)
        grad_v = tf.where(_clipped(v, height), tf.zeros_like(grad_v), grad_v)
        return _quads_to_images(grad_quads, dims), grad_u, grad_v

    return out, grad


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
    _, height, width, _ = image_dims(images)
    out_h, out_w = tf.shape(grid)[1], tf.shape(grid)[2]
    # Unstacked, not sliced (grid[..., 0]): a slice's gradient is a pad of
    # the whole grid per coordinate, which XLA does not fuse away.
    x, y = tf.unstack(grid, num=2, axis=-1)  # (B, h, w) each
    u = _to_pixels(x, width, out_w, [1, 1, -1])
    v = _to_pixels(y, height, out_h, [1, -1, 1])
    return _sample_pixels(images, u, v)


def _to_pixels(coord: tf.Tensor, size, out_size, shape) -> tf.Tensor:
    """Normalized input coordinates -> input pixel units (centres at integers).

    ``u = (x * size + size - 1) / 2``, computed as the output pixel's own
    centre in input pixels plus the grid's displacement from that centre, so
    that a grid point lying exactly on its output pixel centre (any identity
    grid) lands exactly on an integer: identity grids sample exactly.

    Args:
      coord: ``[B, h, w]`` normalized x (or y) of the grid.
      size: input width (or height).
      out_size: output width (or height), the grid's.
      shape: how the output pixel index broadcasts against ``coord``.
    """
    dtype = coord.dtype
    size, out_size = tf.cast(size, dtype), tf.cast(out_size, dtype)
    index = tf.reshape(tf.range(out_size, dtype=dtype), shape)
    centre = (2.0 * index + 1.0) / out_size - 1.0  # as in pixel_centers
    base = ((2.0 * index + 1.0) * (size / out_size) - 1.0) / 2.0  # exact for equal sizes
    return base + (coord - centre) * (size / 2.0)


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


def affine_transform(images: tf.Tensor, theta: tf.Tensor, out_size=None) -> tf.Tensor:
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
    _, height, width, _ = image_dims(images)
    if out_size is None:
        out_size = (height, width)
    theta = as_matrix(tf.cast(theta, images.dtype))
    u, v = _pixel_affine(theta, (height, width), out_size)
    return _sample_pixels(images, u, v)


transform = affine_transform
"""Alias of :func:`affine_transform` (the name of earlier versions)."""

transform_xla = tf.function(affine_transform, jit_compile=True, reduce_retracing=True,
                            autograph=False)
""":func:`affine_transform` compiled by XLA, for graphs and tf.data pipelines.

Same results up to float32 rounding. On CPU, XLA fuses the index
arithmetic and the gather: about 10x faster forward and 5x with the
gradient than the plain graph (``make bench``). Use :func:`transform` itself
in TF1 ``tf.compat.v1.Session`` code.
"""
