"""The import paths users and saved models know still work after the move into subpackages."""

import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
KERAS_FILES = sorted(p for p in ROOT.rglob("*.keras") if ".git" not in p.parts)


def test_the_committed_models_are_found():
    assert KERAS_FILES, "no committed .keras file found"


@pytest.mark.parametrize("path", KERAS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_committed_model_loads_and_names_a_kept_module(path):
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    text = json.dumps(config)
    modules = {m for m in _values(config, "module") if m.startswith("stn")}
    assert modules and all(importlib.import_module(m) for m in modules), modules
    assert '"stn>SpatialTransformer"' in text
    # In a fresh process: `import stn` alone must register what the file needs.
    code = ("import sys, keras, numpy as np, stn\n"
            f"model = keras.saving.load_model({str(path)!r})\n"
            "x = np.zeros((2, *model.input_shape[1:]), 'float32')\n"
            "print(np.asarray(model(x)).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(2, 10)"


def _values(tree, key):
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and isinstance(v, str):
                yield v
            yield from _values(v, key)
    elif isinstance(tree, list):
        for v in tree:
            yield from _values(v, key)


def test_stn_layers_and_stn_model():
    from stn.layer import layers
    from stn.layers import (Conv2D, SpatialTransformer, compose, conv_localization,  # noqa: F401
                            dense_localization, fc_localization, theta_layer)
    from stn.model import build_model, find_transformer, transformer_outputs  # noqa: F401
    assert SpatialTransformer is layers.SpatialTransformer and Conv2D is layers.Conv2D


def test_every_old_flat_module_name_resolves_to_its_new_module():
    import stn
    assert len(stn.OLD_MODULES) == 28
    for old, new in stn.OLD_MODULES.items():
        assert getattr(stn, old) is importlib.import_module(new), old
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        stn.nonesuch  # noqa: B018


def test_the_notebook_and_readme_imports():
    from stn import data, evaluation, figures, kinds, tiles  # the notebook's line
    from stn.analysis import evaluation as new_evaluation
    from stn.data import pipeline
    assert evaluation is new_evaluation
    assert data.load_data is pipeline.load_data and data.build_data is pipeline.build_data
    assert callable(figures.confusion_figure) and callable(tiles.first_of_each_class)
    np.testing.assert_array_equal(kinds.identity("affine"), [[1, 0, 0, 0, 1, 0]])


def test_the_old_stn_data_names_are_the_pipelines_public_names():
    import stn.data
    from stn.data import pipeline
    for name in stn.data.PIPELINE_NAMES:
        assert getattr(stn.data, name) is getattr(pipeline, name), name
    with pytest.raises(AttributeError):
        stn.data.nonesuch  # noqa: B018
