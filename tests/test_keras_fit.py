"""The layer in a user's own Keras model: compile, fit, save, load in a fresh process.

Imported as a user would; every kind, RGB non-square images, an output size
different from the input, in a Sequential and a functional model.
"""

import runpy
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import helpers
from stn.layer.kinds3d import image_kinds
from stn.layer.layers import SpatialTransformer, conv_localization

pytestmark = pytest.mark.slow
SHAPE, OUT = (36, 48, 3), (24, 20)  # (H, W, C) in, (h, w) out
# fit() runs eagerly here: tracing twelve train functions cost four times the
# fits; graph-mode fit() is the docs example's (test_docs_example_runs), and
# every kind is traced in graphs by the backend and model tests.
RUN_EAGERLY = True
EXAMPLE = helpers.ROOT / "examples" / "keras_fit.py"
DOC, DOC_SECTION = helpers.ROOT / "docs" / "backends.md", "## The layer in your own Keras model"

LOAD = textwrap.dedent("""
    import sys
    import keras, numpy as np
    import stn  # all it takes: registers the layer

    inputs, saved = np.load(sys.argv[1]), {}
    for name in sys.argv[3:]:
        model = keras.saving.load_model(f"{sys.argv[2]}/{name}.keras")
        for i, output in enumerate(keras.tree.flatten(model(inputs, training=False))):
            saved[f"{name}:{i}"] = np.asarray(output)
    np.savez(sys.argv[1] + ".out.npz", **saved)
""")


def transformer(kind, **kwargs):
    # The plain-graph sampler: six models' XLA compilations would cost more than
    # all the rest here; the default XLA sampler is the docs example's (docs/backends.md).
    return SpatialTransformer(conv_localization(kind=kind), kind=kind, output_size=OUT,
                              jit_compile=False, **kwargs)


def sequential(kind):
    return keras.Sequential([
        keras.Input(SHAPE),
        transformer(kind),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


def functional(kind):
    """Two heads: the classes, and the transformer's output itself."""
    inputs = keras.Input(SHAPE)
    crop = transformer(kind, name="transformer")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(crop)
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x),
                                    keras.layers.GlobalAveragePooling2D()(inputs)])
    return keras.Model(inputs, [keras.layers.Dense(10, name="logits")(x), crop])


MODELS = {f"{build.__name__}-{kind}": (build, kind)
          for kind in image_kinds() for build in (sequential, functional)}


def fit(model, images, labels):
    """Plain compile/fit, eager: a few Adam steps on the classes (the crop head has no loss)."""
    losses = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=RUN_EAGERLY,
                  loss=[losses, None] if len(model.outputs) > 1 else losses)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # 2 steps


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Every model trained and saved here, then loaded in one fresh process."""
    folder = tmp_path_factory.mktemp("keras_fit")
    rng = np.random.default_rng(0)
    images = rng.random((16, *SHAPE), dtype=np.float32)
    labels = rng.integers(0, 10, 16)
    models = {}
    for name, (build, kind) in MODELS.items():
        models[name] = build(kind)
        fit(models[name], images, labels)
        models[name].save(folder / f"{name}.keras")
    np.save(folder / "inputs.npy", images)
    proc = subprocess.run([sys.executable, "-c", LOAD, str(folder / "inputs.npy"), str(folder),
                           *MODELS], capture_output=True, text=True, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(folder / "inputs.npy.out.npz") as out:
        return models, images, {name: out[name] for name in out.files}


@pytest.mark.parametrize("name", MODELS)
def test_fit_save_and_load_in_a_fresh_process(loaded, name):
    models, images, outputs = loaded
    model = models[name]
    layer = next(l for l in model.layers if isinstance(l, SpatialTransformer))
    # fit() moved the transformer off its identity start, so the saved one is nontrivial.
    assert np.abs(layer.localization.layers[-1].kernel.numpy()).max() > 0
    expected = keras.tree.flatten(model(images, training=False))
    assert [outputs[f"{name}:{i}"].shape for i in range(len(expected))] == \
        [(16, 10), (16, *OUT, 3)][:len(expected)]
    for i, array in enumerate(expected):
        np.testing.assert_array_equal(outputs[f"{name}:{i}"], np.asarray(array))


def test_docs_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLE), run_name="__main__")  # asserts the reloaded predictions
    assert (tmp_path / "my_model.keras").exists()


def test_docs_show_the_example_verbatim():
    text = DOC.read_text()
    assert DOC_SECTION in text, f"docs/backends.md lacks the section {DOC_SECTION!r}"
    block = text.split(DOC_SECTION, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = EXAMPLE.read_text()
    body = code.split('"""', 2)[2].lstrip("\n")  # the file without its docstring
    assert block == body
