"""Runs the benchmarks: `python -m bench [names...]` (all by default)."""

import argparse
import math
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import backends, default_run, input_gradient, kinds, pipeline, sampler, scaling, training, volumes  # noqa: E402  (after the log-level setting)
from experiments import cpu_model  # noqa: E402
from stn.train import runs  # noqa: E402

BENCHMARKS = {"sampler": sampler.run, "kinds": kinds.run, "scaling": scaling.run,
              "training": training.run, "pipeline": pipeline.run,
              "input_gradient": input_gradient.run, "backends": backends.run,
              "default_run": default_run.run, "volumes": volumes.run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], default=[],
                        help="benchmarks to run (default: all)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()} (absolute times include whatever else it runs; "
          "ratios are measured side by side)")
    results = {name: BENCHMARKS[name]() for name in (args.names or BENCHMARKS)}
    if args.json:  # strict JSON: a time that could not be measured is null
        runs.write_json(Path(args.json), _finite_or_null(results))


def _finite_or_null(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
