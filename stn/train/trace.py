"""``trace.npz``: the transformer's parameters for fixed test digits after every epoch.

Written by :class:`stn.train.monitor.Monitor` during training, rendered by
:mod:`stn.viz.animation`. One NumPy ``.npz`` of the fields of :class:`Trace`
(``kind`` as a string, ``output_size`` as int64 ``[2]``), written atomically.
"""

import dataclasses
import io
from pathlib import Path

import numpy as np

from stn.train import runs

TRACE = "trace.npz"  # in the run directory


@dataclasses.dataclass(frozen=True)
class Trace:
    """The transformer's parameters for fixed test digits, epoch by epoch.

    Attributes:
      epochs: int64 ``[F]``, increasing; 0 is the initial model.
      val_accuracy: float64 ``[F]``, validation accuracy after that epoch
        (NaN for epoch 0).
      params: float32 ``[F, n, P]``, the transformer's parameters of kind
        ``kind`` (output -> input, stn.layer.kinds) for each digit.
      images: float32 ``[n, S, S, 1]``, the digits (warped test images).
      labels: int64 ``[n]``, their classes.
      indices: int64 ``[n]``, their positions in the test split.
      kind: the transformer's kind (stn.layer.kinds.KINDS).
      output_size: ``(h, w)`` of the transformer's output.
    """
    epochs: np.ndarray
    val_accuracy: np.ndarray
    params: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    kind: str
    output_size: tuple[int, int]

    def upto(self, epoch: int) -> "Trace":
        """The frames of epochs ``<= epoch``."""
        keep = self.epochs <= epoch
        return dataclasses.replace(self, epochs=self.epochs[keep],
                                   val_accuracy=self.val_accuracy[keep], params=self.params[keep])

    def append(self, epoch: int, val_accuracy: float, params) -> "Trace":
        """This trace with one more frame (``params`` float ``[n, P]``)."""
        return dataclasses.replace(
            self, epochs=np.append(self.epochs, epoch),
            val_accuracy=np.append(self.val_accuracy, val_accuracy),
            params=np.concatenate([self.params, np.asarray(params, np.float32)[None]]))


def write_trace(path, trace: Trace) -> None:
    """Writes ``trace`` as an .npz file, atomically (stn.train.runs.atomic_write)."""
    buffer = io.BytesIO()
    fields = {**dataclasses.asdict(trace), "kind": np.str_(trace.kind),
              "output_size": np.asarray(trace.output_size, np.int64)}
    np.savez(buffer, **fields)
    runs.atomic_write(Path(path), buffer.getvalue())


def read_trace(path) -> Trace:
    """Reads a trace written by :func:`write_trace`.

    Raises:
      stn.train.runs.RunError: the file is missing or damaged.
    """
    path = Path(path)
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
        return Trace(**{**arrays, "kind": str(arrays["kind"]),
                        "output_size": tuple(int(s) for s in arrays["output_size"])})
    except FileNotFoundError:
        raise runs.RunError(f"{path} not found: it is written by train.py for models "
                            "with a transformer") from None
    except Exception as e:  # zipfile/pickle/OS/key errors of a damaged file
        raise runs.RunError(f"{path} is damaged ({type(e).__name__}: {e}); delete it: "
                            "a resumed run starts a new trace") from None
