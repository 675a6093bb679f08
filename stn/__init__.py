"""Spatial Transformer Networks (Jaderberg et al., 2015) on warped MNIST.

``import stn`` registers the package's Keras layers (``stn>SpatialTransformer``),
so ``keras.saving.load_model`` can read any ``.keras`` file that uses them.
"""

from stn import layers  # noqa: F401  (the registration)
from stn import kinds3d  # noqa: F401  (registers the 3-D and flow kinds)
