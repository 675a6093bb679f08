"""The co-localisation figures: the final boxes of every class (:func:`classes_figure`), and
boxes on a few images as the optimisation runs (:func:`colocalisation_figure`; paper, Fig. 4).

Draws recorded parameters (``stn.colocalisation_fit.optimise``'s
``final_params`` and ``snapshots``) as boxes through
:func:`stn.colocalisation.predicted_boxes`; it re-implements nothing of the transformer.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from stn.train import colocalisation as C

_CELL = 1.3  # inches per panel


def _box(ax, box, color, style="-"):
    x0, y0, x1, y1 = box
    # imshow puts pixel centres at integers: edges are at -0.5.
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                           edgecolor=color, linewidth=1.2, linestyle=style))


def _panel(ax, image: np.ndarray, truth, params) -> None:
    """The image, the box of attention ``params`` ``[3]`` (red) and the true box (dashed
    green), its IoU under it."""
    ax.imshow(np.squeeze(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _box(ax, truth, "#3c3", "--")
    box = C.predicted_boxes(np.asarray(params)[None])[0]
    hit = C.iou(box[None], np.asarray(truth)[None])[0]
    _box(ax, box, "#e33")
    size = np.squeeze(image).shape
    # Show the box even where it leaves the canvas (the padding reads zero).
    ax.set_xlim(min(-0.5, box[0] - 1.5), max(size[1] - 0.5, box[2] + 0.5))
    ax.set_ylim(max(size[0] - 0.5, box[3] + 0.5), min(-0.5, box[1] - 1.5))
    ax.set_facecolor("0.85")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"IoU {hit:.2f}", fontsize=7, labelpad=1)


def classes_figure(rows: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]]
                   ) -> Figure:
    """One row per label (a dataset's n-th image), one column per unit (a class).

    Args:
      rows: ``(label, cells)``, each cell ``(title, image [84, 84, 1] or [84, 84], true box
        [4], final params [3])``; every row has as many cells, in the same columns.
    """
    columns = len(rows[0][1])
    fig = Figure(figsize=(_CELL * columns + 0.6, _CELL * len(rows) + 0.6))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, cells) in enumerate(rows):
        for c, (title, image, truth, params) in enumerate(cells):
            _panel(axes[r, c], image, truth, params)
            if r == 0:
                axes[r, c].set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("Co-localisation: the transformer's final box (red) and the digit's "
                 "(green), one class per column", fontsize=9)
    fig.tight_layout()
    return fig


def colocalisation_figure(rows: list[tuple[str, np.ndarray, np.ndarray, list[dict]]]) -> Figure:
    """One row per image, one column per recorded step.

    Args:
      rows: ``(label, image [84, 84, 1] or [84, 84], true box [4], snapshots)``,
        each snapshot ``{"step", "localised_fraction", "params"}`` with this
        image's attention parameters as ``params`` ``[3]``.

    Returns:
      The figure: the image, the predicted box (red) and the true box (dashed green).
    """
    steps = [s["step"] for s in rows[0][3]]
    fig = Figure(figsize=(_CELL * len(steps) + 0.6, _CELL * len(rows) + 0.5))
    axes = fig.subplots(len(rows), len(steps), squeeze=False)
    for r, (label, image, truth, snapshots) in enumerate(rows):
        for c, snap in enumerate(snapshots):
            _panel(axes[r, c], image, truth, snap["params"])
            if r == 0:
                axes[r, c].set_title(f"step {snap['step']}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("Co-localisation: the transformer's box (red) and the digit's (green) "
                 "during the optimisation", fontsize=9)
    fig.tight_layout()
    return fig
