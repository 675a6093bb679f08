"""The arithmetic cost of a model and of a whole training run, counted from its layers.

A run's cost on a CPU is mostly its multiply-adds, so the default model is
chosen by this count (docs/performance.md): it names the cost of a recipe
independently of the machine that trains it. Counted: every ``Conv2D`` and
``Dense`` (2 FLOPs per multiply-add, bias and activation ignored), in the
classifier and in the spatial transformer's localization net. Not counted:
pooling, the sampler and the warps (a few FLOPs per output pixel), the
optimizer's update (a few FLOPs per parameter per step).

Training costs 3x the forward pass (the backward pass computes two products
per forward one: the input's gradient and the weights'); the alignment term
(stn.alignment) adds one localization pass per image and step, on the
rotated copy of the batch, with its own backward pass.
"""

import dataclasses

import keras

from stn.model import build_model, find_transformer

TRAIN_FACTOR = 3  # forward + backward (input and weight gradients)
TRAIN_IMAGES, VALIDATION_IMAGES = 55_000, 5_000  # stn.data's split of the training set


@dataclasses.dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs of one image through each part of a model."""

    localization: int
    classifier: int

    @property
    def total(self) -> int:
        return self.localization + self.classifier


def layer_flops(layer: keras.layers.Layer, input_shape: tuple) -> tuple[int, tuple]:
    """``(FLOPs of one image, output shape)`` of a layer on a batch of ``input_shape``.

    Args:
      layer: any built Keras layer; a Sequential is walked layer by layer.
      input_shape: ``(B, ...)`` with B = 1.
    """
    if isinstance(layer, keras.Sequential):
        total, shape = 0, input_shape
        for sub in layer.layers:
            flops, shape = layer_flops(sub, shape)
            total += flops
        return total, shape
    output_shape = tuple(layer.compute_output_shape(input_shape))
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, c_in, c_out = layer.kernel.shape
        return 2 * output_shape[1] * output_shape[2] * kh * kw * c_in * c_out, output_shape
    if isinstance(layer, keras.layers.Dense):
        n_in, n_out = layer.kernel.shape
        positions = 1
        for d in output_shape[1:-1]:
            positions *= d
        return 2 * positions * n_in * n_out, output_shape
    return 0, output_shape


def forward_flops(model: keras.Model) -> ForwardFlops:
    """Forward FLOPs per image of a functional model built by :func:`stn.model.build_model`."""
    transformer = find_transformer(model)
    localization = classifier = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = (1, *layer.input.shape[1:])
        if layer is transformer:
            localization += layer_flops(layer.localization, shape)[0]
        else:
            classifier += layer_flops(layer, shape)[0]
    return ForwardFlops(localization, classifier)


def training_flops(config, train_images: int = TRAIN_IMAGES,
                   validation_images: int = VALIDATION_IMAGES) -> dict:
    """The FLOPs of a whole run of ``config`` (a stn.config.Config).

    Returns:
      ``{"forward_per_image", "localization_per_image", "train_step_per_image",
      "run"}``: the forward pass, its localization part, one training image's
      step (with the alignment term's extra pass if on), and the run's total:
      ``epochs`` x (training images x the step + validation images x the
      forward pass); the test split's one pass is left out.
    """
    forward = forward_flops(build_model(config.model))
    passes = 2 if config.alignment else 1  # the term's pass on the rotated batch
    step = TRAIN_FACTOR * (forward.classifier + passes * forward.localization)
    run = config.epochs * (train_images * step + validation_images * forward.total)
    return {"forward_per_image": forward.total, "localization_per_image": forward.localization,
            "train_step_per_image": step, "run": run}
