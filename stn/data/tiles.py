"""Digits laid out on one canvas, for TensorBoard and the GIF (NumPy only, no plotting).

Which digits are shown (:func:`first_of_each_class`), and how rows of them
tile into one float image (:func:`tile`, :func:`outputs_grid`).
"""

import numpy as np

PER_CLASS = 2  # digits of each class shown in TensorBoard and traced


def first_of_each_class(labels, per_class: int = 1) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, by class."""
    labels = np.asarray(labels)
    return np.concatenate([np.flatnonzero(labels == c)[:per_class]
                           for c in np.unique(labels)])


def tile(rows, gap: int = 2, background: float = 0.35) -> np.ndarray:
    """Lays rows of images out on one canvas, each cell centred.

    Args:
      rows: a list of float arrays ``[m, h_i, w_i, 1]`` in [0, 1] (sizes may
        differ between rows, e.g. inputs and a smaller transformer output).
      gap: pixels between cells.
      background: grey level of the gaps.

    Returns:
      float32 ``[H, W, 1]``.
    """
    h = max(r.shape[1] for r in rows)
    w = max(r.shape[2] for r in rows)
    m = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, m * (w + gap) - gap, 1), background,
                  np.float32)
    for i, row in enumerate(rows):
        top = i * (h + gap) + (h - row.shape[1]) // 2
        for j, image in enumerate(row):
            left = j * (w + gap) + (w - row.shape[2]) // 2
            out[top:top + row.shape[1], left:left + row.shape[2]] = np.clip(image, 0, 1)
    return out


def outputs_grid(inputs, outputs, per_class: int = PER_CLASS, scale: int = 2) -> np.ndarray:
    """The ``stn_outputs`` image: float32 ``[H, W, 1]``, one class per column.

    Args:
      inputs: float ``[n, S, S, 1]``, ``per_class`` digits of each class,
        by class (:func:`first_of_each_class`).
      outputs: float ``[n, h, w, 1]``, the transformer's outputs for them.
      per_class: digits of each class.
      scale: whole-pixel upscaling (nearest), for legibility.

    Rows: input and output of each class's first digit, then of its second...
    """
    rows = []
    for k in range(per_class):
        rows += [np.asarray(inputs[k::per_class]), np.asarray(outputs[k::per_class])]
    return tile(rows).repeat(scale, axis=0).repeat(scale, axis=1)
