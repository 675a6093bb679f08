"""The spatial transformer layer: sampler, grids, transformer kinds, the Keras layers.

Imports only Keras and NumPy (TensorFlow lazily, for its fast paths); nothing
else of ``stn``. ``stn.layer.layers`` holds ``SpatialTransformer``.
"""
