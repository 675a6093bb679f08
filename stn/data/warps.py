"""Affine warp geometry in NumPy: composing, decomposing, inverting, chaining.

All coordinates are the normalized ones of :mod:`stn.layer.transform` (read its
module docstring first): ``x`` to the right, ``y`` *down*, ``[-1, 1]`` from
edge to edge of the canvas.

**Forward map and stored warp.** A warp moves the canonical (upright,
centred) digit to its place in the warped image by the forward map ::

    F = Translate(tx, ty) . Rotate(rotation) . Shear(shear) . Scale(scale)

applied right to left to canonical coordinates: scale first (about the
canvas centre), then shear, then rotation, then translation. The stored
ground-truth warp is the *sampling* matrix ``A = F^-1`` as ``[2, 3]``, the
same convention as the transformer's theta (output coordinates -> input
coordinates), so that ::

    warped = stn.layer.kinds.warp(canonical, A.reshape(-1, 6), "affine")

(:func:`stn.data.protocols.apply` computes exactly this, XLA-compiled). This
module is pure NumPy, no TensorFlow; the affine warp protocols that sample
the parameters live in :mod:`stn.data.protocols`.

A network that undoes the warp perfectly predicts ``theta = F`` (the output
pixel at ``x`` must read the warped image where the canonical point ``x``
went), and the residual ``chain(A, theta)`` is then the identity.

**The factors**, as 2 x 2 matrices acting on ``(x, y)`` column vectors:

* ``Rotate(a) = [[cos a, -sin a], [sin a, cos a]]``. Because ``y`` points
  down, a *positive* angle turns the digit **clockwise on screen** (the
  point to the right of the centre moves down).
* ``Shear(s) = [[1, -tan s], [0, 1]]``: horizontal shear, ``x`` moves in
  proportion to ``y``. A *positive* angle slants vertical strokes clockwise
  by ``s`` on screen, top to the right, like italic type ("/").
* ``Scale(k) = [[k, 0], [0, k]]``: isotropic; ``k > 1`` enlarges the digit.
* ``Translate(tx, ty)`` moves the digit's centre by ``(tx, ty)`` **pixels**
  of the canvas, ``+x`` right and ``+y`` down. One pixel is ``2 / canvas``
  normalized units, so the ``seed`` protocol's "0.25 of the image size" is
  10 px on its 40 px canvas, 0.5 in normalized units.

**Decomposition of any affine** (:func:`decompose`). The linear part ``L`` of
``F = A^-1`` is factored uniquely (for non-singular ``L``) as ::

    L = Rotate(rotation) . Shear(shear) . diag(sx, sy),   sx > 0

which is the QR decomposition of ``L``: ``rotation`` is the direction in
which ``F`` sends the canonical ``+x`` axis, ``sx`` how much it stretches
that axis. From it: ``scale = sqrt(|sx * sy|)`` (the square root of the area
change), ``aspect = sx / |sy|`` (1 for every protocol warp) and
``reflected = sy < 0`` (never, for protocol warps). ``rotation`` is in
``[-180, 180]`` degrees, ``shear`` in ``(-90, 90)``. So
``decompose(compose(p)) == p`` for protocol parameters, and residual
transforms (warp chained with a learned theta) decompose without hiding
anything: a non-isotropic residual shows in ``aspect``, a flip in
``reflected``.
"""

import numpy as np


def _forward(params: dict, canvas: int) -> np.ndarray:
    """Forward map ``F`` (canonical -> warped) of ``params`` as ``[n, 2, 3]``."""
    rot = np.radians(np.asarray(params["rotation"], np.float64))
    shear = np.tan(np.radians(np.asarray(params["shear"], np.float64)))
    scale = np.asarray(params["scale"], np.float64)
    root_aspect = np.sqrt(np.asarray(params.get("aspect", 1.0), np.float64))
    rot, shear, scale, root_aspect = np.broadcast_arrays(rot, shear, scale, root_aspect)
    sx, sy = scale * root_aspect, scale / root_aspect  # aspect = sx / sy
    cos, sin = np.cos(rot), np.sin(rot)
    # Rotate(rot) @ [[sx, -shear * sy], [0, sy]], written out.
    linear = np.stack([
        np.stack([cos * sx, -(cos * shear + sin) * sy], -1),
        np.stack([sin * sx, (cos - sin * shear) * sy], -1),
    ], -2)  # (n, 2, 2)
    shift = np.stack(np.broadcast_arrays(params["tx"], params["ty"]), -1)
    shift = np.broadcast_to(shift, linear.shape[:-1]) * (2.0 / canvas)  # (n, 2)
    return np.concatenate([linear, shift[..., None]], -1)


def invert(matrices) -> np.ndarray:
    """Inverse affine maps.

    Args:
      matrices: ``[n, 2, 3]`` (or ``[n, 6]``) affine maps.

    Returns:
      float64 ``[n, 2, 3]``: ``M^-1`` for each ``M`` (as 3 x 3 homogeneous);
      inf/nan where ``M`` is singular.
    """
    m = np.asarray(matrices, np.float64).reshape(-1, 2, 3)
    (a, b), (c, d) = m[:, 0, :2].T, m[:, 1, :2].T
    # Adjugate over determinant, not np.linalg.inv: a singular map among
    # many (a degenerate learned theta) gives inf/nan for itself only.
    with np.errstate(divide="ignore", invalid="ignore"):
        linear = np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2)
        linear = linear / (a * d - b * c)[:, None, None]  # (n, 2, 2)
        shift = -np.einsum("nij,nj->ni", linear, m[:, :, 2])
    return np.concatenate([linear, shift[..., None]], -1)


def chain(first, second) -> np.ndarray:
    """Sampling matrix of warping by ``first``, then the result by ``second``.

    ``transform(transform(x, first), second)`` reads ``x`` at
    ``first @ second @ p`` for each output point ``p`` (up to the two
    interpolations), so this is the 3 x 3 product ``first @ second``. With
    ``first`` a ground-truth warp and ``second`` a learned theta it is the
    residual transform, the identity when the network undoes the warp.

    Args:
      first, second: ``[n, 2, 3]`` (or ``[n, 6]``) sampling matrices.

    Returns:
      float64 ``[n, 2, 3]``.
    """
    a = np.asarray(first, np.float64).reshape(-1, 2, 3)
    b = np.asarray(second, np.float64).reshape(-1, 2, 3)
    linear = a[:, :, :2] @ b[:, :, :2]
    shift = np.einsum("nij,nj->ni", a[:, :, :2], b[:, :, 2]) + a[:, :, 2]
    return np.concatenate([linear, shift[..., None]], -1)


def compose(params: dict, canvas: int) -> np.ndarray:
    """Sampling matrices ``A = F^-1`` of the warps described by ``params``.

    Args:
      params: ``rotation``, ``shear`` (degrees), ``scale``, ``tx``, ``ty``
        (pixels), optionally ``aspect`` (default 1), arrays of length ``n``
        (or scalars), as returned by
        :meth:`stn.data.protocols.AffineProtocol.sample_params`.
      canvas: side of the canvas in pixels (converts the translation).

    Returns:
      float64 ``[n, 2, 3]``, output -> input coordinates like theta.
    """
    return invert(_forward(params, canvas))


def decompose(matrices, canvas: int) -> dict[str, np.ndarray]:
    """Parameters of the forward maps of sampling matrices (module docstring).

    Defined for any non-singular affine; a singular one gives inf/nan
    (meaningless values) for itself only.

    Args:
      matrices: ``[n, 2, 3]`` (or ``[n, 6]``) sampling matrices ``A``
        (output -> input, like theta and the stored warps).
      canvas: side of the canvas in pixels (converts the translation).

    Returns:
      float64 ``[n]`` arrays: ``rotation`` (degrees, ``[-180, 180]``),
      ``shear`` (degrees), ``scale``, ``aspect``, ``tx``, ``ty`` (pixels),
      and bool ``reflected``.
    """
    forward = invert(matrices)
    linear = forward[:, :, :2]  # (n, 2, 2)
    with np.errstate(divide="ignore", invalid="ignore"):  # singular -> nan
        rot = np.arctan2(linear[:, 1, 0], linear[:, 0, 0])
        sx = np.hypot(linear[:, 0, 0], linear[:, 1, 0])
        cos, sin = np.cos(rot), np.sin(rot)
        # Upper-triangular factor Rotate(-rot) @ L = [[sx, -tan(shear) sy], [0, sy]].
        upper_01 = cos * linear[:, 0, 1] + sin * linear[:, 1, 1]
        sy = -sin * linear[:, 0, 1] + cos * linear[:, 1, 1]
        return {
            "rotation": np.degrees(rot),
            "shear": np.degrees(np.arctan(-upper_01 / sy)),
            "scale": np.sqrt(np.abs(sx * sy)),
            "aspect": sx / np.abs(sy),
            "tx": forward[:, 0, 2] * (canvas / 2.0),
            "ty": forward[:, 1, 2] * (canvas / 2.0),
            "reflected": sy < 0,
        }
