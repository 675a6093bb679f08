"""Spatial Transformer Networks (Jaderberg et al., 2015) on warped MNIST.

``import stn`` registers the package's Keras layers (``stn>SpatialTransformer``),
so ``keras.saving.load_model`` can read any ``.keras`` file that uses them.

The subpackages follow the import graph; each imports only those above it:

- ``stn.layer``: the sampler, grids, transformer kinds and the Keras layers
  (what ``pip install .`` is for); imports nothing else of ``stn``.
- ``stn.data``: MNIST, warp geometry, the protocols registry, the pipelines.
- ``stn.model``: the classifiers (``build_model``, ``transformer_outputs``).
- ``stn.train``: config, recipes, the loop, optimizers, precision, the
  alignment term, run directories, checkpoints, the monitor.
- ``stn.analysis``: evaluation and pose alignment.
- ``stn.viz``: figures, the training animation, the architecture drawing.

Old import paths that users and saved models know, kept:

- ``stn.layers`` (a module): ``SpatialTransformer``, the localization
  builders, ``compose``, ``theta_layer``, ``Conv2D``; the committed
  ``.keras`` files name it as their layers' module.
- ``stn.model`` is the real module, unmoved.
- ``from stn import <old module>`` and ``stn.<old module>.<name>`` after
  ``import stn``, for the flat modules' names (``kinds``, ``evaluation``,
  ``figures``, ``tiles``, ``config``, ``training``, ...; ``OLD_MODULES``
  below), resolved on first use; ``stn.data`` is the data subpackage and
  still answers the old ``stn.data`` pipeline names (``load_data``, ...).
"""

import importlib

from stn import layers  # noqa: F401  (the registration)
from stn.layer import kinds3d  # noqa: F401  (registers the 3-D and flow kinds)

OLD_MODULES = {
    "sampler": "stn.layer.sampler", "transform_grids": "stn.layer.transform_grids",
    "transform": "stn.layer.transform", "kind_maps": "stn.layer.kind_maps",
    "kinds": "stn.layer.kinds", "conv": "stn.layer.conv", "backends": "stn.layer.backends",
    "mnist": "stn.data.mnist", "warps": "stn.data.warps", "protocols": "stn.data.protocols",
    "protocol_families": "stn.data.protocol_families", "tiles": "stn.data.tiles",
    "config": "stn.train.config", "cli": "stn.train.cli", "optimizers": "stn.train.optimizers",
    "precision": "stn.train.precision", "alignment": "stn.train.alignment",
    "training": "stn.train.training", "runs": "stn.train.runs",
    "checkpoints": "stn.train.checkpoints", "monitor": "stn.train.monitor",
    "trace": "stn.train.trace", "evaluation": "stn.analysis.evaluation",
    "pose": "stn.analysis.pose", "figures": "stn.viz.figures",
    "pose_figure": "stn.viz.pose_figure", "animation": "stn.viz.animation",
    "architecture_figure": "stn.viz.architecture_figure",
}
"""The flat layout's module names -> where each module lives now."""


def __getattr__(name: str):
    if name in OLD_MODULES:
        return importlib.import_module(OLD_MODULES[name])
    raise AttributeError(f"module 'stn' has no attribute {name!r}")
