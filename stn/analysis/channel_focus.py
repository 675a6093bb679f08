"""Which input channel each of a model's parallel transformers settles on.

In MNIST addition (paper, appendix A.1) each input channel holds one digit,
and each of the 2xST models' two transformers reads both channels; the
paper reports that during training each settles on one channel. Two
measures of that, for transformer ``k`` over a set of inputs ``x_i``:

* **Reliance** ``reliance[k, c]``: how much the transformer's map depends on
  channel ``c``. ``moved[k, c]`` is the mean, over the inputs and over the
  16 x 16 grid of output points (:func:`stn.layer.kinds.fit_grid`), of the distance
  in input pixels between the points that ``theta_k(x_i)`` and
  ``theta_k(x_i with channel c set to 0)`` read; ``reliance[k, c] =
  moved[k, c] / sum_c' moved[k, c']``. A transformer that reads only channel
  ``c`` does not move when the other channel is emptied: its reliance on
  ``c`` is 1.
* **Ink share** ``ink_share[k, c]``: the share of the transformer's output
  ink (the sum of its output pixels over the inputs) in channel ``c``. The
  sampler warps every channel by the same map, so output channel ``c`` comes
  from input channel ``c`` alone; a transformer that zooms onto channel
  ``c``'s digit keeps all of it in its output and crops the other digit.

A transformer *settles* on channel ``c`` when ``reliance[k, c] >=``
:data:`SETTLED` (our threshold); :func:`channel_focus` reports it.
"""

import numpy as np

from stn.layer import kinds
from stn.model import find_transformers, transformer_outputs

SETTLED = 0.8
"""Reliance on one channel at or above which a transformer has settled on it."""


def _moved(model, images: np.ndarray, index: int, params: np.ndarray, kind: str) -> np.ndarray:
    """``[C]``: mean distance (input px) the read points move when channel ``c`` is emptied."""
    grid, half = kinds.fit_grid(), images.shape[1] / 2.0
    before = kinds.get_kind(kind).points(params, grid)  # (n, m, 2) normalized
    moved = []
    for c in range(images.shape[-1]):
        emptied = images.copy()
        emptied[..., c] = 0.0
        after = kinds.get_kind(kind).points(transformer_outputs(model, emptied,
                                                                index=index)[0], grid)
        moved.append(float(np.mean(np.linalg.norm(after - before, axis=-1)) * half))
    return np.asarray(moved)


def channel_focus(model, images: np.ndarray) -> list[dict]:
    """Each parallel transformer's reliance on and ink share of each input channel.

    Args:
      model: a model with one or more SpatialTransformer layers on its input
        (stn.model.build_model with ``transformers = N``).
      images: float32 ``[n, S, S, C]``, e.g. the test pairs.

    Returns:
      One dict per transformer, in the order of ``find_transformers``:
      ``{"transformer": k, "moved_px": [C], "reliance": [C] (None if no
      channel moves the map), "ink_share": [C], "settled_on": c or None}``
      (see the module docstring).
    """
    images = np.asarray(images, np.float32)
    found = []
    for k, layer in enumerate(find_transformers(model)):
        params, outputs = transformer_outputs(model, images, index=k)
        moved = _moved(model, images, k, params, layer.kind)
        # A map that no channel moves (an untrained net) relies on none: None.
        reliance = [round(float(m / moved.sum()), 4) if moved.sum() > 0 else None
                    for m in moved]
        best = int(np.argmax(moved))
        ink = outputs.sum(axis=(0, 1, 2), dtype=np.float64)
        found.append({"transformer": k, "moved_px": [round(float(m), 4) for m in moved],
                      "reliance": reliance,
                      "ink_share": [round(float(s), 4) for s in ink / ink.sum()],
                      "settled_on": best if reliance[best] is not None
                      and reliance[best] >= SETTLED else None})
    return found
