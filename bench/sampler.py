"""Benchmark 1: our sampler vs PyTorch's fused C++ grid_sample (CPU).

Batch 500 of 40x40x1 (the default training batch). Forward, and forward +
backward with respect to theta only (what a training step needs: the raw
input image needs no gradient). PyTorch runs in the same process when it
is importable; its column is skipped otherwise.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from bench.timing import Timing, measure, run_isolated, to_numpy, worker_main
from stn import transform as T

BATCH, HEIGHT, WIDTH = 500, 40, 40


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((BATCH, HEIGHT, WIDTH, 1)).astype(np.float32)
    theta = (np.array(T.IDENTITY) + rng.uniform(-0.3, 0.3, (BATCH, 6))).astype(np.float32)
    return images, theta


def _tf_timings(images, theta, jit: bool, repeats: int):
    images, theta = tf.constant(images), tf.constant(theta)

    def forward(x, t):
        return T.transform(x, t)

    def forward_backward(x, t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(tf.square(T.transform(x, t)))
        return tape.gradient(loss, t)

    fwd = tf.function(forward, jit_compile=jit)
    fwd_bwd = tf.function(forward_backward, jit_compile=jit)
    return (measure(lambda: fwd(images, theta), repeats, sync=to_numpy),
            measure(lambda: fwd_bwd(images, theta), repeats, sync=to_numpy))


def _torch_timings(images, theta, repeats: int):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
    t = torch.from_numpy(theta).reshape(-1, 2, 3)
    size = (BATCH, 1, HEIGHT, WIDTH)

    def forward():
        with torch.no_grad():
            grid = F.affine_grid(t, size, align_corners=False)
            return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")

    def forward_backward():
        tt = t.clone().requires_grad_(True)
        grid = F.affine_grid(tt, size, align_corners=False)
        out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
        out.square().sum().backward()
        return tt.grad

    label = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return label, measure(forward, repeats), measure(forward_backward, repeats)


def _worker(kind: str, repeats: int) -> dict:
    """One column, in this process: ``tf``, ``tf-xla`` or ``torch``."""
    images, theta = _inputs()
    if kind == "torch":
        timings = _torch_timings(images, theta, repeats)
        if timings is None:
            return {}
        label, fwd, fwd_bwd = timings
    else:
        label = f"stn, TF {tf.__version__}" + (" + XLA" if kind == "tf-xla" else "")
        fwd, fwd_bwd = _tf_timings(images, theta, kind == "tf-xla", repeats)
    return {"label": label, "forward": dataclasses.asdict(fwd),
            "forward_backward": dataclasses.asdict(fwd_bwd)}


def run(repeats: int = 50) -> dict:
    """Runs every column, prints a table and ratios, returns the results.

    Each column runs in its own subprocess, one after the other: TensorFlow
    and PyTorch thread pools in one process slow each other down (seen here:
    torch 10x slower after TF had run), which would not be a fair race.
    """
    print(f"\n== 1. sampler: batch {BATCH}, {HEIGHT}x{WIDTH}x1, float32, "
          "seconds per call ==")
    results = {kind: run_isolated("bench.sampler", kind, repeats)
               for kind in ("tf", "tf-xla", "torch")}
    if not results["torch"]:
        print("torch is not importable: peer column skipped (a CPU build: "
              "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
        del results["torch"]
    for row in results.values():
        print(f"{row['label']:34s} forward {Timing(**row['forward'])}   "
              f"fwd+bwd(theta) {Timing(**row['forward_backward'])}")
    if "torch" in results:
        for key, target in (("forward", 1.5), ("forward_backward", 1.0)):
            ratio = (results["tf-xla"][key]["median"] / results["torch"][key]["median"])
            results[f"ratio_{key}"] = ratio
            print(f"ratio ours (XLA) / torch, {key}: {ratio:.2f} (target <= {target})")
    return results


if __name__ == "__main__":
    worker_main(_worker)
