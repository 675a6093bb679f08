"""The old import path of the Keras layers, kept: they live in ``stn.layer.layers``.

The committed ``.keras`` files and user code name ``stn.layers``.
"""

from stn.layer.layers import (  # noqa: F401
    Conv2D, SpatialTransformer, compose, conv_localization, dense_localization, fc_localization,
    theta_layer)
