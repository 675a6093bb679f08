"""The geometry of the warp protocols: sampling, composing and decomposing warps.

All coordinates are the normalized ones of :mod:`stn.transform` (read its
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

    warped = stn.transform.transform(canonical, A)

(:func:`warp_images` computes exactly this, XLA-compiled: equal to the eager
sampler to float32 rounding, ~1e-5).

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

**Protocols** (:data:`PROTOCOLS`), all parameters drawn independently and
uniformly from the closed ranges:

* ``seed`` (default): rotation +-30 deg, shear +-20 deg, translation +-10 px
  in x and y independently (0.25 of the 40 px canvas), scale 0.8 to 1.2.
* ``rts`` (paper Sec. 4.1, "RTS"): rotation +-45 deg, scale 0.7 to 1.2, no
  shear, on a 42 x 42 canvas; the digit is placed at a random position by a
  translation of +-7 px in x and y: exactly the range that keeps the
  unscaled 28 x 28 digit box inside the canvas (42 - 28 = 14 = 2 x 7).
* ``r`` (paper, "R"): rotation +-90 deg only, 40 px canvas.
* ``none``: padding only; every warp is the identity.

With the largest scale, shift and rotation combined, the ink of a large
digit can touch the canvas edge and lose a few pixels: that is part of the
protocol (the sampler's zero padding fills in the background).
"""

import dataclasses

import numpy as np

from stn import transform

DISTORTIONS = ("rotation", "shear", "translation", "scale")
"""The four distortions of a protocol, in the names of :class:`Protocol`."""

_NEUTRAL = {"rotation": (0.0, 0.0), "shear": (0.0, 0.0),
            "translation": (0.0, 0.0), "scale": (1.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Ranges ``(low, high)`` of the uniform distributions of a warp protocol.

    Attributes:
      name: key in :data:`PROTOCOLS`.
      canvas: side of the square image in pixels; the 28 x 28 digit is
        zero-padded to it, centred.
      rotation: degrees, positive is clockwise on screen.
      shear: degrees, positive slants vertical strokes like italics.
      translation: pixels of the canvas, for x and y independently.
      scale: isotropic scale factor, > 1 enlarges.
    """
    name: str
    canvas: int
    rotation: tuple[float, float] = (0.0, 0.0)
    shear: tuple[float, float] = (0.0, 0.0)
    translation: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)


PROTOCOLS = {
    "seed": Protocol("seed", 40, rotation=(-30.0, 30.0), shear=(-20.0, 20.0),
                     translation=(-10.0, 10.0), scale=(0.8, 1.2)),
    "rts": Protocol("rts", 42, rotation=(-45.0, 45.0),
                    translation=(-7.0, 7.0), scale=(0.7, 1.2)),
    "r": Protocol("r", 40, rotation=(-90.0, 90.0)),
    "none": Protocol("none", 40),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    """Looks up a protocol by name (a :class:`Protocol` passes through).

    Raises:
      ValueError: unknown name; the message lists the valid ones.
    """
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown warp protocol {protocol!r}; "
                         f"choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def single_distortion(protocol: str | Protocol, distortion: str) -> Protocol:
    """The protocol with every distortion but ``distortion`` switched off.

    Args:
      protocol: name or :class:`Protocol`.
      distortion: one of :data:`DISTORTIONS`.

    Returns:
      A :class:`Protocol` named like ``"seed/rotation"``, same canvas.
    """
    protocol = get_protocol(protocol)
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; choose one of {DISTORTIONS}")
    neutral = {k: v for k, v in _NEUTRAL.items() if k != distortion}
    return dataclasses.replace(protocol, name=f"{protocol.name}/{distortion}", **neutral)


def sample_params(protocol: str | Protocol, n: int,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws ``n`` warps' parameters, uniform and independent.

    The draws are made in a fixed order (rotation, shear, scale, tx, ty), ``n``
    at a time, so the result is a pure function of the generator's state.

    Args:
      protocol: name or :class:`Protocol`.
      n: number of warps.
      rng: NumPy generator (advanced by the call).

    Returns:
      float64 ``[n]`` arrays ``rotation`` and ``shear`` (degrees), ``scale``,
      ``tx`` and ``ty`` (pixels of the canvas).
    """
    protocol = get_protocol(protocol)
    return {
        "rotation": rng.uniform(*protocol.rotation, size=n),
        "shear": rng.uniform(*protocol.shear, size=n),
        "scale": rng.uniform(*protocol.scale, size=n),
        "tx": rng.uniform(*protocol.translation, size=n),
        "ty": rng.uniform(*protocol.translation, size=n),
    }


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
        (or scalars), as returned by :func:`sample_params`.
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


def warp_images(canonical, warps, chunk_size: int = 1024) -> np.ndarray:
    """Applies the warps: ``transform(canonical, warps)`` in chunks, XLA-compiled.

    Args:
      canonical: float32 ``[N, S, S, C]`` canonical (padded) images.
      warps: ``[N, 2, 3]`` (or ``[N, 6]``) sampling matrices; cast to float32.
      chunk_size: images per call of the sampler (bounds the memory of its
        ``[chunk, S, S, 4, C]`` gather).

    Returns:
      float32 ``[N, S, S, C]`` NumPy array.
    """
    canonical = np.asarray(canonical, np.float32)
    warps = np.asarray(warps, np.float32).reshape(-1, 2, 3)
    if len(canonical) != len(warps):
        raise ValueError(f"{len(canonical)} images but {len(warps)} warps")
    out = np.empty_like(canonical)
    for start in range(0, len(canonical), chunk_size):
        part = slice(start, start + chunk_size)
        # XLA: all 70,000 digits in well under a second on CPU.
        out[part] = transform.transform_xla(canonical[part], warps[part]).numpy()
    return out
