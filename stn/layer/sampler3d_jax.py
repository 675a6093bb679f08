"""The trilinear sampler on JAX, its gradient written out: the 3-D seam's JAX form.

The same sampling as :func:`stn.layer.sampler3d.trilinear_sample` (eight
gathers from :func:`~stn.layer.trilinear.padded_rows`, at
:func:`~stn.layer.trilinear.axis_coordinates`), as a
``jax.custom_vjp``. JAX's own autodiff of the ``keras.ops`` sampler ran forward
+ backward to theta at 1.6x PyTorch's ``grid_sample`` (64^3, ``python -m bench
volumes``): XLA on CPU computed the gradient in the grid through windowed
reductions. Here the backward reads the eight gathered corners again:

* in the grid: with ``f`` the fractional position along an axis, the output
  is linear in each ``f``, so ``d out / d f_x`` is the ``y, z``-interpolation
  of the differences ``v(x+1) - v(x)`` (likewise along ``y`` and ``z``),
  summed against the output's cotangent over channels, times ``size / 2``
  (normalized to pixel units) where :func:`stn.layer.sampler.lower_corner`
  does not clip (zero beyond a voxel outside, as the autodiff gives);
* in the volumes: each corner's weight times the cotangent, added into its
  voxel (a scatter-add; XLA drops it when the volumes need no gradient).

Imported only on the JAX backend (:func:`stn.layer.sampler3d.sample`);
``tests/test_volumes.py`` holds it equal to the ``keras.ops`` sampler and its
gradients to finite differences.
"""

import jax
import jax.numpy as jnp

from stn.layer.trilinear import CORNERS as OFFSETS
from stn.layer.trilinear import axis_coordinates, padded_layout, padded_rows


def _axis(grid, k: int, size: int, out_size: int):
    """Along one axis: the lower corner's padded index, the fraction, and ``d f / d grid``."""
    u, index, _, fraction = axis_coordinates(grid, k, size, out_size)
    slope = jnp.where((u >= -1.0) & (u <= size), size / 2.0, 0.0).astype(u.dtype)
    return index, fraction, slope


def _lerp(a, b, f):
    """``a + (b - a) f``: ``a, b`` ``[..., C]``, ``f`` ``[...]``."""
    return a + (b - a) * f[..., None]


def _forward(volumes, grid):
    _, depth, height, width, _ = volumes.shape
    _, out_d, out_h, out_w, _ = grid.shape
    x0, fx, sx = _axis(grid, 0, width, out_w)
    y0, fy, sy = _axis(grid, 1, height, out_h)
    z0, fz, sz = _axis(grid, 2, depth, out_d)
    flat, first, row, plane = padded_rows(volumes, z0, y0, x0)
    v = [jnp.take(flat, first + dz * plane + dy * row + dx, axis=0, mode="clip")
         for dz, dy, dx in OFFSETS]  # each (B, d, h, w, C)
    out = _lerp(_lerp(_lerp(v[0], v[1], fx), _lerp(v[2], v[3], fx), fy),
                _lerp(_lerp(v[4], v[5], fx), _lerp(v[6], v[7], fx), fy), fz)
    return out, (v, (fz, fy, fx), (sz, sy, sx), first, volumes)


def _backward(residuals, g):
    v, (fz, fy, fx), (sz, sy, sx), first, volumes = residuals
    along_x = [_lerp(v[i], v[i + 1], fx) for i in (0, 2, 4, 6)]  # (z, y) = 00, 01, 10, 11
    d_fx = _lerp(_lerp(v[1] - v[0], v[3] - v[2], fy), _lerp(v[5] - v[4], v[7] - v[6], fy), fz)
    d_fy = _lerp(along_x[1] - along_x[0], along_x[3] - along_x[2], fz)
    d_fz = _lerp(along_x[2], along_x[3], fy) - _lerp(along_x[0], along_x[1], fy)
    d_grid = jnp.stack([jnp.sum(g * d_fx, axis=-1) * sx, jnp.sum(g * d_fy, axis=-1) * sy,
                        jnp.sum(g * d_fz, axis=-1) * sz], axis=-1)
    padded, row, plane = padded_layout(volumes.shape)
    d_flat = jnp.zeros((padded[0] * padded[1] * plane, padded[-1]), g.dtype)
    for dz, dy, dx in OFFSETS:
        weight = (fz if dz else 1 - fz) * (fy if dy else 1 - fy) * (fx if dx else 1 - fx)
        d_flat = d_flat.at[first + dz * plane + dy * row + dx].add(g * weight[..., None],
                                                                   mode="clip")
    d_volumes = d_flat.reshape(padded)[:, 1:-2, 1:-2, 1:-2]
    return d_volumes, d_grid


@jax.custom_vjp
def _sample(volumes, grid):
    return _forward(volumes, grid)[0]


_sample.defvjp(_forward, _backward)


def trilinear_sample(volumes, grid):
    """:func:`stn.layer.sampler3d.trilinear_sample` with the gradient above.

    Args:
      volumes: float ``[B, D, H, W, C]`` (static shape under ``jax.jit``).
      grid: ``[B, d, h, w, 3]`` normalized ``(x, y, z)``, cast to the volumes' dtype.

    Returns:
      ``[B, d, h, w, C]`` of the dtype of ``volumes``, zero-padded outside.
    """
    volumes = jnp.asarray(volumes)
    return _sample(volumes, jnp.asarray(grid).astype(volumes.dtype))
