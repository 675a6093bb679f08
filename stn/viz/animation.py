"""``training.gif``: the transformer learning, one frame per epoch.

Renders a run's ``trace.npz`` (:mod:`stn.train.trace`): the traced test digits
(two of each class, the first ones) and what the transformer made of them
after each epoch, re-applying the recorded parameters with
:func:`stn.layer.kinds.warp` (the sampler the model runs), with the epoch and the
validation accuracy on every frame. Pillow only; no model, no MNIST.

    from stn.viz import animation
    animation.render_gif("runs/default/trace.npz", "images/training.gif")
    animation.render_run("runs/default", "images")  # the same, what evaluate.py does
"""

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stn.layer import kinds
from stn.train import runs
from stn.data.tiles import PER_CLASS, outputs_grid
from stn.train.trace import TRACE, Trace, read_trace

GIF = "training.gif"  # in the images folder (evaluate.py)
_LABEL_WIDTH = 70  # px of the row labels on the left
_CAPTION_HEIGHT = 26  # px of the caption under the digits
_WHITE, _GREY = 255, 160


def transformed(trace: Trace) -> np.ndarray:
    """The transformer's outputs in every frame: float32 ``[F, n, h, w, 1]``."""
    frames, n = trace.params.shape[:2]
    images = np.tile(trace.images, (frames, 1, 1, 1))  # (F * n, S, S, 1)
    params = trace.params.reshape(frames * n, -1)
    out = kinds.warp(images, params, trace.kind, trace.output_size).numpy()
    return out.reshape(frames, n, *out.shape[1:])


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1, FreeType)
    except TypeError:
        return ImageFont.load_default()


def _caption(epoch: int, accuracy: float) -> str:
    if epoch == 0:
        return "epoch 0: before training"
    return f"epoch {epoch}: validation accuracy {100 * accuracy:.2f}%"


def frame(grid: np.ndarray, caption: str, per_class: int = PER_CLASS) -> Image.Image:
    """One frame: row labels, the digit grid and a caption under it.

    Args:
      grid: float ``[H, W, 1]`` in [0, 1] from :func:`stn.data.tiles.outputs_grid`
        (rows: input, output, input, output...).
      caption: the text under the grid.
      per_class: digits of each class (the grid has ``2 * per_class`` rows).

    Returns:
      A greyscale (``"L"``) image.
    """
    body = Image.fromarray(np.round(255 * grid[..., 0]).astype(np.uint8), mode="L")
    canvas = Image.new("L", (_LABEL_WIDTH + body.width, body.height + _CAPTION_HEIGHT), 0)
    canvas.paste(body, (_LABEL_WIDTH, 0))
    draw, font = ImageDraw.Draw(canvas), _font(13)
    row_height = body.height / (2 * per_class)
    for r in range(2 * per_class):
        draw.text((6, (r + 0.5) * row_height), "output" if r % 2 else "input", fill=_GREY,
                  font=font, anchor="lm")
    draw.text((_LABEL_WIDTH, body.height + _CAPTION_HEIGHT / 2), caption, fill=_WHITE,
              font=_font(15), anchor="lm")
    return canvas


def thin(trace: Trace, max_frames: int) -> Trace:
    """At most ``max_frames`` frames, evenly spread, always the first and the last."""
    if len(trace.epochs) <= max_frames:
        return trace
    keep = np.unique(np.round(np.linspace(0, len(trace.epochs) - 1, max_frames)).astype(int))
    return dataclasses.replace(trace, epochs=trace.epochs[keep],
                               val_accuracy=trace.val_accuracy[keep], params=trace.params[keep])


def render_gif(trace_path, gif_path, frame_ms: int = 500, last_ms: int = 2500,
               scale: int = 2, max_frames: int = 41) -> Path:
    """Writes the animation of a run's trace as a looping GIF.

    About 35 KB a frame at ``scale=2``: 31 frames (30 epochs) make ~1 MB.

    Args:
      trace_path: ``RUN/trace.npz``.
      gif_path: the GIF to write (its folder is created).
      frame_ms: display time of each frame; the last one stays ``last_ms``.
      scale: whole-pixel upscaling of the digits.
      max_frames: longer runs show this many epochs, evenly spread.

    Returns:
      ``gif_path`` as a Path.

    Raises:
      stn.train.runs.RunError: the trace is missing, damaged or empty.
    """
    trace = thin(read_trace(trace_path), max_frames)
    if not len(trace.epochs):
        raise runs.RunError(f"{trace_path} holds no epoch yet")
    outputs = transformed(trace)
    frames = [frame(outputs_grid(trace.images, out, scale=scale), _caption(e, a))
              for e, out, a in zip(trace.epochs, outputs, trace.val_accuracy)]
    gif_path = Path(gif_path)
    gif_path.parent.mkdir(parents=True, exist_ok=True)
    durations = [frame_ms] * (len(frames) - 1) + [last_ms]
    frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=durations,
                   loop=0, optimize=True)
    return gif_path


def render_run(run_dir, images_dir) -> Path | None:
    """Writes ``images_dir/training.gif`` from ``run_dir/trace.npz``, if there is one.

    Returns:
      The GIF's path, or None if the run has no trace (a model with no
      transformer, or a run older than the trace).
    """
    trace = Path(run_dir) / TRACE
    return render_gif(trace, Path(images_dir) / GIF) if trace.exists() else None
