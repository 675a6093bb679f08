"""A/B of the affine sampler between two checkouts of this repository.

    python -m bench.ab_sampler OTHER_CHECKOUT [THIS_CHECKOUT] [--rounds 3]

Times ``stn.layer.transform.transform`` (affine, batch 500, 40x40x1, float32) in
one ``jit_compile`` function, forward and forward + backward to theta, as
the code of each checkout defines it (a fresh process per checkout, its
``stn`` first on ``sys.path``), alternating checkouts ``--rounds`` times,
so a change to the sampler can be checked for a slow-down on one machine.
E.g. ``git worktree add /tmp/old <commit>`` for the other checkout. Not
part of ``make bench``: it needs a second checkout.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Self-contained (not bench.timing): it runs against the other checkout's
# code, whose bench/ may not exist or may differ.
_WORKER = r"""
import time, numpy as np, tensorflow as tf
from stn import transform as T  # the old path: older checkouts have no stn.layer
rng = np.random.default_rng(0)
x = tf.constant(rng.random((500, 40, 40, 1)).astype(np.float32))
theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (500, 1))
theta = tf.constant((theta + 0.1 * rng.standard_normal((500, 6))).astype(np.float32).reshape(500, 2, 3))
def fwd_bwd(x, t):
    with tf.GradientTape() as tape:
        tape.watch(t)
        loss = tf.reduce_sum(tf.square(T.transform(x, t)))
    return tape.gradient(loss, t)
for f in (tf.function(lambda x, t: T.transform(x, t), jit_compile=True),
          tf.function(fwd_bwd, jit_compile=True)):
    for _ in range(5):
        f(x, theta).numpy()
    times = []
    for _ in range(100):
        start = time.perf_counter(); f(x, theta).numpy(); times.append(time.perf_counter() - start)
    print(np.median(times))
"""


def time_checkout(checkout: Path) -> tuple[float, float]:
    """(forward, forward + backward) median seconds of the checkout's sampler."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", _WORKER], cwd=checkout, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("other", type=Path, help="the other checkout (e.g. an older commit)")
    p.add_argument("this", type=Path, nargs="?", default=ROOT, help="default: this checkout")
    p.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    args = p.parse_args(argv)
    for checkout in (args.other, args.this):
        if not any((checkout / "stn" / sub / "transform.py").exists() for sub in ("layer", "")):
            p.error(f"{checkout} is not a checkout of this repository (no stn/layer/transform.py)")
    times = {args.other: [], args.this: []}
    for _ in range(args.rounds):
        for checkout in times:
            times[checkout].append(time_checkout(checkout))
    medians = {c: [sorted(t[i] for t in runs)[len(runs) // 2] for i in (0, 1)]
               for c, runs in times.items()}
    for checkout, (forward, both) in medians.items():
        print(f"{str(checkout):40s} forward {1e3 * forward:6.2f} ms   fwd+bwd {1e3 * both:6.2f} ms")
    (f0, b0), (f1, b1) = medians[args.other], medians[args.this]
    print(f"this / other: forward {f1 / f0:.2f}x, fwd+bwd {b1 / b0:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
