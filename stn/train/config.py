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


class ConfigError(ValueError):
    """A bad config ``field``: message ``"<field> <problem>"``; train.py shows ``problem``."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: "
                         + ", ".join(repr(c) for c in choices))


def _check_positive(name: str, value) -> None:
    if value is not None and not value > 0:
        raise ConfigError(name, f"must be positive, got {value}")


DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
"""Keras dtype policies of the classifier (``ModelConfig.dtype``)."""
PRECISIONS = ("auto", *DTYPES)
"""``--precision`` choices: a policy, or "auto" (stn.train.precision.resolve_precision)."""
ALIGNMENT_TERMS = ("both", "consistency", "angle")
"""``--alignment-terms`` choices: both parts of stn.train.alignment's term, or one (ablation)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a classifier, with or without a spatial transformer.

    Sizes follow the predecessor's TF 1.14 design (preset ``seed``) or the
    paper's appendix A (preset ``paper``); see docs/training.md, "Models".
    """

    preset: str = "seed"
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
        _check_choice("kind", self.kind, kinds3d.image_kinds())
        _check_choice("localization", self.localization, ("dense", "conv", "fc"))
        _check_choice("theta_init", self.theta_init, ("identity", "glorot"))
        _check_choice("theta_activation", self.theta_activation, (None, "tanh"))
        _check_choice("classifier", self.classifier, ("seed", "paper", "fcn"))
        _check_choice("dtype", self.dtype, DTYPES)
        for name in ("input_size", "conv_strides", "dense_units", "transformer_iterations",
                     "transformers", "channels", "classes"):
            _check_positive(name, getattr(self, name))
        for name in ("classifier_dropout", "output_jitter", "localization_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, on, composes in (("output_jitter", self.output_jitter, True),
                                   ("transformer_iterations > 1",
                                    self.transformer_iterations > 1, True),
                                   ("transformers > 1", self.transformers > 1, False)):
            if on and not self.transformer:
                raise ValueError(f"{name} needs a model with a transformer")
            if on and composes and self.kind not in kinds.COMPOSABLE_KINDS:
                raise ValueError(f"{name} needs a transformer of one of the kinds "
                                 f"{kinds.COMPOSABLE_KINDS}, got kind {self.kind!r}")
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


DEFAULT_PRESET, DEFAULT_RECIPE = "pooled", "upright"
"""``make train``'s model and recipe (train.py's), chosen by the fast-default screen
(docs/history/performance.md); before it ``seed-conv`` and ``upright``, before that ``seed``
and ``default``, whose records stay in results/."""


def model_config(preset: str = "seed", **overrides: Any) -> ModelConfig:
    """The named preset with some fields replaced."""
    _check_choice("preset", preset, tuple(MODEL_PRESETS))
    try:
        return dataclasses.replace(MODEL_PRESETS[preset], **overrides)
    except TypeError as e:  # an unknown field name
        fields = ", ".join(f.name for f in dataclasses.fields(ModelConfig))
        raise ValueError(f"{e}; ModelConfig fields are: {fields}") from None


SCHEDULES = ("constant", "cosine")


def _setting(default, help: str, *, research: bool = False, **argparse_options):
    """A :class:`Config` field that a :class:`Recipe` may set and ``train.py`` exposes.

    ``help`` is the flag's help (``--name-with-dashes``, stn.train.cli); ``research``
    marks a setting only the studies use (``experiments/screen.py``), listed
    apart in ``--help``; the other keywords go to ``argparse.add_argument``
    (``choices``, ``metavar``).
    """
    return dataclasses.field(default=default,
                             metadata={"help": help, "research": research, **argparse_options})


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run. Field defaults are the predecessor's training:

    Adam (1e-4, 0.9, 0.999, 1e-8), batch 500, 20 epochs = 2,200 steps on the
    55,000 training images, softmax cross-entropy on logits. ``make_config``
    starts from a named :class:`Recipe` instead (``"default"`` unless told).
    The training settings (the fields made by ``_setting``, with a help text)
    are what a Recipe sets and ``train.py`` has a flag for: a new setting is
    one field here (and its check in ``__post_init__``).
    """

    model: ModelConfig = ModelConfig()
    protocol: str = "seed"
    dataset: str = "digits"  # what an example is (stn.data.datasets); its warps: the protocol
    recipe: str = "predecessor"  # the Recipe the settings started from
    epochs: int = _setting(20, "epochs of training")
    batch_size: int = _setting(500, "images per training step")
    learning_rate: float = _setting(1e-4, "Adam's learning rate, the peak of the schedule")
    # "cosine": linear warm-up from 0 over warmup_epochs, then cosine decay to 0
    # at the last step (keras.optimizers.schedules.CosineDecay).
    schedule: str = _setting("constant", "'constant', or 'cosine': warm-up then cosine "
                             "decay to 0", choices=SCHEDULES)
    warmup_epochs: float = _setting(0.0, "linear warm-up of the cosine schedule, in epochs")
    weight_decay: float = _setting(0.0, "decoupled weight decay (AdamW) when > 0")
    label_smoothing: float = _setting(0.0, "label smoothing of the training loss's targets")
    # Adam ignores the scale of its gradients, so this is the only way to
    # speed up one part of the model.
    localization_lr_scale: float = _setting(
        1.0, "the localization net's learning rate as a multiple of the rest's (at every "
        "step of the schedule)", metavar="K", research=True)
    # The warps' strength at epoch e: stn.data.warp_strength.
    warp_ramp_epochs: float = _setting(
        0.0, "warp curriculum: the fresh warps grow linearly from none at epoch 0 to the "
        "protocol's full strength at epoch K; 0 is off (needs --resample-warps)",
        metavar="K", research=True)
    # Label-free alignment (stn.train.alignment): a rotation-consistency term that
    # makes the transformer bring every digit to one upright pose. 0 is off:
    # the paper's method.
    alignment_weight: float = _setting(
        0.0, "weight of the label-free alignment term (stn.train.alignment: the transformer's map "
        "on a rotated image must be the rotation's inverse composed with its map on the "
        "image, and the mean rotation zero); 0 is off, the paper's method",
        metavar="W", research=True)
    alignment_degrees: float = _setting(
        45.0, "the alignment term's rotations are drawn uniformly in +-D degrees",
        metavar="D", research=True)
    alignment_terms: str = _setting(
        "both", "which parts of the alignment term are on (an ablation): the consistency "
        "gap and the mean-angle pull, or one of them", choices=ALIGNMENT_TERMS, research=True)
    alignment_scale_free: bool = _setting(
        False, "divide the alignment term's consistency gap by the maps' size, so that a "
        "transformer cannot lower it by zooming in", research=True)
    congeal_weight: float = _setting(
        0.0, "weight of a class-congealing term: each transformer output pulled toward its "
        "class's mean output in the batch (stn.train.alignment.congealing; reads the class labels, "
        "never the warps); 0 is off", metavar="W", research=True)
    alignment_scale_gauge: bool = _setting(
        False, "add to the alignment term a pull of the batch's mean log scale of the "
        "transformer's maps to the identity's, so that the batch cannot zoom in together",
        research=True)
    alignment_image_pull: float = _setting(
        0.0, "add to the alignment term a pull of each image's own rotation of the "
        "transformer's map to zero, weighted R times the term's (the mean-angle pull fixes "
        "only the batch's mean): each digit's pose upright; 0 is off", metavar="R", research=True)
    alignment_zoom: float = _setting(
        1.0, "the alignment term's transforms g also scale, by a factor drawn log-uniformly "
        "in [1/Z, Z], so that a digit drawn larger or smaller must reach the same output; "
        "1 is off (rotations only)", metavar="Z", research=True)
    alignment_pull_decay: bool = _setting(
        False, "decay the image pull linearly to 0 over the epochs: it picks each digit's "
        "pose early, the consistency gap alone restores the full turn late", research=True)
    alignment_pull_epochs: float = _setting(
        0.0, "with --alignment-pull-decay, the epoch at which the pull reaches 0 (0: the "
        "last)", metavar="K", research=True)
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    seed: int = 0
    max_train_examples: int | None = None
    max_steps_per_epoch: int | None = None  # for smoke runs
    resample_warps: bool = _setting(False, "draw fresh warps every epoch (augmentation), or "
                                    "warp each training image once")
    deterministic: bool = False
    strategy: str = "default"  # or "mirrored"
    # XLA for the whole train step. Off by default: on CPU the step is
    # several times slower under XLA (bench/), whose convolutions and
    # matmuls lose to oneDNN's; the sampler alone is always XLA-compiled.
    jit_compile: bool = False

    def __post_init__(self):
        _check_choice("protocol", self.protocol, tuple(protocols.PROTOCOLS))
        datasets.check_model(self.dataset, self.model.channels, self.model.classes)
        _check_choice("strategy", self.strategy, ("default", "mirrored"))
        _check_choice("recipe", self.recipe, tuple(RECIPES))
        _check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("epochs", "batch_size", "max_train_examples", "max_steps_per_epoch"):
            _check_positive(name, getattr(self, name))
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
            _check_positive(name, getattr(self, name))
        if not 0.0 < self.alignment_degrees <= 180.0:
            raise ConfigError("alignment_degrees", f"must be in (0, 180], got "
                              f"{self.alignment_degrees}")
        _check_choice("alignment_terms", self.alignment_terms, ALIGNMENT_TERMS)
        for name, low, high in (("alignment_weight", 0.0, math.inf), ("congeal_weight", 0.0,
                                math.inf), ("alignment_image_pull", 0.0, math.inf),
                                ("alignment_zoom", 1.0, 4.0),
                                ("alignment_pull_epochs", 0.0, self.epochs)):
            value = getattr(self, name)
            if not (low <= value <= high and math.isfinite(value)):  # also rejects NaN
                raise ConfigError(name, f"must be finite and in [{low}, {high}], got {value}")
        # A part of the alignment term set while the part it acts on is off.
        for name, on, needs in (
                ("alignment_image_pull", self.alignment_image_pull, "alignment_weight"),
                ("alignment_zoom", self.alignment_zoom > 1.0, "alignment_weight"),
                ("alignment_pull_decay", self.alignment_pull_decay, "alignment_image_pull"),
                ("alignment_pull_epochs", self.alignment_pull_epochs, "alignment_pull_decay")):
            if on and not getattr(self, needs):
                raise ConfigError(name, f"acts on {needs}: set {needs} too")
        if self.congeal_weight and not self.model.transformer:
            raise ConfigError("congeal_weight", f"needs a model with a transformer; "
                              f"{self.model.preset!r} has none")
        if self.alignment_weight and not self.model.transformer:
            raise ConfigError("alignment_weight", f"needs a model with a transformer; "
                              f"{self.model.preset!r} has none")
        canvas = protocols.PROTOCOLS[self.protocol].canvas
        if self.model.input_size != canvas:
            raise ValueError(f"protocol {self.protocol!r} makes {canvas}x{canvas} images but "
                             f"the model expects {self.model.input_size}; use make_config()")


SETTINGS = tuple(f.name for f in dataclasses.fields(Config) if "help" in f.metadata)
"""The training settings: the Config fields a Recipe sets and train.py has flags for."""
RESEARCH_SETTINGS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("research"))
"""The settings only the studies use (experiments/screen.py): apart in ``--help``."""

Recipe = dataclasses.make_dataclass(
    "Recipe", [("description", str)] + [
        (f.name, f.type | None, dataclasses.field(default=None, metadata=f.metadata))
        for f in dataclasses.fields(Config) if f.name in SETTINGS],
    frozen=True)
Recipe.__module__ = __name__  # for pickle and repr (make_dataclass's module= is 3.12+)
Recipe.__doc__ = """A named training recipe, what ``--recipe`` selects (:data:`RECIPES`):

    ``description``, then a value (or None: Config's default) for each training
    setting (:data:`SETTINGS`). A flag overrides it; ``config.json`` records the result.
    """

_DEFAULT_TRAINING = dict(batch_size=250, learning_rate=1e-3, schedule="cosine",
                         warmup_epochs=1.0, resample_warps=True)
RECIPES = {
    # The TF 1.14 predecessor's training, kept to reproduce it: it underfits
    # (docs/history/recipes.md). Config's defaults.
    "predecessor": Recipe("the TF 1.14 predecessor's: Adam 1e-4 constant, one fixed warp per "
                          "image, batch 500, 20 epochs"),
    # `make train`'s recipe before `upright` (preset `seed`), chosen on validation
    # (docs/history/recipes.md).
    "default": Recipe("Adam 1e-3 peak, 1 warm-up epoch then cosine decay to 0, fresh "
                      "warps every epoch, batch 250, 20 epochs", **_DEFAULT_TRAINING),
    # `make train`: the term and the localization net's rate chosen on validation by
    # `python -m experiments.screen upright-default` (docs/history/alignment.md).
    "upright": Recipe("`default`, with the alignment term (weight 2, scale-free, image "
                      "pull 0.3) and the localization net at 3x the rate",
                      **_DEFAULT_TRAINING, alignment_weight=2.0, alignment_scale_free=True,
                      alignment_image_pull=0.3, localization_lr_scale=3.0),
    # The paper's Table 1 grid (experiments/table1.py), the same for all cells;
    # the peak rate and the epochs chosen on validation (experiments/screen.py
    # recipe, then experiments/compare_grids.py on whole grids).
    "table1": Recipe("Adam 3e-3 peak, 1 warm-up epoch then cosine decay to 0, fresh warps "
                     "every epoch, batch 256, 45 epochs", epochs=45, batch_size=256,
                     learning_rate=3e-3, schedule="cosine", warmup_epochs=1.0,
                     resample_warps=True),
}


def make_config(preset: str = "seed", protocol: str = "seed", model_overrides: dict | None = None,
                recipe: str = "default", **fields: Any) -> Config:
    """A run config: the model preset sized for the protocol's images, trained by a recipe.

    Args:
      preset: model preset name (MODEL_PRESETS).
      protocol: warp protocol name (stn.data.protocols.PROTOCOLS).
      model_overrides: ModelConfig fields to replace.
      recipe: training recipe name (RECIPES); ``fields`` override its values. The
        recipe's alignment term is left out when ``alignment_weight`` is 0 or the
        model has no transformer (then its localization rate too).
      **fields: other Config fields (epochs, batch_size, dataset, ...), or ModelConfig
        fields (``classifier_dropout``, ...), which join ``model_overrides``.
    """
    _check_choice("recipe", recipe, tuple(RECIPES))
    settings = {name: getattr(RECIPES[recipe], name) for name in SETTINGS
                if getattr(RECIPES[recipe], name) is not None}  # None: Config's default
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model_overrides = {**(model_overrides or {}),
                       **{k: v for k, v in fields.items() if k in model_fields}}
    given = {k: v for k, v in fields.items() if k not in model_fields}
    _check_choice("protocol", protocol, tuple(protocols.PROTOCOLS))
    overrides = {"input_size": protocols.PROTOCOLS[protocol].canvas,  # the images' sizes
                 **datasets.model_fields(given.get("dataset", "digits")), **model_overrides}
    model = model_config(preset, **overrides)
    term_on = model.transformer and {**settings, **given}.get("alignment_weight")
    settings = {k: v for k, v in settings.items()  # a recipe's parts of what is off: dropped
                if not (k.startswith("alignment_") and not term_on
                        or k == "localization_lr_scale" and not model.transformer)}
    return Config(model=model, protocol=protocol, **{**settings, **given, "recipe": recipe})


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
