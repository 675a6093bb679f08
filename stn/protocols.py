"""Warp protocols: how each experiment's warped MNIST is made, one registry.

A protocol (an entry of :data:`PROTOCOLS`, chosen by ``--protocol``) is

* ``name``: its key;
* ``canvas``: side ``S`` of the square images in pixels (the 28 x 28 digit
  is zero-padded to it, centred: :func:`stn.data.pad`);
* ``kind``: a name in :data:`stn.kinds.KINDS`, the family of its warps;
* ``sample(n, rng)``: float64 ``[n, P]`` ground-truth parameters of that
  kind, a pure function of the NumPy generator's state;
* ``description``: one line for help texts and figures.

The parameters are *sampling* parameters, like the transformer's theta:
output -> input coordinates in the convention of :mod:`stn.transform` (read
its module docstring first; ``[-1, 1]`` spans the canvas edge to edge, ``y``
down), so ::

    warped = stn.kinds.warp(canonical, params, protocol.kind)

and :func:`apply` computes exactly that, XLA-compiled. It is the one place
where warped digits are made: the fixed splits of :mod:`stn.data` (NumPy
arrays, in chunks) and its per-epoch resampler (tensors inside tf.data).

================ ====== =========== ================================================
protocol         canvas kind        warps (all draws independent)
================ ====== =========== ================================================
``seed``         40     affine      rotation +-30 deg, shear +-20 deg, translation
                                    +-10 px in x and y, scale 0.8 to 1.2; uniform
``r``            28     affine      rotation +-90 deg, uniform
``rts``          42     affine      rotation +-45 deg, scale 0.7 to 1.2,
                                    translation +-7 px in x and y; uniform
``p``            28     projective  scale 0.75 to 1 (uniform), then the 4 corners
                                    moved by Gaussian noise, std 5 px in x and y
``e``            28     tps         the 16 control points of a 4 x 4 grid moved
                                    by Gaussian noise, std 1.5 px in x and y
``e-scale``      28     tps         scale 0.75 to 1 (uniform), then ``e``
``none``         40     affine      the identity (padding only)
``none-28``      28     affine      the identity on MNIST's own canvas (the floor)
``p-s<X>``       28     projective  the 4 corners moved by Gaussian noise, std X
                                    px (severity family; X in :data:`SEVERITIES`)
``p-s<X>-scale`` 28     projective  scale 0.75 to 1, then ``p-s<X>``
``e-s<X>``       28     tps         ``e`` with control-point std X px
``e-s<X>-scale`` 28     tps         scale 0.75 to 1, then ``e-s<X>``
``p-cal``        28     projective  P calibrated: ``p-s<X>[-scale]`` at the
                                    :data:`CALIBRATED` setting (draws identical)
``e-cal``        28     tps         E calibrated, likewise
================ ====== =========== ================================================

**The affine protocols** (:class:`AffineProtocol`) are described by named
distortions, composed as in :mod:`stn.warps` (forward map
``Translate . Rotate . Shear . Scale``, positive rotation clockwise on
screen, translation in pixels of the canvas); :meth:`~AffineProtocol.sample`
returns the sampling matrices ``A = F^-1`` flattened to ``[n, 6]``. ``seed``
is the predecessor's protocol, on its 40 px canvas; ``none`` pads only. Their
draws (rotation, shear, scale, tx, ty, ``n`` at a time) are those of the
versions before this registry, so earlier results are reproduced bit for bit.

**The paper's Table 1** (Jaderberg et al. 2015, Sec. 4.1 and appendix A.4):

* ``r`` (R): rotation uniform in +-90 degrees, on MNIST's own 28 x 28 canvas
  (40 px before this registry; its draws are unchanged).
* ``rts`` (RTS): rotation +-45 degrees and scale 0.7 to 1.2, the digit placed
  at a random position of a 42 x 42 canvas. *Our reading*: a translation of
  +-7 px in x and y, exactly the range that keeps the unscaled 28 x 28 digit
  box inside the canvas (42 - 28 = 14 = 2 x 7).
* ``p`` (P), *our reading* of the paper's random scaling (0.75 to 1) and
  random moves of the four corners (Gaussian, std 5 px) on 28 x 28: draw
  ``s ~ U[0.75, 1]`` and noise ``n_i ~ N(0, 5 px)`` for the four image corners
  ``c_i = (+-1, +-1)`` (the outer edges of the canvas); the ground truth is
  the homography that maps the output corners ``s * c_i + n_i`` to the input
  corners ``c_i`` (:func:`homography`, an 8 x 8 linear system per warp):
  the canonical canvas is scaled down by ``s`` about the centre, then each
  of its corners is moved by its noise, in the warped image's frame, as the
  paper's wording (scale, then move the corners) reads.
* ``e`` (E, "elastic"), *our reading* of the paper's random thin-plate
  spline: the 16 control points of :func:`stn.transform.tps_targets` (a
  4 x 4 grid spanning the canvas edge to edge), each moved by Gaussian noise of
  std 1.5 px in x and y (``1.5 * 2 / 28`` normalized); the ground truth is
  the displaced control points (the input position each grid point reads).
* ``e-scale``: ``e`` after P's scale of 0.75 to 1, a stricter reading of E
  (that the appendix scales E's digits as it does P's is our recollection,
  not checked here); the ground truth ``(t_k + n_k) / s``. Not a column of
  the table: a variant to measure how much the reading matters.

**Severity families** (:func:`severity_protocol`, issue 25): the paper's FCN
error says our literal P is harsher and our E milder than the paper's, so
both are swept over the noise's std, with and without P's scale of 0.75 to
1 first. ``p-s<std>`` moves the corners by ``N(0, std px)``; ``e-s<std>``
the control points; ``-scale`` scales first, as ``p`` and ``e-scale`` do.
The stds of :data:`SEVERITIES` are registered (``p-s1`` ... ``p-s5-scale``,
``e-s1.5`` ... ``e-s4-scale``); each is a :class:`PerspectiveProtocol` or
:class:`ElasticProtocol` with the literal readings' draws, so ``p-s5-scale``
draws exactly the warps of ``p``, ``e-s1.5`` those of ``e`` and
``e-s1.5-scale`` those of ``e-scale``. ``experiments/calibrate_pe.py``
picks the calibrated reading among them (the FCN's validation error nearest
the paper's FCN error); :data:`CALIBRATED` records its choice, registered
as ``p-cal`` and ``e-cal``, the P and E columns of Table 1.

Near its largest scale and shift a warp can push a few pixels of a large
digit off the canvas: that is part of the protocol (the sampler's zero
padding fills in the background).

**A warp curriculum** (``--warp-ramp-epochs``, :func:`stn.data.warp_strength`)
trains on :meth:`Protocol.scaled` versions of a protocol: every distortion
moved toward the identity by a strength in [0, 1], with the same draws.

**Adding a protocol**: one entry in :data:`PROTOCOLS`; a new *family* of
warps is a :class:`Protocol` subclass defining ``kind``, ``sample`` and
``_scaled_fields``.
Data, configs, ``train.py --protocol`` and the augmentation figure pick it
up from there.
"""

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow as tf

from stn import kinds, transform, warps


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A warp protocol (module docstring). Subclasses set ``kind`` and ``sample``.

    Attributes:
      name: key in :data:`PROTOCOLS`.
      canvas: side of the square image in pixels.
      description: one line for help texts and figures.
      kind: (class attribute) a name in :data:`stn.kinds.KINDS`.
    """
    name: str
    canvas: int
    description: str = ""
    kind: ClassVar[str] = ""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws ``n`` ground-truth warps.

        Args:
          n: number of warps.
          rng: NumPy generator, the only source of randomness (advanced).

        Returns:
          float64 ``[n, P]`` sampling parameters of :attr:`kind`.
        """
        raise NotImplementedError

    def scaled(self, strength: float) -> "Protocol":
        """The protocol with every distortion scaled by ``strength`` toward the identity.

        ``strength`` 1 is the protocol itself, 0 its identity warps; in
        between, each range or std is scaled linearly (a scale range ``s``
        becomes ``1 + strength * (s - 1)``). It makes the same draws from
        the generator, so warps of different strengths pair up one to one.
        Used by the warp curriculum (``Config.warp_ramp_epochs``).

        Raises:
          ValueError: ``strength`` outside [0, 1].
        """
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"warp strength must be in [0, 1], got {strength}")
        if strength == 1.0:
            return self
        return dataclasses.replace(self, name=f"{self.name}@{strength:g}",
                                   **self._scaled_fields(strength))

    def _scaled_fields(self, strength: float) -> dict:
        """The fields of :meth:`scaled` (subclasses)."""
        raise NotImplementedError

    @property
    def px(self) -> float:
        """One pixel of the canvas in normalized units, ``2 / canvas``."""
        return 2.0 / self.canvas


# --- affine protocols: named distortions ----------------------------------------

def _times(interval: tuple[float, float], strength: float) -> tuple[float, float]:
    return (interval[0] * strength, interval[1] * strength)


def _toward_one(interval: tuple[float, float], strength: float) -> tuple[float, float]:
    return tuple(1.0 + strength * (x - 1.0) for x in interval)


DISTORTIONS = ("rotation", "shear", "translation", "scale")
"""The named distortions of an :class:`AffineProtocol`."""

_NEUTRAL = {"rotation": (0.0, 0.0), "shear": (0.0, 0.0),
            "translation": (0.0, 0.0), "scale": (1.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class AffineProtocol(Protocol):
    """Ranges ``(low, high)`` of uniform distributions of affine distortions.

    Attributes:
      rotation: degrees, positive is clockwise on screen.
      shear: degrees, positive slants vertical strokes like italics.
      translation: pixels of the canvas, for x and y independently.
      scale: isotropic scale factor, > 1 enlarges.
    """
    rotation: tuple[float, float] = (0.0, 0.0)
    shear: tuple[float, float] = (0.0, 0.0)
    translation: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    kind: ClassVar[str] = "affine"

    def sample_params(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draws ``n`` warps' named parameters, uniform and independent.

        The draws are made in a fixed order (rotation, shear, scale, tx, ty),
        ``n`` at a time, so the result is a pure function of the generator's
        state.

        Returns:
          float64 ``[n]`` arrays ``rotation`` and ``shear`` (degrees),
          ``scale``, ``tx`` and ``ty`` (pixels of the canvas), the input of
          :func:`stn.warps.compose`.
        """
        return {
            "rotation": rng.uniform(*self.rotation, size=n),
            "shear": rng.uniform(*self.shear, size=n),
            "scale": rng.uniform(*self.scale, size=n),
            "tx": rng.uniform(*self.translation, size=n),
            "ty": rng.uniform(*self.translation, size=n),
        }

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """float64 ``[n, 6]``: sampling matrices ``A = F^-1`` (:mod:`stn.warps`), row-major."""
        return warps.compose(self.sample_params(n, rng), self.canvas).reshape(n, 6)

    def _scaled_fields(self, strength: float) -> dict:
        return {"rotation": _times(self.rotation, strength), "shear": _times(self.shear, strength),
                "translation": _times(self.translation, strength),
                "scale": _toward_one(self.scale, strength)}

    def single_distortion(self, distortion: str) -> "AffineProtocol":
        """The protocol with every distortion but ``distortion`` switched off.

        Args:
          distortion: one of :data:`DISTORTIONS`.

        Returns:
          An :class:`AffineProtocol` named like ``"seed/rotation"``, same canvas.
        """
        if distortion not in DISTORTIONS:
            raise ValueError(f"unknown distortion {distortion!r}; choose one of {DISTORTIONS}")
        neutral = {k: v for k, v in _NEUTRAL.items() if k != distortion}
        return dataclasses.replace(self, name=f"{self.name}/{distortion}", **neutral)


# --- the paper's P and E --------------------------------------------------------

CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
"""``[4, 2]``: the image's corners (outer edges), clockwise on screen from top left."""


def homography(outputs, inputs) -> np.ndarray:
    """Projective maps through 4 point pairs, sending ``outputs`` to ``inputs``.

    Solves, per warp, the 8 x 8 linear system ``u (h6 x + h7 y + 1) = h0 x +
    h1 y + h2``, ``v (h6 x + h7 y + 1) = h3 x + h4 y + h5`` for the four
    pairs ``(x, y) -> (u, v)``.

    Args:
      outputs: ``[n, 4, 2]`` (or ``[4, 2]``) output points, no three on a line.
      inputs: ``[n, 4, 2]`` input points they read.

    Returns:
      float64 ``[n, 8]`` (``[8]`` for one set of points): the first 8 entries
      of the 3 x 3 matrix (last entry 1), the parameters of kind
      ``"projective"``.
    """
    outputs, inputs = np.broadcast_arrays(np.asarray(outputs, np.float64),
                                          np.asarray(inputs, np.float64))
    x, y = outputs[..., 0], outputs[..., 1]  # (n, 4) each
    u, v = inputs[..., 0], inputs[..., 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows_u = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)  # (n, 4, 8)
    rows_v = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    system = np.concatenate([rows_u, rows_v], axis=-2)  # (n, 8, 8)
    rhs = np.concatenate([u, v], axis=-1)  # (n, 8)
    return np.linalg.solve(system, rhs[..., None])[..., 0]


@dataclasses.dataclass(frozen=True)
class PerspectiveProtocol(Protocol):
    """Scale down about the centre, then move the corners (paper's P; module docstring).

    Attributes:
      scale: ``(low, high)`` of the uniform scale ``s`` of the output square.
      corner_std: std of the corners' Gaussian noise, pixels, x and y each.
    """
    scale: tuple[float, float] = (1.0, 1.0)
    corner_std: float = 0.0
    kind: ClassVar[str] = "projective"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """float64 ``[n, 8]``: homographies from ``s * CORNERS + noise`` to ``CORNERS``.

        Draws ``s`` for the ``n`` warps, then the ``[n, 4, 2]`` noise.
        """
        s = rng.uniform(*self.scale, size=n)
        noise = rng.normal(0.0, self.corner_std * self.px, size=(n, 4, 2))
        return homography(s[:, None, None] * CORNERS + noise, CORNERS)

    def _scaled_fields(self, strength: float) -> dict:
        return {"scale": _toward_one(self.scale, strength),
                "corner_std": self.corner_std * strength}


@dataclasses.dataclass(frozen=True)
class ElasticProtocol(Protocol):
    """Thin-plate spline through randomly moved control points (paper's E).

    Attributes:
      control_std: std of each control point's Gaussian noise, pixels, x and y.
      scale: ``(low, high)`` of a uniform scale ``s`` of the digit about the
        centre, applied before the spline (``e-scale``; ``e`` has none).
    """
    control_std: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    kind: ClassVar[str] = "tps"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """float64 ``[n, 32]``: (the 4 x 4 grid :func:`stn.transform.tps_targets` + noise) / s.

        The output control point ``t_k`` reads the scaled digit at ``t_k +
        noise_k``, which shows the digit at ``(t_k + noise_k) / s``. Draws the
        ``[n, 16, 2]`` noise, then ``s`` (so ``e``'s warps, with ``s = 1``, are
        those of before ``scale`` existed).
        """
        targets = transform.tps_targets()  # (16, 2)
        noise = rng.normal(0.0, self.control_std * self.px, size=(n, *targets.shape))
        s = rng.uniform(*self.scale, size=n)
        return ((targets + noise) / s[:, None, None]).reshape(n, -1)

    def _scaled_fields(self, strength: float) -> dict:
        return {"control_std": self.control_std * strength,
                "scale": _toward_one(self.scale, strength)}


# --- severity families: P and E at a chosen std ---------------------------------

READING_SCALE = (0.75, 1.0)
"""P's scale of the digit (uniform), which the ``-scale`` variants apply first."""

SEVERITIES = {"p": (1.0, 2.0, 3.0, 4.0, 5.0), "e": (1.5, 2.0, 2.5, 3.0, 4.0)}
"""Per family, the stds (px) registered by name: the calibration sweep's grid."""


def severity_name(family: str, std: float, scale: bool) -> str:
    """``"<family>-s<std>[-scale]"``, e.g. ``"p-s3"``, ``"e-s2.5-scale"``."""
    return f"{family}-s{std:g}" + ("-scale" if scale else "")


def severity_protocol(family: str, std: float, scale: bool) -> Protocol:
    """P (``family="p"``) or E (``"e"``) with noise of ``std`` px, scaled first or not.

    Args:
      family: ``"p"``: the 4 corners moved (:class:`PerspectiveProtocol`);
        ``"e"``: the 16 control points moved (:class:`ElasticProtocol`).
      std: std of the Gaussian noise, pixels of the 28 px canvas, x and y each.
      scale: apply :data:`READING_SCALE` first (as ``p`` and ``e-scale`` do).

    Returns:
      The protocol named :func:`severity_name`, on MNIST's 28 px canvas.
    """
    name, s = severity_name(family, std, scale), READING_SCALE if scale else (1.0, 1.0)
    first = "scale 0.75-1, then " if scale else ""
    if family == "p":
        return PerspectiveProtocol(name, 28, f"P at {std:g} px: {first}corners moved by "
                                   f"N(0, {std:g} px)", scale=s, corner_std=std)
    if family == "e":
        return ElasticProtocol(name, 28, f"E at {std:g} px: {first}4x4 control points moved "
                               f"by N(0, {std:g} px)", control_std=std, scale=s)
    raise ValueError(f"unknown severity family {family!r}; choose 'p' or 'e'")


CALIBRATED = {"p": (4.0, False), "e": (2.0, False)}
"""Per family, ``(std, scale)`` chosen by ``python -m experiments.calibrate_pe``
(``results/calibration.json``, ``"chosen"``)."""


def calibrated_protocol(family: str) -> Protocol:
    """The family's :data:`CALIBRATED` member, renamed ``<family>-cal`` (same draws)."""
    std, scale = CALIBRATED[family]
    member = severity_protocol(family, std, scale)
    return dataclasses.replace(member, name=f"{family}-cal", description=(
        f"paper's {family.upper()}, calibrated (FCN ruler, = {member.name}): "
        + member.description.split(": ", 1)[1]))


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    AffineProtocol("seed", 40, "the predecessor's: rotation +-30 deg, shear +-20 deg, "
                   "shift +-10 px, scale 0.8-1.2", rotation=(-30.0, 30.0),
                   shear=(-20.0, 20.0), translation=(-10.0, 10.0), scale=(0.8, 1.2)),
    AffineProtocol("r", 28, "paper's R: rotation +-90 deg", rotation=(-90.0, 90.0)),
    AffineProtocol("rts", 42, "paper's RTS: rotation +-45 deg, scale 0.7-1.2, "
                   "shift +-7 px on 42 px", rotation=(-45.0, 45.0),
                   translation=(-7.0, 7.0), scale=(0.7, 1.2)),
    PerspectiveProtocol("p", 28, "paper's P: scale 0.75-1, corners moved by N(0, 5 px)",
                        scale=(0.75, 1.0), corner_std=5.0),
    ElasticProtocol("e", 28, "paper's E: thin-plate spline, 4x4 control points "
                    "moved by N(0, 1.5 px)", control_std=1.5),
    ElasticProtocol("e-scale", 28, "E after P's scale: scale 0.75-1, then 4x4 control "
                    "points moved by N(0, 1.5 px)", control_std=1.5, scale=(0.75, 1.0)),
    AffineProtocol("none", 40, "padding only: the identity"),
    # What a perfect transformer hands the R, P, E (and RTS) classifiers:
    # MNIST's own digits on its own canvas (issue 26, the floor).
    AffineProtocol("none-28", 28, "the identity on MNIST's own 28 x 28 canvas"),
    *(severity_protocol(family, std, scale) for family, stds in SEVERITIES.items()
      for scale in (False, True) for std in stds),
    *(calibrated_protocol(family) for family in CALIBRATED),
)}
"""Every warp protocol by name: the one home of the protocols."""


def get_protocol(protocol: "str | Protocol") -> Protocol:
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


# --- warping --------------------------------------------------------------------

def apply(protocol: "str | Protocol", canonical, params, chunk_size: int = 1024):
    """Warps padded canonical images by ground-truth parameters of the protocol.

    ``kinds.warp_xla(canonical, params, protocol.kind)``: equal to the eager
    :func:`stn.kinds.warp` to float32 rounding (~1e-5). The fixed splits and
    the per-epoch resampler of :mod:`stn.data` both warp through here.

    Affine warps give bit-identical images whatever the batch; projective
    and TPS ones differ by float32 rounding (~2e-6) between batch shapes,
    e.g. between a split's fixed images (NumPy path) and the same warps
    applied in training batches (tensor path).

    Args:
      protocol: name or :class:`Protocol` (gives the kind and the canvas).
      canonical: float32 ``[N, S, S, C]`` padded unwarped images, ``S`` the
        protocol's canvas: a NumPy array (warped in chunks of exactly
        ``chunk_size``, the last one padded, so that an image's warp does
        not depend on ``N``) or a TF tensor (one call on the batch as given,
        e.g. inside a tf.data pipeline).
      params: ``[N, P]`` parameters of the protocol's kind (any shape that
        reshapes to it), as from :meth:`Protocol.sample`; cast to the
        images' dtype.
      chunk_size: for NumPy input, images per sampler call (bounds the
        memory of its ``[chunk, S, S, 4, C]`` gather).

    Returns:
      float32 ``[N, S, S, C]``: a NumPy array for NumPy input, a tensor for
      tensor input.
    """
    protocol = get_protocol(protocol)
    size = kinds.get_kind(protocol.kind).size
    if tuple(canonical.shape[1:3]) != (protocol.canvas, protocol.canvas):
        raise ValueError(f"images are {canonical.shape[1]}x{canonical.shape[2]} px but the "
                         f"{protocol.name!r} canvas is {protocol.canvas} px")
    if tf.is_tensor(canonical):
        params = tf.reshape(tf.cast(params, canonical.dtype), [-1, size])
        return kinds.warp_xla(canonical, params, protocol.kind)
    canonical = np.asarray(canonical, np.float32)
    params = np.asarray(params, np.float32).reshape(-1, size)
    if len(canonical) != len(params):
        raise ValueError(f"{len(canonical)} images but {len(params)} warps")
    out = np.empty_like(canonical)
    for start in range(0, len(canonical), chunk_size):
        images, part = canonical[start:start + chunk_size], params[start:start + chunk_size]
        n = len(images)
        # Every call warps a full chunk, the last one padded: under XLA the
        # projective and TPS grids' float rounding (~2e-6) depends on the
        # batch shape, so a fixed shape keeps each image's warp a function of
        # the image and its parameters alone, whatever N (max_train_examples
        # only drops images). XLA: all 70,000 digits in under a second on CPU.
        images = np.concatenate([images, np.zeros((chunk_size - n, *images.shape[1:]),
                                                  np.float32)])
        part = np.concatenate([part, kinds.identity(protocol.kind, chunk_size - n)], 0)
        warped = kinds.warp_xla(images, part.astype(np.float32), protocol.kind)
        out[start:start + n] = warped.numpy()[:n]
    return out
