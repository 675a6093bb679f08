"""Benchmark 1b: each transformer kind (stn.layer.kinds) against the affine.

Batch 500 of 40x40x1, float32, on our XLA code paths (bench.sampler.PATHS):
the forward pass (``kinds.warp_xla``), and forward + backward with respect to
the parameters compiled as one program and as a training step runs it.

Each kind runs in its own process, as in a training run: ``kinds.warp_xla``
and ``kinds.warp_xla_params_grad`` retrace with ``reduce_retracing=True``,
so in a process that has already called them with other shapes they run a
shape-generic trace instead (for TPS one that recomputes the spline's basis
on every call). The processes are timed in alternation
(bench.timing.measure_in_processes): the ratios to the affine are measured
side by side.
"""

import sys

from bench.sampler import BATCH, HEIGHT, WIDTH, code_paths, inputs
from bench.timing import measure_in_processes, serve, to_numpy
from stn.layer import kinds as K
from stn.layer.kinds3d import image_kinds

TARGET = 1.5
"""Forward + backward of every kind within this factor of the affine's."""

COLUMNS = {
    "forward": ("xla", 0, "kinds.warp_xla"),
    "forward_backward": ("xla", 1, "kinds.warp + tape in one jit_compile tf.function"),
    "train_forward_backward": ("train", 1, "training step: plain tf.function + tape -> "
                               "kinds.warp_xla_params_grad"),
}
"""Column -> (path in bench.sampler.PATHS, 0 forward or 1 forward + backward, code)."""
TITLES = {"forward": "forward", "forward_backward": "fwd+bwd, XLA",
          "train_forward_backward": "fwd+bwd, training"}


def print_legend() -> None:
    for column, (_, _, code) in COLUMNS.items():
        print(f"  {TITLES[column] + ':':19s}{code}")


def serve_columns(kind: str, batch: int = BATCH, side: int = HEIGHT) -> None:
    """Worker: the :data:`COLUMNS` of one kind at batch x side x side x 1."""
    paths = code_paths(kind, *inputs(kind, batch, side, side))
    serve(f"{kind}, {batch} x {side}x{side}",
          {column: paths[path][part] for column, (path, part, _) in COLUMNS.items()},
          sync=to_numpy)


def run(repeats: int = 30) -> dict:
    """Prints one row per kind with its ratios to the affine; returns the numbers."""
    print(f"\n== 1b. transformer kinds: batch {BATCH}, {HEIGHT}x{WIDTH}x1, float32; one process "
          f"per kind, medians of {repeats} rounds in alternation; (x) = time / the affine's ==")
    print_legend()
    served = measure_in_processes("bench.kinds", [[kind] for kind in image_kinds()], repeats)
    print(f"{'kind':12s}" + "".join(f"{TITLES[c]:>22s}" for c in COLUMNS))
    results = {}
    for kind in image_kinds():
        row = results[kind] = {}
        cells = []
        for column in COLUMNS:
            seconds = served[kind]["timings"][column].median
            ratio = seconds / served["affine"]["timings"][column].median
            row[column], row[f"{column}_vs_affine"] = seconds, ratio
            cells.append(f"{seconds * 1e3:8.2f} ms ({ratio:4.2f}x)")
        print(f"{kind:12s}" + "".join(f"{cell:>22s}" for cell in cells))
    worst = max(results[k][f"{c}_vs_affine"] for k in image_kinds()
                for c in ("forward_backward", "train_forward_backward"))
    print(f"slowest fwd+bwd vs the affine's: {worst:.2f}x (target <= {TARGET})")
    return results


if __name__ == "__main__":
    serve_columns(sys.argv[1], *map(int, sys.argv[2:]))
