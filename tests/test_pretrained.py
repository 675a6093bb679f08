"""pretrained/: the committed model loads and classifies its test split at its stated accuracy."""

import json

import keras
import numpy as np
import pytest

import helpers
import stn  # noqa: F401  (registers the layers load_model needs)
from stn.data import pipeline as stn_data
from stn.analysis import evaluation
from stn.model import find_transformer

PRETRAINED = helpers.ROOT / "pretrained"
NAME = "st-cnn-affine_rts"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def record():
    return json.loads((PRETRAINED / f"{NAME}.json").read_text())


@pytest.fixture(scope="module")
def model():
    return keras.saving.load_model(PRETRAINED / f"{NAME}.keras")


def test_it_is_the_small_paper_st_cnn(model, record):
    assert record["config"]["model"]["preset"] == "st-cnn-affine"
    assert 200_000 < model.count_params() < 500_000  # paper-sized: 0.27M here
    assert find_transformer(model).kind == "affine"
    assert (PRETRAINED / f"{NAME}.keras").stat().st_size < 5_000_000


def test_it_classifies_its_test_split_at_the_stated_accuracy(model, record):
    test = stn_data.load_data(record["protocol"], record["seed"], max_train_examples=1).test
    predicted = evaluation.predict(model, test.images).argmax(axis=1)
    accuracy = float(np.mean(predicted == np.asarray(test.labels)))
    stated = 1 - record["error_percent"] / 100
    assert accuracy == pytest.approx(stated, abs=5e-4)  # 5 of 10,000 images: float rounding
    assert accuracy > 0.98
