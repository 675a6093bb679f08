"""Helpers shared by several test files (imported as ``helpers``)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.data import protocols

ROOT = Path(__file__).resolve().parents[1]
CANVAS = 40
# The shared finished run (conftest.finished_run): the predecessor preset with a
# 32-unit dense layer and the cosine recipe (warm-up, then cosine to 0), 2
# epochs of 2 steps on 200 real MNIST digits, validated and tested on 200.
FINISHED_CONFIG = C.make_config("seed", "seed", model_overrides={"dense_units": 32}, epochs=2,
                                batch_size=100, max_train_examples=200, max_steps_per_epoch=2,
                                max_eval_examples=200, recipe="cosine")


def script(path: str):
    """The repository's script at ``path`` (e.g. ``"experiments/table1.py"``) as a module."""
    name = path.replace("/", "_").removesuffix(".py") + "_script"
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry_point(name: str):
    """``main`` of the repository's ``<name>.py`` script, imported in-process."""
    return script(f"{name}.py").main


def seed_warps(n: int, seed: int = 0) -> np.ndarray:
    """``n`` sampling matrices of the seed protocol: float64 ``[n, 2, 3]``."""
    return protocols.PROTOCOLS["predecessor"].sample(n, np.random.default_rng(seed)).reshape(n, 2, 3)


def synthetic_split(n: int, rng: np.random.Generator) -> stn_data.Split:
    """A seed-protocol Split of ``n`` random 'digits' (no MNIST needed)."""
    canonical = (rng.random((n, 28, 28)) * 255).astype(np.uint8)
    labels = np.arange(n, dtype=np.int32) % 10
    params = seed_warps(n, seed=1).reshape(n, 6).astype(np.float32)
    images = protocols.apply("seed", stn_data.pad(canonical, CANVAS).numpy(), params)
    return stn_data.Split(images, labels, params, canonical, "seed", "affine")


def run_backend_worker(script: str, backend: str, out: Path, model_file: Path,
                       timeout: float) -> None:
    """Runs a test module's worker (``script out model_file``) in a fresh process on
    ``backend``, on the CPU; skips if the backend is not installed, fails with its stderr."""
    import pytest

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -r requirements-test.txt)")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, script, str(out), str(model_file)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
