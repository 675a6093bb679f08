"""The transformer kinds' maps in NumPy: where each kind's parameters read.

For each kind of :mod:`stn.layer.kinds` (whose docstring has the table of kinds
and their parameters), the map from parameters and output points to the
input ``(x, y)`` they read, float64 NumPy (:attr:`stn.layer.kinds.Kind.points`),
and for the matrix kinds (affine, attention, projective) their homogeneous
3x3 matrices and back, in NumPy or ``keras.ops`` (:attr:`~stn.layer.kinds.Kind.matrix`,
:attr:`~stn.layer.kinds.Kind.from_matrix`). The registry :data:`stn.layer.kinds.KINDS`
is built from them; evaluation (pose alignment, figures) reads warps
through it. Nothing here needs TensorFlow: the maps work on every backend.
"""

from typing import Callable

import numpy as np

from stn.layer import sampler as S


def _per_example(params, points, size: int):
    """``params`` as float64 ``[n, size]`` and ``points`` broadcast to ``[n, m, 2]``."""
    params = np.asarray(params, np.float64).reshape(-1, size)
    points = np.asarray(points, np.float64)
    if points.ndim == 2:
        points = points[None]
    return params, np.broadcast_to(points, (len(params), *points.shape[-2:]))


def affine_points(params, points) -> np.ndarray:
    params, points = _per_example(params, points, 6)
    matrices = params.reshape(-1, 2, 3)
    return np.einsum("nmk,njk->nmj", points, matrices[:, :, :2]) + matrices[:, None, :, 2]


def projective_points(params, points) -> np.ndarray:
    params, points = _per_example(params, points, 8)
    matrices = np.concatenate([params, np.ones((len(params), 1))], axis=1).reshape(-1, 3, 3)
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    mapped = np.einsum("nmk,njk->nmj", homogeneous, matrices)  # (n, m, 3)
    d = mapped[..., 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Undefined at the homography's horizon (the TF grid reads zeros there).
        return np.where(np.abs(d) >= S.MIN_DENOMINATOR, mapped[..., :2] / d, np.nan)


def attention_points(params, points) -> np.ndarray:
    params, points = _per_example(params, points, 3)
    return affine_points(S.attention_to_affine(params, np), points)


def tps_points(n: int) -> Callable:
    """The NumPy map of the TPS through ``n x n`` control points."""
    def points_(params, points) -> np.ndarray:
        params, points = _per_example(params, points, 2 * n * n)
        control = params.reshape(len(params), -1, 2)  # (n, k, 2)
        basis = S.tps_matrix(points.reshape(-1, 2), n).reshape(*points.shape[:2], -1)  # (n, m, k)
        return np.einsum("nmk,nkc->nmc", basis, control)
    return points_


# Homogeneous 3x3 matrices of the matrix kinds, in NumPy or keras.ops (``xp``).

def affine_matrix(params, xp):
    rows = xp.reshape(params, (-1, 2, 3))
    bottom = xp.concatenate([xp.zeros_like(rows[:, :1, :2]), xp.ones_like(rows[:, :1, :1])], axis=2)
    return xp.concatenate([rows, bottom], axis=1)


def affine_from_matrix(matrix, xp):
    return xp.reshape(matrix[:, :2, :], (-1, 6))


def projective_matrix(params, xp):
    params = xp.reshape(params, (-1, 8))
    return xp.reshape(xp.concatenate([params, xp.ones_like(params[:, :1])], axis=1), (-1, 3, 3))


def projective_from_matrix(matrix, xp):
    return xp.reshape(matrix / matrix[:, 2:, 2:], (-1, 9))[:, :8]


def attention_matrix(params, xp):
    return affine_matrix(S.attention_to_affine(xp.reshape(params, (-1, 3)), xp), xp)


def attention_from_matrix(matrix, xp):
    return xp.stack([matrix[:, 0, 0], matrix[:, 0, 2], matrix[:, 1, 2]], axis=1)
