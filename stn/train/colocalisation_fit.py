"""Fitting for co-localisation: the embedding CNN, and one optimisation of a class.

:mod:`stn.colocalisation` holds the data, boxes, loss and model; this module
trains the embedding CNN (the ``paper-cnn`` classifier on plain 28 x 28
MNIST digits) and runs one co-localisation optimisation (:func:`optimise`),
returning its record. No files: the runner (``experiments/colocalisation.py``)
keeps them.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from stn.train import colocalisation as C
from stn.data.pipeline import MNIST_SIZE, VALIDATION_SIZE


@dataclasses.dataclass(frozen=True)
class Settings:
    """One co-localisation optimisation (a unit of the study).

    ``images`` digits of class ``digit`` from the MNIST test split, placed
    (and cluttered for TC) from ``seed``; ``steps`` full-batch Adam steps at
    ``learning_rate``, each on every image as an anchor with a random
    partner and a fresh random crop (stn.colocalisation.random_crops).
    """
    dataset: str = "T"
    digit: int = 1
    seed: int = 0
    images: int = 100
    # Adam steps of the loss after the start. 1 with the searched start (chosen on validation
    # over 150 and 600, the paper's long descent; docs/history/colocalisation.md).
    steps: int = 1
    learning_rate: float = 1e-3
    crop_scales: tuple[float, float] = (1 / 6, 2 / 3)
    embedding_layers: tuple[str, ...] = C.EMBEDDING_LAYERS
    normalise: bool = True  # unit-length embeddings (stn.colocalisation.embedding)
    # Random crops: "range" = scale uniform in crop_scales, inside the canvas
    # (stn.colocalisation.random_crops); "same" = at the localised crop's own
    # scale, its centre uniform over the canvas; "away" = of AWAY_CANDIDATES "range"
    # crops, the one that overlaps the localised box least (`away_from`).
    negatives: str = "range"
    # The crop's scale at most this (a crop of the image, not of its zero
    # padding); the gradient passes as if unlimited. None: no limit (the paper).
    max_scale: float | None = None
    # Weight of a penalty on the part of the box outside the canvas (ours):
    # the mean over images of `outside`. 0: off, the paper's loss alone.
    box_penalty: float = 10.0
    # "free": the transformer's parameters are the box (the paper); "inside": its
    # outputs are mapped to a box inside the canvas by construction (`inside`).
    box: str = "free"
    # The triplet loss's margin (the paper's 1, C.MARGIN). With unit-length embeddings a
    # squared distance is at most 4, so a margin of 4 keeps every triplet's hinge open: the
    # loss never stops pulling the crops together once they clear the margin. 4 chosen on
    # validation (docs/history/colocalisation.md).
    margin: float = 4.0
    # Coarse to fine (ours): the crops are read from the images blurred by a Gaussian of
    # this many pixels (sigma) at step 0, shrinking linearly to none at half the steps
    # (`blur_sigma`); the localization net always reads the sharp images. 0: off (chosen on
    # validation with the searched start, which needs no coarse start; 6 before it:
    # docs/history/colocalisation.md).
    blur: float = 0.0
    # Weight of a second triplet term whose negative is the localised crop made flat (every
    # pixel its mean; stn.train.colocalisation.flat), ours: a crop of black canvas or a box
    # shrunk to a point is its own flat version, so it pays the whole margin there. 0: off.
    flat: float = 0.0
    # Each embedding layer's part of equal length (stn.train.colocalisation.embedding's
    # per_layer), ours. False: the whole unit length (with normalise).
    per_layer: bool = False
    # Where the transformer starts: "identity" (the whole canvas, the paper), or "search"
    # (ours, chosen on validation): fitted first to the boxes a grid search of the loss's
    # terms picks (stn.train.colocalisation_search).
    init: str = "search"
    snapshots: int = 6  # parameters recorded at this many steps, for the figure
    shown: int = 4  # of the first this-many images

    def __post_init__(self):
        if self.dataset not in C.DATASETS:
            raise ValueError(f"dataset must be one of {C.DATASETS}, got {self.dataset!r}")
        if not 0 <= self.digit <= 9:
            raise ValueError(f"digit must be 0-9, got {self.digit}")
        if self.box not in BOXES:
            raise ValueError(f"box must be one of {BOXES}, got {self.box!r}")
        if self.init not in INITS or (self.init == "search" and self.box != "free"):
            raise ValueError(f"init must be one of {INITS} (search with box free), got "
                             f"{self.init!r} with box {self.box!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if self.margin <= 0 or self.blur < 0 or self.flat < 0:  # margin 0: no loss at all
            raise ValueError(f"need margin > 0, blur >= 0 and flat >= 0 (got margin="
                             f"{self.margin}, blur={self.blur}, flat={self.flat})")
        if self.images < 2 or self.steps < 1:
            raise ValueError("need at least 2 images and 1 step "
                             f"(got images={self.images}, steps={self.steps})")


def unit_data(settings: Settings, mnist, split: str = "test"):
    """``(images [N, 84, 84, 1], boxes [N, 4], index [N])`` of a unit, pure in its settings.

    Digits of the class from ``split`` (``"test"``, or ``"validation"``: the
    first 5,000 training images, for choosing settings); TC's clutter from
    the ``train`` split (training images 5,000 on), so a piece never comes
    from a digit being localised. Drawn from a generator keyed by the seed,
    the dataset and the digit.
    """
    (x_train, y_train), (x_test, y_test) = mnist
    digits, labels = ((x_test, y_test) if split == "test"
                      else (x_train[:VALIDATION_SIZE], y_train[:VALIDATION_SIZE]))
    key = [settings.seed, C.DATASETS.index(settings.dataset), settings.digit,
           0 if split == "test" else 1]
    return C.class_images(digits, labels, settings.digit, settings.images, settings.dataset,
                          x_train[VALIDATION_SIZE:], np.random.default_rng(key))


INITS = ("identity", "search")
NEGATIVES = ("range", "same", "away")
AWAY_CANDIDATES = 8
"""Random crops drawn per image for ``negatives="away"``, of which the least overlapping is
the negative."""


AUGMENT = {"rotation_deg": 45.0, "zoom": (-0.2, 0.4), "shift": 0.15}
"""The embedding CNN's distortions with ``augment=True``: rotation up to +-45 degrees, zoom
in up to 20% and out up to 40%, shifts up to 15% of the side (4 px), zero fill: a crop that
is off the digit's box by that much still looks like a digit of its class to the CNN."""


OFFCENTRE = {"class": 10, "scale": (0.05, 3.0), "max_iou": 0.5}
"""The embedding CNN's eleventh class with ``offcentre=True``: each training digit once more,
cropped by a random attention box (scale log-uniform in ``scale``, centre uniform on the
digit's 28 x 28 frame) whose IoU with the frame is under ``max_iou``: a digit shifted, cut, a
point of it, or small in black. Its features then tell a crop on its digit from one beside
it (the landscape: with the plain CNN, the same offset in every image scores better than the
true boxes)."""


def offcentre_crops(digits, rng: np.random.Generator):
    """float32 ``[N, 28, 28, 1]``: each of ``digits [N, 28, 28, 1]`` cropped as
    :data:`OFFCENTRE` says (boxes drawn until their IoU with the frame is low enough)."""
    n, kept = len(digits), np.zeros((0, 3), np.float32)
    frame = np.array([[0.0, 0.0, MNIST_SIZE, MNIST_SIZE]])
    low, high = np.log(OFFCENTRE["scale"][0]), np.log(OFFCENTRE["scale"][1])
    while len(kept) < n:
        draw = np.concatenate([np.exp(rng.uniform(low, high, (n, 1))),
                               rng.uniform(-1.0, 1.0, (n, 2))], axis=1).astype(np.float32)
        boxes = C.predicted_boxes(draw, (MNIST_SIZE, MNIST_SIZE))
        kept = np.concatenate([kept, draw[C.iou(boxes, np.repeat(frame, n, 0))
                                          < OFFCENTRE["max_iou"]]])
    kept = kept[:n]
    return np.concatenate([np.asarray(C.crop(tf.constant(digits[i:i + 5000]),
                                             tf.constant(kept[i:i + 5000])))
                           for i in range(0, n, 5000)])


def augmenter(seed: int = 0) -> keras.Sequential:
    """Keras preprocessing layers drawing :data:`AUGMENT`'s distortions per image."""
    fill = {"fill_mode": "constant", "fill_value": 0.0, "seed": seed}
    return keras.Sequential([
        keras.layers.RandomRotation(AUGMENT["rotation_deg"] / 360.0, **fill),
        keras.layers.RandomZoom(AUGMENT["zoom"], **fill),
        keras.layers.RandomTranslation(AUGMENT["shift"], AUGMENT["shift"], **fill),
    ], name="augment")


def train_embedding_cnn(mnist, epochs: int = 2, seed: int = 0,
                        max_examples: int | None = None, verbose: int = 0,
                        augment: bool = False, offcentre: bool = False):
    """The ``paper-cnn`` classifier trained on 28 x 28 training digits.

    Adam at 1e-3, batch 128, on the ``train`` split (training images 5,000
    on: the validation and test digits stay unseen); plain digits, or with
    ``augment`` each batch distorted afresh (:data:`AUGMENT`; the paper's
    embedding is its Table 1 CNN, trained on distorted digits). Returns
    ``(model, record)``, the record holding its test accuracy on the 10,000
    plain test digits. With ``offcentre``, an eleventh class of off-centre crops of the
    same training digits (:data:`OFFCENTRE`), as many as the digits.
    """
    from stn.model import build_model

    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = mnist
    x, y = x_train[VALIDATION_SIZE:][:max_examples], y_train[VALIDATION_SIZE:][:max_examples]
    images = (x / 255.0).astype(np.float32)[..., None]
    if offcentre:
        extra = offcentre_crops(images, np.random.default_rng([seed, 10]))
        images = np.concatenate([images, extra])
        y = np.concatenate([y, np.full(len(extra), OFFCENTRE["class"], y.dtype)])
    model = build_model("paper-cnn", input_size=MNIST_SIZE, fast_input_gradient=True,
                        classes=11 if offcentre else 10)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    began = time.perf_counter()
    if augment:
        import tensorflow as tf

        distort = augmenter(seed)
        data = (tf.data.Dataset.from_tensor_slices((images, y)).shuffle(len(y), seed=seed)
                .batch(128).map(lambda a, b: (distort(a, training=True), b)))
        model.fit(data, epochs=epochs, verbose=verbose, shuffle=False)  # shuffled above
    else:
        model.fit(images, y, batch_size=128, epochs=epochs, verbose=verbose)
    seconds = time.perf_counter() - began
    accuracy = model.evaluate((x_test / 255.0).astype(np.float32)[..., None], y_test,
                              batch_size=1000, verbose=0)[1]
    return model, {"preset": "paper-cnn", "epochs": epochs, "train_examples": len(x),
                   **({"augment": AUGMENT} if augment else {}),
                   **({"offcentre": OFFCENTRE} if offcentre else {}),
                   "seed": seed, "test_accuracy": round(float(accuracy), 4),
                   "train_seconds": round(seconds, 1)}


def limited(theta, max_scale):
    """``theta [N, 3]`` with its scale at most ``max_scale``, gradient straight through."""
    if max_scale is None:
        return theta
    excess = tf.nn.relu(theta[:, :1] - max_scale)
    return theta - tf.pad(tf.stop_gradient(excess), [[0, 0], [0, 2]])


BOXES = ("free", "inside")
INSIDE_MIN_SCALE = 1 / 6
"""The smallest box ``inside`` gives: the smallest random crop's scale (a 14 px side)."""


def inside(raw):
    """``raw [N, 3] -> theta [N, 3]``: attention boxes inside the canvas by construction.

    ``s = m + (1 - m) sigmoid(4 (a - 1))`` with ``m`` :data:`INSIDE_MIN_SCALE`, and
    ``t = (1 - s) tanh(b)``, so that ``|t| + s < 1``: every box lies on the
    canvas, whatever the net outputs. The net's identity start ``(1, 0, 0)``
    maps to a centred box of scale ``(1 + m) / 2``.
    """
    s = INSIDE_MIN_SCALE + (1.0 - INSIDE_MIN_SCALE) * tf.sigmoid(4.0 * (raw[:, :1] - 1.0))
    return tf.concat([s, (1.0 - s) * tf.tanh(raw[:, 1:])], axis=1)


def box_params(raw, settings: "Settings"):
    """The box of the net's outputs ``raw [N, 3]``, as ``settings.box`` and ``max_scale`` say."""
    return inside(raw) if settings.box == "inside" else limited(raw, settings.max_scale)


def outside(theta):
    """``[N]``: how far each attention box ``theta [N, 3]`` leaves the canvas.

    Half the sum of the squared excesses, normalized units: of the side
    ``|s|`` over 1, and of each ``|t|`` over ``1 - |s|`` (the box's edge past
    the canvas's). Zero for every box inside the canvas. A negative scale is
    the same box mirrored (:func:`stn.train.colocalisation.predicted_boxes`),
    so it is measured by ``|s|``: read as ``s``, a box of side 2.8 mirrored
    counted as inside.
    """
    s, t = tf.abs(theta[:, :1]), theta[:, 1:]
    beyond = tf.concat([tf.nn.relu(s - 1.0), tf.nn.relu(tf.abs(t) - (1.0 - s))], axis=1)
    return tf.reduce_sum(tf.square(beyond), axis=1) / 2.0


def blur_sigma(step: int, settings: "Settings") -> float:
    """The blur (pixels) of the crops at ``step``: ``settings.blur`` shrinking linearly to
    0 at half the steps, 0 after."""
    half = settings.steps / 2.0
    return settings.blur * max(0.0, 1.0 - step / half)


def gaussian_blur(images, sigma, radius: int):
    """``images [N, H, W, C]`` blurred by a Gaussian of ``sigma`` pixels (a scalar tensor),
    zero outside the image, the kernel cut at ``radius`` pixels and summing to 1.

    ``sigma`` near 0 gives the images back (the kernel is then a unit impulse).
    """
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    weights = tf.exp(-0.5 * tf.square(x / sigma))
    weights /= tf.reduce_sum(weights)
    channels = images.shape[-1]
    rows = tf.tile(tf.reshape(weights, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.reshape(rows, [1, -1, channels, 1])
    out = tf.nn.depthwise_conv2d(images, rows, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "SAME")


def overlap(boxes, crops):
    """``[N, K]``: the area shared by each attention box ``boxes [N, 3]`` and each of its
    candidate crops ``crops [N, K, 3]``, in normalized units (a scale read by its size)."""
    s, t = tf.abs(boxes[:, None, :1]), boxes[:, None, 1:]
    r, u = tf.abs(crops[..., :1]), crops[..., 1:]
    sides = tf.nn.relu(tf.minimum(t + s, u + r) - tf.maximum(t - s, u - r))  # [N, K, 2]
    return sides[..., 0] * sides[..., 1]


def away_from(boxes, crops):
    """``[N, 3]``: of each box's candidate crops ``[N, K, 3]``, the one it overlaps least."""
    return tf.gather(crops, tf.argmin(overlap(boxes, crops), axis=1), axis=1, batch_dims=1)


def _step_fn(layer, embed, optimizer, images, settings: "Settings"):
    """The compiled step: ``(partner [N], crops [N, 3], sigma) -> loss``.

    With ``settings.negatives == "same"``, each crop's scale is replaced by
    its image's localised scale (no gradient through it).
    """
    same_scale, box_penalty = settings.negatives == "same", settings.box_penalty
    radius = max(1, int(np.ceil(3 * settings.blur)))

    @tf.function(reduce_retracing=True)
    def step(partner, crops, sigma):
        # Half the steps see no blur: skip the convolution there (at sigma 0 it is exact
        # identity anyway).
        seen = (tf.cond(sigma > 0.0, lambda: gaussian_blur(images, sigma, radius),
                        lambda: images) if settings.blur else images)
        with tf.GradientTape() as tape:
            theta = box_params(layer.params(images, training=True), settings)
            localised, _ = layer.transform_and_theta(seen, training=True, params=theta)
            anchor = embed(localised, training=False)
            if same_scale:
                crops = tf.concat([tf.stop_gradient(theta[:, :1]), crops[:, 1:]], axis=1)
            elif settings.negatives == "away":
                crops = away_from(tf.stop_gradient(theta), crops)
            negative = embed(C.crop(seen, crops), training=False)
            positive = tf.gather(anchor, partner)
            loss = C.triplet_loss(anchor, positive, tf.stop_gradient(negative), settings.margin)
            if settings.flat:
                blank = tf.stop_gradient(embed(C.flat(localised), training=False))
                loss += settings.flat * C.triplet_loss(anchor, positive, blank, settings.margin)
            if box_penalty:
                loss += box_penalty * tf.reduce_mean(outside(theta))
        variables = layer.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def fixed_box_loss(embed, images, params, settings: Settings, rng: np.random.Generator,
                   draws: int = 10) -> dict:
    """The loss's terms with every box held at ``params [N, 3]``, no blur.

    Args:
      embed: ``[B, 28, 28, 1] -> [B, D]`` (stn.train.colocalisation.embedding).
      images: float32 ``[N, 84, 84, 1]``.
      settings: its margin and crop scales (``negatives`` must be ``"range"``).
      rng: draws ``draws`` sets of partners and random crops, averaged over.

    Returns:
      ``{"paper": the triplet loss with random crops as negatives, "flat": the flat
      term's loss (unweighted), "outside": the mean box penalty (unweighted)}``.
    """
    if settings.negatives != "range":
        raise ValueError(f"fixed_box_loss draws range crops, not {settings.negatives!r}")
    x, theta = tf.constant(images, tf.float32), tf.constant(params, tf.float32)
    crops = C.crop(x, theta)
    anchor, blank = embed(crops, training=False), embed(C.flat(crops), training=False)
    paper, flat = [], []
    for _ in range(draws):
        positive = tf.gather(anchor, C.partners(rng, len(images)))
        negative = embed(C.crop(x, tf.constant(C.random_crops(
            rng, len(images), settings.crop_scales))), training=False)
        paper.append(float(C.triplet_loss(anchor, positive, negative, settings.margin)))
        flat.append(float(C.triplet_loss(anchor, positive, blank, settings.margin)))
    return {"paper": float(np.mean(paper)), "flat": float(np.mean(flat)),
            "outside": float(tf.reduce_mean(outside(theta)))}


def negative_crops(rng: np.random.Generator, n: int, settings: Settings) -> np.ndarray:
    """float32 ``[n, 3]``: the step's random crops (their scale replaced if ``same``);
    ``[n, AWAY_CANDIDATES, 3]`` candidates if ``away``."""
    if settings.negatives == "away":
        return C.random_crops(rng, n * AWAY_CANDIDATES, settings.crop_scales).reshape(
            n, AWAY_CANDIDATES, 3)
    if settings.negatives == "same":
        return np.concatenate([np.ones((n, 1)), rng.uniform(-1, 1, (n, 2))],
                              axis=1).astype(np.float32)
    return C.random_crops(rng, n, settings.crop_scales)


def _search_start(layer, embed, images, boxes, settings: Settings, log=None) -> dict:
    """Fits ``layer``'s net to the searched boxes; their record (scored against ``boxes``)."""
    from stn.train import colocalisation_search as S

    began = time.perf_counter()
    found, _ = S.search_boxes(embed, images, np.random.default_rng([settings.seed, 3]),
                              settings.margin, settings.crop_scales)
    ious = C.iou(C.predicted_boxes(found), boxes)
    error = S.fit_to_boxes(layer, images, found, seed=settings.seed)
    record = {"localised_fraction": float(np.mean(ious > C.LOCALISED_IOU)),
              "mean_iou": round(float(np.mean(ious)), 4), "fit_mse": round(error, 6),
              "seconds": round(time.perf_counter() - began, 1)}
    if log:
        log(f"  search: localised {record['localised_fraction']:.2f} (mean IoU "
            f"{record['mean_iou']}), the net fitted to it (MSE {error:.2g}), "
            f"{record['seconds']} s")
    return record


def optimise(settings: Settings, images: np.ndarray, boxes: np.ndarray,
             embed: keras.Model, log=None) -> dict:
    """Fits a fresh transformer to ``images``; scores its boxes against ``boxes``.

    Args:
      settings: the unit.
      images: float32 ``[N, 84, 84, 1]``; boxes: ``[N, 4]`` (read only to score).
      embed: ``[B, 28, 28, 1] -> [B, D]``, frozen (stn.colocalisation.embedding).
      log: called with a line of progress now and then, or None.

    Returns:
      The record: ``localised_fraction`` and ``mean_iou`` at the end, the
      final ``ious``, the loss every 25 steps, and ``snapshots`` (at
      ``settings.snapshots`` steps from 0 to the end: the localised fraction
      and the first ``settings.shown`` images' parameters), the seconds.
    """
    keras.utils.set_random_seed(settings.seed)
    rng = np.random.default_rng([settings.seed, 7])
    layer = C.transformer()
    layer.build((None, C.CANVAS, C.CANVAS, 1))
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    optimizer.build(layer.trainable_variables)
    x = tf.constant(images, tf.float32)
    search = _search_start(layer, embed, images, boxes, settings, log) \
        if settings.init == "search" else None
    step = _step_fn(layer, embed, optimizer, x, settings)
    params_fn = tf.function(lambda batch: box_params(layer.params(batch, training=False),
                                                     settings))
    at = set(np.linspace(0, settings.steps, settings.snapshots).round().astype(int).tolist())
    snapshots, losses, window = [], [], []
    began = time.perf_counter()
    for k in range(settings.steps + 1):
        if k in at:
            params = params_fn(x).numpy().astype(np.float64)
            ious = C.iou(C.predicted_boxes(params), boxes)
            snapshots.append({"step": k, "localised_fraction": float(np.mean(ious > C.LOCALISED_IOU)),
                              "params": params[:settings.shown].round(5).tolist()})
            if log:
                loss = f"loss {losses[-1]:.3f}, " if losses else ""  # none before step 25
                log(f"  step {k}: {loss}localised {snapshots[-1]['localised_fraction']:.2f}")
        if k == settings.steps:
            break
        window.append(float(step(tf.constant(C.partners(rng, len(images))),
                                 tf.constant(negative_crops(rng, len(images), settings)),
                                 tf.constant(blur_sigma(k, settings), tf.float32))))
        if len(window) == 25:
            losses.append(round(float(np.mean(window)), 4))
            window = []
    seconds = time.perf_counter() - began
    return {"localised_fraction": float(np.mean(ious > C.LOCALISED_IOU)),
            "mean_iou": round(float(np.mean(ious)), 4), "ious": ious.round(4).tolist(),
            "final_params": params.round(5).tolist(), "loss_every_25_steps": losses,
            "snapshots": snapshots, "seconds": round(seconds, 1),
            **({"search": search} if search else {}),
            "localization_parameters": int(layer.localization.count_params())}
