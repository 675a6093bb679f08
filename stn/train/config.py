"""Configs as frozen dataclasses, with named presets.

A run is described completely by a :class:`Config` (which holds a
:class:`ModelConfig`); the resolved config is written into every run
directory as ``config.json`` and read back with :func:`config_from_dict`.
"""

import dataclasses
import math
from typing import Any

from stn.layer import kinds, kinds3d
from stn.data import datasets, protocols
from stn.train.settings import (ALIGNMENT_PREFIX, ALIGNMENT_TERMS, AlignmentSettings,  # noqa: F401
                                ConfigError, check_choice, check_positive, setting)


DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
"""Keras dtype policies of the classifier (``ModelConfig.dtype``)."""
PRECISIONS = ("auto", *DTYPES)
"""``--precision`` choices: a policy, or "auto" (stn.train.precision.resolve_precision)."""
# Old names of the registries' entries, still read (command line, make_config,
# the records in results/): old name -> current name. --help lists the current ones.
PRESET_ALIASES = {"seed": "predecessor"}
"""Old model preset names -> :data:`MODEL_PRESETS` names."""
RECIPE_ALIASES = {"default": "cosine"}
"""Old recipe names -> :data:`RECIPES` names (``default`` was make train's until the
``upright`` recipe, and is no longer the default)."""


def canonical_preset(name: str) -> str:
    """The :data:`MODEL_PRESETS` name of ``name`` (itself, or what its old name became)."""
    return PRESET_ALIASES.get(name, name)


def canonical_recipe(name: str) -> str:
    """The :data:`RECIPES` name of ``name`` (itself, or what its old name became)."""
    return RECIPE_ALIASES.get(name, name)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a classifier, with or without a spatial transformer.

    Field defaults are the predecessor's TF 1.14 design (preset
    ``predecessor``), the base the presets change; the paper's appendix A is
    preset ``paper``; see docs/training.md, "Models". An old preset name
    (:data:`PRESET_ALIASES`) is stored as its current name.
    """

    preset: str = "predecessor"
    input_size: int = 40  # square inputs; the data protocol sets it
    transformer: bool = True
    # Transformation the transformer applies: a name in stn.layer.kinds.KINDS
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
    transformers: int = 1  # parallel, outputs concatenated (stn.model; paper, A.1)
    channels: int = 1  # of the input, and classes of the logits: the dataset's
    classes: int = 10
    # Classifier, then the logits: "seed" = two 3x3 convs -> Dense(dense_units); "paper" = conv
    # 9x9 -> pool -> conv 7x7 -> pool -> Dense; "fcn" = Dense -> Dense (paper's FCN).
    classifier: str = "seed"
    conv_filters: tuple[int, ...] = (16, 16)
    conv_strides: int = 1  # the predecessor's text says 2, its shapes say 1
    # A 2x2 max-pool after each of the "seed" classifier's convolutions (the
    # dense layer then reads a quarter, then a sixteenth, of the features).
    conv_pooling: bool = False
    dense_units: int = 1024
    # Dropout rate on the classifier's last hidden layer, before the logits
    # (0: none, no layer; tried because the classifier overfits aligned digits).
    classifier_dropout: float = 0.0
    # Training only: the transformer's output drawn through a random affine
    # near the identity (stn.layers.SpatialTransformer's output_jitter):
    # augmentation of the aligned digits the classifier would memorize.
    output_jitter: float = 0.0
    # The transformer refined k - 1 times by its own localization net, each
    # prediction composed after the map so far (stn.layers.SpatialTransformer's
    # iterations; inverse compositional STN, Lin and Lucey 2017); 1: the paper's.
    transformer_iterations: int = 1
    # Keras dtype policy of the classifier ("float32", "mixed_bfloat16" or
    # "mixed_float16").
    # The transformer and the logits always run in float32.
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "preset", canonical_preset(self.preset))
        check_choice("kind", self.kind, kinds3d.image_kinds())
        check_choice("localization", self.localization, ("dense", "conv", "fc"))
        check_choice("theta_init", self.theta_init, ("identity", "glorot"))
        check_choice("theta_activation", self.theta_activation, (None, "tanh"))
        check_choice("classifier", self.classifier, ("seed", "paper", "fcn"))
        check_choice("dtype", self.dtype, DTYPES)
        for name in ("input_size", "conv_strides", "dense_units", "transformer_iterations",
                     "transformers", "channels", "classes"):
            check_positive(name, getattr(self, name))
        for name in ("classifier_dropout", "output_jitter", "localization_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, on, able in (("output_jitter", self.output_jitter, kinds.JITTER_KINDS),
                               ("transformer_iterations > 1",
                                self.transformer_iterations > 1, kinds.COMPOSABLE_KINDS),
                               ("transformers > 1", self.transformers > 1, None)):
            if on and not self.transformer:
                raise ValueError(f"{name} needs a model with a transformer")
            if on and able and self.kind not in able:
                raise ValueError(f"{name} needs a transformer of one of the kinds "
                                 f"{able}, got kind {self.kind!r}")
        if len(self.conv_filters) != 2:
            raise ValueError(f"conv_filters needs two entries, got {self.conv_filters}")


_PAPER_CNN = dict(classifier="paper", conv_filters=(64, 64), dense_units=128)
_PAPER_FCN = dict(classifier="fcn", dense_units=256)

MODEL_PRESETS = {
    # The predecessor's layer sizes, with the fixes: identity-initialised
    # last localization layer and no tanh on theta (old name: seed).
    "predecessor": ModelConfig(preset="predecessor"),
    # The predecessor's transformer as it was (Glorot init, tanh on theta).
    "seed-original": ModelConfig(preset="seed-original", theta_init="glorot",
                                 theta_activation="tanh"),
    # The `seed` classifier behind the paper's conv localization net, which
    # can see a rotation that the seed's Dense 20 net cannot
    # (results/pose_bound_seed.json, the supervised bound): a candidate for an upright default run.
    "seed-conv": ModelConfig(preset="seed-conv", localization="conv"),
    # `seed-conv` with a 2x2 max-pool after each convolution: 1.7 M parameters
    # and 1/9 of its training FLOPs, as accurate and as upright (the
    # fast-default screen, docs/history/performance.md): make train's model.
    "pooled": ModelConfig(preset="pooled", localization="conv", conv_pooling=True),
    # The `seed` classifier with no transformer: the baseline to beat.
    "cnn": ModelConfig(preset="cnn", transformer=False),
    # The paper's distorted-MNIST models (Table 1, appendix A.4): baselines...
    "paper-fcn": ModelConfig(preset="paper-fcn", transformer=False, **_PAPER_FCN),
    "paper-cnn": ModelConfig(preset="paper-cnn", transformer=False, **_PAPER_CNN),
    # ... ST-CNN: the conv localization net; `paper` is the affine one.
    "paper": ModelConfig(preset="paper", localization="conv", **_PAPER_CNN),
    **{f"st-cnn-{kind}": ModelConfig(preset=f"st-cnn-{kind}", kind=kind, localization="conv",
                                     **_PAPER_CNN)
       for kind in kinds3d.image_kinds()},
    # ... ST-FCN: fully connected localization net and classifier.
    **{f"st-fcn-{kind}": ModelConfig(preset=f"st-fcn-{kind}", kind=kind, localization="fc",
                                     **_PAPER_FCN)
       for kind in kinds3d.image_kinds()},
}


DEFAULT_PRESET, DEFAULT_PROTOCOL, DEFAULT_RECIPE = "pooled", "predecessor", "upright"
"""``make train``'s model, warps and recipe (train.py's, ``Config()``'s), the model chosen
by the fast-default screen (docs/history/performance.md); before it ``seed-conv`` and ``upright``,
before that ``seed`` and ``default``, whose records stay in results/."""


def model_config(preset: str = DEFAULT_PRESET, **overrides: Any) -> ModelConfig:
    """The named preset (or its old name, :data:`PRESET_ALIASES`) with some fields replaced."""
    preset = canonical_preset(preset)
    check_choice("preset", preset, tuple(MODEL_PRESETS))
    try:
        return dataclasses.replace(MODEL_PRESETS[preset], **overrides)
    except TypeError as e:  # an unknown field name
        fields = ", ".join(f.name for f in dataclasses.fields(ModelConfig))
        raise ValueError(f"{e}; ModelConfig fields are: {fields}") from None


SCHEDULES = ("constant", "cosine")
UPRIGHT_ALIGNMENT = AlignmentSettings(weight=2.0, scale_free=True, image_pull=0.3)
"""The ``upright`` recipe's term, chosen on validation by ``python -m experiments.screen
upright-default`` (docs/history/alignment.md)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run. ``Config()`` is ``make train``'s run (``make_config()``):

    preset ``pooled`` on the predecessor's warps, trained by the ``upright``
    recipe (Adam 1e-3 peak, one warm-up epoch then cosine decay, fresh warps
    every epoch, batch 250, 20 epochs, the alignment term, the localization
    net at 3x the rate), seed 0, float32. ``make_config`` starts from any
    named :class:`Recipe`. The training settings (the fields made by
    ``setting``, with a help text, and ``alignment``'s) are what a Recipe
    sets and ``train.py`` has a flag for: a new setting is one field here
    (and its check in ``__post_init__``). Old preset, protocol and recipe
    names are stored as their current names.
    """

    model: ModelConfig = MODEL_PRESETS[DEFAULT_PRESET]
    protocol: str = DEFAULT_PROTOCOL
    dataset: str = "digits"  # what an example is (stn.data.datasets); its warps: the protocol
    recipe: str = DEFAULT_RECIPE  # the Recipe the settings started from
    epochs: int = setting(20, "epochs of training")
    batch_size: int = setting(250, "images per training step")
    learning_rate: float = setting(1e-3, "Adam's learning rate, the peak of the schedule")
    # "cosine": linear warm-up from 0 over warmup_epochs, then cosine decay to 0
    # at the last step (keras.optimizers.schedules.CosineDecay).
    schedule: str = setting("cosine", "'constant', or 'cosine': warm-up then cosine "
                             "decay to 0", choices=SCHEDULES)
    warmup_epochs: float = setting(1.0, "linear warm-up of the cosine schedule, in epochs")
    weight_decay: float = setting(0.0, "decoupled weight decay (AdamW) when > 0")
    label_smoothing: float = setting(0.0, "label smoothing of the training loss's targets")
    # Adam ignores the scale of its gradients, so this is the only way to
    # speed up one part of the model.
    localization_lr_scale: float = setting(
        3.0, "the localization net's learning rate as a multiple of the rest's (at every "
        "step of the schedule)", metavar="K", research=True)
    # The warps' strength at epoch e: stn.data.warp_strength.
    warp_ramp_epochs: float = setting(
        0.0, "warp curriculum: the fresh warps grow linearly from none at epoch 0 to the "
        "protocol's full strength at epoch K; 0 is off (needs --resample-warps)",
        metavar="K", research=True)
    # Label-free alignment (stn.train.alignment); None is off: the paper's method.
    alignment: AlignmentSettings | None = UPRIGHT_ALIGNMENT
    congeal_weight: float = setting(
        0.0, "weight of a class-congealing term: each transformer output pulled toward its "
        "class's mean output in the batch (stn.train.alignment.congealing; reads the class labels, "
        "never the warps); 0 is off", metavar="W", research=True)
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    seed: int = 0
    max_train_examples: int | None = None
    max_steps_per_epoch: int | None = None  # for smoke runs
    # For smoke runs too: validation and test on their first N images only.
    max_eval_examples: int | None = None
    resample_warps: bool = setting(True, "draw fresh warps every epoch (augmentation), or "
                                    "warp each training image once")
    deterministic: bool = False
    strategy: str = "default"  # or "mirrored"
    # XLA for the whole train step. Off by default: on CPU the step is
    # several times slower under XLA (bench/), whose convolutions and
    # matmuls lose to oneDNN's; the sampler alone is always XLA-compiled.
    jit_compile: bool = False

    def __post_init__(self):
        object.__setattr__(self, "protocol", protocols.canonical_name(self.protocol))
        object.__setattr__(self, "recipe", canonical_recipe(self.recipe))
        check_choice("protocol", self.protocol, tuple(protocols.PROTOCOLS))
        datasets.check_model(self.dataset, self.model.channels, self.model.classes)
        check_choice("strategy", self.strategy, ("default", "mirrored"))
        check_choice("recipe", self.recipe, tuple(RECIPES))
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("epochs", "batch_size", "max_train_examples", "max_steps_per_epoch",
                     "max_eval_examples"):
            check_positive(name, getattr(self, name))
        if self.seed < 0:
            raise ConfigError("seed", f"must be non-negative, got {self.seed}")
        for name in ("warmup_epochs", "warp_ramp_epochs"):
            if not 0.0 <= getattr(self, name) <= self.epochs:  # also rejects NaN
                raise ConfigError(name, f"must be in [0, epochs = {self.epochs}], "
                                  f"got {getattr(self, name)}")
        if self.warp_ramp_epochs and not self.resample_warps:
            raise ConfigError("warp_ramp_epochs", "needs resample_warps: the fixed warps of "
                              "each image cannot grow")
        for name in ("weight_decay", "label_smoothing", "beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        for name in ("learning_rate", "epsilon", "localization_lr_scale"):
            if not math.isfinite(getattr(self, name)):  # config.json must stay strict JSON
                raise ConfigError(name, f"must be finite, got {getattr(self, name)}")
            check_positive(name, getattr(self, name))
        if not (0.0 <= self.congeal_weight and math.isfinite(self.congeal_weight)):
            raise ConfigError("congeal_weight", f"must be finite and in [0.0, inf], got "
                              f"{self.congeal_weight}")
        self._check_alignment()
        if self.congeal_weight and not self.model.transformer:
            raise ConfigError("congeal_weight", f"needs a model with a transformer; "
                              f"{self.model.preset!r} has none")
        canvas = protocols.PROTOCOLS[self.protocol].canvas
        if self.model.input_size != canvas:
            raise ValueError(f"protocol {self.protocol!r} makes {canvas}x{canvas} images but "
                             f"the model expects {self.model.input_size}; use make_config()")

    def _check_alignment(self):
        if self.alignment is None:
            return
        if not isinstance(self.alignment, AlignmentSettings):
            raise ValueError(f"alignment must be an AlignmentSettings or None, got "
                             f"{self.alignment!r}")
        if not self.alignment.weight:
            raise ConfigError("alignment_weight", "must be positive: alignment None is off")
        if self.alignment.pull_epochs > self.epochs:
            raise ConfigError("alignment_pull_epochs", f"must be finite and in [0.0, "
                              f"{self.epochs}], got {self.alignment.pull_epochs}")
        if not self.model.transformer:
            raise ConfigError("alignment_weight", f"needs a model with a transformer; "
                              f"{self.model.preset!r} has none")


def _flat_settings() -> dict[str, dataclasses.Field]:
    """The training settings by flag name: Config's, and AlignmentSettings' as ``alignment_*``."""
    settings = {}
    for field in dataclasses.fields(Config):
        if field.name == "alignment":
            settings.update({ALIGNMENT_PREFIX + f.name: f
                             for f in dataclasses.fields(AlignmentSettings)})
        elif "help" in field.metadata:
            settings[field.name] = field
    return settings


SETTING_FIELDS = _flat_settings()
"""Each training setting's field (its type, default and help), by its flag's name."""
SETTINGS = tuple(SETTING_FIELDS)
"""The training settings' names, which train.py has flags for (``alignment_*``: the
fields of ``Config.alignment``)."""
RESEARCH_SETTINGS = tuple(name for name, f in SETTING_FIELDS.items() if f.metadata["research"])
"""The settings only the studies use (experiments/screen.py): apart in ``--help``."""

Recipe = dataclasses.make_dataclass(
    "Recipe", [("description", str)] + [
        (f.name, f.type, dataclasses.field(metadata=f.metadata))
        for f in dataclasses.fields(Config) if "help" in f.metadata or f.name == "alignment"],
    frozen=True)
Recipe.__module__ = __name__  # for pickle and repr (make_dataclass's module= is 3.12+)
Recipe.__doc__ = """A named training recipe, what ``--recipe`` selects (:data:`RECIPES`):

    ``description``, then a value for every training setting of :class:`Config`
    (``alignment``: an :class:`AlignmentSettings`, or None). A flag overrides
    one; ``config.json`` records the result.
    """
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))[1:]
"""The Config fields a Recipe sets."""

PREDECESSOR_TRAINING = dict(
    epochs=20, batch_size=500, learning_rate=1e-4, schedule="constant", warmup_epochs=0.0,
    weight_decay=0.0, label_smoothing=0.0, localization_lr_scale=1.0, warp_ramp_epochs=0.0,
    alignment=None, congeal_weight=0.0, resample_warps=False)
"""The TF 1.14 predecessor's training, every setting: Config's defaults until make train's
run became one; a record written before a setting existed ran with its value here."""
_COSINE = dict(PREDECESSOR_TRAINING, batch_size=250, learning_rate=1e-3, schedule="cosine",
               warmup_epochs=1.0, resample_warps=True)
RECIPES = {
    # The TF 1.14 predecessor's training, kept to reproduce it: it underfits
    # (docs/history/recipes.md).
    "predecessor": Recipe("the TF 1.14 predecessor's: Adam 1e-4 constant, one fixed warp per "
                          "image, batch 500, 20 epochs", **PREDECESSOR_TRAINING),
    # `make train`'s recipe before `upright` (preset `seed`), chosen on validation
    # (docs/history/recipes.md); named `default` then.
    "cosine": Recipe("Adam 1e-3 peak, 1 warm-up epoch then cosine decay to 0, fresh "
                     "warps every epoch, batch 250, 20 epochs", **_COSINE),
    # `make train`: the term and the localization net's rate chosen on validation by
    # `python -m experiments.screen upright-default` (docs/history/alignment.md).
    "upright": Recipe("`cosine`, with the alignment term (weight 2, scale-free, image "
                      "pull 0.3) and the localization net at 3x the rate",
                      **dict(_COSINE, alignment=UPRIGHT_ALIGNMENT, localization_lr_scale=3.0)),
    # The paper's Table 1 grid (experiments/table1.py), the same for all cells;
    # the peak rate and the epochs chosen on validation (experiments/screen.py
    # recipe, then experiments/compare_grids.py on whole grids).
    "table1": Recipe("Adam 3e-3 peak, 1 warm-up epoch then cosine decay to 0, fresh warps "
                     "every epoch, batch 256, 45 epochs",
                     **dict(_COSINE, epochs=45, batch_size=256, learning_rate=3e-3)),
}


def make_config(preset: str = DEFAULT_PRESET, protocol: str = DEFAULT_PROTOCOL,
                model_overrides: dict | None = None, recipe: str = DEFAULT_RECIPE,
                **fields: Any) -> Config:
    """A run config: the model preset sized for the protocol's images, trained by a recipe.

    With no arguments, ``Config()``: ``make train``'s run. Old names of presets,
    protocols and recipes (:data:`PRESET_ALIASES`, ...) are read as their new ones.

    Args:
      preset: model preset name (MODEL_PRESETS).
      protocol: warp protocol name (stn.data.protocols.PROTOCOLS).
      model_overrides: ModelConfig fields to replace.
      recipe: training recipe name (RECIPES); ``fields`` override its values. The
        recipe's alignment term is left out when ``alignment_weight`` is 0 or the
        model has no transformer (then its localization rate too).
      **fields: other Config fields (epochs, batch_size, dataset, ``alignment``, ...);
        the settings ``alignment_<name>`` (replacing the field ``<name>`` of the
        recipe's ``alignment``, or of an :class:`AlignmentSettings` when it has
        none); or ModelConfig fields (``classifier_dropout``, ...), which join
        ``model_overrides``.
    """
    recipe = canonical_recipe(recipe)
    check_choice("recipe", recipe, tuple(RECIPES))
    settings = {name: getattr(RECIPES[recipe], name) for name in RECIPE_FIELDS}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model_overrides = {**(model_overrides or {}),
                       **{k: v for k, v in fields.items() if k in model_fields}}
    given = {k: v for k, v in fields.items() if k not in model_fields}
    parts = {k[len(ALIGNMENT_PREFIX):]: given.pop(k) for k in list(given)
             if k.startswith(ALIGNMENT_PREFIX)}
    protocol = protocols.canonical_name(protocol)
    check_choice("protocol", protocol, tuple(protocols.PROTOCOLS))
    overrides = {"input_size": protocols.PROTOCOLS[protocol].canvas,  # the images' sizes
                 **datasets.model_fields(given.get("dataset", "digits")), **model_overrides}
    model = model_config(preset, **overrides)
    if not model.transformer:  # a recipe's parts of what is off: dropped
        settings.update(alignment=None, localization_lr_scale=1.0)
    if parts.get("weight") == 0:
        settings["alignment"] = None
    settings.update(given)
    if parts:
        try:
            settings["alignment"] = dataclasses.replace(
                settings["alignment"] or AlignmentSettings(), **parts)
        except TypeError as e:  # an unknown alignment_* name
            raise ValueError(f"{e}; the alignment settings are: "
                             + ", ".join(n for n in SETTINGS if n.startswith(ALIGNMENT_PREFIX))
                             ) from None
        if not settings["alignment"].weight:
            settings["alignment"] = None
    return Config(model=model, protocol=protocol, **{**settings, "recipe": recipe})


def config_to_dict(config: Config) -> dict:
    """JSON-ready dict of a config (tuples become lists; ``alignment`` a dict or None)."""
    return dataclasses.asdict(config)


def config_from_dict(d: dict) -> Config:
    """Inverse of :func:`config_to_dict`, which also reads every record in results/.

    Older records may lack a training setting (it ran with the predecessor's
    value, :data:`PREDECESSOR_TRAINING`), hold the alignment term's settings as
    flat ``alignment_*`` keys (a weight of 0: off), and old names of presets,
    protocols and recipes (read as the new ones). Unknown keys are an error.
    """
    d = dict(d)
    model = dict(d.pop("model"))
    for key in ("conv_filters", "localization_units"):
        if key in model:
            model[key] = tuple(model[key])
    flat = {k[len(ALIGNMENT_PREFIX):]: d.pop(k) for k in list(d) if k.startswith(ALIGNMENT_PREFIX)}
    if "alignment" not in d:
        d["alignment"] = AlignmentSettings(**flat) if flat.get("weight") else None
    elif d["alignment"] is not None:
        d["alignment"] = AlignmentSettings(**d["alignment"])
    return Config(**{"recipe": "predecessor", **PREDECESSOR_TRAINING, **d,
                     "model": ModelConfig(**model)})
