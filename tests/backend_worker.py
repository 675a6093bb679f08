"""The layer's checks on a backend other than TensorFlow, in one fresh process.

    KERAS_BACKEND=jax python tests/backend_worker.py OUT MODELS

Runs the worker of tests/test_backends.py (the 2-D layer) into ``OUT/layer``,
then that of tests/test_volumes.py (3-D) into ``OUT/volumes``; ``MODELS`` holds
the models saved on TensorFlow that each loads (``helpers.tensorflow_models``).
The 2-D worker runs first: it checks that the layer imports no TensorFlow.
Started by ``helpers.backend_outputs``, once per backend and test session.
"""

import sys
from pathlib import Path


def main(out: Path, models: Path) -> None:
    import test_backends  # tests/ is sys.path[0]: this file's own folder

    (out / "layer").mkdir()
    test_backends.worker(out / "layer", models / "layer.keras")
    import test_volumes

    (out / "volumes").mkdir()
    test_volumes.worker(out / "volumes", models / "volumes.keras")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
