"""A start for co-localisation: the boxes a grid search of the loss's own terms picks.

The paper's transformer starts at the identity (the whole canvas) and descends the triplet
loss. With an embedding whose loss is lowest at the digits the basin is narrow (a box 7 px off
already scores like black; results/colocalisation_landscape_offcentre.json), and the descent
from the whole canvas ends on black. Here, before any step, every image's crops at
:func:`candidates` (a grid of centres at two digit-like scales) are embedded and each image
keeps the candidate that best does what the loss asks (:func:`search_boxes`): close to some
candidate of each of its partners, far from random crops of its own image. The localization
net is then fitted to predict those boxes (:func:`fit_to_boxes`) and the loss takes over.
No label or true box is read.
"""

import numpy as np
import tensorflow as tf

from stn.train import colocalisation as C

SCALES = (1 / 3, 5 / 12)
"""The candidates' scales: a 28 px side (the crop's own output size) and 35 px."""
GRID = 9
"""Centres per axis, evenly over where a box of the scale lies on the canvas."""
PARTNERS = 20
"""Other images each image's candidates are compared with."""
RANDOMS = 8
"""Random crops of its own image each candidate should be far from."""


def candidates() -> np.ndarray:
    """float32 ``[K, 3]``: attention boxes, ``K = len(SCALES) * GRID ** 2``, on the canvas."""
    rows = [(s, tx, ty) for s in SCALES for ty in np.linspace(-(1 - s), 1 - s, GRID)
            for tx in np.linspace(-(1 - s), 1 - s, GRID)]
    return np.asarray(rows, np.float32)


def _embed_crops(embed, images, params, batch: int = 2048) -> np.ndarray:
    """float32 ``[N, K, D]``: ``embed`` of each image ``[N, 84, 84, 1]`` cropped by each of
    its boxes ``params [N, K, 3]``."""
    n, k = params.shape[:2]
    x, theta = np.repeat(images, k, axis=0), params.reshape(-1, 3)
    out = [np.asarray(embed(C.crop(tf.constant(x[i:i + batch]), tf.constant(theta[i:i + batch])),
                            training=False))
           for i in range(0, len(x), batch)]
    return np.concatenate(out).reshape(n, k, -1)


def search_boxes(embed, images, rng: np.random.Generator, margin: float,
                 crop_scales=(1 / 6, 2 / 3)) -> tuple[np.ndarray, np.ndarray]:
    """``(params float32 [N, 3], scores [N])``: each image's best candidate.

    A candidate's score is the triplet hinge with its best-matching partner candidate:
    the mean over :data:`PARTNERS` other images ``j`` of
    ``relu(min_k' |e - e_jk'|^2 - mean_r |e - e_r|^2 + margin)``, the ``e_r`` of
    :data:`RANDOMS` random crops of its own image (``crop_scales``, as the loss draws them).
    """
    boxes = candidates()
    n = len(images)
    e = _embed_crops(embed, images, np.broadcast_to(boxes, (n, *boxes.shape)))  # (N, K, D)
    crops = C.random_crops(rng, n * RANDOMS, crop_scales).reshape(n, RANDOMS, 3)
    r = _embed_crops(embed, images, crops)  # (N, RANDOMS, D)
    norms = np.sum(e ** 2, axis=-1)  # (N, K)
    chosen, scores = np.zeros(n, np.int64), np.zeros(n)
    for i in range(n):
        far = np.mean(np.sum((e[i][:, None] - r[i][None]) ** 2, axis=-1), axis=1)  # (K,)
        others = (i + rng.choice(np.arange(1, n), min(PARTNERS, n - 1), replace=False)) % n
        near = [np.maximum((norms[i][:, None] + norms[j][None] - 2.0 * e[i] @ e[j].T)
                           .min(axis=1), 0.0) for j in others]  # each (K,): the best k'
        hinge = np.maximum(np.asarray(near) - far[None] + margin, 0.0).mean(axis=0)  # (K,)
        chosen[i], scores[i] = int(np.argmin(hinge)), float(hinge.min())
    return boxes[chosen], scores


def fit_to_boxes(layer, images, targets, steps: int = 400, learning_rate: float = 3e-3,
                 seed: int = 0) -> float:
    """Fits ``layer``'s localization net to predict ``targets [N, 3]`` for ``images`` (mean
    squared error, full-batch Adam); returns the final error."""
    import keras

    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    net = layer.localization
    x, y = tf.constant(images, tf.float32), tf.constant(targets, tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(net(x, training=True) - y))
        optimizer.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)
        return loss

    for _ in range(steps):
        loss = step()
    return float(loss)
