"""Datasets: what one example of a run is, one registry.

A dataset (an entry of :data:`DATASETS`, ``Config.dataset``) says what an
image holds and what its label means; the run's warp protocol
(:mod:`stn.data.protocols`) says how each digit in it is warped and on which
canvas. An entry is

* ``name``: its key;
* ``channels``: channels ``C`` of an image ``[S, S, C]``, and ``classes``:
  the number of labels ``0 .. classes - 1``; :func:`stn.train.config.make_config`
  sizes the model's input and logits by them;
* ``module``: the module that builds it, with the functions
  ``load_data(protocol, seed, *, mnist_path, cache_dir, max_train_examples,
  max_eval_examples)``
  (the three splits, ``.train``, ``.validation``, ``.test``, each with
  ``images`` float32 ``[N, S, S, C]`` and ``labels`` int32 ``[N]``),
  ``train_dataset(split, batch_size, *, seed, epoch, resample, protocol)``
  and ``eval_dataset(split, batch_size)`` (tf.data pipelines of ``(images,
  labels)`` batches); :func:`source` imports it.

================ ======== ======= ==============================================
dataset          channels classes an example
================ ======== ======= ==============================================
``digits``       1        10      one warped MNIST digit, labelled by its class
                                  (:mod:`stn.data.pipeline`)
``addition``     2        19      two warped MNIST digits, one per channel,
                                  labelled by their sum (paper, appendix A.1;
                                  :mod:`stn.data.addition`)
================ ======== ======= ==============================================

The sizes come from the builders' modules, their one home; stn.train.config reads
this registry on any backend (stn.data.addition imports TensorFlow only inside
its pipeline functions).
"""

import dataclasses
import importlib

from stn.data import addition, mnist


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One entry of :data:`DATASETS` (see the module docstring)."""
    name: str
    channels: int
    classes: int
    module: str
    description: str


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("digits", 1, mnist.NUM_CLASSES, "stn.data.pipeline",
            "one warped MNIST digit; its class"),
    Dataset("addition", addition.CHANNELS, addition.CLASSES, "stn.data.addition",
            "two warped MNIST digits, one per channel; their sum (paper, A.1)"),
)}


def get_dataset(name: str) -> Dataset:
    """The entry of ``name``; ValueError naming the valid ones if unknown."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def check_model(name: str, channels: int, classes: int) -> None:
    """Raises ValueError unless a model of ``channels`` and ``classes`` fits dataset ``name``."""
    dataset = get_dataset(name)
    if (channels, classes) != (dataset.channels, dataset.classes):
        raise ValueError(f"dataset {name!r} has {dataset.channels} channel(s) and "
                         f"{dataset.classes} classes but the model {channels} and {classes}; "
                         "use make_config(), which sizes the model by the dataset")


def model_fields(name: str) -> dict[str, int]:
    """The ModelConfig fields dataset ``name`` sets: ``{"channels": C, "classes": K}``."""
    dataset = get_dataset(name)
    return {"channels": dataset.channels, "classes": dataset.classes}


def source(name: str):
    """The module that builds dataset ``name`` (its ``load_data``, ``train_dataset``, ...)."""
    return importlib.import_module(get_dataset(name).module)
