"""Transformer kinds: the families of transformations a spatial transformer can use.

A *kind* is all the package needs to know about a family of transformations
(paper Sec. 3.1): how many parameters the localization net predicts, which
parameters are the identity (the net's initial bias, appendix A), the TF grid
generator of :mod:`stn.transform` (whose docstring holds the coordinate
convention and each kind's parameterisation), and the same map in NumPy for
evaluation. Configs and layers store a kind's *name*; nothing outside this
registry knows a kind's shape.

=========== ====== ===========================================================
kind        params parameters (output -> input coordinates)
=========== ====== ===========================================================
affine      6      ``[2, 3]`` row-major
projective  8      first 8 entries of a 3x3 homography whose last entry is 1
tps         32     input ``(x, y)`` of the 16 control points of a 4x4 grid
=========== ====== ===========================================================

**Adding a kind**: write its grid function (``params [B, P] -> [B, h, w, 2]``,
in the convention of :mod:`stn.transform`) and its NumPy point map
(``params [n, P], points [n, m, 2] -> [n, m, 2]``), then add one :class:`Kind`
to :data:`KINDS`. The layer, the model presets, training, evaluation (pose
alignment through :func:`affine_fit`), the figures and the benchmarks pick it
up from there.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from stn import transform as T


@dataclasses.dataclass(frozen=True)
class Kind:
    """One family of transformations.

    Attributes:
      name: key in :data:`KINDS`.
      size: number of parameters ``P`` (the localization net's output).
      identity: the ``P`` parameters of the identity map.
      grid: TF grid generator, ``(params [B, P], h, w) -> [B, h, w, 2]``.
      points: NumPy map, ``(params [n, P], points [m, 2] or [n, m, 2])
        -> [n, m, 2]`` float64: the input ``(x, y)`` read by each output
        point (NaN where undefined).
      sample: optional fast path ``(images, params [B, P], out_size) ->
        images`` equal to ``bilinear_sample(images, grid(...))``.
      description: one line for help texts and the README.
    """
    name: str
    size: int
    identity: tuple[float, ...]
    grid: Callable
    points: Callable
    sample: Callable | None = None
    description: str = ""


def _per_example(params, points, size: int):
    """``params`` as float64 ``[n, size]`` and ``points`` broadcast to ``[n, m, 2]``."""
    params = np.asarray(params, np.float64).reshape(-1, size)
    points = np.asarray(points, np.float64)
    if points.ndim == 2:
        points = points[None]
    return params, np.broadcast_to(points, (len(params), *points.shape[-2:]))


def _affine_points(params, points) -> np.ndarray:
    params, points = _per_example(params, points, 6)
    matrices = params.reshape(-1, 2, 3)
    return np.einsum("nmk,njk->nmj", points, matrices[:, :, :2]) + matrices[:, None, :, 2]


def _projective_points(params, points) -> np.ndarray:
    params, points = _per_example(params, points, 8)
    matrices = np.concatenate([params, np.ones((len(params), 1))], axis=1).reshape(-1, 3, 3)
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    mapped = np.einsum("nmk,njk->nmj", homogeneous, matrices)  # (n, m, 3)
    d = mapped[..., 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Undefined at the homography's horizon (the TF grid reads zeros there).
        return np.where(np.abs(d) >= T.MIN_DENOMINATOR, mapped[..., :2] / d, np.nan)


def _tps_points(params, points) -> np.ndarray:
    params, points = _per_example(params, points, 2 * T.TPS_GRID ** 2)
    control = params.reshape(len(params), -1, 2)  # (n, 16, 2)
    basis = T.tps_matrix(points.reshape(-1, 2)).reshape(*points.shape[:2], -1)  # (n, m, 16)
    return np.einsum("nmk,nkc->nmc", basis, control)


KINDS = {
    "affine": Kind("affine", 6, T.IDENTITY, T.affine_grid, _affine_points,
                   sample=T.affine_transform,
                   description="6 parameters: rotation, scale, shear, translation"),
    "projective": Kind("projective", 8, T.PROJECTIVE_IDENTITY, T.projective_grid,
                       _projective_points,
                       description="8 parameters: a homography (perspective)"),
    "tps": Kind("tps", 2 * T.TPS_GRID ** 2, tuple(T.tps_targets().ravel()), T.tps_grid,
                _tps_points, description="32 parameters: a thin-plate spline through "
                "16 control points on a 4x4 grid"),
}


def get_kind(kind: "str | Kind") -> Kind:
    """Looks up a kind by name (a :class:`Kind` passes through).

    Raises:
      ValueError: unknown name; the message lists the valid ones.
    """
    if isinstance(kind, Kind):
        return kind
    if kind not in KINDS:
        raise ValueError(f"unknown transformer kind {kind!r}; choose one of: "
                         + ", ".join(KINDS))
    return KINDS[kind]


def identity(kind: "str | Kind", n: int = 1) -> np.ndarray:
    """float64 ``[n, P]``: ``n`` copies of the kind's identity parameters."""
    return np.tile(np.asarray(get_kind(kind).identity, np.float64), (n, 1))


# --- warping images (TF) -------------------------------------------------------

def warp(images: tf.Tensor, params: tf.Tensor, kind: "str | Kind" = "affine",
         out_size=None) -> tf.Tensor:
    """Warps ``images`` by transformations of one kind (grid generator + sampler).

    Args:
      images: float ``[B, H, W, C]``.
      params: ``[B, P]`` (or the kind's matrix shape), output -> input;
        cast to the dtype of ``images``.
      kind: a name in :data:`KINDS` (or a :class:`Kind`).
      out_size: ``(h, w)`` of the output; defaults to ``(H, W)``.

    Returns:
      ``[B, h, w, C]`` of the dtype of ``images``, zero-padded outside.
    """
    kind = get_kind(kind)
    images = tf.convert_to_tensor(images)
    params = tf.cast(params, images.dtype)
    if kind.sample is not None:
        return kind.sample(images, params, out_size)
    if out_size is None:
        out_size = T._dims(images)[1:3]
    return T.bilinear_sample(images, kind.grid(params, *out_size))


warp_xla = tf.function(warp, jit_compile=True, reduce_retracing=True)
""":func:`warp` compiled by XLA (one compilation per kind and size).

On CPU, XLA fuses the index arithmetic and the gather: several times faster
than the plain graph (``make bench``). Use :func:`warp` itself in TF1
``tf.compat.v1.Session`` code.
"""


def _warp_constant_images(images, params, kind="affine", out_size=None):
    return warp(tf.stop_gradient(images), params, kind, out_size)


warp_xla_params_grad = tf.function(_warp_constant_images, jit_compile=True,
                                   reduce_retracing=True)
""":func:`warp_xla` that passes gradients to ``params`` only.

For images that need no gradient (a transformer on the raw input). Called
from a step that is not itself compiled, an XLA function's backward pass
computes the gradient of every input, whether used or not; for the images
that is a scatter-add as large as the batch, which this version skips.
"""


# --- the same maps in NumPy, for evaluation ------------------------------------

FIT_POINTS = 16
""":func:`affine_fit` fits over the centres of a ``FIT_POINTS``-square grid."""


def fit_grid(n: int = FIT_POINTS) -> np.ndarray:
    """``[n * n, 2]``: normalized pixel centres of an ``n x n`` grid over the canvas."""
    ticks = (2.0 * np.arange(n) + 1.0) / n - 1.0
    x, y = np.meshgrid(ticks, ticks)
    return np.stack([x.ravel(), y.ravel()], axis=-1)


def compose_points(*maps, points=None) -> np.ndarray:
    """Where a chain of warps reads: ``first(second(...(last(p))))``.

    Warping by ``first`` and then warping the result by ``second`` reads the
    original at ``first(second(p))`` for each output point ``p`` (every map
    goes output -> input), so the maps are applied from the last to the first.

    Args:
      *maps: ``(kind, params [n, P])`` pairs, the first warp first.
      points: ``[m, 2]`` output points; default :func:`fit_grid`.

    Returns:
      float64 ``[n, m, 2]``.
    """
    current = np.asarray(fit_grid() if points is None else points, np.float64)
    for kind, params in reversed(maps):
        current = get_kind(kind).points(params, current)  # (n, m, 2)
    return current


def affine_fit(*maps, points=None) -> np.ndarray:
    """Least-squares affine fit of a chain of warps over the canvas.

    The affine ``A`` minimising ``sum_p |A (p, 1) - chain(p)|^2`` over the
    points (default: the 16 x 16 grid :func:`fit_grid`). Exact for chains of
    affine maps; for projective and TPS maps it is the affine part that
    :func:`stn.pose.pose_alignment` decomposes into a pose.

    Args:
      *maps: ``(kind, params)`` pairs as for :func:`compose_points`.
      points: ``[m, 2]``, at least 3 not on a line.

    Returns:
      float64 ``[n, 2, 3]`` (NaN where the chain is undefined at some point).
    """
    points = np.asarray(fit_grid() if points is None else points, np.float64)
    mapped = compose_points(*maps, points=points)  # (n, m, 2)
    design = np.concatenate([points, np.ones((len(points), 1))], axis=1)  # (m, 3)
    coefficients = np.einsum("km,nmj->njk", np.linalg.pinv(design), mapped)  # (n, 2, 3)
    return coefficients
