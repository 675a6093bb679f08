"""Where trilinear sampling reads: each axis's lower corner and weights, and the padded rows.

Shared by the two 3-D samplers, :mod:`stn.layer.sampler3d` (``keras.ops``)
and :mod:`stn.layer.sampler3d_jax` (its JAX form with the gradient written
out), in the convention of :mod:`stn.layer.sampler3d`: a grid ``[B, d, h, w, 3]``
of normalized ``(x, y, z)``, volumes ``[B, D, H, W, C]`` padded by one zero
voxel before and two after on each axis (:func:`stn.layer.sampler.lower_corner`'s
index range).
"""

from keras import ops

from stn.layer.sampler import lower_corner, pixel_coordinates

CORNERS = tuple((dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1))
"""A cell's eight corners as offsets ``(dz, dy, dx)`` from its lower corner."""


AXES = ((0, (1, 1, 1, -1)), (1, (1, 1, -1, 1)), (2, (1, -1, 1, 1)))
"""Per grid component ``(x, y, z)``: its index in the grid's last axis and the shape that
broadcasts the output's centres along it (over ``[B, d, h, w]``)."""


def axis_coordinates(grid, k: int, size: int, out_size: int):
    """Along grid component ``k`` (0 x, 1 y, 2 z) of an input axis of ``size`` voxels:

    ``(u, index, w_low, w_high)``: the pixel coordinate :func:`~stn.layer.sampler.pixel_coordinates`,
    then :func:`~stn.layer.sampler.lower_corner`'s padded lower index and its two weights, each
    ``[B, d, h, w]``. Both samplers read it.
    """
    u = pixel_coordinates(grid[..., k], size, out_size, AXES[k][1])
    return (u, *lower_corner(u, size))


def padded_layout(shape):
    """``(padded, row, plane)`` of volumes of ``shape`` ``(B, D, H, W, C)``: the padded
    shape ``(B, D + 3, H + 3, W + 3, C)`` and the rows between neighbours along y and z in
    :func:`padded_rows`'s flattening."""
    batch, depth, height, width, channels = shape
    return ((batch, depth + 3, height + 3, width + 3, channels), width + 3,
            (height + 3) * (width + 3))


def padded_rows(volumes, z0, y0, x0):
    """The volumes padded by one zero voxel before and two after on each axis
    (:func:`~stn.layer.sampler.lower_corner`'s index range), flattened to rows of ``C``
    values, and the row of each sample's lower corner.

    Returns ``(flat [B (D+3) (H+3) (W+3), C], first [B, d, h, w], row, plane)``: the corner
    ``(dz, dy, dx)`` of a sample is the row ``first + dz * plane + dy * row + dx``.
    """
    (_, depth, _, _, channels), row, plane = padded_layout(volumes.shape)
    flat = ops.reshape(ops.pad(volumes, [[0, 0], [1, 2], [1, 2], [1, 2], [0, 0]]),
                       (-1, channels))
    start = ops.reshape(ops.arange(ops.shape(volumes)[0], dtype="int32") * (depth * plane),
                        (-1, 1, 1, 1))
    return flat, start + z0 * plane + y0 * row + x0, row, plane
