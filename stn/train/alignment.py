"""Label-free alignment: a rotation-consistency term that makes a transformer straighten.

The classification loss alone lets the transformer leave any rotation the
classifier tolerates, and the pose metric shows that it leaves much of it.
This term asks for *one* pose per digit without any pose label: for a rotation
``g`` drawn on the fly and applied by our own sampler, the transformer's map
on ``g.x`` must be ``g``'s inverse composed with its map on ``x`` (an
equivariance constraint in the spirit of canonicalization networks: Kaba et
al. 2023, arXiv 2211.06489; Urbano and Romero 2023, arXiv 2312.12223).

In the convention of :mod:`stn.layer.sampler` (maps go from output to input
coordinates), with ``x_g(p) = x(R p)`` the image rotated by ``R``, and
``T_x`` the map the localization net predicts for ``x`` (output pixel ``p``
reads the input at ``T_x(p)``), the transformer's outputs agree,
``x_g(T_{x_g}(p)) = x(T_x(p))``, exactly when

    T_{x_g}(p) = R^-1 T_x(p)   for every output point p.

:func:`consistency` measures the squared gap at a 5 x 5 grid of output
points, for any kind (affine, projective, TPS...). Equivariance leaves one
rotation free (every map turned by the same angle still satisfies it);
:func:`mean_angle` pins it: the batch's mean rotation of ``T_x`` is pulled
to zero, which on a rotation distribution symmetric about upright (R, RTS)
puts the common pose upright. Neither term reads the warps the data were
made with: training sees images and labels only.

The gap is measured in the input's normalized units, so a transformer that
zooms in (a smaller map) lowers it without aligning anything: with
``scale_free`` the penalty divides each gap by the two maps' size relative
to the identity's (:func:`relative_size`), which no zoom changes. With
``scale_gauge`` the batch's mean log size of ``T_x`` is pulled to the
identity's, as the mean angle is pulled to zero: a gauge on the common
scale, so that the batch cannot zoom in together, while each gap keeps its
input units.

The mean-angle pull fixes the batch's common rotation only: each digit's own
pose (its orbit's representative under equivariance) stays free. With
``image_pull`` each image's own angle of ``T_x`` is pulled to zero as well:
if the maps are equivariant, a digit seen at rotations ``r`` (symmetric about
upright) costs ``E (a - r)^2 = a^2 + var(r)`` for its representative ``a``,
least at ``a = 0``, upright, for every digit. The pull also shrinks the turn
(each map would rather not rotate), against the consistency gap: a weak pull.

With ``zoom > 1``, ``g`` also scales: ``G = s R`` with ``s`` drawn
log-uniformly in ``[1/zoom, zoom]``, and the same argument gives
``T_{x_g}(p) = G^-1 T_x(p)``: the transformer must then bring a digit drawn
larger or smaller to the same output, as RTS's scales ask (0.7-1.2).
"""

import dataclasses
import math
from typing import NamedTuple

import tensorflow as tf

from stn.layer import kinds
from stn.train.settings import AlignmentSettings

POINTS = 5
"""The maps are compared at a ``POINTS x POINTS`` grid of output pixel centres."""
MIN_SIZE = 1e-2
"""Floor of :func:`relative_size` in the scale-free penalty (a map shrunk to a point)."""


class Alignment(AlignmentSettings):
    """The alignment term: its settings (:class:`stn.train.settings.AlignmentSettings`,
    ``Config.alignment``) with the loss they define.

    Attributes (the settings'):
      weight: of the consistency and mean-angle terms in the training loss
        (0: off, the paper's method).
      degrees: ``g`` is a rotation drawn uniformly in ``+-degrees``.
      terms: ``"both"``, or only ``"consistency"`` or ``"angle"`` (the
        mean-angle pull) in the loss, for the ablation; the consistency gap
        is measured (and logged) either way.
      scale_free: divide each gap by its maps' :func:`relative_size` (squared)
        in the loss, so that zooming in does not lower it.
      scale_gauge: add the square of the batch's mean log size of ``T_x``
        (:func:`mean_log_size`): the common scale pulled to the identity's.
      image_pull: add this times the mean of each image's squared angle of
        ``T_x`` (:func:`image_angles`): every digit's own pose pulled upright.
      zoom: ``g`` also scales by a factor log-uniform in ``[1/zoom, zoom]``
        (:func:`draw_zooms`); 1: rotations only.
      pull_decay: the image pull falls linearly from ``image_pull`` at the
        first epoch to 0 at the last (``pull_scale``): it picks each
        digit's pose early, and the gap alone restores the full turn late.
      pull_epochs: with ``pull_decay``, the epoch at which the pull reaches 0
        and stays (0: the last).
    """

    @classmethod
    def of(cls, settings: AlignmentSettings) -> "Alignment":
        """The term of a config's settings (``Config.alignment``)."""
        return cls(**{f.name: getattr(settings, f.name)
                      for f in dataclasses.fields(AlignmentSettings)})

    def penalty(self, t: "Terms", size, replicas, pull_scale=1.0) -> tf.Tensor:
        """The weighted loss term of one replica.

        Args:
          t: this replica's :class:`Terms` (from :func:`terms`).
          size: the global batch size (the gaps' sum is divided by it).
          replicas: replicas in sync (each adds its share of the squared
            batch means, ``angle^2`` and ``log_size^2``).
          pull_scale: multiplies ``image_pull`` (:func:`pull_scale`).
        """
        total = 0.0
        if self.terms in ("both", "consistency"):
            gaps = t.gaps / tf.maximum(t.sizes, MIN_SIZE) if self.scale_free else t.gaps
            total += tf.reduce_sum(gaps) / size
        if self.terms in ("both", "angle"):
            total += tf.square(t.angle) / replicas
        if self.scale_gauge:
            total += tf.square(t.log_size) / replicas
        if self.image_pull:
            total += (self.image_pull * pull_scale
                      * tf.reduce_sum(tf.square(t.angles)) / size)
        return self.weight * total


class Terms(NamedTuple):
    """The alignment term's parts for one batch (:func:`terms`).

    Attributes:
      gaps: ``[B]`` per-example consistency gaps (:func:`consistency`).
      sizes: ``[B]`` the two maps' :func:`relative_size`.
      angle: ``[]`` the batch's mean angle of ``T_x`` (:func:`mean_angle`), radians.
      log_size: ``[]`` the batch's mean log size of ``T_x`` (:func:`mean_log_size`).
      angles: ``[B]`` each image's angle of ``T_x`` (:func:`image_angles`), radians.
    """
    gaps: tf.Tensor
    sizes: tf.Tensor
    angle: tf.Tensor
    log_size: tf.Tensor
    angles: tf.Tensor | None = None


def rotation_params(angles: tf.Tensor, zooms: tf.Tensor | None = None) -> tf.Tensor:
    """Affine parameters ``[B, 6]`` of ``G = s R``: rotations by ``angles [B]`` (radians)
    about the centre, times ``zooms [B]`` (None: 1); output ``p`` reads the input at ``G p``."""
    c, s = tf.cos(angles), tf.sin(angles)
    if zooms is not None:
        c, s = c * zooms, s * zooms
    zero = tf.zeros_like(angles)
    return tf.stack([c, -s, zero, s, c, zero], axis=-1)


def _rotate_points(points: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
    """``points [B, m, 2]`` turned by ``angles [B]``: ``R(angle) p``."""
    c, s = tf.cos(angles)[:, None], tf.sin(angles)[:, None]
    x, y = points[..., 0], points[..., 1]
    return tf.stack([c * x - s * y, s * x + c * y], axis=-1)


def map_points(params: tf.Tensor, kind: str) -> tf.Tensor:
    """``[B, POINTS^2, 2]``: where the kind's map ``params [B, P]`` sends the comparison grid."""
    grid = kinds.get_kind(kind).tf_grid(params, POINTS, POINTS)
    return tf.reshape(grid, [-1, POINTS * POINTS, 2])


def consistency(params: tf.Tensor, rotated_params: tf.Tensor, angles: tf.Tensor,
                kind: str, zooms: tf.Tensor | None = None) -> tf.Tensor:
    """Per-example mean squared gap ``|T_{x_g}(p) - G^-1 T_x(p)|^2`` (normalized units).

    Args:
      params: ``[B, P]``, the maps predicted for the images ``x``.
      rotated_params: ``[B, P]``, the maps predicted for ``x_g``, the images
        sampled with :func:`rotation_params` ``(angles, zooms)``.
      angles: ``[B]`` radians, the rotations of ``g``.
      kind: the transformer kind of both.
      zooms: ``[B]`` the scales of ``g`` (None: 1, rotations only).

    Returns:
      ``[B]``: zero where the transformer's outputs on ``x`` and ``x_g`` agree.
    """
    return _gap(map_points(params, kind), map_points(rotated_params, kind), angles, zooms)


def _gap(points: tf.Tensor, rotated_points: tf.Tensor, angles: tf.Tensor,
         zooms: tf.Tensor | None = None) -> tf.Tensor:
    """:func:`consistency` from the maps' points ``[B, m, 2]``."""
    want = _rotate_points(points, -angles)
    if zooms is not None:
        want = want / zooms[:, None, None]
    return tf.reduce_mean(tf.reduce_sum(tf.square(rotated_points - want), -1), axis=-1)


def relative_size(points: tf.Tensor, rotated_points: tf.Tensor, kind: str) -> tf.Tensor:
    """``[B]``: the two maps' mean squared spread about their centroids, the identity's = 1.

    Args:
      points, rotated_points: ``[B, m, 2]``, the maps of ``x`` and ``x_g``
        at the comparison grid (:func:`map_points`).
      kind: the transformer kind (its identity sets the unit).

    A map zoomed in by ``s`` (all its points ``s`` times closer together)
    has size ``s^2``, as has its consistency gap: their ratio is scale-free.
    """
    unit = _spread(_identity_points(kind, points.dtype))
    return (_spread(points) + _spread(rotated_points)) / (2.0 * unit)


def _identity_points(kind: str, dtype) -> tf.Tensor:
    """``[1, POINTS^2, 2]``: the kind's identity map at the comparison grid."""
    return map_points(tf.constant(kinds.identity(kind, 1), dtype), kind)


def mean_log_size(points: tf.Tensor, kind: str) -> tf.Tensor:
    """``[]``: the batch's mean of ``log(size)`` of the maps at ``points [B, m, 2]``.

    The size is the map's mean squared spread relative to the identity's (a
    map zoomed in by ``s`` has ``log(s^2)``); 0 when the batch keeps, on
    average, the identity's scale.
    """
    relative = _spread(points) / _spread(_identity_points(kind, points.dtype))
    return tf.reduce_mean(tf.math.log(tf.maximum(relative, MIN_SIZE)))


def _spread(points: tf.Tensor) -> tf.Tensor:
    """``[B]``: mean squared distance of ``points [B, m, 2]`` from their centroid."""
    centred = points - tf.reduce_mean(points, axis=1, keepdims=True)
    return tf.reduce_mean(tf.reduce_sum(tf.square(centred), -1), axis=-1)


def mean_angle(params: tf.Tensor, kind: str) -> tf.Tensor:
    """The batch's mean rotation (radians) of the maps ``params [B, P]`` (least squares)."""
    return tf.reduce_mean(image_angles(params, kind))


def image_angles(params: tf.Tensor, kind: str) -> tf.Tensor:
    """``[B]``: each map's rotation (radians) of ``params [B, P]``, fitted by least squares."""
    return _angles(map_points(params, kind), kind)


def _angles(points: tf.Tensor, kind: str) -> tf.Tensor:
    """:func:`image_angles` from the maps' points ``[B, m, 2]``."""
    ref = _identity_points(kind, points.dtype)  # (1, m, 2)
    ref = ref - tf.reduce_mean(ref, axis=1, keepdims=True)
    got = points - tf.reduce_mean(points, axis=1, keepdims=True)
    cross = tf.reduce_sum(ref[..., 0] * got[..., 1] - ref[..., 1] * got[..., 0], axis=-1)
    dot = tf.reduce_sum(ref[..., 0] * got[..., 0] + ref[..., 1] * got[..., 1], axis=-1)
    return tf.atan2(cross, dot)


def draw_angles(n, degrees: float, seed: tf.Tensor) -> tf.Tensor:
    """``[n]`` radians uniform in ``+-degrees``, a pure function of ``seed`` (int ``[2]``)."""
    limit = math.radians(degrees)
    return tf.random.stateless_uniform([n], seed, -limit, limit)


def draw_zooms(n, zoom: float, seed: tf.Tensor) -> tf.Tensor:
    """``[n]`` scales log-uniform in ``[1/zoom, zoom]``, a pure function of ``seed`` (int ``[2]``),
    independent of :func:`draw_angles`' draw from the same seed."""
    limit = math.log(zoom)
    seed = tf.random.experimental.stateless_fold_in(seed, 1)
    return tf.exp(tf.random.stateless_uniform([n], seed, -limit, limit))


def terms(layer, images: tf.Tensor, angles: tf.Tensor, training=True,
          zooms: tf.Tensor | None = None, params: tf.Tensor | None = None) -> Terms:
    """The alignment term's parts (:class:`Terms`) for a layer on a batch.

    Args:
      layer: a :class:`stn.layers.SpatialTransformer` whose input is ``images``.
      images: ``[B, H, W, C]`` float32, the layer's input.
      angles: ``[B]`` radians.
      training: passed to the localization net (dropout).
      zooms: ``[B]`` the scales of ``g`` (None: rotations only).
      params: ``[B, P]`` the layer's map of ``images`` (``layer.params``), if
        the caller has it (the training step's forward pass): one
        localization pass fewer.

    Returns:
      :class:`Terms`, float32.
    """
    rotated = tf.stop_gradient(kinds.warp_xla(images, rotation_params(angles, zooms)))

    def predict(x):  # the layer's map, without its training-only output jitter
        return tf.cast(layer.params(x, training=training), tf.float32)

    # The grid of x's map serves both terms: computed once per step.
    points = map_points(predict(images) if params is None else tf.cast(params, tf.float32),
                        layer.kind)
    rotated_points = map_points(predict(rotated), layer.kind)
    own = _angles(points, layer.kind)
    return Terms(_gap(points, rotated_points, angles, zooms),
                 relative_size(points, rotated_points, layer.kind),
                 tf.reduce_mean(own), mean_log_size(points, layer.kind), own)


def congealing(outputs: tf.Tensor, labels: tf.Tensor, classes: int = 10) -> tf.Tensor:
    """``[B]``: each output's mean squared distance to its class's mean output in the batch.

    A congealing term (Learned-Miller, PAMI 2006, per class): pulled down,
    it brings the digits of one class to one pose, which the batch's
    rotation-consistency term leaves free. It reads the class labels the
    classification loss reads, never the warps. The class means are
    constants (no gradient): each output moves toward its class's template.

    Args:
      outputs: ``[B, h, w, C]``, the transformer's outputs (cast to float32).
      labels: ``[B]`` int class labels.
      classes: the number of classes.
    """
    flat = tf.reshape(tf.cast(outputs, tf.float32), [tf.shape(outputs)[0], -1])  # (B, p)
    onehot = tf.one_hot(labels, classes, dtype=tf.float32)  # (B, k)
    counts = tf.maximum(tf.reduce_sum(onehot, axis=0), 1.0)  # (k,)
    means = tf.matmul(onehot, tf.matmul(onehot, flat, transpose_a=True) / counts[:, None])
    return tf.reduce_mean(tf.square(flat - tf.stop_gradient(means)), axis=-1)
