"""The architecture figure: a block diagram drawn from the model itself.

One function, :func:`architecture_figure`, returning a
:class:`matplotlib.figure.Figure` built directly (no pyplot), like every
figure of :mod:`stn.viz.figures`, which re-exports it. Boxes, shapes and
parameter counts are read from ``model.layers`` (and a transformer's
``localization`` sublayers), so the diagram cannot drift from the code.
"""

import numpy as np
from matplotlib.figure import Figure

from stn.layer import kinds


_BOX_COLOURS = {"InputLayer": "#eeeeee", "SpatialTransformer": "#fde0b8",
                "Conv2D": "#cfe2f3", "Dense": "#d9ead3", "MaxPooling2D": "#e6dcef"}


def _shape_text(layer) -> str:
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called on a tensor
        return "?"
    return "[" + ", ".join("B" if d is None else str(d) for d in shape) + "]"


def _layout(model) -> tuple[list, list, int | None]:
    """``(main, branch, transformer_row)``: ``(row, layer)`` pairs of the two columns.

    A layer with a ``localization`` sublayer (the SpatialTransformer) gets the
    localization's layers in the right column, in rows just above it.
    """
    main, branch, transformer_row, row = [], [], None, 0
    for layer in model.layers:
        localization = getattr(layer, "localization", None)
        if localization is not None:
            for sub in getattr(localization, "layers", [localization]):
                branch.append((row, sub))
                row += 1
            transformer_row = row
        main.append((row, layer))
        row += 1
    return main, branch, transformer_row


def _box(ax, x: float, row: int, layer, note: str = ""):
    """The layer's box (a Text with a bbox) centred at ``(x, row)``."""
    kind = type(layer).__name__
    policy = getattr(getattr(layer, "dtype_policy", None), "name", "float32")
    if policy != "float32":  # mixed precision: say which layers
        note += f" · {policy}"
    text = (f"{layer.name}  ({kind})\noutput {_shape_text(layer)} · "
            f"{layer.count_params():,} params{note}")
    return ax.text(x, row, text, ha="center", va="center", fontsize=8, family="monospace",
                   bbox={"boxstyle": "round,pad=0.4",
                         "facecolor": _BOX_COLOURS.get(kind, "white"), "edgecolor": "0.4"})


def _arrow(ax, start, end, label: str = "") -> None:
    """Arrow from box ``start`` to box ``end`` (Text artists), clipped at their frames."""
    (x0, y0), (x1, y1) = start.get_position(), end.get_position()
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                arrowprops={"arrowstyle": "-|>", "color": "0.3", "shrinkA": 1, "shrinkB": 1,
                            "patchA": start.get_bbox_patch(), "patchB": end.get_bbox_patch()})
    if label:
        ax.text((x0 + x1) / 2 + 0.01, (y0 + y1) / 2, label, fontsize=7, color="0.3",
                ha="left", va="top")


def architecture_figure(model) -> Figure:
    """Block diagram drawn from the model itself: one box per layer.

    Each box shows the layer's name, type, output shape and parameter count,
    read from ``model.layers`` (and the transformer's ``localization``
    sublayers, drawn as a branch), so the figure cannot drift from the code.

    Args:
      model: a built Keras functional model (``stn.model.build_model``).

    Returns:
      The figure (one axes); the total parameter count in the title.
    """
    main, branch, transformer_row = _layout(model)
    rows = len(main) + len(branch)
    fig = Figure(figsize=(10, 0.62 * rows + 1.2))
    ax = fig.subplots()
    left, right = (0.3, 0.76) if branch else (0.5, None)
    # Boxes first: an arrow is clipped at the frames of boxes drawn before it.
    boxes = {row: _box(ax, left, row, layer, " incl. localization" if row == transformer_row
                       else "") for row, layer in main}
    side = {row: _box(ax, right, row, layer) for row, layer in branch}
    rows_main = [row for row, _ in main]
    for a, b in zip(rows_main, rows_main[1:]):
        _arrow(ax, boxes[a], boxes[b], "image" if b == transformer_row else "")
    if branch:
        rows_side = [row for row, _ in branch]
        ax.text(right, rows_side[0] - 0.65, "localization network (inside the transformer)",
                ha="center", fontsize=8, style="italic")
        for a, b in zip(rows_side, rows_side[1:]):
            _arrow(ax, side[a], side[b])
        input_row = max(r for r in rows_main if r < transformer_row)
        _arrow(ax, boxes[input_row], side[rows_side[0]])
        transformer = dict(main)[transformer_row]
        size = kinds.get_kind(transformer.kind).size
        _arrow(ax, side[rows_side[-1]], boxes[transformer_row],
               f"theta [B, {size}] ({transformer.kind})")
    ax.set_xlim(0, 1)
    ax.set_ylim(rows - 0.4, -1.0)
    ax.axis("off")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    fig.suptitle(f"{model.name}: {model.count_params():,} parameters "
                 f"({trainable:,} trainable), drawn from model.layers", fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.01)
    return fig
