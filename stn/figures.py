"""Figures of the README: one function per figure, each returning a Figure.

Every function builds a :class:`matplotlib.figure.Figure` directly (no
pyplot, no window, works with any backend); save it with ``fig.savefig``.
Figures plot arrays computed elsewhere: warps come from :mod:`stn.warps`,
never re-implemented here.
"""

import numpy as np
from matplotlib.figure import Figure

from stn import warps

_CELL = 1.35  # inches per image panel


def _show(ax, image, label=None):
    """One grayscale image in [0, 1] (black background), framed, no ticks."""
    ax.imshow(np.squeeze(image), cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.6")
    if label:
        ax.set_xlabel(label, fontsize=8, color="0.2", labelpad=2)


def _describe(params: dict, i: int, distortion: str) -> str:
    """Short label of the sampled value(s) of warp ``i``."""
    # Whole ints: -0.3 prints as "+0", not "-0".
    rot, shear, tx, ty = (round(float(params[k][i]))
                          for k in ("rotation", "shear", "tx", "ty"))
    scale = params["scale"][i]
    text = {
        "rotation": f"{rot:+d}°",
        "shear": f"{shear:+d}°",
        "translation": f"({tx:+d}, {ty:+d}) px",
        "scale": f"×{scale:.2f}",
    }
    if distortion in text:
        return text[distortion]
    return f"rot {rot:+d}°, shear {shear:+d}°\n×{scale:.2f}, ({tx:+d}, {ty:+d}) px"


def _range_label(protocol: warps.Protocol, distortion: str) -> str:
    """Column header: the distortion and its range in the protocol."""
    lo, hi = getattr(protocol, distortion)
    if distortion == "scale":
        return f"scale\n×{lo:g} to ×{hi:g}"
    unit = " px" if distortion == "translation" else "°"
    extra = " in x, y" if distortion == "translation" else ""
    return f"{distortion}\n±{hi:g}{unit}{extra}"


def augmentation_figure(canonical_images, seed: int = 0, protocol="seed") -> Figure:
    """Digits under each distortion of a protocol alone, then all combined.

    Rows are digits; columns are the original, each of rotation, shear,
    translation and scale drawn alone from the protocol's range, and a warp
    with all four. Each panel is labelled with its sampled value(s)
    (rotation positive = clockwise, shear positive = italic slant, shift in
    pixels with +y down; see :mod:`stn.warps`).

    Args:
      canonical_images: float32 ``[N, S, S, 1]`` (or ``[N, S, S]``) padded,
        unwarped digits in [0, 1], ``S`` the protocol's canvas; a few (say
        4) rows read best.
      seed: seed of the sampled warps.
      protocol: name or :class:`stn.warps.Protocol`, default ``"seed"``.

    Returns:
      The figure.
    """
    protocol = warps.get_protocol(protocol)
    images = np.asarray(canonical_images, np.float32)
    images = images.reshape(images.shape[:3] + (1,))  # (N, S, S, 1)
    if images.shape[1:3] != (protocol.canvas, protocol.canvas):
        raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} px but the "
                         f"{protocol.name!r} canvas is {protocol.canvas} px")
    rng = np.random.default_rng(seed)
    columns = [(d, warps.single_distortion(protocol, d)) for d in warps.DISTORTIONS]
    columns.append(("all", protocol))
    rows = len(images)
    fig = Figure(figsize=(_CELL * (len(columns) + 1), _CELL * rows + 0.9))
    axes = fig.subplots(rows, len(columns) + 1, squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], images[r])
    axes[0, 0].set_title("original\n(padded)", fontsize=9, fontweight="bold")
    for c, (name, variant) in enumerate(columns, start=1):
        params = warps.sample_params(variant, rows, rng)
        warped = warps.warp_images(images, warps.compose(params, protocol.canvas))
        for r in range(rows):
            _show(axes[r, c], warped[r], _describe(params, r, name))
        header = "all combined" if name == "all" else _range_label(protocol, name)
        axes[0, c].set_title(header, fontsize=9, fontweight="bold")
    fig.suptitle(f"Warp protocol '{protocol.name}' (canvas {protocol.canvas} px): "
                 "each distortion alone, then all combined\n"
                 "rotation > 0 turns clockwise, shear > 0 slants like italics, "
                 "shift (x, y) with y down", fontsize=9)
    fig.tight_layout()
    return fig
