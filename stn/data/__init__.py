"""Data: MNIST, warp geometry, the protocols registry, the pipelines, tiles.

``stn.data`` was once the pipeline module; its public names (``load_data``,
``build_data``, ...: ``PIPELINE_NAMES``) still resolve here, from
``stn.data.pipeline``, imported on first use (it imports TensorFlow).
"""

import importlib

PIPELINE_NAMES = ("MNIST_SIZE", "IMAGE_SIZE", "VALIDATION_SIZE", "SPLITS", "NUM_CLASSES",
                  "PIPELINE_DEPTH", "Split", "Data", "pad", "build_data", "load_data",
                  "load_mnist", "epoch_order", "epoch_warps", "warp_strength", "train_dataset",
                  "eval_dataset")


def __getattr__(name: str):
    if name in PIPELINE_NAMES:
        return getattr(importlib.import_module("stn.data.pipeline"), name)
    raise AttributeError(f"module 'stn.data' has no attribute {name!r}")
