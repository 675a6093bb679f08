"""The spatial transformer in your own Keras model (docs/backends.md shows this file)."""

import keras
import numpy as np

from stn.layers import SpatialTransformer, conv_localization

# 60x60 RGB images in, the transformer's 32x32 crop out, a small classifier after it.
inputs = keras.Input((60, 60, 3))
x = SpatialTransformer(conv_localization(kind="affine"), kind="affine",
                       output_size=(32, 32))(inputs)
x = keras.layers.Conv2D(16, 3, activation="relu")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(10)(x))

model.compile(optimizer="adam", metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
images = np.random.rand(64, 60, 60, 3).astype("float32")
labels = np.random.randint(0, 10, size=64)
model.fit(images, labels, batch_size=32, epochs=2)

model.save("my_model.keras")  # in a new process, `import stn` before loading it
restored = keras.saving.load_model("my_model.keras")
np.testing.assert_allclose(restored.predict(images), model.predict(images), atol=1e-6)
