"""Helpers shared by several test files (imported as ``helpers``)."""

import contextlib
import importlib.util
import os
import shutil
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


def run_backend_worker(script: Path, backend: str, *args: Path, timeout: float) -> None:
    """Runs ``script *args`` in a fresh process on ``backend``, on the CPU; skips if the
    backend is not installed, fails with its stderr."""
    import pytest

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -r requirements-test.txt)")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(script), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (a file) between processes, held for the block."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _session_folder(tmp_path_factory) -> Path:
    """A folder of this test session that every pytest-xdist worker shares."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "backend_workers"
    folder.mkdir(exist_ok=True)
    return folder


def _once(folder: Path, make) -> Path:
    """``make(folder)`` run once per session across processes (a ``done`` mark says so)."""
    with _locked(folder.with_suffix(".lock")):
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / "done").touch()
    return folder


def tensorflow_models(tmp_path_factory) -> Path:
    """The small models the backend workers load, saved on TensorFlow, with their outputs:
    ``layer.keras`` / ``layer.npy`` (tests/test_backends.py), ``volumes.keras`` /
    ``volumes.npy`` (tests/test_volumes.py); made once per session."""
    def make(folder):
        import test_backends
        import test_volumes

        test_backends.save_tensorflow_model(folder / "layer")
        test_volumes.save_tensorflow_model(folder / "volumes")

    return _once(_session_folder(tmp_path_factory) / "tensorflow", make)


def backend_outputs(tmp_path_factory, backend: str, timeout: float = 1200) -> Path:
    """``tests/backend_worker.py``'s results on ``backend``: ``layer/`` (the 2-D layer,
    tests/test_backends.py) and ``volumes/`` (tests/test_volumes.py). One process per backend
    for the whole session, whichever pytest-xdist worker asks first; the others wait for it
    and read the same folder (a process costs more to start than both workers to run)."""
    models = tensorflow_models(tmp_path_factory)
    return _once(_session_folder(tmp_path_factory) / backend, lambda out: run_backend_worker(
        ROOT / "tests" / "backend_worker.py", backend, out, models, timeout=timeout))
