"""Benchmark: the 3-D affine warp on each Keras backend beside PyTorch's ``grid_sample``, CPU.

What ``SpatialTransformer(kind="affine3d")`` runs,
``stn.kinds.keras_warp(volumes, theta, "affine3d", image_gradient=False)``,
on a batch of 4 single-channel float32 volumes of 32^3 and of 64^3 voxels
(output the input's size), forward and forward + backward with respect to
the 12 parameters only (a transformer on the raw input): on TensorFlow the
sampler's own XLA function, on JAX the ``keras.ops`` sampler under
``jax.jit``, on PyTorch the layer's seam to ``grid_sample``
(``stn.layer.sampler3d.sample``) after the ``keras.ops`` grid. Beside it, the
reference: ``torch.nn.functional.affine_grid`` + ``grid_sample`` on the same
volumes in PyTorch's own NCDHW layout (``align_corners=False``, zeros),
gradient to theta only. Each contender lives in its own process, timed in
alternation (bench.timing.measure_in_processes), so the ratios to PyTorch's
``grid_sample`` are measured side by side.

    python -m bench volumes          # or: python -m bench.volumes [sizes...]
"""

import importlib.util
import os
import sys

from bench.timing import contender_table, decline, measure_in_processes, serve

BATCH, CHANNELS = 4, 1
SIZES = (32, 64)
CONTENDERS = ("grid_sample", "tensorflow", "jax", "torch")
PATH = {
    "grid_sample": "torch affine_grid + grid_sample (NCDHW), eager + backward()",
    "tensorflow": "tf.function + tape -> keras_warp -> tf_volume_sample (XLA) -> "
                  "trilinear_sample_rows",
    "jax": "jax.jit(jax.grad) of kinds.warp_ops -> sampler3d.sample (sampler3d_jax custom_vjp)",
    "torch": "eager kinds.warp_ops -> sampler3d.sample (grid_sample seam) + backward()",
}


def _inputs(size: int):
    import numpy as np

    from stn.layer import kinds as K
    rng = np.random.default_rng(0)
    volumes = rng.random((BATCH, size, size, size, CHANNELS)).astype(np.float32)
    theta = K.identity("affine3d", BATCH) + rng.uniform(-0.3, 0.3, (BATCH, 12))
    return volumes, theta.astype(np.float32)


def _grid_sample(volumes, theta):
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(volumes).permute(0, 4, 1, 2, 3).contiguous()  # (B, C, D, H, W)
    t = torch.from_numpy(theta).reshape(-1, 3, 4)

    def warp(t):
        grid = F.affine_grid(t, x.shape, align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")

    def forward():
        with torch.no_grad():
            return warp(t)

    def forward_backward():
        q = t.clone().requires_grad_(True)
        warp(q).square().sum().backward()
        return q.grad

    label = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return label, forward, forward_backward, lambda r: r


def _serve(contender: str, size: int) -> None:
    """Worker: ``python -m bench.volumes <contender> <size>``, one per process."""
    backend = "torch" if contender == "grid_sample" else contender
    if importlib.util.find_spec(backend) is None:
        decline(f"{backend} is not installed")
        return
    os.environ["KERAS_BACKEND"] = backend  # before Keras is first imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if contender == "grid_sample":
        made = _grid_sample(*_inputs(size))
    else:
        from bench import backends
        made = backends.CONTENDERS[backend]("affine3d", *_inputs(size))
    label, forward, forward_backward, sync = made
    serve(label, {"forward": forward, "forward_backward": forward_backward}, sync=sync)


def run(repeats: int = 10, sizes=SIZES) -> dict:
    """Prints one table per size, with ratios to PyTorch's grid_sample; returns the seconds."""
    print(f"\n== volumes: the 3-D affine warp, batch {BATCH}, {CHANNELS} channel, float32, "
          f"gradient to the 12 parameters; medians of {repeats} rounds in alternation, "
          "one process per contender ==")
    results = {}
    for size in sizes:
        served = measure_in_processes("bench.volumes", [[c, str(size)] for c in CONTENDERS],
                                      repeats)
        print(f"-- {size}^3\n{'contender: code path':80s} {'forward':31s}   fwd+bwd (params)")
        rows = contender_table(served, CONTENDERS, size, PATH, "grid_sample", 80)
        results[f"{size}^3"] = rows
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in CONTENDERS:
        _serve(sys.argv[1], int(sys.argv[2]))
    else:
        run(sizes=tuple(int(s) for s in sys.argv[1:]) or SIZES)
