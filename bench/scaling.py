"""Benchmark 1c: how the sampler's time grows with the number of pixels.

Affine warps, float32, on our XLA code paths (bench.sampler.PATHS), for
batch 500 at 40x40 (the default), 42x42, 60x60 and 80x80, and batch 2000 at
40x40: one process per size (see bench.kinds for why), timed in alternation.
"per pixel" is the time relative to the default's divided by the pixels
relative to the default's: 1.00 is linear scaling, and well above 1 a cliff
(the work no longer fits in cache).
"""

from bench.kinds import COLUMNS, TITLES, print_legend
from bench.timing import measure_in_processes

SIZES = [(500, 40), (500, 42), (500, 60), (500, 80), (2000, 40)]
"""(batch, side): square images, the first is the reference."""


def run(repeats: int = 20) -> dict:
    """Prints one row per size with time and time per pixel; returns the numbers."""
    print(f"\n== 1c. scaling, affine, float32; one process per size, medians of {repeats} "
          "rounds in alternation; (x) = time per pixel relative to batch 500 at 40x40 ==")
    print_legend()
    served = measure_in_processes(
        "bench.kinds", [["affine", str(batch), str(side)] for batch, side in SIZES], repeats)
    timings = {size: served[f"affine {size[0]} {size[1]}"]["timings"] for size in SIZES}
    print(f"{'batch x size':16s}{'pixels':>8s}" + "".join(f"{TITLES[c]:>22s}" for c in COLUMNS))
    reference = SIZES[0][0] * SIZES[0][1] ** 2
    results = {}
    for batch, side in SIZES:
        pixels = batch * side ** 2 / reference
        row = results[f"{batch}x{side}x{side}"] = {"pixels_vs_default": pixels}
        cells = []
        for column in COLUMNS:
            seconds = timings[(batch, side)][column].median
            per_pixel = seconds / timings[SIZES[0]][column].median / pixels
            row[column], row[f"{column}_per_pixel"] = seconds, per_pixel
            cells.append(f"{seconds * 1e3:8.2f} ms ({per_pixel:4.2f}x)")
        name = f"{batch} x {side}x{side}"
        print(f"{name:16s}{pixels:7.2f}x" + "".join(f"{c:>22s}" for c in cells))
    return results
