"""Studies of the project, one module each, run from the repository root.

    python -m experiments.table1 --list    # the paper's Table 1 grid
    python -m experiments.screen recipe    # a screen of recipe variants

The Table 1 grid (its cells, configs and run names) is defined once, in
:mod:`experiments.grid`; the other studies import it from there.
"""

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
