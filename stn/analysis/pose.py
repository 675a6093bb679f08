"""Pose alignment: does the transformer bring every digit to one pose?

No plots here (:mod:`stn.viz.figures`), no model and no files (:mod:`stn.analysis.evaluation`).

**Pose alignment.** How well the transformer brings every test digit to one
common pose, whatever its warp. For test example ``i`` with ground-truth
warp ``A_i`` (sampling parameters of the protocol's kind: warped =
``stn.layer.kinds.warp(canonical, A_i, kind)``) and the transformer's parameters
``theta_i`` (of its own kind), the classifier sees the canonical digit read
at ``A_i(theta_i(p))`` for each of its pixels ``p``: the *residual* map
(:func:`stn.layer.kinds.compose_points`). Its pose is that of ``R_i``, the
least-squares affine fit of the residual map over a 16 x 16 grid of points
spanning the canvas (:func:`stn.layer.kinds.affine_fit`): for affine warps and
theta that is exactly ``A_i @ theta_i`` as 3 x 3 matrices; for projective
ones the residual is the 3 x 3 product, and ``R_i`` the affine map closest
to it over the canvas (not its top two rows, which differ from it as soon
as the perspective row is non-zero); for a thin-plate spline, the affine
map closest to the spline's residual grid. What the fit leaves out (the
perspective or elastic rest) is not a pose and is not measured.
``stn.data.warps.decompose(R_i, canvas)`` gives the pose of the digit in the
classifier's input: rotation (degrees, clockwise on screen), isotropic
scale, shear (degrees), translation ``tx``, ``ty`` (pixels of the input
canvas, ``canvas / 2`` per normalized unit, whatever the transformer's
output size) and aspect. The same decomposition of the fit of ``A_i`` alone (theta = identity,
i.e. no transformer) gives the *raw* pose. A transformer that canonicalises
makes the residual nearly the same for every example, whatever the warp,
though not necessarily the identity (it may settle on, say, a slightly
enlarged digit). For each parameter we report, over the test set:

* ``std`` (population standard deviation) and ``iqr`` (75th minus 25th
  percentile) of the residual and of the raw values;
* ``ratio`` = residual std / raw std (and ``iqr_ratio`` likewise): 1 means
  the transformer removed none of the variation, 0 all of it; undefined
  (null) when the raw values do not vary (raw std below 1e-6, float32
  rounding of a constant: aspect always, everything under protocol ``none``);
* ``median`` of the residual (and of the raw values): the common pose the
  transformer converges to.

Rotation is an angle: its values are first centred on their circular mean
``c = atan2(mean sin, mean cos)`` and the deviations wrapped to
``(-180, 180]``; std, iqr and median are taken of the deviations (the
median is reported as ``c + median``, wrapped), so a residual near +-180
degrees is not split in two. Translation is also reported in 2-D: ``rms``
= the root mean square distance of ``(tx, ty)`` from its mean, in pixels.
Examples whose residual is non-finite or singular (decompose gives inf or
NaN) are excluded from every statistic, and counted as ``n_excluded``;
``n_reflected`` counts residuals that flip the digit.

**Targets** (reported, not asserted): rotation ``ratio`` <= 1/3, and the
residual std of ``tx`` and of ``ty`` <= 1.5 px.
"""

import dataclasses

import numpy as np

from stn.layer import kinds
from stn.data import warps

PARAMETERS = ("rotation", "scale", "shear", "tx", "ty", "aspect")
"""Pose parameters of :func:`stn.data.warps.decompose`, in reporting order."""
UNITS = {"rotation": "deg", "scale": "factor", "shear": "deg", "tx": "px", "ty": "px",
         "aspect": "factor"}
ROTATION_RATIO_TARGET = 1.0 / 3.0
TRANSLATION_STD_TARGET_PX = 1.5


def wrap_degrees(angles) -> np.ndarray:
    """Angles wrapped to ``(-180, 180]`` degrees."""
    return 180.0 - np.mod(180.0 - np.asarray(angles, np.float64), 360.0)


def centre_angles(angles) -> tuple[float, np.ndarray]:
    """``(c, d)``: the circular mean ``c`` and the deviations ``wrap(angles - c)``.

    ``c + d`` are the angles made contiguous around ``c`` (no jump at +-180).
    """
    radians = np.radians(np.asarray(angles, np.float64))
    centre = float(np.degrees(np.arctan2(np.mean(np.sin(radians)), np.mean(np.cos(radians)))))
    return centre, wrap_degrees(np.asarray(angles) - centre)


def spread(values, circular: bool = False) -> dict[str, float]:
    """``std`` (ddof 0), ``iqr`` and ``median`` of ``values`` (all finite).

    With ``circular=True`` the values are angles in degrees, treated as in
    the module docstring (deviations from the circular mean).
    """
    values = np.asarray(values, np.float64)
    offset = 0.0
    if circular:
        offset, values = centre_angles(values)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    median = float(wrap_degrees(offset + median)) if circular else float(median)
    return {"std": float(np.std(values)), "iqr": float(q75 - q25), "median": median}


_CONSTANT = 1e-6  # a smaller raw spread is float32 rounding of a constant


def _ratio(residual: float, raw: float) -> float | None:
    return residual / raw if raw > _CONSTANT else None


@dataclasses.dataclass(frozen=True, eq=False)
class PoseAlignment:
    """Residual and raw poses of a test set (definitions: module docstring).

    Attributes:
      raw: float64 ``[N]`` per parameter of :data:`PARAMETERS`, and bool
        ``reflected``: ``decompose(A)``.
      residual: the same for ``decompose(chain(A, theta))``.
      valid: bool ``[N]``: residual (and raw) pose finite; only these count.
      stats: JSON-ready statistics, as written to results.json.
    """
    raw: dict[str, np.ndarray]
    residual: dict[str, np.ndarray]
    valid: np.ndarray
    stats: dict


def _finite(pose: dict) -> np.ndarray:
    return np.all([np.isfinite(pose[k]) for k in PARAMETERS], axis=0)


def _parameter_stats(name: str, raw: np.ndarray, residual: np.ndarray) -> dict:
    circular = name == "rotation"
    raw_stats, residual_stats = spread(raw, circular), spread(residual, circular)
    return {"unit": UNITS[name], "residual": residual_stats, "raw": raw_stats,
            "ratio": _ratio(residual_stats["std"], raw_stats["std"]),
            "iqr_ratio": _ratio(residual_stats["iqr"], raw_stats["iqr"])}


def _rms_radius(tx: np.ndarray, ty: np.ndarray) -> float:
    """Root mean square distance of the points ``(tx, ty)`` from their mean."""
    return float(np.sqrt(np.mean((tx - tx.mean()) ** 2 + (ty - ty.mean()) ** 2)))


def pose_statistics(raw: dict, residual: dict, valid: np.ndarray) -> dict:
    """The statistics of the module docstring, over the ``valid`` examples."""
    stats = {"n": int(valid.size), "n_valid": int(valid.sum()),
             "n_excluded": int(valid.size - valid.sum()),
             "n_reflected": int(np.sum(residual["reflected"] & valid))}
    if not valid.any():
        return {**stats, "parameters": None, "translation": None}
    raw = {k: raw[k][valid] for k in PARAMETERS}
    residual = {k: residual[k][valid] for k in PARAMETERS}
    stats["parameters"] = {k: _parameter_stats(k, raw[k], residual[k]) for k in PARAMETERS}
    raw_rms, residual_rms = (_rms_radius(p["tx"], p["ty"]) for p in (raw, residual))
    stats["translation"] = {"unit": "px", "residual_rms": residual_rms, "raw_rms": raw_rms,
                            "ratio": _ratio(residual_rms, raw_rms)}
    return stats


_SINGULAR = 1e-9  # |det| of the fit's linear part below this: a collapsed map


def _fit(maps) -> np.ndarray:
    """:func:`stn.layer.kinds.affine_fit` of the chain, NaN where it collapses the canvas.

    A least-squares fit of a map that sends every point to one place (a
    zero theta) is singular only up to rounding (|det| ~ 1e-30); it has no
    pose, so it is made NaN, and excluded like any other singular residual.
    """
    fit = kinds.affine_fit(*maps)
    with np.errstate(invalid="ignore"):
        det = fit[:, 0, 0] * fit[:, 1, 1] - fit[:, 0, 1] * fit[:, 1, 0]
        fit[~(np.abs(det) >= _SINGULAR)] = np.nan
    return fit


def pose_alignment(warp_params, theta, canvas: int, warp_kind: str = "affine",
                   theta_kind: str = "affine") -> PoseAlignment:
    """Pose alignment of the transformer on a test set (module docstring).

    Args:
      warp_params: ``[N, P]`` ground-truth sampling parameters ``A`` of
        ``warp_kind`` (``[N, 2, 3]`` matrices for affine warps).
      theta: ``[N, Q]`` the transformer's parameters, of ``theta_kind``.
      canvas: side of the input images in pixels.
      warp_kind, theta_kind: names in :data:`stn.layer.kinds.KINDS`.

    Returns:
      :class:`PoseAlignment`.
    """
    raw = warps.decompose(_fit(((warp_kind, warp_params),)), canvas)
    residual = warps.decompose(_fit(((warp_kind, warp_params), (theta_kind, theta))), canvas)
    valid = _finite(raw) & _finite(residual)
    return PoseAlignment(raw, residual, valid, pose_statistics(raw, residual, valid))


def pose_targets(stats: dict) -> dict:
    """The two targets of the module docstring: value, threshold, ``met``."""
    params = stats.get("parameters") or {}
    rotation = params.get("rotation", {}).get("ratio")
    shifts = [params[k]["residual"]["std"] for k in ("tx", "ty") if k in params]
    shift = max(shifts) if shifts else None
    return {
        "rotation_std_ratio": {
            "description": "residual rotation std / raw warp rotation std <= 1/3",
            "value": rotation, "threshold": ROTATION_RATIO_TARGET,
            "met": None if rotation is None else bool(rotation <= ROTATION_RATIO_TARGET)},
        "translation_std_px": {
            "description": "residual std of tx and of ty <= 1.5 px (value: the larger)",
            "value": shift, "threshold": TRANSLATION_STD_TARGET_PX,
            "met": None if shift is None else bool(shift <= TRANSLATION_STD_TARGET_PX)},
    }


def format_value(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def pose_lines(pose: dict) -> list[str]:
    """Residual vs raw std per parameter, and the 2-D shift, of :func:`pose_statistics`."""
    lines = []
    for name, p in (pose["parameters"] or {}).items():
        lines.append(f"  {name:<9}{format_value(p['residual']['std'], '8.3f')} vs "
                     f"{format_value(p['raw']['std'], '7.3f')} {p['unit']:<6} ratio "
                     f"{format_value(p['ratio'], '.3f'):>6}, median residual "
                     f"{format_value(p['residual']['median'], '+.3f')}")
    if pose["translation"]:
        t = pose["translation"]
        lines.append(f"  2-D shift rms {t['residual_rms']:.2f} px vs {t['raw_rms']:.2f} px")
    return lines
