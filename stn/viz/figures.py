"""Figures of the README: one function per figure, each returning a Figure.

Every function builds a :class:`matplotlib.figure.Figure` directly (no
pyplot, no window, works with any backend); save it with ``fig.savefig``.
Figures plot arrays computed elsewhere: warps come from :mod:`stn.data.warps`,
metrics and pose statistics from :mod:`stn.analysis.evaluation`, transformer
outputs from the model; nothing is re-implemented here.

Two figures have a module of their own, re-exported here:
:func:`stn.viz.pose_figure.pose_figure` (pose alignment) and
:func:`stn.viz.architecture_figure.architecture_figure` (the block diagram).
"""

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stn.analysis import evaluation
from stn.layer import kinds
from stn.data import protocols
from stn.data import warps
from stn.viz.architecture_figure import architecture_figure
from stn.viz.pose_figure import pose_figure
from stn.data.tiles import first_of_each_class

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
    """Short label of the sampled value(s) of affine warp ``i`` (named parameters)."""
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


def _describe_warps(params, kind: str, canvas: int) -> list[str]:
    """Labels of warps of any kind: their affine part's pose, and the rest in px.

    The affine part is the least-squares fit over the canvas
    (:func:`stn.layer.kinds.affine_fit`), decomposed by :func:`stn.data.warps.decompose`;
    the rest is the RMS distance between the warp and that fit over the
    same grid, in pixels of the canvas (0 for an affine warp).
    """
    fit = kinds.affine_fit((kind, params))  # (n, 2, 3)
    pose = warps.decompose(fit, canvas)
    rest = kinds.compose_points((kind, params)) - kinds.compose_points(("affine", fit))
    rms = np.sqrt(np.mean(np.sum(rest ** 2, axis=-1), axis=-1)) * (canvas / 2.0)
    return [f"rot {round(float(r)):+d}°, ×{s:.2f}\nnon-affine {e:.1f} px"
            for r, s, e in zip(pose["rotation"], pose["scale"], rms)]


def _range_label(protocol: protocols.AffineProtocol, distortion: str) -> str:
    """Column header: the distortion and its range in the protocol."""
    lo, hi = getattr(protocol, distortion)
    if distortion == "scale":
        return f"scale\n×{lo:g} to ×{hi:g}"
    unit = " px" if distortion == "translation" else "°"
    extra = " in x, y" if distortion == "translation" else ""
    return f"{distortion}\n±{hi:g}{unit}{extra}"


_RANDOM_WARPS = 5
"""Columns of the augmentation figure of a protocol without named distortions."""


def augmentation_figure(canonical_images, seed: int = 0, protocol="predecessor") -> Figure:
    """Digits under the warps of a protocol.

    Rows are digits; the first column is the original. For an affine
    protocol (named distortions) the columns are each of rotation, shear,
    translation and scale drawn alone from the protocol's range, then a
    warp with all four; each panel is labelled with its sampled value(s)
    (rotation positive = clockwise, shear positive = italic slant, shift in
    pixels with +y down; see :mod:`stn.data.warps`). For any other protocol (the
    paper's P and E) the columns are independent random warps of the
    protocol, each labelled with the rotation and scale of its affine part
    and how far the rest moves the canvas (RMS, px).

    Args:
      canonical_images: float32 ``[N, S, S, 1]`` (or ``[N, S, S]``) padded,
        unwarped digits in [0, 1], ``S`` the protocol's canvas; a few (say
        4) rows read best.
      seed: seed of the sampled warps.
      protocol: name or :class:`stn.data.protocols.Protocol`, default ``"predecessor"``.

    Returns:
      The figure.
    """
    protocol = protocols.get_protocol(protocol)
    images = np.asarray(canonical_images, np.float32)
    images = images.reshape(images.shape[:3] + (1,))  # (N, S, S, 1)
    if images.shape[1:3] != (protocol.canvas, protocol.canvas):
        raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} px but the "
                         f"{protocol.name!r} canvas is {protocol.canvas} px")
    rng = np.random.default_rng(seed)
    named = isinstance(protocol, protocols.AffineProtocol)
    columns = protocols.DISTORTIONS + ("all",) if named else range(_RANDOM_WARPS)
    rows = len(images)
    fig = Figure(figsize=(_CELL * (len(columns) + 1), _CELL * rows + 0.9))
    axes = fig.subplots(rows, len(columns) + 1, squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], images[r])
    axes[0, 0].set_title("original\n(padded)", fontsize=9, fontweight="bold")
    for c, column in enumerate(columns, start=1):
        if named:
            variant = protocol if column == "all" else protocol.single_distortion(column)
            params = variant.sample_params(rows, rng)
            warped = protocols.apply(protocol, images, warps.compose(params, protocol.canvas))
            labels = [_describe(params, r, column) for r in range(rows)]
            header = "all combined" if column == "all" else _range_label(protocol, column)
        else:
            params = protocol.sample(rows, rng)
            warped = protocols.apply(protocol, images, params)
            labels = _describe_warps(params, protocol.kind, protocol.canvas)
            header = f"random warp {column + 1}"
        for r in range(rows):
            _show(axes[r, c], warped[r], labels[r])
        axes[0, c].set_title(header, fontsize=9, fontweight="bold")
    if named:
        caption = ("each distortion alone, then all combined\n"
                   "rotation > 0 turns clockwise, shear > 0 slants like italics, "
                   "shift (x, y) with y down")
    else:
        caption = (f"{protocol.description}\nindependent {protocol.kind} warps; labels: "
                   "rotation (> 0 clockwise) and scale of the affine part, RMS of the rest")
    fig.suptitle(f"Warp protocol '{protocol.name}' (canvas {protocol.canvas} px): {caption}",
                 fontsize=9)
    fig.tight_layout()
    return fig


# --- test-set figures ------------------------------------------------------------

def confusion_figure(confusion) -> Figure:
    """Counts of the test confusion matrix, with per-class recall beside the rows.

    Args:
      confusion: int ``[K, K]``, rows = true class, columns = predicted class.

    Returns:
      The figure (one axes); accuracy in the title.
    """
    confusion = np.asarray(confusion)
    k, total = len(confusion), confusion.sum()
    recall = evaluation.per_class_recall(confusion)
    fig = Figure(figsize=(7.2, 6.2))
    ax = fig.subplots()
    # Log colours: the diagonal (~1,000) and single errors both stay visible.
    norm = LogNorm(vmin=1, vmax=max(2, confusion.max()))
    ax.imshow(np.ma.masked_equal(confusion, 0), cmap="Blues", norm=norm)
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            ax.text(j, i, f"{count}", ha="center", va="center", fontsize=8,
                    color="white" if norm(count) > 0.6 else "black")
    ax.text(k - 0.2, -0.75, "recall", ha="left", va="center", fontsize=8, fontweight="bold")
    for i, r in enumerate(recall):
        ax.text(k - 0.2, i, "n/a" if np.isnan(r) else f"{100 * r:.1f}%", ha="left",
                va="center", fontsize=8)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted class (columns)")
    ax.set_ylabel("true class (rows)")
    acc = evaluation.accuracy(confusion)
    ax.set_title(f"Test confusion matrix, {total:,} digits: accuracy {100 * acc:.2f}% "
                 f"(error {100 * (1 - acc):.2f}%)\ncounts; colour on a log scale, "
                 "empty cells are 0", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.86, top=0.88, bottom=0.09)
    return fig


def _pose_caption(pose: dict | None, i: int) -> str:
    if pose is None:
        return ""
    if not all(np.isfinite(pose[k][i]) for k in ("rotation", "scale", "tx", "ty")):
        return "pose undefined\n(NaN or Inf)"
    rotation = round(float(pose["rotation"][i]))  # an int: -0.3 prints as "+0"
    return (f"{rotation:+d}°, ×{pose['scale'][i]:.2f}\n"
            f"({pose['tx'][i]:+.1f}, {pose['ty'][i]:+.1f}) px")


def stn_outputs_figure(canonical, warped, transformed, labels, predictions=None,
                       raw_pose: dict | None = None, residual_pose: dict | None = None) -> Figure:
    """Canonical digit, warped input and transformer output, one column per digit.

    Args:
      canonical: float32 ``[n, S, S, 1]`` unwarped (padded) digits in [0, 1].
      warped: float32 ``[n, S, S, 1]``, the network's inputs.
      transformed: float32 ``[n, h, w, 1]``, the transformer's outputs.
      labels: int ``[n]`` true classes (column titles).
      predictions: optional int ``[n]`` predicted classes.
      raw_pose, residual_pose: optional dicts of ``[n]`` arrays (``rotation``,
        ``scale``, ``tx``, ``ty``) captioning the inputs and outputs: the
        warp's pose and what is left of it after the transformer.

    Returns:
      The figure: 3 rows of ``n`` axes.
    """
    n = len(labels)
    fig = Figure(figsize=(1.3 * n + 1.0, 5.6))
    axes = fig.subplots(3, n, squeeze=False)
    rows = [("canonical\n(unwarped)", canonical, None),
            ("warped input\n(warp pose)", warped, raw_pose),
            ("transformer output\n(residual pose)", transformed, residual_pose)]
    for r, (name, images, pose) in enumerate(rows):
        for i in range(n):
            _show(axes[r, i], images[i], _pose_caption(pose, i))
        axes[r, 0].set_ylabel(name, fontsize=9, fontweight="bold")
    for i in range(n):
        title = f"digit {labels[i]}"
        if predictions is not None:
            verdict = "✓" if predictions[i] == labels[i] else "✗"
            title += f"\npredicted {predictions[i]} {verdict}"
        axes[0, i].set_title(title, fontsize=9)
    fig.suptitle("Spatial transformer on fixed test digits (the first of each class): "
                 "ideally every output is upright and centred, like the canonical row\n"
                 "pose = rotation (clockwise > 0), scale, shift (x, y) of the digit, y down",
                 fontsize=10)
    fig.tight_layout()
    return fig


def history_figure(history: list[dict]) -> Figure:
    """Train and validation loss (left) and accuracy (right) per epoch.

    Args:
      history: rows of ``stn.train.runs.read_history`` (``epoch``, ``train_loss``,
        ``train_accuracy``, ``val_loss``, ``val_accuracy``).

    Returns:
      The figure (two axes).
    """
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for ax, metric, scale in ((loss_ax, "loss", 1.0), (acc_ax, "accuracy", 100.0)):
        for split, style in (("train", "-o"), ("val", "--s")):
            values = [scale * row[f"{split}_{metric}"] for row in history]
            label = "training (running mean over the epoch)" if split == "train" else "validation"
            ax.plot(epochs, values, style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if history:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no history.csv", ha="center", transform=ax.transAxes)
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title("Loss")
    acc_ax.set_ylabel("accuracy (%)")
    final = history[-1]["val_accuracy"] if history else None
    acc_ax.set_title("Accuracy" if final is None else
                     f"Accuracy: final validation accuracy {100 * final:.2f}%")
    fig.tight_layout()
    return fig


def evaluation_figures(ev) -> dict:
    """The README's figures of one evaluated run, built on demand.

    Args:
      ev: a :class:`stn.analysis.evaluation.Evaluation`.

    Returns:
      ``{file stem: zero-argument function returning the Figure}``; the
      transformer figures (``stn_outputs``, ``pose_alignment``) are left out
      for a model with no transformer.
    """
    config = ev.config
    figures = {
        "confusion_matrix": lambda: confusion_figure(ev.confusion),
        "loss_history": lambda: history_figure(ev.history),
        "data_augmentation": lambda: augmentation_figure(
            ev.test.canonical_images(slice(0, 4)), seed=config.seed, protocol=config.protocol),
        "architecture": lambda: architecture_figure(ev.model),
    }
    if ev.pose is not None:
        shown = first_of_each_class(ev.test.labels)
        figures["stn_outputs"] = lambda: stn_outputs_figure(
            ev.test.canonical_images(shown), ev.test.images[shown], ev.transformed[shown],
            ev.test.labels[shown], ev.predictions[shown],
            {k: v[shown] for k, v in ev.pose.raw.items()},
            {k: v[shown] for k, v in ev.pose.residual.items()})
        figures["pose_alignment"] = lambda: pose_figure(ev.pose)
    return figures


def transformers_figure(warped, outputs: dict, labels, title: str = "") -> Figure:
    """The same warped test digits, and what each transformer makes of them.

    Args:
      warped: float32 ``[n, S, S, 1]``, the inputs (one column per digit).
      outputs: ``{row label: float32 [n, h, w, 1]}``, e.g. one entry per
        transformer kind (the paper's Figure 3, in spirit).
      labels: int ``[n]`` true classes (column titles).
      title: the figure's title.

    Returns:
      The figure: ``1 + len(outputs)`` rows of ``n`` axes.
    """
    n, rows = len(labels), [("input", warped), *outputs.items()]
    fig = Figure(figsize=(1.1 * n + 1.4, 1.25 * len(rows) + 0.8))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, images) in enumerate(rows):
        for i in range(n):
            _show(axes[r, i], images[i])
        axes[r, 0].set_ylabel(name, fontsize=9, fontweight="bold")
    for i in range(n):
        axes[0, i].set_title(f"digit {labels[i]}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def addition_figure(inputs, outputs: list, labels, title: str = "") -> Figure:
    """MNIST addition: input pairs and each parallel transformer's output, channel by channel.

    The paper's Table 4 (right), in spirit: one row per pair; the two input
    channels, then for each transformer its output's two channels.

    Args:
      inputs: float32 ``[n, S, S, C]``, the input pairs (``C`` channels).
      outputs: one float32 ``[n, h, w, C]`` per transformer
        (``stn.model.transformer_outputs(model, inputs, index=k)[1]``).
      labels: int ``[n]``, the sums (row labels).
      title: the figure's title.

    Returns:
      The figure: ``n`` rows of ``C * (1 + len(outputs))`` axes.
    """
    channels = inputs.shape[-1]
    columns = [("input", inputs), *((f"ST {k + 1}", out) for k, out in enumerate(outputs))]
    n, width = len(labels), channels * len(columns)
    fig = Figure(figsize=(0.95 * width + 0.8, 1.0 * n + 0.9))
    axes = fig.subplots(n, width, squeeze=False)
    for j, (name, images) in enumerate(columns):
        for c in range(channels):
            col = j * channels + c
            for i in range(n):
                _show(axes[i, col], images[i, ..., c])
            axes[0, col].set_title(f"{name}\nchannel {c + 1}", fontsize=8)
    for i in range(n):
        axes[i, 0].set_ylabel(f"sum {labels[i]}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
