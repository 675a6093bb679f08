"""Grid generators in pure TF (paper Sec. 3.1-3.2): the grids of :mod:`stn.layer.transform`.

Each maps a kind's parameters to ``[B, h, w, 2]``: the normalized input
``(x, y)`` that every output pixel centre reads, in the convention written
once in the docstring of :mod:`stn.layer.sampler` (their ``keras.ops`` versions
are there too). :mod:`stn.layer.transform` re-exports them and holds the bilinear
sampler they feed; like it, this module is plain TensorFlow ops (eager,
``tf.function``, XLA, ``tf.data``, TF1 sessions). The projective and TPS
grids end in a stack that the sampler's unstack cancels, so that XLA fuses
them into it; the projective grid's gradient is written out by hand
(``make bench``).
"""

import tensorflow as tf

from stn.layer.sampler import FAR as _FAR
from stn.layer.sampler import MIN_DENOMINATOR, TPS_GRID, attention_to_affine, tps_targets
from stn.layer.sampler import tps_grid_matrix as _tps_grid_matrix
from stn.layer.sampler import tps_size, tps_solution


def as_matrix(theta: tf.Tensor) -> tf.Tensor:
    """``theta`` ``[B, 6]`` or ``[B, 2, 3]`` -> ``[B, 2, 3]``."""
    theta = tf.convert_to_tensor(theta)
    if theta.shape.rank == 2:
        return tf.reshape(theta, [-1, 2, 3])
    if theta.shape.rank == 3:
        return theta
    raise ValueError(f"theta must be [B, 6] or [B, 2, 3], got shape {theta.shape}")


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
    theta = as_matrix(theta)
    xs = pixel_centers(width, theta.dtype)  # (w,)
    ys = pixel_centers(height, theta.dtype)  # (h,)
    x, y = tf.meshgrid(xs, ys)  # (h, w) each
    ones = tf.ones_like(x)
    target = tf.stack([x, y, ones], axis=-1)  # (h, w, 3)
    return tf.einsum("hwk,bjk->bhwj", target, theta)  # (B, h, w, 2)


def pixel_centre_points(height, width, dtype) -> tf.Tensor:
    """``[h, w, 2]``: the normalized ``(x, y)`` of every output pixel centre."""
    x, y = tf.meshgrid(pixel_centers(width, dtype), pixel_centers(height, dtype))
    return tf.stack([x, y], axis=-1)


def as_homography(theta: tf.Tensor) -> tf.Tensor:
    """``theta`` ``[B, 8]`` (last entry 1 implied) or ``[B, 3, 3]`` -> ``[B, 3, 3]``."""
    theta = tf.convert_to_tensor(theta)
    if theta.shape.rank == 2:
        ones = tf.ones_like(theta[:, :1])
        return tf.reshape(tf.concat([theta, ones], axis=1), [-1, 3, 3])
    if theta.shape.rank == 3:
        return theta
    raise ValueError(f"theta must be [B, 8] or [B, 3, 3], got shape {theta.shape}")


def keep_nan(value: tf.Tensor, clipped: tf.Tensor) -> tf.Tensor:
    # Some kernels clamp NaN to a bound (XLA in TF 2.16); a NaN parameter
    # must reach the output, not turn into a silently blank image.
    return tf.where(tf.math.is_nan(value), value, clipped)


def projective_grid(theta: tf.Tensor, height, width) -> tf.Tensor:
    """Sampling grid of a projective transform (homography).

    Args:
      theta: float ``[B, 8]`` (the first 8 entries, row-major, of a 3x3
        matrix whose last entry is 1) or ``[B, 3, 3]``; output -> input.
      height: output height ``h`` (int or scalar int tensor).
      width: output width ``w``.

    Returns:
      ``[B, h, w, 2]`` of theta's dtype, input ``(x, y)`` per output pixel
      centre. Points where the denominator ``|d| < MIN_DENOMINATOR`` are set
      far outside (they read zero); every coordinate is clipped to +-1e4, so
      the grid and its gradient stay finite unless theta holds NaN.
    """
    theta = as_homography(theta)
    x, y = tf.unstack(pixel_centre_points(height, width, theta.dtype), axis=-1)  # (h, w)
    return _homography_grid(theta, x, y)


def _homography_terms(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor):
    """The homography ``theta [B, 3, 3]`` at the points ``x, y [h, w]``.

    Returns:
      ``((n_x, n_y), d, valid, safe_d)``, ``[B, h, w]`` each: the numerators,
      the denominator, where ``|d| >= MIN_DENOMINATOR``, and ``d`` there (1
      elsewhere, safe to divide by).
    """
    t = theta[:, :, :, None, None]  # (B, 3, 3, 1, 1)
    n_x, n_y, d = (t[:, j, 0] * x + t[:, j, 1] * y + t[:, j, 2] for j in range(3))
    valid = tf.abs(d) >= MIN_DENOMINATOR
    return (n_x, n_y), d, valid, tf.where(valid, d, tf.ones_like(d))


@tf.custom_gradient
def _homography_grid(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """:func:`projective_grid` of ``theta [B, 3, 3]`` at the points ``x, y [h, w]``.

    Elementwise per coordinate, ending in a stack that bilinear_sample's
    unstack cancels, so that XLA fuses the grid into the sampler: an einsum
    over ``(x, y, 1)`` is a small matmul XLA does not fuse, which made the
    projective warp several times as slow as the affine one. The gradient is
    written out for speed too: derived by TensorFlow, it carried every
    masked quotient across the XLA boundary of a training step and reduced
    over the pixels once per entry of theta; here it is recomputed from
    theta and reduced by one matmul with ``(x, y, 1)`` (``make bench``).
    """
    numerators, d, valid, safe_d = _homography_terms(theta, x, y)

    def coordinate(numerator):
        grid = tf.where(valid, numerator / safe_d, -_FAR * tf.ones_like(d))
        return keep_nan(numerator + d, tf.clip_by_value(grid, -_FAR, _FAR))

    def grad(g):  # g: (B, h, w, 2)
        numerators, d, valid, safe_d = _homography_terms(theta, x, y)
        inv_d = 1.0 / safe_d
        rows, grad_d = [], tf.zeros_like(d)
        for numerator, g_c in zip(numerators, tf.unstack(g, num=2, axis=-1)):
            ratio = numerator / safe_d
            # As in the forward pass: a NaN passes through, a masked or
            # clipped quotient passes nothing.
            nan = tf.math.is_nan(numerator + d)
            passes = valid & (tf.abs(ratio) <= _FAR)
            zero = tf.zeros_like(g_c)
            rows.append(tf.where(nan, g_c, tf.where(passes, g_c * inv_d, zero)))
            grad_d += tf.where(nan, g_c, tf.where(passes, -ratio * inv_d * g_c, zero))
        rows = tf.reshape(tf.stack(rows + [grad_d], axis=1), [-1, tf.size(x)])  # (B * 3, h * w)
        basis = tf.reshape(tf.stack([x, y, tf.ones_like(x)], axis=-1), [-1, 3])  # (h * w, 3)
        return tf.reshape(tf.matmul(rows, basis), [-1, 3, 3]), None, None

    return tf.stack([coordinate(n) for n in numerators], axis=-1), grad


def _tps_grid_basis(height, width, dtype, n: int = TPS_GRID) -> tf.Tensor:
    """``[h * w, n * n]``: :func:`stn.layer.sampler.tps_matrix` at the output pixel centres.

    A constant computed once per size when the size is static; otherwise
    (placeholders of unknown size) the same formula in TF ops.
    """
    static = [tf.get_static_value(s) for s in (height, width)]
    if None not in static:
        return tf.constant(_tps_grid_matrix(int(static[0]), int(static[1]), n), dtype)
    points = tf.reshape(pixel_centre_points(height, width, dtype), [-1, 1, 2])  # (hw, 1, 2)
    r2 = tf.reduce_sum((points - tf.constant(tps_targets(n), dtype)) ** 2, axis=-1)  # (hw, k)
    kernel = tf.where(r2 > 0, r2 * tf.math.log(tf.where(r2 > 0, r2, tf.ones_like(r2))), 0.0)
    basis = tf.concat([kernel, tf.ones_like(r2[:, :1]), points[:, 0]], axis=1)  # (hw, k + 3)
    return tf.matmul(basis, tf.constant(tps_solution(n), dtype))


def tps_grid(control: tf.Tensor, height, width) -> tf.Tensor:
    """Sampling grid of the thin-plate spline through ``n x n`` control points.

    The spline is linear in ``control`` for fixed output points, so the grid
    is one matmul with a ``[h * w, n * n]`` matrix computed once per size
    (float64 in NumPy, then cast; in TF ops if the size is not static).

    Args:
      control: float ``[B, n * n, 2]`` or ``[B, 2 n n]`` (``n`` = 4: ``[B, 32]``):
        input ``(x, y)`` of the control points, in the order of
        :func:`tps_targets`; ``n`` is read from the static shape.
      height, width: output size (ints or scalar int tensors).

    Returns:
      ``[B, h, w, 2]`` of the control points' dtype.
    """
    control = tf.convert_to_tensor(control)
    if control.shape.rank not in (2, 3) or None in control.shape[1:]:
        raise ValueError(f"control must be [B, 2 n n] or [B, n n, 2], got shape {control.shape}")
    n = tps_size(control.shape[1:].num_elements() // 2)
    control = tf.reshape(control, [-1, n * n, 2])
    matrix = _tps_grid_basis(height, width, control.dtype, n)  # (h * w, k)
    # The spline reproduces affine maps, so matrix @ targets is the identity
    # grid; spline the displacement from it, so the identity is exact to the
    # rounding of the pixel centres (as for the affine grid).
    offsets = control - tf.constant(tps_targets(n), control.dtype)
    # One (B, k) x (k, h * w) matmul per coordinate, not an einsum to
    # (B, h * w, 2), whose interleaved output took longer than the whole
    # affine warp: XLA fuses each plane into the sampler. Two matmuls, not
    # one of both planes: their gradients are then two consumers of the
    # sampler's gather, which XLA computes once instead of once per plane.
    x, y = tf.unstack(pixel_centre_points(height, width, control.dtype), axis=-1)  # (h, w)
    coordinates = []
    for c, centres in enumerate((x, y)):
        plane = tf.matmul(offsets[:, :, c], matrix, transpose_b=True)  # (B, h * w)
        coordinates.append(centres + tf.reshape(plane, [-1, height, width]))
    return tf.stack(coordinates, axis=-1)  # bilinear_sample's unstack cancels it


def as_attention(params: tf.Tensor) -> tf.Tensor:
    """``(s, tx, ty)`` ``[B, 3]`` -> the affine ``[B, 6]``."""
    params = tf.convert_to_tensor(params)
    if params.shape.rank != 2 or params.shape[1] != 3:
        raise ValueError(f"attention params must be [B, 3] (s, tx, ty), got shape {params.shape}")
    return attention_to_affine(params, tf)


def attention_grid(params: tf.Tensor, height, width) -> tf.Tensor:
    """Sampling grid of ``(s, tx, ty)`` ``[B, 3]``: :func:`affine_grid` of its affine."""
    return affine_grid(as_attention(params), height, width)
