"""Command-line flags of the training settings, made from :class:`stn.train.config.Config`.

Each training setting (:data:`stn.train.config.SETTINGS`: a Config field with a
help text, or a field of ``Config.alignment`` as ``alignment_<name>``) is one flag, ``--name-with-dashes``, whose type, choices and help
come from the field, with no default of its own (None: the recipe's value).
The values are checked once, by ``Config``; :func:`check` reports its
:class:`stn.train.config.ConfigError` as the error of the field's flag. Used by
``train.py`` and the studies that override settings (``experiments``).
"""

import argparse
from collections.abc import Callable, Iterable

from stn.train.config import PRECISIONS, SETTING_FIELDS, SETTINGS, Config, ConfigError

PRECISION_HELP = ("classifier arithmetic; 'auto' (default) picks mixed_bfloat16 where it is "
                  "native (AVX512-BF16/AMX CPUs, GPUs of compute capability >= 8.0), "
                  "mixed_float16 on GPUs of compute capability 7.x, else float32, and prints "
                  "why. The transformer always runs in float32")
RESEARCH_GROUP = "research settings"
"""The ``--help`` heading of the research-only settings and model changes."""
MNIST_HELP = ("MNIST as a Keras mnist.npz or a folder of the four IDX files, if it cannot "
              "be downloaded (see docs/protocols.md)")


def flag(field: str) -> str:
    """The command-line flag of a Config field: ``learning_rate`` -> ``--learning-rate``."""
    return "--" + field.replace("_", "-")


def add_settings(parser: argparse.ArgumentParser, names: Iterable[str] = SETTINGS,
                 default: str = "the recipe's") -> None:
    """Adds a flag per training setting in ``names``, in two groups of their own.

    The everyday settings come first; the research-only ones
    (:data:`stn.train.config.RESEARCH_SETTINGS`, used by the studies of
    ``experiments/screen.py``) are listed apart.

    Args:
      parser: the command's parser.
      names: the settings to expose (default: all of them).
      default: what an absent flag means, for the help.
    """
    groups = {False: parser.add_argument_group("training settings",
                                               "each flag given replaces the recipe's value"),
              True: parser.add_argument_group(RESEARCH_GROUP,
                                              "research options of the studies "
                                              "(experiments/screen.py); each flag given "
                                              "replaces the recipe's value")}
    for name in names:
        field = SETTING_FIELDS[name]
        group = groups[field.metadata["research"]]
        options = {k: v for k, v in field.metadata.items() if k not in ("help", "research")}
        text = f"{field.metadata['help']} (default: {default})"
        if field.type is bool:
            group.add_argument(flag(name), action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(flag(name), type=field.type, help=text, **options)


def add_data_flags(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """``--mnist PATH`` and (``precision``) ``--precision``, as every training command has."""
    parser.add_argument("--mnist", metavar="PATH", help=MNIST_HELP)
    if precision:
        parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                            help=PRECISION_HELP)


def settings(args: argparse.Namespace, names: Iterable[str] = SETTINGS) -> dict:
    """``{field: value}`` of the settings given on the command line."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def check(parser: argparse.ArgumentParser, make: Callable[[], Config],
          flags: Iterable[str] = SETTINGS) -> Config:
    """``make()``, with its invalid values reported as argparse errors (exit status 2).

    Args:
      parser: reports the error (usage, then ``argument --flag: problem``).
      make: builds the Config from the parsed flags.
      flags: the Config fields that have a flag of their name on ``parser``;
        an error in another field is reported without a flag.
    """
    try:
        return make()
    except ConfigError as e:
        if e.field in set(flags):
            parser.error(f"argument {flag(e.field)}: {e.problem}")
        parser.error(str(e))
    except ValueError as e:
        parser.error(str(e))
