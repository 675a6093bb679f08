"""Benchmark 1: our sampler against PyTorch's fused C++ grid_sample (CPU).

Affine warps of a batch of 500 40x40x1 images (the default training batch),
float32: forward, and forward + backward with respect to theta only (what a
training step needs: the raw input image needs no gradient), on each code
path of ours (:data:`PATHS`) and on PyTorch's. TensorFlow and PyTorch run in
separate processes, timed in alternation (bench.timing.measure_in_processes),
so the ratios are measured side by side.

:func:`code_paths` is shared with bench.kinds and bench.scaling.
"""

import sys
from typing import Callable

import numpy as np
import tensorflow as tf

from bench.timing import Timing, decline, measure_in_processes, serve, to_numpy
from stn.layer import kinds as K

BATCH, HEIGHT, WIDTH = 500, 40, 40

PATHS = {
    "graph": "kinds.warp in a plain tf.function (no XLA)",
    "xla": "kinds.warp_xla; fwd+bwd: kinds.warp + tape in one jit_compile tf.function",
    "train": "training step: plain tf.function + tape -> kinds.warp_xla_params_grad",
}
"""Our code paths, each named by the code it times (forward; forward + backward).

``train`` is what a training step runs: the model's step is a plain
``tf.function`` (XLA is slower than oneDNN for its convolutions on CPU) in
which the transformer calls the XLA-compiled sampler; its backward pass is a
second XLA call. ``xla`` compiles forward and backward into one program.
"""

INSTALL_PEER = ('make bench (it installs the "bench" extra), or: pip install -e ".[bench]"')


def inputs(kind: str = "affine", batch: int = BATCH, height: int = HEIGHT,
           width: int = WIDTH, seed: int = 0):
    """float32 ``images [B, H, W, 1]`` and ``params [B, P]``: the identity +- 0.3."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, height, width, 1)).astype(np.float32)
    size = K.get_kind(kind).size
    params = K.identity(kind, batch) + rng.uniform(-0.3, 0.3, (batch, size))
    return images, params.astype(np.float32)


def _loss(out: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(out))  # the PyTorch peer's loss too


def code_paths(kind: str, images: np.ndarray, params: np.ndarray
               ) -> dict[str, tuple[Callable[[], tf.Tensor], Callable[[], tf.Tensor]]]:
    """``{path: (forward, forward_backward)}`` for each of :data:`PATHS`.

    Each is a callable of no arguments on fixed inputs; ``forward_backward``
    returns the gradient of ``sum(out ** 2)`` with respect to ``params``.
    """
    images, params = tf.constant(images), tf.constant(params)

    def gradient_through(warp):
        def forward_backward(x, p):
            with tf.GradientTape() as tape:
                tape.watch(p)
                loss = _loss(warp(x, p, kind))
            return tape.gradient(loss, p)
        return forward_backward

    graph_fwd = tf.function(lambda x, p: K.warp(x, p, kind))
    graph = tf.function(gradient_through(K.warp))
    whole_xla = tf.function(gradient_through(K.warp), jit_compile=True)
    train_fwd = tf.function(lambda x, p: K.warp_xla_params_grad(x, p, kind))
    train = tf.function(gradient_through(K.warp_xla_params_grad))
    return {
        "graph": (lambda: graph_fwd(images, params), lambda: graph(images, params)),
        "xla": (lambda: K.warp_xla(images, params, kind), lambda: whole_xla(images, params)),
        "train": (lambda: train_fwd(images, params), lambda: train(images, params)),
    }


def _serve_tf() -> None:
    contenders = {}
    for path, (forward, forward_backward) in code_paths("affine", *inputs()).items():
        contenders[f"{path}/forward"] = forward
        contenders[f"{path}/forward_backward"] = forward_backward
    serve(f"stn, TF {tf.__version__}", contenders, sync=to_numpy)


def _serve_torch(threads: str = "") -> None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        decline("torch is not installed")
        return
    if threads:
        torch.set_num_threads(int(threads))
    images, theta = inputs()
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

    threads = torch.get_num_threads()
    serve(f"torch {torch.__version__}, {threads} thread{'s' * (threads != 1)}: "
          "F.affine_grid + F.grid_sample", {"torch/forward": forward,
                                            "torch/forward_backward": forward_backward})


def _row(label: str, forward: Timing, forward_backward: Timing) -> dict:
    print(f"{label:78s} {forward}   {forward_backward}")
    return {"label": label, "forward": forward.median, "forward_backward": forward_backward.median}


def _print_ratios(results: dict) -> None:
    """Adds ``ratio_[train_][1_thread_]{forward,forward_backward}`` to ``results``."""
    print(f"{'ratio ours / torch':45s}{'forward (target <= 1.5)':>26s}"
          f"{'fwd+bwd (target <= 1.0)':>26s}")
    for key, name in (("tf-xla", "XLA"), ("tf-train", "training step")):
        for peer, peer_name in (("torch", ""), ("torch-1-thread", ", torch on 1 thread")):
            prefix = ("ratio_" + ("train_" if key == "tf-train" else "")
                      + ("1_thread_" if peer != "torch" else ""))
            cells = []
            for part in ("forward", "forward_backward"):
                results[prefix + part] = results[key][part] / results[peer][part]
                cells.append(f"{results[prefix + part]:26.2f}")
            print(f"{'ours (' + name + peer_name + ')':45s}" + "".join(cells))


def run(repeats: int = 50) -> dict:
    """Prints the table and the ratios to the peer; returns the numbers (seconds)."""
    print(f"\n== 1. sampler, affine: batch {BATCH}, {HEIGHT}x{WIDTH}x1, float32; medians of "
          f"{repeats} rounds, ours and PyTorch timed in alternation ==")
    served = measure_in_processes("bench.sampler", [["tf"], ["torch"], ["torch", "1"]],
                                  repeats)
    ours, peer = served["tf"], served["torch"]
    print(f"{'code path (ours: ' + ours['label'] + ')':78s} {'forward':31s}   fwd+bwd (theta)")
    results = {}
    for key, path in (("tf", "graph"), ("tf-xla", "xla"), ("tf-train", "train")):
        results[key] = _row(PATHS[path], ours["timings"][f"{path}/forward"],
                            ours["timings"][f"{path}/forward_backward"])
    if "unavailable" in peer:
        print(f"PEER MISSING ({peer['unavailable']}): no PyTorch row and no ratios. "
              f"Install it with {INSTALL_PEER}")
        return results
    results["torch"] = _row(peer["label"], peer["timings"]["torch/forward"],
                            peer["timings"]["torch/forward_backward"])
    # One thread: PyTorch's OpenMP waits at a barrier for its slowest thread,
    # so on a machine busy with other work its default (all cores) can be
    # several times slower than this; the targets are against the default.
    one = served["torch 1"]
    results["torch-1-thread"] = _row(one["label"], one["timings"]["torch/forward"],
                                     one["timings"]["torch/forward_backward"])
    _print_ratios(results)
    return results


if __name__ == "__main__":
    {"tf": _serve_tf, "torch": _serve_torch}[sys.argv[1]](*sys.argv[2:])
