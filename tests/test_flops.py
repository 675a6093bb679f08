"""stn.flops against counts by hand."""

import pytest

from stn.train.config import make_config
from stn.train.flops import TRAIN_IMAGES, VALIDATION_IMAGES, forward_flops, training_flops
from stn.model import build_model


def test_the_seed_model_counts_each_layers_multiply_adds():
    # 40x40 input, 3x3 convs of 16 filters with "same" padding, Dense 1024, logits;
    # the predecessor's localization net: Flatten (1,600) -> Dense 20 -> Dense 6.
    classifier = 2 * (40 * 40 * 9 * 1 * 16 + 40 * 40 * 9 * 16 * 16 + 25_600 * 1024 + 1024 * 10)
    localization = 2 * (1600 * 20 + 20 * 6)
    flops = forward_flops(build_model("seed"))
    assert (flops.classifier, flops.localization) == (classifier, localization)


def test_strides_and_the_conv_localization_net():
    # Strides 2: 20x20 then 10x10 outputs, the dense layer reads 1,600 features.
    classifier = 2 * (20 * 20 * 9 * 16 + 10 * 10 * 9 * 16 * 16 + 1600 * 1024 + 1024 * 10)
    # Pool -> 20x20, conv 5x5 (20) -> 16x16, pool -> 8x8, conv 5x5 -> 4x4, Dense 50, theta.
    localization = 2 * (16 * 16 * 25 * 20 + 4 * 4 * 25 * 20 * 20 + 320 * 50 + 50 * 6)
    flops = forward_flops(build_model("seed-conv", conv_strides=2))
    assert (flops.classifier, flops.localization) == (classifier, localization)


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_a_run_is_its_epochs_of_training_and_validation(weight):
    config = make_config("seed-conv", "seed", recipe="upright", alignment_weight=weight,
                         epochs=3)
    forward = forward_flops(build_model(config.model))
    passes = 2 if weight else 1  # the alignment term's pass on the rotated batch
    step = 3 * (forward.classifier + passes * forward.localization)
    expected = 3 * (TRAIN_IMAGES * step + VALIDATION_IMAGES * forward.total)
    assert training_flops(config)["run"] == expected


def test_pooling_after_each_convolution():
    # Conv at 40x40, pool -> 20x20, conv, pool -> 10x10: the dense layer reads 1,600 features.
    classifier = 2 * (40 * 40 * 9 * 16 + 20 * 20 * 9 * 16 * 16 + 1600 * 1024 + 1024 * 10)
    flops = forward_flops(build_model("cnn", conv_pooling=True))
    assert (flops.classifier, flops.localization) == (classifier, 0)
