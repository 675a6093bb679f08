"""Configs as frozen dataclasses, with named presets.

A run is described completely by a :class:`Config` (which holds a
:class:`ModelConfig`); the resolved config is written into every run
directory as ``config.json`` and read back with :func:`config_from_dict`.
"""

import dataclasses
from typing import Any

from stn import kinds, protocols


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: "
                         + ", ".join(repr(c) for c in choices))


def _check_positive(name: str, value) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
"""Keras dtype policies of the classifier (``ModelConfig.dtype``)."""
PRECISIONS = ("auto", *DTYPES)
"""``--precision`` choices: a policy, or "auto" (stn.precision.resolve_precision)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a classifier, with or without a spatial transformer.

    Sizes follow the predecessor's TF 1.14 design (preset ``seed``) or the
    paper's appendix A (preset ``paper``); see README, "Models".
    """

    preset: str = "seed"
    input_size: int = 40  # square inputs; the data protocol sets it
    transformer: bool = True
    # Transformation the transformer applies: a name in stn.kinds.KINDS
    # ("affine", "projective", "tps"); it sets the localization net's output.
    kind: str = "affine"
    # Localization network: "dense" = Flatten -> Dense(hidden, tanh) ->
    # Dropout; "conv" = the paper's small conv net (A.4); "fc" = the paper's
    # fully connected one (ST-FCN), Dense(localization_units...) ReLU.
    localization: str = "dense"
    localization_hidden: int = 20
    localization_dropout: float = 0.2  # drop rate: keep probability 0.8
    localization_units: tuple[int, ...] = (32, 32, 32)
    # Last localization layer: "identity" = zero kernel, identity bias
    # (paper, appendix A); "glorot" = the predecessor's Glorot kernel, zero
    # bias. theta_activation "tanh" reproduces the predecessor's squashing.
    theta_init: str = "identity"
    theta_activation: str | None = None
    transformer_output_size: int | None = None  # None: same as the input
    # Classifier: "seed" = two 3x3 convs -> Dense(dense_units) -> 10;
    # "paper" = conv 9x9 -> pool -> conv 7x7 -> pool -> Dense(dense_units) -> 10;
    # "fcn" = Dense(dense_units) -> Dense(dense_units) -> 10 (paper's FCN).
    classifier: str = "seed"
    conv_filters: tuple[int, ...] = (16, 16)
    conv_strides: int = 1  # the predecessor's text says 2, its shapes say 1
    dense_units: int = 1024
    # Keras dtype policy of the classifier ("float32", "mixed_bfloat16" or
    # "mixed_float16").
    # The transformer and the logits always run in float32.
    dtype: str = "float32"

    def __post_init__(self):
        _check_choice("kind", self.kind, tuple(kinds.KINDS))
        _check_choice("localization", self.localization, ("dense", "conv", "fc"))
        _check_choice("theta_init", self.theta_init, ("identity", "glorot"))
        _check_choice("theta_activation", self.theta_activation, (None, "tanh"))
        _check_choice("classifier", self.classifier, ("seed", "paper", "fcn"))
        _check_choice("dtype", self.dtype, DTYPES)
        _check_positive("input_size", self.input_size)
        _check_positive("conv_strides", self.conv_strides)
        _check_positive("dense_units", self.dense_units)
        if not 0.0 <= self.localization_dropout < 1.0:
            raise ValueError(f"localization_dropout must be in [0, 1), got {self.localization_dropout}")
        if len(self.conv_filters) != 2:
            raise ValueError(f"conv_filters needs two entries, got {self.conv_filters}")


_PAPER_CNN = dict(classifier="paper", conv_filters=(64, 64), dense_units=128)
_PAPER_FCN = dict(classifier="fcn", dense_units=256)

MODEL_PRESETS = {
    # The predecessor's layer sizes, with the fixes: identity-initialised
    # last localization layer and no tanh on theta.
    "seed": ModelConfig(preset="seed"),
    # The predecessor's transformer as it was (Glorot init, tanh on theta).
    "seed-original": ModelConfig(preset="seed-original", theta_init="glorot",
                                 theta_activation="tanh"),
    # The `seed` classifier with no transformer: the baseline to beat.
    "cnn": ModelConfig(preset="cnn", transformer=False),
    # The paper's distorted-MNIST models (Table 1, appendix A.4): baselines...
    "paper-fcn": ModelConfig(preset="paper-fcn", transformer=False, **_PAPER_FCN),
    "paper-cnn": ModelConfig(preset="paper-cnn", transformer=False, **_PAPER_CNN),
    # ... ST-CNN: the conv localization net; `paper` is the affine one.
    "paper": ModelConfig(preset="paper", localization="conv", **_PAPER_CNN),
    **{f"st-cnn-{kind}": ModelConfig(preset=f"st-cnn-{kind}", kind=kind, localization="conv",
                                     **_PAPER_CNN)
       for kind in kinds.KINDS},
    # ... ST-FCN: fully connected localization net and classifier.
    **{f"st-fcn-{kind}": ModelConfig(preset=f"st-fcn-{kind}", kind=kind, localization="fc",
                                     **_PAPER_FCN)
       for kind in kinds.KINDS},
}


def model_config(preset: str = "seed", **overrides: Any) -> ModelConfig:
    """The named preset with some fields replaced."""
    _check_choice("preset", preset, tuple(MODEL_PRESETS))
    try:
        return dataclasses.replace(MODEL_PRESETS[preset], **overrides)
    except TypeError as e:  # an unknown field name
        fields = ", ".join(f.name for f in dataclasses.fields(ModelConfig))
        raise ValueError(f"{e}; ModelConfig fields are: {fields}") from None


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named training recipe: what ``--recipe`` selects (see :data:`RECIPES`).

    Every field is a :class:`Config` field of the same name; a flag given on
    the command line overrides the recipe's value, and the resolved values
    are what ``config.json`` records.
    """
    description: str
    epochs: int = 20
    batch_size: int = 500
    learning_rate: float = 1e-4  # Adam's; the peak of the schedule
    # "constant", or "cosine": linear warm-up from 0 over warmup_epochs, then
    # cosine decay to 0 at the last step (keras.optimizers.schedules.CosineDecay).
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    label_smoothing: float = 0.0
    resample_warps: bool = False  # fresh warps every epoch
    # The localization net's learning rate as a multiple of the rest's (at
    # every step of the schedule); Adam makes this the only way to speed up
    # one part of the model, since it ignores the scale of its gradients.
    localization_lr_scale: float = 1.0
    # Warp curriculum: the fresh warps' strength grows linearly from 0 (no
    # distortion) at epoch 0 to the protocol's own at this epoch
    # (stn.data.warp_strength); 0 is off. Needs resample_warps.
    warp_ramp_epochs: float = 0.0


RECIPES = {
    # The TF 1.14 predecessor's training, kept to reproduce it: it underfits
    # (README, Results).
    "predecessor": Recipe("the TF 1.14 predecessor's: Adam 1e-4 constant, one fixed warp per "
                          "image, batch 500, 20 epochs"),
    # `make train`: chosen on the validation split (README, "How the default
    # recipe was chosen").
    "default": Recipe("Adam 1e-3 peak, 1 warm-up epoch then cosine decay to 0, fresh warps "
                      "every epoch, batch 250, 20 epochs", batch_size=250, learning_rate=1e-3,
                      schedule="cosine", warmup_epochs=1.0, resample_warps=True),
    # The paper's Table 1 grid (experiments/table1.py), the same for all cells;
    # the peak rate and the epochs chosen on validation (experiments/screen.py
    # recipe, then experiments/compare_grids.py on whole grids).
    "table1": Recipe("Adam 3e-3 peak, 1 warm-up epoch then cosine decay to 0, fresh warps "
                     "every epoch, batch 256, 45 epochs", epochs=45, batch_size=256,
                     learning_rate=3e-3, schedule="cosine", warmup_epochs=1.0,
                     resample_warps=True),
}
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run. Field defaults are the predecessor's training:

    Adam (1e-4, 0.9, 0.999, 1e-8), batch 500, 20 epochs = 2,200 steps on the
    55,000 training images, softmax cross-entropy on logits. ``make_config``
    starts from a named :class:`Recipe` instead (``"default"`` unless told).
    """

    model: ModelConfig = ModelConfig()
    protocol: str = "seed"
    recipe: str = "predecessor"  # the Recipe the fields below started from
    epochs: int = 20
    batch_size: int = 500
    learning_rate: float = 1e-4
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    localization_lr_scale: float = 1.0
    warp_ramp_epochs: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    seed: int = 0
    max_train_examples: int | None = None
    max_steps_per_epoch: int | None = None  # for smoke runs
    resample_warps: bool = False
    deterministic: bool = False
    strategy: str = "default"  # or "mirrored"
    # XLA for the whole train step. Off by default: on CPU the step is
    # several times slower under XLA (bench/), whose convolutions and
    # matmuls lose to oneDNN's; the sampler alone is always XLA-compiled.
    jit_compile: bool = False

    def __post_init__(self):
        _check_choice("protocol", self.protocol, tuple(protocols.PROTOCOLS))
        _check_choice("strategy", self.strategy, ("default", "mirrored"))
        _check_choice("recipe", self.recipe, tuple(RECIPES))
        _check_choice("schedule", self.schedule, SCHEDULES)
        if not 0.0 <= self.warmup_epochs <= self.epochs:  # also rejects NaN
            raise ValueError(f"warmup_epochs must be in [0, epochs = {self.epochs}], "
                             f"got {self.warmup_epochs}")
        if not 0.0 <= self.warp_ramp_epochs <= self.epochs:  # also rejects NaN
            raise ValueError(f"warp_ramp_epochs must be in [0, epochs = {self.epochs}], "
                             f"got {self.warp_ramp_epochs}")
        if self.warp_ramp_epochs and not self.resample_warps:
            raise ValueError("warp_ramp_epochs needs resample_warps: the fixed warps of "
                             "each image cannot grow")
        for name in ("weight_decay", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "max_train_examples", "max_steps_per_epoch"):
            _check_positive(name, getattr(self, name))
        import math

        for name in ("learning_rate", "epsilon", "beta_1", "beta_2", "localization_lr_scale"):
            if not math.isfinite(getattr(self, name)):  # config.json must stay strict JSON
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        for name in ("learning_rate", "epsilon", "localization_lr_scale"):
            _check_positive(name, getattr(self, name))
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        canvas = protocols.PROTOCOLS[self.protocol].canvas
        if self.model.input_size != canvas:
            raise ValueError(f"protocol {self.protocol!r} makes {canvas}x{canvas} images but "
                             f"the model expects {self.model.input_size}; use make_config()")


def make_config(preset: str = "seed", protocol: str = "seed", model_overrides: dict | None = None,
                recipe: str = "default", **fields: Any) -> Config:
    """A run config: the model preset sized for the protocol's images, trained by a recipe.

    Args:
      preset: model preset name (MODEL_PRESETS).
      protocol: warp protocol name (stn.protocols.PROTOCOLS).
      model_overrides: ModelConfig fields to replace.
      recipe: training recipe name (RECIPES); ``fields`` override its values.
      **fields: other Config fields (epochs, batch_size, ...).
    """
    _check_choice("recipe", recipe, tuple(RECIPES))
    settings = {k: v for k, v in dataclasses.asdict(RECIPES[recipe]).items()
                if k != "description"}
    fields = {**settings, **fields, "recipe": recipe}
    _check_choice("protocol", protocol, tuple(protocols.PROTOCOLS))
    overrides = {"input_size": protocols.PROTOCOLS[protocol].canvas, **(model_overrides or {})}
    return Config(model=model_config(preset, **overrides), protocol=protocol, **fields)


def config_to_dict(config: Config) -> dict:
    """JSON-ready dict of a config (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(d: dict) -> Config:
    """Inverse of :func:`config_to_dict`; unknown keys are an error."""
    model = dict(d["model"])
    for key in ("conv_filters", "localization_units"):
        if key in model:
            model[key] = tuple(model[key])
    return Config(**{**d, "model": ModelConfig(**model)})
