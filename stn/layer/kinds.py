"""Transformer kinds: the families of transformations a spatial transformer can use.

A *kind* is all the package needs to know about a family of transformations
(paper Sec. 3.1): how many parameters the localization net predicts, which
parameters are the identity (the net's initial bias, appendix A), its grid
generator in ``keras.ops`` (:mod:`stn.layer.sampler`, whose docstring holds the
coordinate convention and each kind's parameterisation) and in TensorFlow
(:mod:`stn.layer.transform`, the fast path), and the same map in NumPy for
evaluation. Configs and layers store a kind's *name*; nothing outside this
registry knows a kind's shape.

=========== ====== ===========================================================
kind        params parameters (output -> input coordinates)
=========== ====== ===========================================================
affine      6      ``[2, 3]`` row-major
attention   3      ``(s, tx, ty)``: the affine ``[[s, 0, tx], [0, s, ty]]``
projective  8      first 8 entries of a 3x3 homography whose last entry is 1
tps         32     input ``(x, y)`` of the 16 control points of a 4x4 grid
tps3, tps5  18, 50 the same on a 3x3 or 5x5 grid (:func:`tps_kind`)
=========== ====== ===========================================================

For the matrix kinds (affine, attention, projective), :func:`to_pixels` gives
the map in pixel units and :func:`invert` the inverse map's parameters, in
NumPy (float64) or ``keras.ops`` alike.

**Adding a kind**: write its grid function (``params [B, P] -> [B, h, w, 2]``,
in the convention of :mod:`stn.layer.sampler`) in ``keras.ops`` and in TF, and its
NumPy point map (``params [n, P], points [n, m, 2] -> [n, m, 2]``) in
:mod:`stn.layer.kind_maps` (with the matrix kinds' 3x3 matrices), then add one
:class:`Kind` to :data:`KINDS`. The layer, the model presets, training,
evaluation (pose alignment through :func:`affine_fit`), the figures and the
benchmarks pick it up from there.

This module imports TensorFlow only when a TF function is first called, so
the registry and the ``keras.ops`` warp (:func:`warp_ops`, :func:`keras_warp`)
work on the JAX and PyTorch backends without TensorFlow installed.
"""

import dataclasses
from typing import Callable

import keras
import numpy as np
from keras import ops

from stn.layer import sampler as S
from stn.layer.kind_maps import (
    affine_from_matrix, affine_matrix, affine_points, attention_from_matrix,
    attention_matrix, attention_points, projective_from_matrix, projective_matrix,
    projective_points, tps_points)


def _tf(name: str) -> Callable:
    """``stn.layer.transform.<name>``, imported (with TensorFlow) on the first call."""
    def call(*args, **kwargs):
        from stn.layer import transform
        return getattr(transform, name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"stn.layer.transform.{name} (TensorFlow, imported on first call)."
    return call


@dataclasses.dataclass(frozen=True)
class Kind:
    """One family of transformations.

    Attributes:
      name: key in :data:`KINDS`.
      size: number of parameters ``P`` (the localization net's output).
      identity: the ``P`` parameters of the identity map.
      grid: ``keras.ops`` grid generator, ``(params [B, P], h, w) -> [B, h, w, 2]``
        (any backend; the reference the TF path is tested against).
      points: NumPy map, ``(params [n, P], points [m, 2] or [n, m, 2])
        -> [n, m, 2]`` float64: the input ``(x, y)`` read by each output
        point (NaN where undefined).
      tf_grid: the same grid in TensorFlow ops (:mod:`stn.layer.transform`).
      tf_sample: optional TF fast path ``(images, params [B, P], out_size) ->
        images`` equal to ``bilinear_sample(images, tf_grid(...))``.
      matrix: for kinds that are 3x3 matrices in homogeneous coordinates,
        ``(params [n, P], namespace) -> [n, 3, 3]`` (``namespace`` is
        ``numpy`` or ``keras.ops``); used by :func:`to_pixels` and :func:`invert`.
      from_matrix: its inverse, ``([n, 3, 3], namespace) -> params [n, P]``.
      description: one line for help texts and the README.
      ndim: spatial dimensions of its inputs: 2 (``[B, H, W, C]``) or 3 (``[B, D, H, W, C]``).
      sample: optional ``keras.ops`` warp ``(images, params, out_size) -> images`` that
        replaces ``grid`` + the bilinear sampler (the 3-D kinds' trilinear one).
      dense: the parameters are a field ``[B, *output, size]`` (the flows), not ``[B, size]``.
    """
    name: str
    size: int
    identity: tuple[float, ...]
    grid: Callable
    points: Callable
    tf_grid: Callable
    tf_sample: Callable | None = None
    matrix: Callable | None = None
    from_matrix: Callable | None = None
    description: str = ""
    ndim: int = 2
    sample: Callable | None = None
    dense: bool = False


def tps_kind(n: int, name: str | None = None) -> Kind:
    """The kind of a thin-plate spline through ``n x n`` control points (``n >= 2``).

    Registered for ``n`` = 4 (``tps``, the paper's), 3 and 5; another is one
    line: ``KINDS["tps6"] = tps_kind(6)``.
    """
    S.tps_size(n * n)  # checks n
    return Kind(name or f"tps{n}", 2 * n * n, tuple(S.tps_targets(n).ravel()), S.tps_grid,
                tps_points(n), _tf("tps_grid"),
                description=f"{2 * n * n} parameters: a thin-plate spline through "
                f"{n * n} control points on a {n}x{n} grid")


KINDS = {
    "affine": Kind("affine", 6, S.IDENTITY, S.affine_grid, affine_points,
                   _tf("affine_grid"), _tf("affine_transform"),
                   affine_matrix, affine_from_matrix,
                   description="6 parameters: rotation, scale, shear, translation"),
    "attention": Kind("attention", 3, S.ATTENTION_IDENTITY, S.attention_grid,
                      attention_points, _tf("attention_grid"), _tf("attention_transform"),
                      attention_matrix, attention_from_matrix,
                      description="3 parameters: isotropic scale and translation "
                      "(the paper's attention)"),
    "projective": Kind("projective", 8, S.PROJECTIVE_IDENTITY, S.projective_grid,
                       projective_points, _tf("projective_grid"), None,
                       projective_matrix, projective_from_matrix,
                       description="8 parameters: a homography (perspective)"),
    "tps": tps_kind(S.TPS_GRID, "tps"),
    "tps3": tps_kind(3),
    "tps5": tps_kind(5),
}


COMPOSABLE_KINDS = ("affine", "projective", "affine3d")
"""The kinds whose maps compose as matrices (:func:`stn.layer.layers.compose`; 3 x 3, or
4 x 4 for ``affine3d``): the ones the layer's ``iterations`` take."""
JITTER_KINDS = ("affine", "projective")
"""The kinds the layer's ``output_jitter`` (a random 2-D affine map) composes with."""


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


# --- matrix kinds: pixel units and inverses -------------------------------------

def _namespace(params):
    """``(xp, inv, params)``: NumPy (float64) for arrays and lists, else keras.ops."""
    if ops.is_tensor(params):
        return ops, ops.inv, params
    return np, np.linalg.inv, np.asarray(params, np.float64)


def _matrix_kind(kind: "str | Kind") -> Kind:
    kind = get_kind(kind)
    if kind.matrix is None:
        matrix_kinds = ", ".join(k.name for k in KINDS.values() if k.matrix is not None)
        raise ValueError(f"kind {kind.name!r} is not a matrix transform; "
                         f"to_pixels and invert take: {matrix_kinds}")
    return kind


def to_pixels(params, kind: "str | Kind", in_size, out_size=None):
    """The kind's map in pixel units: output ``(column, row)`` -> input ``(column, row)``.

    Pixel centres at integers, ``(0, 0)`` the top-left pixel's centre, as in
    OpenCV's ``warpAffine``/``warpPerspective`` with ``WARP_INVERSE_MAP``
    (their ``M`` is the top two rows for an affine). The normalized map of
    :mod:`stn.layer.sampler` composed with the two normalizations:
    ``P_in @ M @ inv(P_out)``, ``P`` taking ``(x, y, 1)`` to pixels.

    Args:
      params: ``[n, P]`` NumPy array or list (computed in float64), or a
        tensor of the Keras backend (computed in ``keras.ops``, its dtype).
      kind: a matrix kind (affine, attention, projective).
      in_size: ``(H, W)`` of the input image.
      out_size: ``(h, w)`` of the output; defaults to ``in_size``.

    Returns:
      ``[n, 3, 3]`` in homogeneous coordinates (last row ``(0, 0, 1)`` for
      affine maps; divide by the third coordinate for projective ones).
    """
    kind = _matrix_kind(kind)
    xp, _, params = _namespace(params)
    out_size = in_size if out_size is None else out_size

    def pixels(height, width):  # (x, y, 1) -> (column, row, 1)
        return np.array([[width / 2, 0, (width - 1) / 2], [0, height / 2, (height - 1) / 2],
                         [0, 0, 1]])

    to_input = pixels(*in_size)
    from_output = np.linalg.inv(pixels(*out_size))
    matrix = kind.matrix(params, xp)  # (n, 3, 3)
    if xp is ops:
        to_input, from_output = (ops.convert_to_tensor(m, matrix.dtype)
                                 for m in (to_input, from_output))
    return xp.einsum("ij,njk,kl->nil", to_input, matrix, from_output)


def invert(params, kind: "str | Kind"):
    """The parameters of the inverse map, in the same kind.

    ``T`` maps output to input coordinates; ``invert`` gives ``T^-1``, the
    warp that undoes it (up to what the first warp cropped).

    Args:
      params: ``[n, P]`` NumPy array or list (float64), or a Keras tensor.
      kind: a matrix kind (affine, attention, projective).

    Returns:
      ``[n, P]``: NumPy float64, or a tensor of the params' dtype. A singular
      map gives inf or NaN; a projective inverse whose last entry is 0 too.
    """
    kind = _matrix_kind(kind)
    xp, inv, params = _namespace(params)
    return kind.from_matrix(inv(kind.matrix(params, xp)), xp)


# --- warping images: TensorFlow ---------------------------------------------------

def warp(images, params, kind: "str | Kind" = "affine", out_size=None):
    """Warps ``images`` by transformations of one kind, in TensorFlow ops.

    Runs in graphs, ``tf.data`` and TF1 sessions whatever the Keras backend.
    Compiled by XLA as ``warp_xla`` (one compilation per kind and size; on
    CPU several times faster than the plain graph, ``make bench``) and
    ``warp_xla_params_grad`` (gradients to ``params`` only: called from a
    step that is not itself compiled, an XLA function's backward pass
    computes the gradient of every input, and for images that need none that
    is a scatter-add as large as the batch). Both are built on first use.

    Args:
      images: float ``[B, H, W, C]``.
      params: ``[B, P]`` (or the kind's matrix shape), output -> input;
        cast to the dtype of ``images``.
      kind: a name in :data:`KINDS` (or a :class:`Kind`).
      out_size: ``(h, w)`` of the output; defaults to ``(H, W)``.

    Returns:
      ``[B, h, w, C]`` of the dtype of ``images``, zero-padded outside.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    return _sample(get_kind(kind), images, tf.cast(params, images.dtype), out_size, tf_ops=True)


def _warp_constant_images(images, params, kind="affine", out_size=None):
    import tensorflow as tf
    return warp(tf.stop_gradient(images), params, kind, out_size)


_XLA = {"warp_xla": warp, "warp_xla_params_grad": _warp_constant_images}


def _xla(name: str):
    """``warp_xla`` or ``warp_xla_params_grad`` (see :func:`warp`), built once."""
    if name not in globals():
        import tensorflow as tf
        globals()[name] = tf.function(_XLA[name], jit_compile=True, reduce_retracing=True,
                                      autograph=False)
    return globals()[name]


def __getattr__(name: str):  # kinds.warp_xla without importing TF with the module
    if name in _XLA:
        return _xla(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- warping images: keras.ops, and the layer's seam ------------------------------

def warp_ops(images, params, kind: "str | Kind" = "affine", out_size=None):
    """:func:`warp` in ``keras.ops``: the kind's grid and :func:`stn.layer.sampler.bilinear_sample`.

    Runs on any Keras backend, differentiable in ``images`` and ``params``.

    Args:
      images: float ``[B, H, W, C]`` tensor of the backend (static ``H, W, C``).
      params: ``[B, P]``, cast to the dtype of ``images``.
      kind: a name in :data:`KINDS` (or a :class:`Kind`).
      out_size: ``(h, w)`` of the output (ints); defaults to ``(H, W)``.

    Returns:
      ``[B, h, w, C]`` of the dtype of ``images``, zero-padded outside.
    """
    images = ops.convert_to_tensor(images)
    return _sample(get_kind(kind), images, ops.cast(params, images.dtype), out_size, tf_ops=False)


def _sample(kind: Kind, images, params, out_size, *, tf_ops: bool):
    """The kind's own sampler, else its grid and the bilinear sampler: TF ops or ``keras.ops``."""
    sample = kind.tf_sample if tf_ops else kind.sample
    if sample is not None:
        return sample(images, params, out_size)
    if tf_ops:
        from stn.layer import transform as T
        height, width = out_size if out_size is not None else T.image_dims(images)[1:3]
        return T.bilinear_sample(images, kind.tf_grid(params, height, width))
    height, width = out_size if out_size is not None else images.shape[1:3]
    return S.bilinear_sample(images, kind.grid(params, int(height), int(width)))


def keras_warp(images, params, kind: "str | Kind" = "affine", out_size=None, *,
               image_gradient: bool = True, jit_compile: bool = True):
    """The layer's warp: the one seam between the TF fast path and ``keras.ops``.

    On the TensorFlow backend, :func:`warp` (XLA-compiled by default: the
    path ``make train`` and the benchmarks time); on every other backend,
    :func:`warp_ops`. ``tests/test_backends.py`` holds the two equal.

    Args:
      images, params, kind, out_size: as for :func:`warp_ops`.
      image_gradient: ``False`` stops the gradient to ``images`` (for a
        transformer on the raw input; on TF the backward pass then skips
        the images' scatter-add).
      jit_compile: TF only: run the sampler as its own XLA cluster, even in
        a step that is not compiled.
    """
    if keras.backend.backend() == "tensorflow" and get_kind(kind).ndim == 3:  # kinds3d
        return get_kind(kind).tf_sample(images, params, out_size, image_gradient, jit_compile)
    if keras.backend.backend() == "tensorflow":
        if jit_compile:
            return _xla("warp_xla" if image_gradient else "warp_xla_params_grad")(
                images, params, kind, out_size)
        if not image_gradient:
            images = ops.stop_gradient(images)
        return warp(images, params, kind, out_size)
    if not image_gradient:
        images = ops.stop_gradient(images)
    return warp_ops(images, params, kind, out_size)


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
    :func:`stn.analysis.pose.pose_alignment` decomposes into a pose.

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
