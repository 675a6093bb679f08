"""The paper's Table 1 grid: its models, distortions, cells, configs and run names.

Shared by the studies that train, read or compare its cells
(:mod:`experiments.table1`, :mod:`experiments.screen`,
:mod:`experiments.compare_grids`, :mod:`experiments.frozen_classifier`).
"""

from pathlib import Path

MODELS = {  # the table's rows -> model presets (stn.train.config.MODEL_PRESETS)
    "FCN": "paper-fcn",
    "CNN": "paper-cnn",
    "ST-FCN Aff": "st-fcn-affine",
    "ST-FCN Proj": "st-fcn-projective",
    "ST-FCN TPS": "st-fcn-tps",
    "ST-CNN Aff": "st-cnn-affine",
    "ST-CNN Proj": "st-cnn-projective",
    "ST-CNN TPS": "st-cnn-tps",
}
PROTOCOLS = {"R": "r", "RTS": "rts", "P": "p-cal", "E": "e-cal",  # columns -> stn.data.protocols
             "TC": "tc"}
# Our literal readings of the appendix's P and E, the table's columns until
# the FCN ruler calibrated them (docs/protocols.md): their cells are
# kept, as results/table1_literal.{json,md}, beside the calibrated table.
LITERAL = {"P": "p", "E": "e"}
READINGS = {"calibrated": PROTOCOLS, "literal": LITERAL}
# TC: the paper gives one number per family in Sect. 4.1 (ST-FCN 2.0, ST-CNN
# 1.7), not per transformation; each kind's row carries its family's number.
PAPER = {  # Jaderberg et al. 2015, Table 1 (left) and Sect. 4.1 (TC), % error
    "FCN": (2.1, 5.2, 3.1, 3.2, 13.2),
    "CNN": (1.2, 0.8, 1.5, 1.4, 3.5),
    "ST-FCN Aff": (1.2, 0.8, 1.5, 2.7, 2.0),
    "ST-FCN Proj": (1.3, 0.9, 1.4, 2.6, 2.0),
    "ST-FCN TPS": (1.1, 0.8, 1.4, 2.4, 2.0),
    "ST-CNN Aff": (0.7, 0.5, 0.8, 1.2, 1.7),
    "ST-CNN Proj": (0.8, 0.6, 0.8, 1.3, 1.7),
    "ST-CNN TPS": (0.7, 0.5, 0.8, 1.1, 1.7),
}
SEED_CELLS = (("CNN", "RTS"), ("ST-CNN Aff", "RTS"), ("ST-CNN Aff", "R"),  # also seeds 1, 2
              ("CNN", "TC"), ("ST-CNN Aff", "TC"))
EXTRA_SEEDS = (1, 2)


def paper_error(model: str, protocol: str) -> float:
    return PAPER[model][list(PROTOCOLS).index(protocol)]


def all_cells(seeds: bool = True, reading: str = "calibrated") -> list[tuple[str, str, int]]:
    """``(model, protocol, seed)`` of the grid, column by column, then the seeds.

    ``reading="literal"``: the cells of the P and E columns at our literal
    readings (:data:`LITERAL`), seed 0 only.
    """
    cells = [(m, p, 0) for p in READINGS[reading] for m in MODELS]
    if seeds and reading == "calibrated":
        cells += [(m, p, s) for s in EXTRA_SEEDS for m, p in SEED_CELLS]
    return cells


def run_name(model: str, protocol: str, seed: int = 0, reading: str = "calibrated") -> str:
    """``<preset>_<protocol>[_seed<n>]``, e.g. ``st-cnn-tps_e-cal``, ``paper-fcn_p`` (literal)."""
    name = f"{MODELS[model]}_{READINGS[reading][protocol]}"
    return name if seed == 0 else f"{name}_seed{seed}"


# Our choice where the paper is silent: on RTS (42x42 canvas) the transformer
# samples a 28x28 output, MNIST's own size, so the ST models' classifier is the
# network the R, P and E cells use, reading a digit at its original scale, and
# costs 2.25x fewer pixels. The baselines (FCN, CNN) read the 42x42 canvas.
RTS_TRANSFORMER_OUTPUT = 28
# On TC (60x60) the transformer crops and downsamples, as the paper's
# attention does: its output side was chosen on validation by
# `python -m experiments.screen tc-output` (results/screen_tc_output.json;
# the rule in docs/history/protocols.md): ST-CNN Aff validation error 0.76%
# at 40 px against 0.88% at 28, more than the rule's 0.1 point apart.
TC_TRANSFORMER_OUTPUT = 40
TRANSFORMER_OUTPUT = {"RTS": RTS_TRANSFORMER_OUTPUT, "TC": TC_TRANSFORMER_OUTPUT}
# Config fields every TC cell (and the TC calibration's FCN) replaces in the
# recipe, the same for all models. The CNN reads the whole 60x60 canvas: 3.1x
# the multiply-adds of its RTS cell, an estimated 35-44 min at the recipe's 45
# epochs against a 20-minute budget per cell (docs/protocols.md, "TC"), so the
# TC column trains 20 epochs, every model alike.
TC_FIELDS: dict = {"epochs": 20}


def cell_config(model: str, protocol: str, seed: int = 0, recipe: str = "table1",
                precision: str = "float32", reading: str = "calibrated", **fields):
    """The cell's Config: the model preset on the column's protocol, trained by ``recipe``.

    ``fields`` are Config fields, or ModelConfig fields (``classifier_dropout``,
    ...) that replace the preset's.
    """
    from stn.train.config import make_config, model_config

    overrides = {"dtype": precision}
    if protocol == "TC":
        fields = {**TC_FIELDS, **fields}
    if protocol in TRANSFORMER_OUTPUT and model_config(MODELS[model]).transformer:
        overrides["transformer_output_size"] = TRANSFORMER_OUTPUT[protocol]
    return make_config(MODELS[model], READINGS[reading][protocol], overrides, recipe=recipe,
                       seed=seed, **fields)


def is_done(config, results: Path) -> bool:
    """True if ``results`` holds a finished evaluation of exactly ``config``."""
    from stn.train import runs

    try:
        return (results / "results.json").exists() and runs.read_config(results) == config
    except runs.RunError:
        return False
