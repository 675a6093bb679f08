"""Which Keras backend runs, and a clear error where only TensorFlow will do.

The layer, the kinds and the model builders run on JAX, PyTorch and
TensorFlow (:mod:`stn.layer.sampler`); the training loop, the data pipeline and
the batched evaluation helpers are written in TensorFlow (``tf.data``,
``tf.function``) and need the TensorFlow backend.
"""

import keras


def require_tensorflow(what: str) -> None:
    """Raises unless Keras runs on TensorFlow, saying what to do instead.

    Args:
      what: the feature that needs TensorFlow, for the message
        (e.g. ``"stn.train.training.train_and_evaluate"``).

    Raises:
      RuntimeError: the Keras backend is not TensorFlow.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} is written in TensorFlow and needs the TensorFlow Keras backend, "
            f"but KERAS_BACKEND is {backend!r}. Run it with KERAS_BACKEND=tensorflow "
            f'(pip install "stn[train]" installs TensorFlow); on {backend}, use the layer '
            "(stn.layers.SpatialTransformer) or stn.model.build_model with your own "
            "model.fit / predict.")
