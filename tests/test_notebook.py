"""notebooks/quickstart.ipynb runs end to end, on the venv's Python, on the pretrained model.

``python tests/test_notebook.py`` executes it and saves it with its outputs
(what is committed).
"""

import json
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import helpers

NOTEBOOK = helpers.ROOT / "notebooks" / "quickstart.ipynb"
PRETRAINED = helpers.ROOT / "pretrained" / "st-cnn-affine_rts.keras"  # the notebook's default
pytestmark = pytest.mark.slow


def execute(notebook, model_path, kernel_dir, timeout: int = 600):
    """Runs ``notebook`` (a NotebookNode, in place) against ``model_path``.

    The kernel is this interpreter (a kernel spec written into ``kernel_dir``),
    started in ``notebooks/`` with ``STN_NOTEBOOK_MODEL`` set.
    """
    spec = kernel_dir / "stn-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        # No fd capture: TensorFlow's C++ start-up log (written to fd 2 whatever
        # TF_CPP_MIN_LOG_LEVEL says) stays out of the notebook's outputs.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.capture_fd_output=False"],
        "display_name": "stn test", "language": "python",
        "env": {"STN_NOTEBOOK_MODEL": str(model_path), "TF_CPP_MIN_LOG_LEVEL": "2"}}))
    kernels = KernelManager(kernel_name="stn-test",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    NotebookClient(notebook, km=kernels, timeout=timeout,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return notebook


def test_quickstart_runs_on_the_venv_python(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    execute(notebook, PRETRAINED, tmp_path / "kernels")  # raises on any cell's error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs[-1]["text"].strip() == sys.executable
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the two figures
    text = "".join(o.get("text", "") for o in outputs)
    assert "starts as the identity: True | output == input: True" in text
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings in the notebook"


def test_committed_notebook_is_small_and_executed():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert NOTEBOOK.stat().st_size < 300_000
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "save the notebook with its outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "STN_NOTEBOOK_MODEL" in code[0].source


if __name__ == "__main__":
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as kernels:
        executed = execute(nbformat.read(NOTEBOOK, as_version=4), PRETRAINED,
                           pathlib.Path(kernels))
    nbformat.write(executed, NOTEBOOK)
    print(f"{NOTEBOOK}: executed and saved")
