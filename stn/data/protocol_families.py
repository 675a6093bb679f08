"""Warp protocol families: the :class:`Protocol` interface and its subclasses.

A *family* is a :class:`Protocol` subclass: the kind of its warps (a name in
:data:`stn.layer.kinds.KINDS`), how it draws them (``sample``) and how the warp
curriculum scales them toward the identity (``_scaled_fields``). The
protocols themselves, members of these families with their ranges and
stds, are registered by name in :data:`stn.data.protocols.PROTOCOLS`, which
re-exports every public name here; its docstring gives the parameters'
convention, the table of protocols and our readings of the paper's P and E.

* :class:`AffineProtocol`: named distortions, composed as in
  :mod:`stn.data.warps` (forward map ``Translate . Rotate . Shear . Scale``,
  positive rotation clockwise on screen, translation in pixels of the
  canvas); :meth:`~AffineProtocol.sample` returns the sampling matrices
  ``A = F^-1`` flattened to ``[n, 6]``. Its draws (rotation, shear, scale,
  tx, ty, ``n`` at a time) are those of the versions before the registry,
  so earlier results are reproduced bit for bit.
* :class:`PerspectiveProtocol` (the paper's P): the output square scaled
  about the centre, its :data:`CORNERS` moved by Gaussian noise; the
  ground truth is the :func:`homography` through the 4 point pairs.
* :class:`ElasticProtocol` (the paper's E): a thin-plate spline through the
  control points of :func:`stn.layer.sampler.tps_targets` moved by Gaussian
  noise, optionally after a scale.
* :class:`ClutteredProtocol` (the paper's TC): an affine protocol (a
  translation) whose images also carry pieces of other digits; a protocol
  says what clutter it draws with :meth:`Protocol.clutter_record` (None
  for all the others).
"""

import dataclasses
from typing import ClassVar

import numpy as np

from stn.layer import sampler
from stn.data import clutter, warps


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A warp protocol (:mod:`stn.data.protocols`). Subclasses set ``kind`` and ``sample``.

    Attributes:
      name: key in :data:`stn.data.protocols.PROTOCOLS`.
      canvas: side of the square image in pixels.
      description: one line for help texts and figures.
      kind: (class attribute) a name in :data:`stn.layer.kinds.KINDS`.
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

    def clutter_record(self, n: int, n_sources: int, rng: np.random.Generator,
                       own: np.ndarray | None = None) -> np.ndarray | None:
        """The clutter of ``n`` images (:class:`ClutteredProtocol`); None: no clutter.

        Args:
          n: number of images.
          n_sources: number of digits the pieces may be cut from (the split's).
          rng: NumPy generator (advanced only by protocols with clutter).
          own: int ``[n]``, each image's own digit among the sources, never
            cut for its own clutter (None: no such exclusion).
        """
        return None

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
          :func:`stn.data.warps.compose`.
        """
        return {
            "rotation": rng.uniform(*self.rotation, size=n),
            "shear": rng.uniform(*self.shear, size=n),
            "scale": rng.uniform(*self.scale, size=n),
            "tx": rng.uniform(*self.translation, size=n),
            "ty": rng.uniform(*self.translation, size=n),
        }

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """float64 ``[n, 6]``: sampling matrices ``A = F^-1`` (:mod:`stn.data.warps`), row-major."""
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
          An :class:`AffineProtocol` named like ``"predecessor/rotation"``, same canvas.
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
    """Scale down about the centre, then move the corners (paper's P; :mod:`stn.data.protocols`).

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
        """float64 ``[n, 32]``: (the 4 x 4 grid :func:`stn.layer.sampler.tps_targets` + noise) / s.

        The output control point ``t_k`` reads the scaled digit at ``t_k +
        noise_k``, which shows the digit at ``(t_k + noise_k) / s``. Draws the
        ``[n, 16, 2]`` noise, then ``s`` (so ``e``'s warps, with ``s = 1``, are
        those of before ``scale`` existed).
        """
        targets = sampler.tps_targets()  # (16, 2)
        noise = rng.normal(0.0, self.control_std * self.px, size=(n, *targets.shape))
        s = rng.uniform(*self.scale, size=n)
        return ((targets + noise) / s[:, None, None]).reshape(n, -1)

    def _scaled_fields(self, strength: float) -> dict:
        return {"control_std": self.control_std * strength,
                "scale": _toward_one(self.scale, strength)}


# --- the paper's TC: a translated digit among clutter ---------------------------

@dataclasses.dataclass(frozen=True)
class ClutteredProtocol(AffineProtocol):
    """An :class:`AffineProtocol` whose images also carry pieces of other digits.

    The warp (the ground truth, kind ``"affine"``) places the digit; then
    ``pieces`` square crops of ``piece_size`` px, cut from other digits of
    the same split, are pasted at uniform random places of the canvas
    (:func:`stn.clutter.draw_clutter`, :func:`stn.clutter.paste_clutter`).

    Attributes:
      pieces: number of clutter pieces per image.
      piece_size: side of each piece in pixels.
    """
    pieces: int = 0
    piece_size: int = 0

    def clutter_record(self, n: int, n_sources: int, rng: np.random.Generator,
                       own: np.ndarray | None = None) -> np.ndarray:
        """int32 ``[n, pieces, 5]``: :func:`stn.clutter.draw_clutter` of this protocol."""
        return clutter.draw_clutter(n, n_sources, self.pieces, self.piece_size, self.canvas, rng, own)

    def paste(self, images, sources, record):
        """:func:`stn.clutter.paste_clutter` with this protocol's piece size."""
        return clutter.paste_clutter(images, sources, record, self.piece_size)
