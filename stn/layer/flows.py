"""Dense displacement fields: the ``flow`` (2-D) and ``flow3d`` (3-D) kinds.

A flow's parameters are the displacement itself, one vector per *output*
pixel (voxel), in the normalized units of :mod:`stn.layer.sampler` (2-D) and
:mod:`stn.layer.sampler3d` (3-D): the output pixel centred at ``p`` reads the
input at ``T(p) = p + field[p]``. Zero is the identity. A shift by ``k``
input pixels along ``x`` is ``2 k / W``.

* ``flow``: ``field [B, h, w, 2]`` as ``(dx, dy)``, on ``[B, H, W, C]`` images;
* ``flow3d``: ``field [B, d, h, w, 3]`` as ``(dx, dy, dz)``, on ``[B, D, H, W, C]``.

Two kinds rather than one that follows the input's rank: a kind then has
one rank (``Kind.ndim``, which the layer checks its input against) and one
parameter layout, as every other kind.

**Where the parameters come from.** The field has as many numbers as the
output has pixels, so a flow kind's ``Kind.size`` is the count *per output
pixel* (2 or 3) and ``Kind.dense`` marks that the parameters keep their
``[B, *output, size]`` shape (the layer does not flatten them). Its
localization net is fully convolutional: :func:`flow_localization` is a
small conv head with "same" padding whose last convolution starts at zero
(the identity, as the paper's appendix A initialises theta), so it predicts
the field at the input's size: use it with ``output_size=None``. Any net
returning ``[B, *output_size, ndim]`` works (a U-Net, as registration nets use).
"""

import keras
import numpy as np
from keras import ops

from stn.layer.sampler import centre_points
from stn.layer.sampler3d import centre_points3d, sample


def _check(field, size, ndim: int):
    if tuple(field.shape[1:]) != (*size, ndim):
        raise ValueError(f"a {ndim}-D flow's field must be [B, {', '.join(map(str, size))}, "
                         f"{ndim}] (one displacement per output pixel), got "
                         f"{tuple(field.shape)}; give the localization net that output size")


def flow_grid(field, height: int, width: int):
    """``[B, h, w, 2]``: the identity grid plus ``field [B, h, w, 2]`` (keras.ops)."""
    _check(field, (height, width), 2)
    return field + ops.convert_to_tensor(centre_points(height, width), dtype=field.dtype)


def tf_flow_grid(field, height, width):
    """:func:`flow_grid` in TensorFlow ops (imported on the first call)."""
    import tensorflow as tf

    from stn.layer.transform_grids import pixel_centers
    _check(field, (height, width), 2)
    # The centres as stn.transform's sampler computes them: a zero field is exact.
    x, y = tf.meshgrid(pixel_centers(width, field.dtype), pixel_centers(height, field.dtype))
    return field + tf.stack([x, y], axis=-1)


def flow3d_grid(field, depth: int, height: int, width: int):
    """``[B, d, h, w, 3]``: the identity grid plus ``field [B, d, h, w, 3]`` (keras.ops)."""
    _check(field, (depth, height, width), 3)
    return field + ops.convert_to_tensor(centre_points3d(depth, height, width),
                                         dtype=field.dtype)


def flow3d_warp(volumes, field, out_size=None):
    """Warps ``volumes [B, D, H, W, C]`` by ``field [B, d, h, w, 3]`` to ``[B, d, h, w, C]``.

    ``out_size`` ``(d, h, w)`` defaults to ``(D, H, W)`` and must be the
    field's size; the field is cast to the dtype of ``volumes``.
    """
    volumes = ops.convert_to_tensor(volumes)
    field = ops.cast(field, volumes.dtype)
    size = volumes.shape[1:4] if out_size is None else out_size
    return sample(volumes, flow3d_grid(field, *(int(s) for s in size)))


def _interpolate(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Multilinear interpolation of ``field [*size, k]`` at normalized ``points [m, k]``.

    Clamped at the outermost centres: the field is defined at the output
    pixel centres, and held constant beyond them.
    """
    size = field.shape[:-1]  # (h, w) or (d, h, w); points are (x, y[, z]): reversed
    pixels = [np.clip((points[:, i] + 1.0) * n / 2.0 - 0.5, 0, n - 1)
              for i, n in enumerate(reversed(size))][::-1]  # per array axis
    low = [np.minimum(np.floor(p).astype(int), n - 2 if n > 1 else 0) for p, n in zip(pixels, size)]
    frac = [p - lo for p, lo in zip(pixels, low)]
    out = np.zeros((len(points), field.shape[-1]))
    for corner in np.ndindex(*(2,) * len(size)):
        index = tuple(np.minimum(lo + c, n - 1) for lo, c, n in zip(low, corner, size))
        weight = np.prod([f if c else 1.0 - f for f, c in zip(frac, corner)], axis=0)
        out += weight[:, None] * field[index]
    return out


def flow_points(params, points) -> np.ndarray:
    """NumPy map of a flow: ``params [n, *size, k]``, ``points [m, k]`` or ``[n, m, k]``.

    Returns float64 ``[n, m, k]``: ``p + field(p)``, the field interpolated
    between the output pixel centres (exact at them).
    """
    params = np.asarray(params, np.float64)
    points = np.asarray(points, np.float64)
    points = np.broadcast_to(points if points.ndim == 3 else points[None],
                             (len(params), *points.shape[-2:]))
    return np.stack([p + _interpolate(f, p) for f, p in zip(params, points)])


def flow_localization(ndim: int = 2, filters: int = 16, name: str = "localization"
                      ) -> keras.Sequential:
    """A fully convolutional head: ``[B, *S, C] -> field [B, *S, ndim]`` (same size).

    Two 3x3(x3) ReLU convolutions of ``filters`` channels, then a linear
    one to ``ndim`` channels with zero kernel and bias: the identity at
    initialisation (paper, appendix A).
    """
    conv = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[ndim]
    return keras.Sequential([
        conv(filters, 3, padding="same", activation="relu"),
        conv(filters, 3, padding="same", activation="relu"),
        conv(ndim, 3, padding="same", kernel_initializer="zeros", bias_initializer="zeros",
             name="field"),
    ], name=name)
