"""The parts configs are built of: a training setting (:func:`setting`), the checks that
report a bad field (:class:`ConfigError`), and the alignment term's settings
(:class:`AlignmentSettings`, ``Config.alignment``). stn.train.config assembles them; this
module imports nothing of stn, so stn.train.alignment can share the settings without the
presets.
"""

import dataclasses
import math


class ConfigError(ValueError):
    """A bad config ``field``: message ``"<field> <problem>"``; train.py shows ``problem``."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def check_choice(name: str, value, choices: tuple) -> None:
    """Raises ValueError listing ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: "
                         + ", ".join(repr(c) for c in choices))


def check_positive(name: str, value) -> None:
    """Raises :class:`ConfigError` unless ``value`` is None or positive."""
    if value is not None and not value > 0:
        raise ConfigError(name, f"must be positive, got {value}")


ALIGNMENT_TERMS = ("both", "consistency", "angle")
"""``--alignment-terms`` choices: both parts of stn.train.alignment's term, or one (ablation)."""


def setting(default, help: str, *, research: bool = False, **argparse_options):
    """A field that a recipe (stn.train.config.Recipe) may set and ``train.py`` exposes as a flag.

    A stn.train.config.Config field, or an :class:`AlignmentSettings` one (its flag
    ``--alignment-<name>``). ``help`` is the flag's help (stn.train.cli);
    ``research`` marks a setting only the studies use (``experiments/screen.py``),
    listed apart in ``--help``; the other keywords go to
    ``argparse.add_argument`` (``choices``, ``metavar``).
    """
    return dataclasses.field(default=default,
                             metadata={"help": help, "research": research, **argparse_options})


@dataclasses.dataclass(frozen=True)
class AlignmentSettings:
    """The label-free alignment term's settings (stn.train.alignment), ``Config.alignment``.

    A rotation-consistency term that makes the transformer bring every digit
    to one upright pose; ``Config.alignment`` None is off, the paper's method.
    Each field is the training setting ``alignment_<name>`` (flag
    ``--alignment-<name>``); :class:`stn.train.alignment.Alignment` adds the loss.
    """

    weight: float = setting(
        0.0, "weight of the label-free alignment term (stn.train.alignment: the transformer's map "
        "on a rotated image must be the rotation's inverse composed with its map on the "
        "image, and the mean rotation zero); 0 is off, the paper's method",
        metavar="W", research=True)
    degrees: float = setting(
        45.0, "the alignment term's rotations are drawn uniformly in +-D degrees",
        metavar="D", research=True)
    terms: str = setting(
        "both", "which parts of the alignment term are on (an ablation): the consistency "
        "gap and the mean-angle pull, or one of them", choices=ALIGNMENT_TERMS, research=True)
    scale_free: bool = setting(
        False, "divide the alignment term's consistency gap by the maps' size, so that a "
        "transformer cannot lower it by zooming in", research=True)
    scale_gauge: bool = setting(
        False, "add to the alignment term a pull of the batch's mean log scale of the "
        "transformer's maps to the identity's, so that the batch cannot zoom in together",
        research=True)
    image_pull: float = setting(
        0.0, "add to the alignment term a pull of each image's own rotation of the "
        "transformer's map to zero, weighted R times the term's (the mean-angle pull fixes "
        "only the batch's mean): each digit's pose upright; 0 is off", metavar="R", research=True)
    zoom: float = setting(
        1.0, "the alignment term's transforms g also scale, by a factor drawn log-uniformly "
        "in [1/Z, Z], so that a digit drawn larger or smaller must reach the same output; "
        "1 is off (rotations only)", metavar="Z", research=True)
    pull_decay: bool = setting(
        False, "decay the image pull linearly to 0 over the epochs: it picks each digit's "
        "pose early, the consistency gap alone restores the full turn late", research=True)
    pull_epochs: float = setting(
        0.0, "with --alignment-pull-decay, the epoch at which the pull reaches 0 (0: the "
        "last)", metavar="K", research=True)

    def __post_init__(self):
        if not 0.0 < self.degrees <= 180.0:
            raise ConfigError("alignment_degrees", f"must be in (0, 180], got {self.degrees}")
        check_choice("alignment_terms", self.terms, ALIGNMENT_TERMS)
        for name, low, high in (("weight", 0.0, math.inf), ("image_pull", 0.0, math.inf),
                                ("zoom", 1.0, 4.0), ("pull_epochs", 0.0, math.inf)):
            value = getattr(self, name)
            if not (low <= value <= high and math.isfinite(value)):  # also rejects NaN
                raise ConfigError(f"alignment_{name}",
                                  f"must be finite and in [{low}, {high}], got {value}")
        # A part of the term set while the part it acts on is off.
        for name, on, needs in (("image_pull", self.image_pull, "weight"),
                                ("zoom", self.zoom > 1.0, "weight"),
                                ("pull_decay", self.pull_decay, "image_pull"),
                                ("pull_epochs", self.pull_epochs, "pull_decay")):
            if on and not getattr(self, needs):
                raise ConfigError(f"alignment_{name}", f"acts on alignment_{needs}: set "
                                  f"alignment_{needs} too")

    def pull_scale(self, epoch: int, epochs: int) -> float:
        """The image pull's factor in an epoch (0-based) of ``epochs``: 1, or decaying to 0."""
        end = self.pull_epochs or epochs - 1
        if not self.pull_decay or end <= 0:
            return 1.0
        return max(0.0, 1.0 - epoch / end)


ALIGNMENT_PREFIX = "alignment_"
"""``alignment_<name>``: the setting (flag ``--alignment-<name>``) of ``AlignmentSettings.<name>``."""
