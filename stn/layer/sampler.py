"""Grid generators and the bilinear sampler (paper Sec. 3.1-3.3) in ``keras.ops``.

Coordinate convention: written here once, used by the whole package (the
TensorFlow fast path :mod:`stn.layer.transform` and the NumPy maps of
:mod:`stn.layer.kinds` follow it too).

* **Normalized coordinates.** ``x`` runs along the width (columns, left to
  right) and ``y`` along the height (rows, top to bottom), each in [-1, 1],
  where -1 and +1 are the *outer edges* of the image, not the centres of the
  corner pixels. Pixel column ``j`` of an image ``W`` pixels wide covers
  ``[2j/W - 1, 2(j+1)/W - 1]`` and its centre is at ``x = (2j + 1)/W - 1``;
  rows likewise with ``H``.
* **Direction.** Every transformation maps *output* coordinates to *input*
  coordinates: the output pixel centred at ``(x, y)`` reads the input at
  ``T(x, y)`` (paper, Eq. 1). A grid generator returns ``T`` at every output
  pixel centre, ``[B, h, w, 2]`` as ``(x, y)``.
* **Interpolation.** Bilinear, between the four input pixel centres around
  the sample point (paper, Eq. 5).
* **Padding.** Zeros: the input is treated as if surrounded by zeros, so a
  sample point half a pixel outside the image blends its edge pixel half and
  half with zero, and a point a pixel or more outside reads exactly zero.

The transformations, in these coordinates (:mod:`stn.layer.kinds` names them):

* **Affine** (:func:`affine_grid`), ``theta`` ``[B, 2, 3]`` or ``[B, 6]``
  row-major: ``T(x, y) = theta @ (x, y, 1)``. Identity ``[[1, 0, 0], [0, 1, 0]]``.
* **Attention** (:func:`attention_grid`), ``[B, 3]`` = ``(s, tx, ty)``:
  ``T(x, y) = (s x + tx, s y + ty)``, the affine ``[[s, 0, tx], [0, s, ty]]``
  (isotropic scale and translation, the paper's Sec. 4.3 attention).
  Identity ``(1, 0, 0)``.
* **Projective** (:func:`projective_grid`), ``theta`` ``[B, 3, 3]`` or the
  first 8 entries ``[B, 8]`` of a 3x3 matrix whose last entry is 1:
  ``T(x, y) = ((t0 x + t1 y + t2) / d, (t3 x + t4 y + t5) / d)`` with
  ``d = t6 x + t7 y + t8``. Where ``|d|`` is below :data:`MIN_DENOMINATOR`
  (the horizon of the homography) the point is sent far outside the image
  and reads zero; beyond the horizon (``d < 0``) the division stands, as in
  OpenCV's ``warpPerspective``. Identity ``[1, 0, 0, 0, 1, 0, 0, 0]``.
* **Thin-plate spline** (:func:`tps_grid`), ``control`` ``[B, n * n, 2]`` or
  ``[B, 2 n n]``: the input ``(x, y)`` of ``n x n`` control points whose
  output positions are the regular grid :func:`tps_targets` (x and y each in
  ``linspace(-1, 1, n)``, row by row: y outer, x inner; ``n`` =
  :data:`TPS_GRID` = 4 by default). ``T`` is the thin plate spline through
  those pairs (kernel ``U(r) = r^2 log r^2`` plus an affine part; Bookstein
  1989). Identity: ``control = tps_targets(n)``.

This is the convention of ``affine_grid``/``grid_sample`` with
``align_corners=False, padding_mode="zeros"`` in PyTorch, so weights and
intuition carry over.

Everything below the NumPy helpers is ``keras.ops``: it runs on the JAX,
PyTorch and TensorFlow backends and is differentiable in the images and in
the parameters by each backend's autodiff. Image height, width and channels
must be static (the batch may not be). On TensorFlow the layer uses the
faster :mod:`stn.layer.transform` instead, through one seam (``stn.layer.kinds.keras_warp``),
and ``tests/test_backends.py`` holds the two equal.
"""

import functools

import numpy as np
from keras import ops

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""The identity affine transform, row-major ``[2, 3]`` flattened."""
ATTENTION_IDENTITY = (1.0, 0.0, 0.0)
"""The identity attention transform ``(s, tx, ty)``."""
PROJECTIVE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
"""The identity homography: the first 8 entries of the 3x3 identity, row-major."""
MIN_DENOMINATOR = 1e-6
"""``|t6 x + t7 y + t8|`` below this sends a projective sample point outside."""
FAR = 1e4
"""Projective grid coordinates are clipped to +-this: far outside, still finite."""
TPS_GRID = 4
"""The default thin-plate spline's control points form a ``4 x 4`` grid."""


# --- NumPy: pixel centres and the thin-plate spline's constant matrices --------

def centres(size: int) -> np.ndarray:
    """float64 ``[size]``: normalized pixel centres ``(2 i + 1) / size - 1``."""
    return (2.0 * np.arange(size) + 1.0) / size - 1.0


def centre_points(height: int, width: int) -> np.ndarray:
    """float64 ``[h, w, 2]``: the normalized ``(x, y)`` of every pixel centre."""
    x, y = np.meshgrid(centres(width), centres(height))
    return np.stack([x, y], axis=-1)


def tps_targets(n: int = TPS_GRID, dtype=np.float64) -> np.ndarray:
    """``[n * n, 2]``: the output ``(x, y)`` of the TPS control points, row by row."""
    ticks = np.linspace(-1.0, 1.0, n)
    x, y = np.meshgrid(ticks, ticks)  # y outer, x inner when flattened
    return np.stack([x.ravel(), y.ravel()], axis=-1).astype(dtype)


def tps_size(count: int) -> int:
    """``n`` of a TPS with ``count`` control points (``count = n * n``, ``n >= 2``)."""
    n = int(round(np.sqrt(count)))
    if n < 2 or n * n != count:
        raise ValueError(f"a thin-plate spline needs n * n control points (n >= 2), "
                         f"got {count}")
    return n


def _tps_kernel(points: np.ndarray, centres_: np.ndarray) -> np.ndarray:
    """``U(r) = r^2 log r^2`` between ``[m, 2]`` points and ``[k, 2]`` centres."""
    r2 = np.sum((points[:, None, :] - centres_[None, :, :]) ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, r2 * np.log(np.where(r2 > 0, r2, 1.0)), 0.0)


@functools.lru_cache(maxsize=None)
def tps_solution(n: int = TPS_GRID) -> np.ndarray:
    """``[k + 3, k]``, ``k = n * n``: maps the control points to the spline's coefficients.

    The spline ``f(p) = sum_i w_i U(|p - P_i|) + a0 + a1 x + a2 y`` through
    ``f(P_i) = c_i`` solves ``[[K, P], [P^T, 0]] [w; a] = [c; 0]``; with the
    targets ``P_i`` fixed, ``[w; a] = inv(L)[:, :k] c`` (float64).
    """
    targets = tps_targets(n)
    affine = np.concatenate([np.ones((len(targets), 1)), targets], axis=1)  # (k, 3)
    system = np.block([[_tps_kernel(targets, targets), affine],
                       [affine.T, np.zeros((3, 3))]])  # (k + 3, k + 3)
    return np.linalg.inv(system)[:, :len(targets)]


def tps_matrix(points: np.ndarray, n: int = TPS_GRID) -> np.ndarray:
    """``[m, n * n]`` float64: ``f(points) = tps_matrix(points, n) @ control``.

    Args:
      points: ``[m, 2]`` normalized output ``(x, y)``.
      n: the control points form an ``n x n`` grid.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    basis = np.concatenate([_tps_kernel(points, tps_targets(n)), np.ones((len(points), 1)),
                            points], axis=1)  # (m, k + 3)
    return basis @ tps_solution(n)


@functools.lru_cache(maxsize=64)
def tps_grid_matrix(height: int, width: int, n: int = TPS_GRID) -> np.ndarray:
    """``[h * w, n * n]`` float64: :func:`tps_matrix` at the output pixel centres."""
    return tps_matrix(centre_points(height, width).reshape(-1, 2), n)


# --- keras.ops: grids -------------------------------------------------------------

def _const(values: np.ndarray, dtype):
    return ops.convert_to_tensor(np.asarray(values), dtype=dtype)


def affine_grid(theta, height: int, width: int):
    """Sampling grid of an affine transform (paper, Eq. 1).

    Args:
      theta: float ``[B, 2, 3]`` or ``[B, 6]``, output -> input coordinates.
      height, width: output size ``h, w`` (ints).

    Returns:
      ``[B, h, w, 2]`` of theta's dtype: the input ``(x, y)`` read by each
      output pixel centre.
    """
    # The pixel centres as a row and a column that broadcast (not a product
    # with an [h, w, 3] array of points), so that XLA fuses the grid into the
    # sampler instead of writing the grid and its gradient out: on JAX's CPU
    # backend the forward+backward went from 2.31-2.40x TensorFlow's to
    # 1.90-1.96x (python -m bench backends, docs/backends.md).
    t = ops.reshape(theta, (-1, 2, 3))[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    x = _const(centres(width)[None, :], theta.dtype)  # (1, w)
    y = _const(centres(height)[:, None], theta.dtype)  # (h, 1)
    return ops.stack([t[:, j, 0] * x + t[:, j, 1] * y + t[:, j, 2] for j in range(2)], axis=-1)


def attention_to_affine(params, namespace=ops):
    """``(s, tx, ty)`` ``[B, 3]`` -> the affine ``[B, 6]`` ``(s, 0, tx, 0, s, ty)``.

    Args:
      params: ``[B, 3]`` tensor or array.
      namespace: the array module it belongs to (``keras.ops``, ``numpy``,
        ``tensorflow``): each has ``zeros_like`` and ``stack``.
    """
    s, tx, ty = params[:, 0], params[:, 1], params[:, 2]
    zero = namespace.zeros_like(s)
    return namespace.stack([s, zero, tx, zero, s, ty], axis=1)


def attention_grid(params, height: int, width: int):
    """Sampling grid of ``(s, tx, ty)`` ``[B, 3]``: :func:`affine_grid` of its affine."""
    return affine_grid(attention_to_affine(ops.reshape(params, (-1, 3))), height, width)


def projective_grid(theta, height: int, width: int):
    """Sampling grid of a projective transform (homography).

    Args:
      theta: float ``[B, 8]`` (the first 8 entries, row-major, of a 3x3
        matrix whose last entry is 1) or ``[B, 3, 3]``; output -> input.
      height, width: output size (ints).

    Returns:
      ``[B, h, w, 2]`` of theta's dtype. Points where ``|d| < MIN_DENOMINATOR``
      are set far outside (they read zero); coordinates are clipped to
      ``+-FAR`` so the grid and its gradient stay finite (NaN passes).
    """
    if len(theta.shape) == 2:
        theta = ops.concatenate([theta, ops.ones_like(theta[:, :1])], axis=1)
    t = ops.reshape(theta, (-1, 3, 3))[:, :, :, None, None]  # (B, 3, 3, 1, 1)
    x = _const(centres(width)[None, :], theta.dtype)  # (1, w): broadcast, as in affine_grid
    y = _const(centres(height)[:, None], theta.dtype)  # (h, 1)
    n_x, n_y, d = (t[:, j, 0] * x + t[:, j, 1] * y + t[:, j, 2] for j in range(3))  # (B, h, w)
    valid = ops.abs(d) >= MIN_DENOMINATOR
    safe_d = ops.where(valid, d, ops.ones_like(d))  # no division by ~0, even unused

    def coordinate(numerator):
        grid = ops.clip(ops.where(valid, numerator / safe_d, -FAR * ops.ones_like(d)), -FAR, FAR)
        total = numerator + d  # NaN if theta holds NaN: keep it visible
        return ops.where(ops.isnan(total), total, grid)

    return ops.stack([coordinate(n_x), coordinate(n_y)], axis=-1)


def tps_grid(control, height: int, width: int):
    """Sampling grid of the thin-plate spline through ``n x n`` control points.

    Linear in ``control`` for fixed output points: one matmul with the
    constant ``[h * w, n * n]`` :func:`tps_grid_matrix` (float64, then cast),
    applied to the displacement from the identity so that the identity is
    exact to the rounding of the pixel centres.

    Args:
      control: float ``[B, n * n, 2]`` or ``[B, 2 n n]``: input ``(x, y)`` of
        the control points, in the order of :func:`tps_targets`.
      height, width: output size (ints).

    Returns:
      ``[B, h, w, 2]`` of the control points' dtype.
    """
    n = tps_size(int(np.prod(control.shape[1:])) // 2)
    control = ops.reshape(control, (-1, n * n, 2))
    offsets = control - _const(tps_targets(n), control.dtype)  # (B, k, 2)
    matrix = _const(tps_grid_matrix(height, width, n), control.dtype)  # (h * w, k)
    plane = ops.einsum("pk,bkc->bpc", matrix, offsets)  # (B, h * w, 2)
    base = _const(centre_points(height, width), control.dtype)
    return base + ops.reshape(plane, (-1, height, width, 2))


# --- keras.ops: the sampler --------------------------------------------------------

def pixel_coordinates(coord, size: int, out_size: int, shape):
    """Normalized input coordinate -> input pixel units (centres at integers).

    ``u = (x * size + size - 1) / 2``, written as the output pixel's own
    centre in input pixels plus the grid's displacement from that centre, as
    in :mod:`stn.layer.transform`: a grid point on its output pixel centre (any
    identity grid) lands exactly on an integer. Sizes are static: ``int()``
    also makes them Python numbers when a tracer (TorchScript) hands tensors.
    """
    size, out_size = int(size), int(out_size)
    index = np.arange(out_size, dtype=np.float64).reshape(shape)
    centre = (2.0 * index + 1.0) / out_size - 1.0
    base = ((2.0 * index + 1.0) * (size / out_size) - 1.0) / 2.0
    return _const(base, coord.dtype) + (coord - _const(centre, coord.dtype)) * (size / 2.0)


def lower_corner(coord, size: int):
    """Pixel coordinate -> lower neighbour's index in the padded image, and weights.

    The image is padded with one zero pixel before and two after, so the
    index (shifted by +1) lies in ``[0, size + 1]`` and the upper neighbour is
    ``index + 1``. Beyond one pixel outside a sample reads only zeros:
    clipping there changes no value and gives a zero gradient.
    """
    clipped = ops.where(ops.isnan(coord), coord, ops.clip(coord, -1.0, float(size)))
    low = ops.floor(clipped)
    w_high = clipped - low  # d w_high / d coord = 1 inside the clip range
    index = ops.clip(ops.cast(ops.where(ops.isnan(low), ops.zeros_like(low), low), "int32") + 1,
                     0, size + 1)
    return index, 1.0 - w_high, w_high


def bilinear_sample(images, grid):
    """Samples ``images`` at ``grid`` with bilinear interpolation (Eq. 5).

    Args:
      images: float ``[B, H, W, C]`` (static ``H, W, C``).
      grid: ``[B, h, w, 2]`` normalized ``(x, y)`` input coordinates (static
        ``h, w``), cast to the dtype of ``images``.

    Returns:
      ``[B, h, w, C]`` of the dtype of ``images``, zero-padded outside.
    """
    _, height, width, channels = images.shape
    _, out_h, out_w, _ = grid.shape
    grid = ops.cast(grid, images.dtype)
    x = pixel_coordinates(grid[..., 0], width, out_w, (1, 1, -1))
    y = pixel_coordinates(grid[..., 1], height, out_h, (1, -1, 1))
    x0, wx0, wx1 = lower_corner(x, width)
    y0, wy0, wy1 = lower_corner(y, height)
    row = width + 3  # padded width
    flat = ops.reshape(ops.pad(images, [[0, 0], [1, 2], [1, 2], [0, 0]]), (-1, channels))
    start = ops.reshape(ops.arange(ops.shape(images)[0], dtype="int32") * ((height + 3) * row),
                        (-1, 1, 1))
    top = start + y0 * row + x0  # (B, h, w): flat index of the upper-left neighbour

    def corner(offset, weight):
        return ops.take(flat, top + offset, axis=0) * weight[..., None]  # (B, h, w, C)

    return (corner(0, wy0 * wx0) + corner(1, wy0 * wx1)
            + corner(row, wy1 * wx0) + corner(row + 1, wy1 * wx1))
