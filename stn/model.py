"""The classifiers: optional spatial transformers, then a conv net or an FCN.

Importable in a notebook::

    import stn.model
    model = stn.model.build_model("seed")          # keras.Model, logits
    params, upright = stn.model.transformer_outputs(model, images)

**Parallel transformers** (``ModelConfig.transformers = N``, paper appendix
A.1): N transformers side by side, each reading all the input channels with
its own localization net, their outputs concatenated along the channels
(transformer 1's C channels first), so the classifier reads ``N * C``
channels. The layers are named ``transformer`` when N is 1 (the name every
saved model and checkpoint knows) and ``transformer_1`` ... ``transformer_N``
otherwise; :func:`find_transformers` lists them in that order, and
:func:`find_transformer` and :func:`transformer_outputs` take the ``index``
of one (needed when N > 1).

The model knows nothing of files, plots or command lines.
"""

import dataclasses
import weakref

import keras
import numpy as np

from stn.layer.backends import require_tensorflow
from stn.train.config import ModelConfig, model_config
from stn.layer.layers import (Conv2D, SpatialTransformer, conv_localization, dense_localization,
                        fc_localization)


def build_model(preset: str | ModelConfig = "seed", *, fast_input_gradient: bool | None = None,
                **overrides) -> keras.Model:
    """Builds a classifier from float32 images ``[B, S, S, C]`` to logits ``[B, K]``.

    ``S``, ``C`` and ``K`` are the config's ``input_size``, ``channels`` and
    ``classes`` (the dataset sets the last two: stn.data.datasets).

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
    inputs = keras.Input((size, size, config.channels), name="images")
    x = inputs
    if config.transformer:
        x = _transformers(config, inputs)
    if fast_input_gradient is None:
        fast_input_gradient = config.transformer
    classifier = _CLASSIFIERS[config.classifier]
    x = classifier(x, config, keras.DTypePolicy(config.dtype), _first_conv(fast_input_gradient))
    if config.classifier_dropout:
        x = keras.layers.Dropout(config.classifier_dropout, name="classifier_dropout")(x)
    logits = keras.layers.Dense(config.classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"stn_{config.preset}")


def _localization(config: ModelConfig) -> keras.layers.Layer:
    common = dict(init=config.theta_init, kind=config.kind)
    if config.localization == "dense":
        return dense_localization(config.localization_hidden, config.localization_dropout,
                                  **common)
    if config.localization == "fc":
        return fc_localization(config.localization_units, **common)
    return conv_localization(**common)


def _transformers(config: ModelConfig, inputs):
    """``[B, h, w, N * C]``: the N parallel transformers' outputs, concatenated."""
    if config.transformers == 1:
        return _transformer(config, "transformer")(inputs)
    outputs = [_transformer(config, f"transformer_{i + 1}")(inputs)
               for i in range(config.transformers)]
    return keras.layers.Concatenate(axis=-1, name="transformers")(outputs)


def _transformer(config: ModelConfig, name: str) -> SpatialTransformer:
    size = config.transformer_output_size
    return SpatialTransformer(_localization(config), kind=config.kind,
                              output_size=(size, size) if size else None,
                              theta_activation=config.theta_activation,
                              image_gradient=False,  # its input is the raw images
                              output_jitter=config.output_jitter,
                              iterations=config.transformer_iterations,
                              dtype="float32", name=name)


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


def find_transformers(model: keras.Model) -> list[SpatialTransformer]:
    """The model's SpatialTransformer layers in the model's order (empty if none).

    For :func:`build_model`'s parallel transformers: ``transformer_1``, ...,
    ``transformer_N``, the order of their channels in the classifier's input.
    """
    return [layer for layer in model.layers if isinstance(layer, SpatialTransformer)]


def find_transformer(model: keras.Model, index: int | None = None) -> SpatialTransformer | None:
    """The model's SpatialTransformer layer, or None if it has none.

    Args:
      model: a Keras model.
      index: which of several parallel transformers (0-based, the order of
        :func:`find_transformers`); None: the model's only one.

    Raises:
      ValueError: ``index`` is None and the model has several transformers,
        or ``index`` is out of range.
    """
    found = find_transformers(model)
    if index is None:
        if len(found) > 1:
            raise ValueError(f"model {model.name!r} has {len(found)} parallel transformers: "
                             f"pass index=0..{len(found) - 1}, or use find_transformers()")
        return found[0] if found else None
    if not 0 <= index < len(found):
        raise ValueError(f"transformer index {index} out of range: model {model.name!r} "
                         f"has {len(found)} transformer(s)")
    return found[index]


def transformer_outputs(model: keras.Model, images, batch_size: int = 1000,
                        index: int | None = None):
    """A transformer's parameters and output for ``images`` (inference mode).

    Args:
      model: a model built by :func:`build_model` (or any functional model
        with SpatialTransformer layers).
      images: float32 ``[N, S, S, C]``.
      batch_size: images per forward pass.
      index: with parallel transformers, which one (0-based, the order of
        :func:`find_transformers`); None: the model's only one.

    Returns:
      ``(params float32 [N, P], transformed float32 [N, h, w, C])`` as NumPy:
      that transformer's parameters of its kind (``find_transformer(model,
      index).kind``, stn.layer.kinds), output -> input coordinates, and its
      output (all ``C`` input channels, warped by the one map).
    """
    steps = _TRANSFORMER_STEPS.setdefault(model, {})
    if index not in steps:
        require_tensorflow("stn.model.transformer_outputs")
        import tensorflow as tf  # here, not at the top: the builders run on any backend

        # One tf.function per model and transformer, kept: a new one per call
        # would trace again every time (and TensorFlow warns of the retracing).
        steps[index] = tf.function(_transformer_step(model, index), reduce_retracing=True,
                                   autograph=False)
    return in_batches(steps[index], images, batch_size)


# model -> {index: its compiled transformer step}; an entry goes when its model does.
_TRANSFORMER_STEPS = weakref.WeakKeyDictionary()


def _transformer_step(model: keras.Model, index: int | None = None):
    """``batch -> (theta, outputs)`` of one of the model's transformers, inference mode."""
    layer = find_transformer(model, index)
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
            else tf.function(fn, reduce_retracing=True, autograph=False))
    parts = [step(tf.constant(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return tf.nest.map_structure(lambda *part: np.concatenate([p.numpy() for p in part]), *parts)
