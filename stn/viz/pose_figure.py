"""The pose alignment figure: the residual pose against the warp's, per parameter.

One function, :func:`pose_figure`, returning a :class:`matplotlib.figure.Figure`
built directly (no pyplot), like every figure of :mod:`stn.viz.figures`, which
re-exports it. It plots the statistics of a :class:`stn.analysis.pose.PoseAlignment`
(computed there, not here): a flat cloud means the transformer puts every
digit in the same pose, the diagonal is no transformer.
"""

import numpy as np
from matplotlib.figure import Figure

from stn.analysis import pose as stn_pose


_POSE_PANELS = (("rotation", "rotation (°)"), ("scale", "scale (×)"), ("shear", "shear (°)"),
                ("tx", "shift x (px)"), ("ty", "shift y (px, down)"))


def _limits(raw: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """One range for both axes: all raw values and the central 98% of residuals."""
    lo = min(raw.min(), np.percentile(residual, 1))
    hi = max(raw.max(), np.percentile(residual, 99))
    margin = 0.08 * (hi - lo) or 0.05 * max(1.0, abs(hi))
    return lo - margin, hi + margin


def _pose_panel(ax, raw, residual, stats: dict, name: str, label: str) -> None:
    """Residual against warp value for one parameter, both axes on one scale."""
    lo, hi = _limits(raw, residual)
    ax.scatter(raw, residual, s=2, alpha=0.35, linewidths=0, rasterized=True, color="C0")
    ax.plot([lo, hi], [lo, hi], "--", color="0.5", lw=1, label="residual = warp (no transformer)")
    ax.axhline(stats["residual"]["median"], color="C3", lw=1, label="median residual")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ratio = "n/a" if stats["ratio"] is None else f"{stats['ratio']:.3f}"
    title = (f"{name}: std {stats['raw']['std']:#.3g} (warp) → "
             f"{stats['residual']['std']:#.3g} (residual)\nratio {ratio}")
    off = int(np.sum((residual < lo) | (residual > hi)))
    if off:
        title += f", {off} point{'s' * (off > 1)} off the scale"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"warp {label}")
    ax.set_ylabel(f"residual {label}")


def _shift_panel(ax, raw: dict, residual: dict, translation: dict) -> None:
    """Digit centre in the input (grey) and in the transformer's output (blue)."""
    ax.scatter(raw["tx"], raw["ty"], s=2, alpha=0.25, linewidths=0, color="0.55",
               rasterized=True, label="warp (the input)")
    ax.scatter(residual["tx"], residual["ty"], s=2, alpha=0.35, linewidths=0, color="C0",
               rasterized=True, label="residual (the transformer's output)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()  # y down, as on screen
    ax.set_xlabel("shift x (px)")
    ax.set_ylabel("shift y (px, down)")
    ax.set_title(f"digit centre, 2-D: rms distance from the mean\n"
                 f"{translation['raw_rms']:#.3g} px (warp) → "
                 f"{translation['residual_rms']:#.3g} px (residual)", fontsize=10)
    ax.legend(fontsize=8, markerscale=4, loc="lower right")


def pose_figure(pose, max_points: int = 4000) -> Figure:
    """Residual pose against the warp's, per parameter: flat means canonicalised.

    Args:
      pose: a :class:`stn.analysis.pose.PoseAlignment` (``raw``, ``residual``,
        ``valid``, ``stats``).
      max_points: plot the first this-many valid examples (statistics use all).

    Returns:
      The figure: rotation, scale, shear, shift x and y, and the 2-D shift.
    """
    fig = Figure(figsize=(13, 8.2))
    axes = fig.subplots(2, 3).ravel()
    stats, shown = pose.stats, np.flatnonzero(pose.valid)[:max_points]
    raw = {k: pose.raw[k][shown] for k, _ in _POSE_PANELS}
    residual = {k: pose.residual[k][shown] for k, _ in _POSE_PANELS}
    if stats["parameters"] is None:
        fig.suptitle("Pose alignment: no finite residual to show")
        return fig
    # Residual rotations made contiguous around their median (no jump at +-180).
    centre = stats["parameters"]["rotation"]["residual"]["median"]
    residual["rotation"] = centre + stn_pose.wrap_degrees(residual["rotation"] - centre)
    for ax, (name, label) in zip(axes, _POSE_PANELS):
        _pose_panel(ax, raw[name], residual[name], stats["parameters"][name], name, label)
    axes[0].legend(fontsize=7, loc="lower right", markerscale=4)
    _shift_panel(axes[5], raw, residual, stats["translation"])
    fig.suptitle(f"Pose alignment on {stats['n_valid']:,} test digits ({len(shown):,} "
                 f"plotted; {stats['n_excluded']} excluded as singular/non-finite): the pose "
                 "left in the classifier's input (residual)\nagainst the warp's. A flat "
                 "cloud means the transformer puts every digit in the same pose; the "
                 "diagonal is no transformer.", fontsize=10)
    fig.tight_layout()
    return fig
