"""The 3-D affine grid generator and the trilinear sampler, in ``keras.ops``.

Coordinate convention: :mod:`stn.layer.sampler`'s, with one more axis.

* ``x`` runs along the width (W), ``y`` along the height (H) and ``z``
  along the depth (D, the first spatial axis of ``[B, D, H, W, C]``), each
  in [-1, 1], where +-1 are the *outer faces* of the volume: voxel ``k`` of
  a depth of ``D`` voxels is centred at ``z = (2k + 1)/D - 1``.
* Maps go from *output* to *input* coordinates; a grid is ``[B, d, h, w, 3]``
  holding ``(x, y, z)`` at every output voxel centre.
* Trilinear interpolation between the eight input voxel centres around the
  sample point; zero padding as in 2-D (half a voxel outside blends the
  face voxel with zero, a voxel or more outside reads zero).

This is PyTorch's ``affine_grid``/``grid_sample`` on 5-D inputs with
``align_corners=False, padding_mode="zeros"`` (its grid is ``(x, y, z)`` too),
with channels last.

**affine3d**: ``theta`` ``[B, 3, 4]`` or ``[B, 12]`` row-major,
``T(x, y, z) = theta @ (x, y, z, 1)``; identity ``[[1,0,0,0],[0,1,0,0],[0,0,1,0]]``.

Sizes (depth, height, width, channels) must be static; the batch may not
be. Differentiable in the volumes and in the grid on JAX, PyTorch and
TensorFlow by each backend's autodiff. The warps sample through one seam,
:func:`sample`: on TensorFlow the one-gather form :func:`trilinear_sample_rows`,
as its own XLA function (:func:`stn.layer.kinds3d.tf_volume_sample`); on PyTorch
its own ``grid_sample``; on JAX :func:`trilinear_sample` with its gradient written
out (:mod:`stn.layer.sampler3d_jax`).
"""

import keras
import numpy as np
from keras import ops

from stn.layer.sampler import centres
from stn.layer.trilinear import CORNERS, axis_coordinates, padded_rows

AFFINE3D_IDENTITY = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""The identity 3-D affine map, row-major ``[3, 4]`` flattened."""


def centre_points3d(depth: int, height: int, width: int) -> np.ndarray:
    """float64 ``[d, h, w, 3]``: the normalized ``(x, y, z)`` of every voxel centre."""
    z, y, x = np.meshgrid(centres(depth), centres(height), centres(width), indexing="ij")
    return np.stack([x, y, z], axis=-1)


def affine3d_grid(theta, depth: int, height: int, width: int):
    """Sampling grid of a 3-D affine map.

    Args:
      theta: float ``[B, 3, 4]`` or ``[B, 12]``, output -> input coordinates.
      depth, height, width: output size (ints).

    Returns:
      ``[B, d, h, w, 3]`` of theta's dtype: the input ``(x, y, z)`` read by
      each output voxel centre.
    """
    t = ops.reshape(theta, (-1, 3, 4))[:, :, :, None, None, None]  # (B, 3, 4, 1, 1, 1)

    def axis(values, shape):  # output centres as a broadcasting row (fused by XLA)
        return ops.convert_to_tensor(values.reshape(shape), dtype=theta.dtype)

    x = axis(centres(width), (1, 1, -1))
    y = axis(centres(height), (1, -1, 1))
    z = axis(centres(depth), (-1, 1, 1))
    return ops.stack([t[:, j, 0] * x + t[:, j, 1] * y + t[:, j, 2] * z + t[:, j, 3]
                      for j in range(3)], axis=-1)


def _corners(volumes, grid):
    """The sizes, lower corners and weights of trilinear sampling (both samplers')."""
    _, depth, height, width, channels = volumes.shape
    _, out_d, out_h, out_w, _ = grid.shape
    grid = ops.cast(grid, volumes.dtype)
    _, x0, wx0, wx1 = axis_coordinates(grid, 0, width, out_w)
    _, y0, wy0, wy1 = axis_coordinates(grid, 1, height, out_h)
    _, z0, wz0, wz1 = axis_coordinates(grid, 2, depth, out_d)
    return (depth, height, width, channels), (out_d, out_h, out_w), \
        (z0, y0, x0), ((wz0, wz1), (wy0, wy1), (wx0, wx1))


def trilinear_sample(volumes, grid):
    """Samples ``volumes`` at ``grid`` with trilinear interpolation.

    Args:
      volumes: float ``[B, D, H, W, C]`` (static ``D, H, W, C``).
      grid: ``[B, d, h, w, 3]`` normalized ``(x, y, z)`` input coordinates
        (static ``d, h, w``), cast to the dtype of ``volumes``.

    Returns:
      ``[B, d, h, w, C]`` of the dtype of ``volumes``, zero-padded outside.
    """
    _, _, (z0, y0, x0), weights = _corners(volumes, grid)
    (wz0, wz1), (wy0, wy1), (wx0, wx1) = weights
    flat, first, row, plane = padded_rows(volumes, z0, y0, x0)  # each corner: one row gather
    out = None
    for dz, wz in ((0, wz0), (plane, wz1)):
        for dy, wy in ((0, wy0), (row, wy1)):
            wzy = wz * wy
            for dx, wx in ((0, wx0), (1, wx1)):
                term = ops.take(flat, first + (dz + dy + dx), axis=0) * (wzy * wx)[..., None]
                out = term if out is None else out + term
    return out  # (B, d, h, w, C)


def trilinear_sample_rows(volumes, grid):
    """:func:`trilinear_sample` by one gather of 8-voxel rows: TensorFlow's sampler.

    Each row of ``corners`` holds the 8 voxels of the cell whose lower corner
    it is, side by side (8C values), so one row gather reads all eight. Under
    TensorFlow's XLA on CPU, forward + backward to theta ran 2.1-4x faster than
    eight gathers of C values (32^3, 64^3, and 3-D MNIST's 60^3 -> 20x30x30
    at batch 64), at the same peak memory: XLA fuses the slices into the
    gather. Under JAX's it does not (2x slower at 64^3), so JAX keeps
    :func:`trilinear_sample` (:func:`sample`). Arguments and result as there.
    """
    (depth, height, width, channels), (out_d, out_h, out_w), (z0, y0, x0), weights = \
        _corners(volumes, grid)
    padded = ops.pad(volumes, [[0, 0], [1, 2], [1, 2], [1, 2], [0, 0]])
    cells = (depth + 2, height + 2, width + 2)
    corners = ops.concatenate([padded[:, dz:dz + cells[0], dy:dy + cells[1], dx:dx + cells[2]]
                               for dz, dy, dx in CORNERS], axis=-1)  # (B, D+2, H+2, W+2, 8C)
    row, plane = cells[2], cells[1] * cells[2]
    start = ops.reshape(ops.arange(ops.shape(volumes)[0], dtype="int32") * (cells[0] * plane),
                        (-1, 1, 1, 1))
    got = ops.take(ops.reshape(corners, (-1, 8 * channels)),
                   start + z0 * plane + y0 * row + x0, axis=0)  # (B, d, h, w, 8C)
    got = ops.reshape(got, (-1, out_d, out_h, out_w, 8, channels))
    (wz0, wz1), (wy0, wy1), (wx0, wx1) = weights
    corner_weights = ops.stack([(wz0, wz1)[dz] * (wy0, wy1)[dy] * (wx0, wx1)[dx]
                                for dz, dy, dx in CORNERS], axis=-1)  # (B, d, h, w, 8)
    return ops.sum(got * corner_weights[..., None], axis=-2)  # (B, d, h, w, C)


def sample(volumes, grid):
    """:func:`trilinear_sample`, through the one seam for a backend's fastest form.

    On TensorFlow, :func:`trilinear_sample_rows`. On PyTorch,
    ``torch.nn.functional.grid_sample`` (5-D, ``align_corners=False``, zeros:
    this module's convention) on the volumes permuted to NCDHW: the
    ``keras.ops`` sampler's eight gathers ran at 4-9x its time, eagerly
    (``python -m bench volumes``). On JAX, the same eight gathers with the
    gradient written out (:mod:`stn.layer.sampler3d_jax`: JAX's autodiff of
    this module's sampler ran forward + backward at about twice the time).
    ``tests/test_volumes.py`` holds each equal to :func:`trilinear_sample`.
    """
    if keras.backend.backend() == "tensorflow":
        return trilinear_sample_rows(volumes, grid)
    if keras.backend.backend() == "jax":
        from stn.layer import sampler3d_jax
        return sampler3d_jax.trilinear_sample(volumes, grid)
    if keras.backend.backend() != "torch":
        return trilinear_sample(volumes, grid)
    import torch.nn.functional as F
    x = ops.transpose(volumes, (0, 4, 1, 2, 3))  # (B, C, D, H, W)
    out = F.grid_sample(x, ops.cast(grid, volumes.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return ops.transpose(out, (0, 2, 3, 4, 1))  # (B, d, h, w, C)


def affine3d_warp(volumes, theta, out_size=None):
    """Warps ``volumes`` ``[B, D, H, W, C]`` by ``theta`` ``[B, 12]`` to ``[B, d, h, w, C]``.

    ``out_size``: ``(d, h, w)``; defaults to ``(D, H, W)``. ``theta`` is cast
    to the dtype of ``volumes``.
    """
    volumes = ops.convert_to_tensor(volumes)
    theta = ops.cast(theta, volumes.dtype)
    size = volumes.shape[1:4] if out_size is None else out_size
    return sample(volumes, affine3d_grid(theta, *(int(s) for s in size)))


def affine3d_points(params, points) -> np.ndarray:
    """NumPy map: ``params [n, 12]``, ``points [m, 3]`` or ``[n, m, 3]`` -> float64 ``[n, m, 3]``.
    """
    matrices = np.asarray(params, np.float64).reshape(-1, 3, 4)
    points = np.asarray(points, np.float64)
    points = np.broadcast_to(points if points.ndim == 3 else points[None],
                             (len(matrices), *points.shape[-2:]))
    return np.einsum("nmk,njk->nmj", points, matrices[:, :, :3]) + matrices[:, None, :, 3]
