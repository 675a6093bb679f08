"""The classifiers: an optional spatial transformer, then a conv net.

Importable in a notebook::

    import stn.model
    model = stn.model.build_model("seed")          # keras.Model, logits
    params, upright = stn.model.transformer_outputs(model, images)

The model knows nothing of files, plots or command lines.
"""

import dataclasses
import weakref

import keras
import numpy as np

from stn.layer.backends import require_tensorflow
from stn.train.config import ModelConfig, model_config
from stn.data.mnist import NUM_CLASSES
from stn.layer.layers import (Conv2D, SpatialTransformer, conv_localization, dense_localization,
                        fc_localization)


def build_model(preset: str | ModelConfig = "seed", *, fast_input_gradient: bool | None = None,
                **overrides) -> keras.Model:
    """Builds a classifier from float32 images ``[B, S, S, 1]`` to logits ``[B, 10]``.

    Args:
      preset: a preset name (``seed``, ``paper``, ``st-cnn-tps``, ...; see
        stn.train.config.MODEL_PRESETS) or a full ModelConfig.
      fast_input_gradient: the classifier's first convolution computes its
        input gradient by matrix products (stn.layers.Conv2D; on TensorFlow,
        else it is Keras's layer): same outputs and weights, a cheaper backward pass when that
        gradient is needed. None (default): when a transformer precedes it,
        whose localization net needs that gradient.
      **overrides: ModelConfig fields to replace, e.g. ``input_size=42``.
    """
    config = (dataclasses.replace(preset, **overrides) if isinstance(preset, ModelConfig)
              else model_config(preset, **overrides))
    size = config.input_size
    inputs = keras.Input((size, size, 1), name="images")
    x = inputs
    if config.transformer:
        x = _transformer(config)(x)
    if fast_input_gradient is None:
        fast_input_gradient = config.transformer
    classifier = _CLASSIFIERS[config.classifier]
    x = classifier(x, config, keras.DTypePolicy(config.dtype), _first_conv(fast_input_gradient))
    if config.classifier_dropout:
        x = keras.layers.Dropout(config.classifier_dropout, name="classifier_dropout")(x)
    logits = keras.layers.Dense(NUM_CLASSES, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"stn_{config.preset}")


def _localization(config: ModelConfig) -> keras.layers.Layer:
    common = dict(init=config.theta_init, kind=config.kind)
    if config.localization == "dense":
        return dense_localization(config.localization_hidden, config.localization_dropout,
                                  **common)
    if config.localization == "fc":
        return fc_localization(config.localization_units, **common)
    return conv_localization(**common)


def _transformer(config: ModelConfig) -> SpatialTransformer:
    size = config.transformer_output_size
    return SpatialTransformer(_localization(config), kind=config.kind,
                              output_size=(size, size) if size else None,
                              theta_activation=config.theta_activation,
                              image_gradient=False,  # its input is the raw images
                              output_jitter=config.output_jitter,
                              iterations=config.transformer_iterations,
                              dtype="float32", name="transformer")


def _first_conv(fast_input_gradient: bool) -> type:
    """The first convolution's class: stn.layers.Conv2D if asked, else Keras's."""
    return Conv2D if fast_input_gradient else keras.layers.Conv2D


def _seed_classifier(x, config: ModelConfig, dtype, first_conv=keras.layers.Conv2D):
    """Conv 3x3 -> conv 3x3 (ReLU, same padding; each max-pooled 2x2 if asked) -> Dense(ReLU)."""
    for i, filters in enumerate(config.conv_filters):
        conv = first_conv if i == 0 else keras.layers.Conv2D
        x = conv(filters, 3, strides=config.conv_strides, padding="same", activation="relu",
                 dtype=dtype, name=f"conv{i + 1}")(x)
        if config.conv_pooling:
            x = keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    return keras.layers.Dense(config.dense_units, activation="relu", dtype=dtype, name="dense")(x)


def _paper_classifier(x, config: ModelConfig, dtype, first_conv=keras.layers.Conv2D):
    """Conv 9x9 -> max-pool -> conv 7x7 -> max-pool -> Dense (paper, A.4)."""
    for i, (filters, kernel) in enumerate(zip(config.conv_filters, (9, 7))):
        conv = first_conv if i == 0 else keras.layers.Conv2D
        x = conv(filters, kernel, activation="relu", dtype=dtype, name=f"conv{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    return keras.layers.Dense(config.dense_units, activation="relu", dtype=dtype, name="dense")(x)


def _fcn_classifier(x, config: ModelConfig, dtype, first_conv=None):
    """Flatten -> Dense -> Dense (ReLU): with the logits, the paper's 3-layer FCN."""
    x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    for i in range(2):
        x = keras.layers.Dense(config.dense_units, activation="relu", dtype=dtype,
                               name=f"dense{i + 1}")(x)
    return x


_CLASSIFIERS = {"seed": _seed_classifier, "paper": _paper_classifier, "fcn": _fcn_classifier}


def find_transformer(model: keras.Model) -> SpatialTransformer | None:
    """The model's SpatialTransformer layer, or None if it has none."""
    found = [layer for layer in model.layers if isinstance(layer, SpatialTransformer)]
    return found[0] if found else None


def transformer_outputs(model: keras.Model, images, batch_size: int = 1000):
    """The transformer's parameters and output for ``images`` (inference mode).

    Args:
      model: a model built by :func:`build_model` (or any functional model
        with one SpatialTransformer layer).
      images: float32 ``[N, S, S, 1]``.
      batch_size: images per forward pass.

    Returns:
      ``(params float32 [N, P], transformed float32 [N, h, w, C])`` as NumPy:
      the parameters of the layer's kind (``find_transformer(model).kind``,
      stn.layer.kinds), output -> input coordinates.
    """
    step = _TRANSFORMER_STEPS.get(model)
    if step is None:
        require_tensorflow("stn.model.transformer_outputs")
        import tensorflow as tf  # here, not at the top: the builders run on any backend

        # One tf.function per model, kept: a new one per call would trace
        # again every time (and TensorFlow warns of the retracing).
        step = tf.function(_transformer_step(model), reduce_retracing=True)
        _TRANSFORMER_STEPS[model] = step
    return in_batches(step, images, batch_size)


# model -> its compiled transformer step; an entry goes when its model does.
_TRANSFORMER_STEPS = weakref.WeakKeyDictionary()


def _transformer_step(model: keras.Model):
    """``batch -> (theta, outputs)`` of the model's SpatialTransformer, inference mode."""
    layer = find_transformer(model)
    if layer is None:
        raise ValueError(f"model {model.name!r} has no SpatialTransformer layer")
    upstream = keras.Model(model.inputs, layer.input)

    def step(batch):
        outputs, theta = layer.transform_and_theta(upstream(batch, training=False),
                                                   training=False)
        return theta, outputs

    return step


def in_batches(fn, images, batch_size: int = 1000):
    """``fn``, compiled once, over ``images`` in batches; its outputs joined.

    Args:
      fn: maps a batch ``[b, ...]`` to a tensor ``[b, ...]`` or a tuple of them
        (a ``tf.function`` is used as it is).
      images: NumPy ``[N, ...]``.
      batch_size: images per call.

    Returns:
      NumPy ``[N, ...]``, or a tuple of them, as ``fn`` returns.
    """
    require_tensorflow("stn.model.in_batches")
    import tensorflow as tf  # here, not at the top: the builders run on any backend

    step = (fn if isinstance(fn, tf.types.experimental.PolymorphicFunction)
            else tf.function(fn, reduce_retracing=True))
    parts = [step(tf.constant(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return tf.nest.map_structure(lambda *part: np.concatenate([p.numpy() for p in part]), *parts)
