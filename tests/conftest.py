"""Fixtures shared by the test modules: one finished training run on real MNIST.

Trained once per test session (a few seconds: 2 epochs of 2 steps on 200
images) and shared by the tests that need a finished run (stn.train.monitor's logs
and trace, evaluate.py, a checkpoint of another model). It is read-only: a
test that changes a run works on ``finished_run_copy``.

The suite compiles XLA (TensorFlow's jit-compiled samplers, JAX's functions,
in this process and in the ones it starts) at LLVM optimisation level 0: the
tests check numbers, not speed, and compiling is most of their XLA time
(the JAX backend's worker: 42 -> 31 s). The benchmarks (bench/) compile as
users do.
"""

import os
import shutil

_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import pytest

import helpers


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The run directory of ``helpers.FINISHED_CONFIG``, trained to the end (read-only)."""
    from stn.train import training

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    training.train_and_evaluate(helpers.FINISHED_CONFIG, run_dir, verbose=0)
    return run_dir


@pytest.fixture
def finished_run_copy(finished_run, tmp_path):
    """A copy of ``finished_run`` that the test may change."""
    return shutil.copytree(finished_run, tmp_path / "run")
