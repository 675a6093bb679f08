"""3-D MNIST (paper, appendix A.3): each digit extruded into a 60^3 volume at a random pose.

The paper extrudes MNIST digits into 3-D and places them at a random 3-D
position and orientation in a 60x60x60 volume; it does not give the
thickness or the ranges. Ours, chosen before any run:

* **Thickness: 4 voxels.** The 28x28 digit (intensities / 255, one voxel
  per pixel) is repeated over 4 depth slices: about the width of an MNIST
  stroke (2-4 px), so the object is a plate 7 times wider than thick. A
  thinner plate seen at a slant would paint broken strokes into a depth
  projection; a thicker one would smear every tilted digit.
* **Rotation** ``R = Rz(gamma) Ry(beta) Rx(alpha)`` about the digit's centre:
  in-plane ``gamma ~ U(-90, 90)`` degrees (the R protocol's range, which
  keeps 6 and 9 apart), tilts ``alpha, beta ~ U(-60, 60)`` degrees each about
  the two in-plane axes. A tilt of 60 deg halves the digit's extent in the
  depth projection and smears its strokes by the plate's slant: still
  there, hard to read, which is what a transformer can undo (it can tilt
  the plate back to face the projection axis).
* **Translation** of the centre ``~ U(-10, 10)`` voxels per axis: the plate's
  bounding sphere has radius ``sqrt(14^2 + 14^2 + 2^2) = 19.9`` voxels, so
  any pose stays inside the 60^3 canvas (30 - 10 = 20).

Rendering is one :mod:`stn.layer.sampler3d` warp (trilinear, zero outside) of
the extruded plate ``[B, 4, 28, 28, 1]``: the canvas voxel at ``q``
(voxels from the centre) reads the plate at ``R^T (q - t)``. A pose is that
map, 12 numbers (:func:`pose_params`), so a split stores poses, not
volumes, and renders them batch by batch. The splits follow
:mod:`stn.data`: validation is the first 5000 training digits, the poses of
each split are drawn for the whole split from ``(seed, split name)`` and
then truncated, so the test split is a pure function of the seed.
MNIST comes through :mod:`stn.data.mnist`.
"""

import dataclasses
import zlib

import numpy as np

CANVAS = 60
THICKNESS = 4
DIGIT = 28
TILT_DEG = 60.0
IN_PLANE_DEG = 90.0
SHIFT_VOXELS = 10.0
VALIDATION_SIZE = 5000


@dataclasses.dataclass(frozen=True)
class VolumeSplit:
    """Digits uint8 ``[N, 28, 28]``, labels int32 ``[N]``, poses float32 ``[N, 12]``."""
    digits: np.ndarray
    labels: np.ndarray
    poses: np.ndarray


def rotation(alpha, beta, gamma) -> np.ndarray:
    """float64 ``[n, 3, 3]``: ``Rz(gamma) Ry(beta) Rx(alpha)`` (radians) acting on ``(x, y, z)``."""
    a, b, g = (np.asarray(v, np.float64) for v in (alpha, beta, gamma))
    one, zero = np.ones_like(a), np.zeros_like(a)
    rx = np.stack([one, zero, zero, zero, np.cos(a), -np.sin(a), zero, np.sin(a), np.cos(a)], -1)
    ry = np.stack([np.cos(b), zero, np.sin(b), zero, one, zero, -np.sin(b), zero, np.cos(b)], -1)
    rz = np.stack([np.cos(g), -np.sin(g), zero, np.sin(g), np.cos(g), zero, zero, zero, one], -1)
    rx, ry, rz = (m.reshape(-1, 3, 3) for m in (rx, ry, rz))
    return rz @ ry @ rx


def pose_params(rotations: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """float32 ``[n, 12]``: the ``affine3d`` map from canvas to plate coordinates.

    Args:
      rotations: ``[n, 3, 3]``, the plate's orientation in the canvas.
      shifts: ``[n, 3]`` voxels, ``(x, y, z)``, its centre from the canvas centre.

    Both sides in the normalized coordinates of :mod:`stn.layer.sampler3d`: the
    canvas's half-width is ``CANVAS / 2`` voxels, the plate's
    ``(DIGIT / 2, DIGIT / 2, THICKNESS / 2)``.
    """
    canvas_half = CANVAS / 2.0
    plate_half = np.array([DIGIT / 2.0, DIGIT / 2.0, THICKNESS / 2.0])
    inverse = np.swapaxes(rotations, 1, 2)  # R^T
    linear = inverse * canvas_half / plate_half[None, :, None]  # (n, 3, 3)
    offset = -np.einsum("nij,nj->ni", inverse, shifts) / plate_half
    return np.concatenate([linear, offset[..., None]], axis=2).reshape(-1, 12).astype(np.float32)


def random_poses(n: int, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """float32 ``[n, 12]``: poses drawn from the module's ranges (see the docstring).

    ``strength`` in [0, 1] scales every angle and shift of the same draws (0: upright and
    centred; a pose curriculum, :func:`stn.data.pipeline.warp_strength`).
    """
    tilts = np.deg2rad(rng.uniform(-TILT_DEG, TILT_DEG, (2, n))) * strength
    in_plane = np.deg2rad(rng.uniform(-IN_PLANE_DEG, IN_PLANE_DEG, n)) * strength
    shifts = rng.uniform(-SHIFT_VOXELS, SHIFT_VOXELS, (n, 3)) * strength
    return pose_params(rotation(tilts[0], tilts[1], in_plane), shifts)


def upright_poses(n: int) -> np.ndarray:
    """float32 ``[n, 12]``: the digit facing the depth axis, centred (figures, tests)."""
    return pose_params(np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3)))


def plate_tilt_deg(poses: np.ndarray, thetas: np.ndarray | None = None) -> np.ndarray:
    """float64 ``[n]`` degrees: the angle between each plate's normal and the direction a
    depth projection looks along, in the canvas (``thetas`` None: the canvas's depth axis) or
    through a transformer's map (the canvas direction its output's depth axis samples).

    Args:
      poses: ``[n, 12]``, the canvas -> plate maps (:func:`pose_params`).
      thetas: ``[n, 12]``, ``affine3d`` maps from a transformer's output to the canvas.

    The plate's normal in the canvas is the gradient of its own ``z`` (across its thickness),
    the third row of its pose; the projection sums along theta's third column. 0 is face-on
    (the plate's thickness seen end-on, the digit sharp), 90 edge-on. Whatever the angle, the
    output's other two axes see an affine image of the digit (they can undo foreshortening
    and turns in the plane); what they cannot undo is the thickness smeared across the view,
    ``THICKNESS * tan(angle)`` voxels.
    """
    normal = np.asarray(poses, np.float64).reshape(-1, 3, 4)[:, 2, :3]
    if thetas is None:
        view = np.broadcast_to([0.0, 0.0, 1.0], normal.shape)
    else:
        view = np.asarray(thetas, np.float64).reshape(-1, 3, 4)[:, :, 2]
    cosine = np.abs(np.sum(normal * view, axis=1)) / (
        np.linalg.norm(normal, axis=1) * np.linalg.norm(view, axis=1))
    return np.degrees(np.arccos(np.clip(cosine, 0.0, 1.0)))


def plates(digits):
    """float32 ``[B, THICKNESS, 28, 28, 1]`` (``keras.ops``): uint8 digits extruded along depth.

    Intensities in [0, 1]; ``digits`` is uint8 ``[B, 28, 28]`` (array or tensor).
    """
    from keras import ops
    digits = ops.cast(ops.convert_to_tensor(digits), "float32") / 255.0
    return ops.repeat(ops.expand_dims(ops.expand_dims(digits, 1), -1), THICKNESS, axis=1)


def render(digits, poses):
    """Volumes ``[B, 60, 60, 60, 1]`` (a ``keras.ops`` tensor) of ``digits`` at ``poses``.

    Args:
      digits: uint8 ``[B, 28, 28]``.
      poses: float32 ``[B, 12]`` from :func:`random_poses` or :func:`pose_params`.
    """
    from stn.layer import kinds
    return kinds.warp_ops(plates(digits), poses, "affine3d", (CANVAS,) * 3)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(b"volumes"), zlib.crc32(name.encode())])


def make_splits(mnist, seed: int = 0, limits: dict | None = None) -> dict[str, VolumeSplit]:
    """``{"train", "validation", "test"}``: MNIST's digits with their fixed poses.

    Args:
      mnist: ``((x_train, y_train), (x_test, y_test))`` from :func:`stn.data.mnist.load_mnist`.
      seed: the poses are a pure function of it (and of the split's name).
      limits: optional ``{split: n}``: keep the first ``n`` of that split
        (drawn for the whole split first, so a split's first poses never change).
    """
    (x_train, y_train), (x_test, y_test) = mnist
    v = VALIDATION_SIZE
    parts = {"train": (x_train[v:], y_train[v:]), "validation": (x_train[:v], y_train[:v]),
             "test": (x_test, y_test)}
    splits = {}
    for name, (digits, labels) in parts.items():
        poses = random_poses(len(digits), _rng(seed, name))
        n = (limits or {}).get(name, len(digits))
        splits[name] = VolumeSplit(np.ascontiguousarray(digits[:n]),
                                   np.asarray(labels[:n], np.int32), poses[:n])
    return splits


def epoch_poses(n: int, seed: int, epoch: int, strength: float = 1.0) -> np.ndarray:
    """float32 ``[n, 12]``: fresh training poses for one epoch (a pure function of the
    arguments), at ``strength`` (:func:`random_poses`)."""
    return random_poses(n, _rng(seed, f"train epoch {epoch}"), strength)
