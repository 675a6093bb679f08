"""The 3-D MNIST classifiers (paper, appendix A.3): with and without a 3-D transformer.

* **ST**: volume ``[B, 60, 60, 60, 1]`` -> 3-D affine transformer (its
  localization net 2-D convs on the volume's three axis sums,
  :func:`projection_localization`, chosen on validation over strided 3-D
  convs, :func:`volume_localization`) -> output volume
  ``[B, 20, 30, 30, 1]`` -> :class:`DepthProjection` -> ``[B, 30, 30, 1]`` ->
  the paper's Table 1 CNN (``stn.model.build_model("paper-cnn")``: conv 9x9
  -> pool -> conv 7x7 -> pool -> Dense 128) -> logits.
* **Baseline**: the raw volume's :class:`DepthProjection` ``[B, 60, 60, 1]``,
  2x2 average-pooled to ``[B, 30, 30, 1]`` -> the same CNN, its Dense layer
  widened so that the two models have about the same number of parameters
  (:func:`baseline_dense_units`).

**Both CNNs read 30x30, for the CPU budget**: the CNN on the full 60x60
costs 95 M multiply-adds per example against 7.5 M at 30x30. At the
identity the transformer's 30x30 output samples the canvas at the centres
of its 2x2 blocks, which bilinear interpolation makes the blocks' average:
the baseline's image. Only the transformer can zoom in and read the digit
at full resolution (28 px fit in 30).

**Projection: a sum along depth**, scaled by ``CANVAS / d`` so that it is
the line integral in input voxels (so the two models start from the same
image). A sum passes a gradient to every depth sample, so the localization
net learns where along depth the plate lies from every sample; a max would
pass it to one voxel per ray. The output volume takes ``d`` =
:data:`OUTPUT_DEPTH` samples in depth (3 voxels apart at the identity, so
every ray meets the 4-voxel plate): the projection needs rays, not a fine
depth, and the transformer can scale depth to put its samples on the plate.
"""

import keras
import numpy as np

from stn.layers import SpatialTransformer, theta_layer
from stn.layer.sampler3d import centre_points3d
from stn.model import build_model
from stn.data.volumes import CANVAS

OUTPUT_DEPTH = 20
OUTPUT_SIZE = CANVAS // 2  # the CNN's input, both models
CNN = "paper-cnn"
CNN_DENSE = 128  # the preset's Dense width, the ST model's
LOCALIZATION = ((8, 4, 4), (16, 3, 2), (32, 3, 2))  # (filters, kernel, stride) per Conv3D
LOCALIZATION_DENSE = 32
PROJECTION_LOCALIZATION = ((16, 5, 2), (32, 3, 2), (32, 3, 2))  # (filters, kernel, stride) per Conv2D


@keras.saving.register_keras_serializable(package="stn")
class DepthProjection(keras.layers.Layer):
    """``[B, D, H, W, C] -> [B, H, W, C]``: the sum over depth times ``scale``."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, volumes):
        return keras.ops.sum(volumes, axis=1) * self.scale

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="stn")
class Similarity3D(keras.layers.Layer):
    """``[B, 7] -> [B, 12]``: a rotation, an isotropic scale and a translation as the 12
    ``affine3d`` parameters of ``p -> exp(log_scale) R p + t`` (output -> input).

    The 7 inputs are the rotation vector ``r`` (radians about the axis ``r / |r|``;
    Rodrigues' formula), ``log_scale`` and ``t``; all zeros is the identity. No shear and
    no stretch along one axis: a foreshortened plate can be undone only by turning the view
    (the map's third column, the direction the depth projection looks along).
    """

    def call(self, params):
        ops = keras.ops
        r, log_scale, t = params[:, :3], params[:, 3:4], params[:, 4:]
        angle2 = ops.sum(r * r, axis=1, keepdims=True)[..., None] + 1e-12  # [B, 1, 1]
        angle = ops.sqrt(angle2)
        zero = ops.zeros_like(r[:, 0])
        cross = ops.reshape(ops.stack([zero, -r[:, 2], r[:, 1], r[:, 2], zero, -r[:, 0],
                                       -r[:, 1], r[:, 0], zero], axis=1), (-1, 3, 3))
        rotation = (ops.eye(3, dtype=self.compute_dtype) + ops.sin(angle) / angle * cross
                    + (1.0 - ops.cos(angle)) / angle2 * ops.matmul(cross, cross))
        linear = ops.exp(log_scale)[..., None] * rotation
        return ops.reshape(ops.concatenate([linear, t[..., None]], axis=2), (-1, 12))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 12)


HEADS = ("affine", "similarity")
"""The localization nets' last layers: all 12 ``affine3d`` parameters free, or a
:class:`Similarity3D` of 7."""


def view_spread(volumes, theta):
    """``[B]`` float32: the share of each volume's ink spread that lies along the direction
    the map's depth projection looks (ours; a label-free prior, no pose is read).

    Args:
      volumes: ``[B, D, H, W, 1]``, ink >= 0 (not all zero).
      theta: ``[B, 12]`` ``affine3d`` maps, output -> input normalized ``(x, y, z)``.

    ``u^T S u / trace(S)``, ``S`` the ink-weighted covariance ``[B, 3, 3]`` of the voxel
    centres' normalized ``(x, y, z)``, ``u`` theta's third column made unit length (the
    input direction the output's depth axis samples, which :class:`DepthProjection` sums).
    It lies between ``S``'s least and largest eigenvalue over its trace; for a plate the
    least is along its normal (the thickness, 4 voxels, against the digit's spread in the
    plane), so a map that looks at the plate face-on has the least. Only ``theta`` gets a
    gradient.
    """
    ops = keras.ops
    depth, height, width = volumes.shape[1:4]
    points = centre_points3d(depth, height, width).reshape(-1, 3)
    moments = np.concatenate([points, (points[:, :, None] * points[:, None, :]).reshape(-1, 9)],
                             axis=1).astype("float32")  # [N, 3 + 9]: x, y, z, then x x^T
    ink = ops.stop_gradient(ops.reshape(ops.cast(volumes, "float32"), (-1, len(points))))
    sums = ops.matmul(ink, ops.convert_to_tensor(moments)) / (
        ops.sum(ink, axis=1, keepdims=True) + 1e-12)  # [B, 12]: ink-weighted means
    mean = sums[:, :3]
    spread = ops.reshape(sums[:, 3:], (-1, 3, 3)) - mean[:, :, None] * mean[:, None, :]
    view = ops.reshape(ops.cast(theta, "float32"), (-1, 3, 4))[:, :, 2]
    view = view / ops.sqrt(ops.sum(view * view, axis=1, keepdims=True) + 1e-12)
    along = ops.sum(view * ops.squeeze(ops.matmul(spread, view[:, :, None]), -1), axis=1)
    return along / ops.trace(spread, axis1=1, axis2=2)


@keras.saving.register_keras_serializable(package="stn")
class ViewPriorTransformer(SpatialTransformer):
    """An ``affine3d`` :class:`SpatialTransformer` that, in training, adds
    ``view_prior * mean(view_spread(inputs, theta))`` to the model's losses (its map the
    one it applies, after every iteration); the same outputs as its parent's."""

    def __init__(self, localization, view_prior: float = 1.0, **kwargs):
        super().__init__(localization, **kwargs)
        if not view_prior > 0:  # also refuses NaN
            raise ValueError(f"view_prior must be positive, got {view_prior}")
        self.view_prior = float(view_prior)

    def call(self, inputs, training=None):
        outputs, theta = self.transform_and_theta(inputs, training)
        if training:
            self.add_loss(self.view_prior * keras.ops.mean(view_spread(inputs, theta)))
        return outputs

    def get_config(self):
        return {**super().get_config(), "view_prior": self.view_prior}


def volume_localization(layers=LOCALIZATION, dense: int = LOCALIZATION_DENSE,
                        name: str = "localization", head: str = "affine") -> keras.Sequential:
    """Strided 3-D convs (ReLU, valid) -> Dense -> the 12 ``affine3d`` parameters (identity init).

    With the defaults, 60^3 -> 15^3 x 8 -> 7^3 x 16 -> 3^3 x 32 -> 32 -> 12:
    the first stride of 4 keeps the cost of reading 216,000 voxels small.
    """
    return keras.Sequential([
        *[keras.layers.Conv3D(f, k, strides=s, activation="relu") for f, k, s in layers],
        *_theta_head(dense, head),
    ], name=name)


def _theta_head(dense: int, head: str = "affine") -> list:
    """Both localization nets' tail: Flatten -> Dense (ReLU) -> the 12 ``affine3d``
    parameters, identity at init: free (``head="affine"``) or through
    :class:`Similarity3D` (``"similarity"``)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    common = [keras.layers.Flatten(), keras.layers.Dense(dense, activation="relu")]
    if head == "affine":
        return [*common, theta_layer("identity", kind="affine3d")]
    return [*common, keras.layers.Dense(7, kernel_initializer="zeros", bias_initializer="zeros",
                                        name="theta"), Similarity3D(name="similarity")]


@keras.saving.register_keras_serializable(package="stn")
class AxisProjections(keras.layers.Layer):
    """``[B, D, H, W, 1] -> [B, D, D, 3]`` (a cube): the volume summed along each axis.

    Channel 0 is the sum along depth (an ``(H, W)`` image), 1 along height
    ``(D, W)``, 2 along width ``(D, H)``. A plate tilted about an in-plane axis
    is a slanted line in the projection along that axis, the slope its tilt:
    three 2-D images carry the pose a 3-D conv must find in 216,000 voxels.
    """

    def call(self, volumes):
        ops = keras.ops
        return ops.concatenate([ops.sum(volumes, axis=a) for a in (1, 2, 3)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2], input_shape[3], 3)


def projection_localization(layers=PROJECTION_LOCALIZATION, dense: int = LOCALIZATION_DENSE,
                            name: str = "localization", head: str = "affine") -> keras.Sequential:
    """:class:`AxisProjections` -> strided 2-D convs (ReLU, valid) -> Dense -> the 12
    ``affine3d`` parameters (identity init).

    With the defaults, 60^3 -> 60^2 x 3 -> 28^2 x 16 -> 13^2 x 32 -> 6^2 x 32 -> 32 -> 12.
    """
    return keras.Sequential([
        AxisProjections(name="axis_projections"),
        *[keras.layers.Conv2D(f, k, strides=s, activation="relu") for f, k, s in layers],
        *_theta_head(dense, head),
    ], name=name)


LOCALIZERS = {"conv3d": volume_localization, "projections": projection_localization}
"""The ST model's localization nets by name (``build_st(localization=...)``)."""
DEFAULT_LOCALIZER = "projections"
"""The default of :data:`LOCALIZERS` (results/screen_volumes_localization.json)."""


def _classify(x, dense_units: int) -> keras.KerasTensor:
    cnn = build_model(CNN, input_size=OUTPUT_SIZE, dense_units=dense_units)
    return cnn(x)


def build_st(output_depth: int = OUTPUT_DEPTH, localization: str = DEFAULT_LOCALIZER,
             iterations: int = 1, head: str = "affine", view_prior: float = 0.0) -> keras.Model:
    """The ST model: ``[B, 60, 60, 60, 1]`` float32 -> logits ``[B, 10]``, its
    localization net one of :data:`LOCALIZERS` ending in one of :data:`HEADS`;
    ``iterations > 1`` refines the map, the same net reading the volume warped by the map
    so far (stn.layer.layers.SpatialTransformer). ``view_prior > 0``: the transformer is a
    :class:`ViewPriorTransformer` of that weight (0: a plain one, the paper's)."""
    if localization not in LOCALIZERS:
        raise ValueError(f"localization must be one of {sorted(LOCALIZERS)}, "
                         f"got {localization!r}")
    inputs = keras.Input((CANVAS, CANVAS, CANVAS, 1), name="volumes")
    layer, extra = ((ViewPriorTransformer, {"view_prior": view_prior}) if view_prior
                    else (SpatialTransformer, {}))
    x = layer(LOCALIZERS[localization](head=head), kind="affine3d",
              output_size=(output_depth, OUTPUT_SIZE, OUTPUT_SIZE),
              image_gradient=False, iterations=iterations, name="transformer", **extra)(inputs)
    x = DepthProjection(CANVAS / output_depth, name="projection")(x)
    return keras.Model(inputs, _classify(x, CNN_DENSE), name="volumes_st")


def build_baseline(dense_units: int | None = None,
                   localization: str = DEFAULT_LOCALIZER) -> keras.Model:
    """The baseline: the raw volume's projection -> the CNN (Dense width matched by default
    to the ST model with that ``localization`` net)."""
    inputs = keras.Input((CANVAS, CANVAS, CANVAS, 1), name="volumes")
    x = DepthProjection(1.0, name="projection")(inputs)
    x = keras.layers.AveragePooling2D(CANVAS // OUTPUT_SIZE, name="downsample")(x)
    units = baseline_dense_units(localization) if dense_units is None else dense_units
    return keras.Model(inputs, _classify(x, units), name="volumes_baseline")


def baseline_dense_units(localization: str = DEFAULT_LOCALIZER) -> int:
    """The baseline CNN's Dense width whose count is nearest the ST model's.

    Each Dense unit costs its inputs, a bias and 10 logit weights; the ST
    model's extra parameters are its localization net's.
    """
    extra = build_st(localization=localization).get_layer("transformer").count_params()
    cnn = build_model(CNN, input_size=OUTPUT_SIZE)
    per_unit = cnn.get_layer("flatten").output.shape[-1] + 1 + 10
    return CNN_DENSE + round(extra / per_unit)


BUILDERS = {"st": build_st, "baseline": build_baseline}
"""The experiment's models by name."""
