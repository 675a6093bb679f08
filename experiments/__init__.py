"""Studies of the project, one module each, run from the repository root.

    python -m experiments.table1 --list    # the paper's Table 1 grid
    python -m experiments.screen recipe    # a screen of recipe variants

The Table 1 grid (its cells, configs and run names) is defined once, in
:mod:`experiments.grid`; the other studies import it from there.
"""

import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: results/, runs/, pretrained/


def relative(path) -> str:
    """``path`` as records name it: relative to the repository when it is an absolute path
    inside it, else as given. Links are not resolved, so a worktree whose ``results/`` links
    to another checkout still writes ``results/...``."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(ROOT):
        return path.relative_to(ROOT).as_posix()
    return path.as_posix()


def cpu_model() -> str:
    """``lscpu``'s model name (from /proc/cpuinfo), for the records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
