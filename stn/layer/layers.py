"""Keras layers of the spatial transformer: localization nets and the module.

The transformer wraps :mod:`stn.layer.kinds` (the transformations) and
:mod:`stn.layer.sampler` (whose docstring fixes the coordinate convention) and
can be dropped into any Keras model on the JAX, PyTorch or TensorFlow
backend; on TensorFlow it runs the faster :mod:`stn.layer.transform` (through
``stn.layer.kinds.keras_warp``, the one seam).
"""

import keras

from stn.layer import checks, kinds


def theta_layer(init: str = "identity", name: str = "theta",
                kind: str = "affine") -> keras.layers.Dense:
    """The last localization layer: the kind's parameters, linear.

    Args:
      init: ``"identity"``: zero kernel and the kind's identity as bias, so
        the transformer starts as the identity whatever its input (paper,
        appendix A); ``"glorot"``: Glorot-uniform kernel and zero bias, the
        predecessor's initialisation, which starts from a random, collapsing
        transform.
      name: layer name.
      kind: transformer kind (stn.layer.kinds.KINDS): sets the layer's width.
    """
    kind = kinds.get_kind(kind)
    if init == "identity":
        return keras.layers.Dense(kind.size, kernel_initializer="zeros",
                                  bias_initializer=keras.initializers.Constant(kind.identity),
                                  name=name)
    if init == "glorot":
        return keras.layers.Dense(kind.size, kernel_initializer="glorot_uniform",
                                  bias_initializer="zeros", name=name)
    raise ValueError(f"unknown theta init {init!r}; use 'identity' or 'glorot'")


def dense_localization(hidden: int = 20, dropout: float = 0.2, init: str = "identity",
                       name: str = "localization", kind: str = "affine") -> keras.Sequential:
    """The predecessor's localization net: Flatten -> Dense(tanh) -> Dropout -> theta.

    Maps ``[B, H, W, C]`` to ``[B, P]``, ``P`` the kind's parameter count.
    Dropout (rate 0.2, keep probability 0.8) is active only when called with
    ``training=True``.
    """
    return keras.Sequential([
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, activation="tanh"),
        keras.layers.Dropout(dropout),
        theta_layer(init, kind=kind),
    ], name=name)


def conv_localization(init: str = "identity", name: str = "localization",
                      kind: str = "affine") -> keras.Sequential:
    """The paper's ST-CNN localization net for distorted MNIST (appendix A.4).

    Max-pool 2x2 -> conv 20 5x5 -> max-pool 2x2 -> conv 20 5x5 -> Dense 50
    -> theta, ReLU throughout. Maps ``[B, H, W, C]`` to ``[B, P]``.
    """
    return keras.Sequential([
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(50, activation="relu"),
        theta_layer(init, kind=kind),
    ], name=name)


def fc_localization(units: tuple[int, ...] = (32, 32, 32), init: str = "identity",
                    name: str = "localization", kind: str = "affine") -> keras.Sequential:
    """The paper's ST-FCN localization net: fully connected layers (appendix A.4).

    Flatten -> Dense(units[0]) -> ... (ReLU) -> theta. Maps ``[B, H, W, C]``
    to ``[B, P]``.
    """
    return keras.Sequential([
        keras.layers.Flatten(),
        *[keras.layers.Dense(u, activation="relu") for u in units],
        theta_layer(init, kind=kind),
    ], name=name)


_AFFINE_ROWS = {"affine": 2, "affine3d": 3}
"""The affine kinds' rows of ``[M | t]`` (their parameters, row by row)."""


def _square(params, kind: str):
    """``[B, 3, 3]``: the matrix of ``params [B, P]`` of an affine or projective kind
    (``[B, 4, 4]`` for ``affine3d``)."""
    ops = keras.ops
    if kind in _AFFINE_ROWS:
        rows = _AFFINE_ROWS[kind]
        bottom = ops.broadcast_to(ops.convert_to_tensor([[0.0] * rows + [1.0]], params.dtype),
                                  (ops.shape(params)[0], 1, rows + 1))
        return ops.concatenate([ops.reshape(params, (-1, rows, rows + 1)), bottom], axis=1)
    return ops.reshape(ops.concatenate([params, ops.ones_like(params[:, :1])], axis=1),
                       (-1, 3, 3))


def compose(theta, other, kind: str):
    """The map ``p -> T(S p)``: ``theta [B, P]`` after ``other [B, P]``, both of ``kind``.

    Both go from output to input coordinates (stn.layer.sampler's convention), so
    the composed map reads, at output point ``p``, what ``theta`` reads at
    ``S p``: ``[M | t] [A | a] = [M A | M a + t]`` for the affine kinds (2-D and
    3-D), the 3 x 3 product divided by its last entry for the projective one.
    Returns ``[B, P]``, ``theta``'s dtype.
    """
    if kind not in kinds.COMPOSABLE_KINDS:
        raise ValueError(f"compose: kind must be one of {kinds.COMPOSABLE_KINDS}, "
                         f"got {kind!r}")
    product = keras.ops.matmul(_square(theta, kind), _square(other, kind))
    if kind in _AFFINE_ROWS:
        rows = _AFFINE_ROWS[kind]
        return keras.ops.reshape(product[:, :rows], (-1, rows * (rows + 1)))
    product = keras.ops.reshape(product, (-1, 9))
    return product[:, :8] / product[:, 8:]


@keras.saving.register_keras_serializable(package="stn")
class SpatialTransformer(keras.layers.Layer):
    """Localization net -> parameters -> grid generator -> bilinear sampler (Sec. 3).

    Args:
      localization: a layer mapping the input ``[B, H, W, C]`` to ``[B, P]``,
        the parameters of the kind's transformation (output -> input
        coordinates, see stn.layer.sampler), ``P = stn.layer.kinds.KINDS[kind].size``.
      kind: ``"affine"`` (default, 6 parameters), ``"projective"`` (8) or
        ``"tps"`` (32): a name in stn.layer.kinds.KINDS.
      output_size: ``(h, w)`` of the output (``(d, h, w)`` for the 3-D kinds
        of stn.layer.kinds3d, on ``[B, D, H, W, C]`` volumes); ``None`` keeps the input's.
      theta_activation: ``None``, or ``"tanh"``: the predecessor squashed
        theta with a tanh, which makes the identity (entries of 1)
        unreachable; kept only to reproduce that ablation.
      jit_compile: TensorFlow backend only: run the sampler as an XLA
        cluster (default), even when the surrounding step is a plain graph or
        eager. Other backends compile (or not) the whole step as Keras does.
        Set it to ``False`` before ``model.export(format="onnx")``: tf2onnx
        cannot convert the XLA function (docs/backends.md, "Export").
      image_gradient: pass gradients through the sampler to the input images
        (default). ``False`` for a transformer on the raw model input, which
        needs none: the backward pass then skips that gradient. Gradients
        through the localization net are unaffected.
      output_jitter: training only, affine and projective kinds: each
        output pixel ``p`` is read at the predicted map of ``J p``, where
        ``J`` is a random affine map whose six entries are the identity's
        plus ``N(0, output_jitter^2)`` (normalized units: 0.05 is about
        +-3 deg, 5% scale and 0.7 px of shift on 28 px), drawn per image.
        Augmentation of what the classifier sees, composed into the
        parameters, so it costs no extra sampling; 0 (default) is off.
      seed: of the jitter's draws (a :class:`keras.random.SeedGenerator`).
      iterations: affine, projective and affine3d kinds: 1 (default) is the paper's
        transformer; ``k > 1`` refines it ``k - 1`` times, each time the
        localization net reading the input warped by the map so far (at
        the input's size) and its prediction composed after that map
        (:func:`compose`; the inverse compositional STN of Lin and Lucey,
        CVPR 2017, with one shared net). The input is sampled only by the
        final map, never twice.

    Call: ``images [B, H, W, C] -> [B, h, w, C]`` in the layer's compute
    dtype. Under a mixed-precision policy (``mixed_float16``,
    ``mixed_bfloat16``) the grid and the sampler still run in float32, where
    sub-pixel coordinates are exact enough (float16 has 11 bits: steps of
    1/32 px on a 40 px image), and the output is cast to the compute dtype.
    """

    def __init__(self, localization: keras.layers.Layer, kind: str = "affine",
                 output_size=None, theta_activation: str | None = None,
                 jit_compile: bool = True, image_gradient: bool = True,
                 output_jitter: float = 0.0, seed: int | None = None, iterations: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        if theta_activation not in (None, "tanh"):
            raise ValueError(f"theta_activation must be None or 'tanh', got {theta_activation!r}")
        if not 0.0 <= output_jitter < 1.0:  # also refuses NaN
            raise ValueError(f"output_jitter must be in [0, 1), got {output_jitter}")
        for name, value, off, able in (("output_jitter", output_jitter, 0.0, kinds.JITTER_KINDS),
                                       ("iterations", iterations, 1, kinds.COMPOSABLE_KINDS)):
            if value != off and kinds.get_kind(kind).name not in able:
                raise ValueError(f"{name} needs one of the kinds {able} "
                                 f"(maps it composes), got {kind!r}; set it to {off}")
        if not (isinstance(iterations, int) and iterations >= 1):
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
        self.kind = kinds.get_kind(kind).name
        self.localization = localization
        self.output_size = checks.check_output_size(output_size, kind)
        self.theta_activation = theta_activation
        self.jit_compile = jit_compile
        self.image_gradient = image_gradient
        self.output_jitter = float(output_jitter)
        self.seed = seed
        self.iterations = iterations
        # Only with the jitter on: a model without it keeps its variables.
        self.seed_generator = keras.random.SeedGenerator(seed) if output_jitter else None

    def build(self, input_shape):
        checks.check_input_shape(input_shape, self.kind)
        self.localization.build(input_shape)
        checks.check_localization(self.localization, input_shape, self.kind)

    def _sampler_dtype(self) -> str:
        # Half precision is too coarse for coordinates, and XLA's CPU gather
        # has no float16 kernel: sample in float32 (float64 stays float64).
        return "float64" if self.compute_dtype == "float64" else "float32"

    def params(self, inputs, training=None):
        """``[B, P]`` in the sampler's dtype: the map the layer applies to ``inputs``.

        The localization net's prediction, composed over the ``iterations``;
        without the training-only jitter.
        """
        dtype = self._sampler_dtype()
        theta = self._predict(inputs, training, dtype)
        for _ in range(self.iterations - 1):
            warped = kinds.keras_warp(keras.ops.cast(inputs, dtype), theta, self.kind, None,
                                      image_gradient=self.image_gradient,
                                      jit_compile=self.jit_compile)
            step = self._predict(keras.ops.cast(warped, inputs.dtype), training, dtype)
            theta = compose(theta, step, self.kind)
        return theta

    def _predict(self, inputs, training, dtype):
        """``[B, P]``: the localization net's output for ``inputs``, in ``dtype``."""
        theta = self.localization(inputs, training=training)
        if self.theta_activation == "tanh":
            theta = keras.ops.tanh(theta)
        kind = kinds.get_kind(self.kind)
        theta = keras.ops.cast(theta, dtype)
        if kind.dense:  # a dense kind's field keeps its shape
            return theta
        checks.check_theta_shape(theta.shape, self.kind, self.localization.name)  # static
        return keras.ops.reshape(theta, (-1, kind.size))

    def transform_and_theta(self, inputs, training=None, params=None):
        """``(outputs [B, h, w, C], params float32 [B, P])`` for ``inputs``.

        ``params``: the map :meth:`params` gives for ``inputs``, if the caller
        has it already (the training step's alignment term reads it too);
        the returned map is the one applied, jittered in training.
        """
        theta = self.params(inputs, training) if params is None else params
        if training and self.output_jitter:
            theta = self._jittered(theta)
        # On TensorFlow, XLA for the sampler even inside a step that is not
        # compiled: the convolutions and matmuls around it are faster in
        # TensorFlow's own oneDNN kernels than in XLA's on CPU (make bench).
        # On JAX and PyTorch, the keras.ops sampler (stn.layer.sampler).
        outputs = kinds.keras_warp(keras.ops.cast(inputs, theta.dtype), theta, self.kind,
                                   self.output_size, image_gradient=self.image_gradient,
                                   jit_compile=self.jit_compile)
        return keras.ops.cast(outputs, self.compute_dtype), theta

    def call(self, inputs, training=None):
        return self.transform_and_theta(inputs, training)[0]

    def _jittered(self, theta):
        """``theta [B, P]`` composed with a random affine ``J`` near the identity (see Args)."""
        batch = keras.ops.shape(theta)[0]
        noise = keras.random.normal((batch, 6), stddev=self.output_jitter,
                                    dtype=theta.dtype, seed=self.seed_generator)
        jitter = noise + keras.ops.convert_to_tensor(kinds.identity("affine", 1), theta.dtype)
        if self.kind == "projective":  # the affine as a homography
            jitter = keras.ops.concatenate([jitter, keras.ops.zeros_like(jitter[:, :2])], axis=1)
        return compose(theta, jitter, self.kind)

    def compute_output_shape(self, input_shape):
        spatial = self.output_size or tuple(input_shape[1:-1])  # (h, w) or (d, h, w)
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "localization": keras.saving.serialize_keras_object(self.localization),
            "kind": self.kind,
            "output_size": self.output_size,
            "theta_activation": self.theta_activation,
            "jit_compile": self.jit_compile,
            "image_gradient": self.image_gradient,
            "output_jitter": self.output_jitter,
            "seed": self.seed,
            "iterations": self.iterations,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["localization"] = keras.saving.deserialize_keras_object(config["localization"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="stn")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose input gradient is :func:`stn.layer.conv.conv2d`'s.

    The classifier's first layer in an ST model, which must pass the
    gradient to its input (the transformer's output): TensorFlow's own
    backward-data convolution is slow on CPU for one input channel, and
    :mod:`stn.layer.conv` computes the same gradient by matrix products. The same
    weights, variable paths, outputs and weight gradients as Keras's layer,
    so a model saved with ``keras.layers.Conv2D`` loads into it and a
    checkpoint of either fits both. On JAX and PyTorch, or for
    ``channels_first``, dilation, groups or unequal strides, it is Keras's
    layer unchanged.
    """

    def _fast_gradient(self) -> bool:
        return (keras.backend.backend() == "tensorflow"
                and self.data_format == "channels_last" and self.groups == 1
                and tuple(self.dilation_rate) == (1, 1)
                and self.strides[0] == self.strides[1])

    def convolution_op(self, inputs, kernel):
        if not self._fast_gradient() or None in tuple(inputs.shape[1:3]):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        from stn.layer import conv

        kernel = tf.cast(tf.convert_to_tensor(kernel), inputs.dtype)
        return conv.conv2d(inputs, kernel, self.strides[0], self.padding)
