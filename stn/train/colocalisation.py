"""Co-localisation of one digit class by a spatial transformer (paper, appendix A.2).

Given a set of images that all hold a digit of one (unknown) class, find
each digit's box with no labels and no boxes: an attention transformer
(:data:`KIND`, scale and translation) crops each image, and a triplet hinge
loss says that two images' crops are closer to each other than each is to a
random crop of its own image, in the embedding of a CNN trained on plain
MNIST digits (paper, Eq. 8; the margin ``alpha = 1``):

    sum_n sum_{m != n} max(0, ||e(T(I_n)) - e(T(I_m))||^2
                              - ||e(T(I_n)) - e(I_n^rand)||^2 + alpha)

Squared Euclidean distances, as the paper's ``||.||_2^2``. The optimisation
is transductive, as in the paper: the transformer is fitted to the very
images it then localises; the true boxes are only read to score it. By
default :mod:`stn.train.colocalisation_fit` adds things of ours, chosen on
validation digits (docs/colocalisation.md): unit-length embeddings, a penalty
on the part of the box outside the canvas, a margin of 4 and a blurred start.

* **Data** (:func:`place_digits`, :func:`add_clutter`): a 28 x 28 digit at a
  uniform random position on an 84 x 84 black canvas (T); TC adds
  :data:`PIECES` random 6 x 6 crops of other MNIST digits. Pixels in [0, 1],
  background exactly 0 (the sampler's padding, stn.sampler).
* **Boxes** ``(x0, y0, x1, y1)`` in pixel *edge* coordinates: the canvas is
  ``(0, 0, 84, 84)``, a digit placed at row ``r``, column ``c`` has the box
  ``(c, r, c + 28, r + 28)``. The transformer's box is where its output's
  outer edges land in the input (:func:`predicted_boxes`, through
  :func:`stn.kinds.to_pixels`); identity parameters give the whole canvas.
"""

import keras
import numpy as np

from stn.layer import kinds
from stn.data.pipeline import MNIST_SIZE
from stn.layer.layers import SpatialTransformer, theta_layer

CANVAS = 84
"""Side of the co-localisation canvas (paper, A.2)."""
PIECES = 16
"""Clutter pieces per TC image (paper, A.2)."""
PIECE_SIZE = 6
"""Side of a clutter piece in pixels (paper, A.2)."""
MARGIN = 1.0
"""The triplet loss's margin ``alpha`` (paper, A.2)."""
KIND = "attention"
"""The transformer's kind: isotropic scale and translation (stn.kinds)."""
DATASETS = ("T", "TC")
"""Translated; translated and cluttered."""
LOCALISED_IOU = 0.5
"""A digit is localised when its predicted box's IoU with the true box exceeds this."""


# --- data -------------------------------------------------------------------

def place_digits(digits: np.ndarray, rng: np.random.Generator,
                 canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """Each digit at a uniform random integer position on a black canvas.

    Args:
      digits: uint8 ``[N, 28, 28]`` (MNIST) or float in [0, 1].
      rng: draws the positions (rows first, then columns).
      canvas: side of the square canvas, at least the digit's.

    Returns:
      ``(images float32 [N, canvas, canvas], boxes float64 [N, 4])``, pixels
      in [0, 1], each box the digit's square ``(x0, y0, x1, y1)`` in pixel
      edge coordinates.
    """
    n, size = len(digits), digits.shape[1]
    scale = 255.0 if digits.dtype == np.uint8 else 1.0
    rows = rng.integers(0, canvas - size + 1, n)
    cols = rng.integers(0, canvas - size + 1, n)
    images = np.zeros((n, canvas, canvas), np.float32)
    for image, digit, r, c in zip(images, digits, rows, cols):
        image[r:r + size, c:c + size] = digit / scale
    boxes = np.stack([cols, rows, cols + size, rows + size], axis=1).astype(np.float64)
    return images, boxes


def add_clutter(images: np.ndarray, sources: np.ndarray, rng: np.random.Generator,
                pieces: int = PIECES, piece_size: int = PIECE_SIZE) -> np.ndarray:
    """Images with ``pieces`` random crops of ``sources`` pasted at random places.

    Each piece is a ``piece_size``-square window at a uniform random position
    of a uniformly drawn source digit, pasted at a uniform random position
    of the canvas (anywhere, over the digit too) by a pixelwise maximum, so
    pixels stay in [0, 1]. Draws per image: sources, then windows, then places.

    Args:
      images: float32 ``[N, H, W]`` in [0, 1]; not changed.
      sources: uint8 ``[M, h, w]`` digits to cut pieces from (the caller
        chooses them: for co-localisation, MNIST training digits, never the
        digits being localised).
      rng: draws the pieces.
      pieces, piece_size: per image.

    Returns:
      float32 ``[N, H, W]``.
    """
    out = images.copy()
    height, width = images.shape[1:3]
    src_h, src_w = sources.shape[1:3]
    for image in out:
        chosen = rng.integers(0, len(sources), pieces)
        windows = rng.integers(0, [src_h - piece_size + 1, src_w - piece_size + 1],
                               (pieces, 2))
        places = rng.integers(0, [height - piece_size + 1, width - piece_size + 1],
                              (pieces, 2))
        for k, (wr, wc), (pr, pc) in zip(chosen, windows, places):
            piece = sources[k, wr:wr + piece_size, wc:wc + piece_size] / 255.0
            target = image[pr:pr + piece_size, pc:pc + piece_size]
            np.maximum(target, piece, out=target)
    return out


def class_images(digits: np.ndarray, labels: np.ndarray, digit: int, count: int,
                 dataset: str, clutter_sources: np.ndarray, rng: np.random.Generator):
    """``count`` random digits of one class, placed (and cluttered for TC).

    Returns:
      ``(images float32 [count, 84, 84, 1], boxes float64 [count, 4],
      index int64 [count])``: ``index`` into ``digits`` of the chosen ones.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {DATASETS}")
    pool = np.flatnonzero(labels == digit)
    if len(pool) < count:
        raise ValueError(f"only {len(pool)} digits of class {digit}, asked for {count}")
    index = np.sort(rng.choice(pool, count, replace=False))
    images, boxes = place_digits(digits[index], rng)
    if dataset == "TC":
        images = add_clutter(images, clutter_sources, rng)
    return images[..., None], boxes, index


# --- boxes --------------------------------------------------------------------

def predicted_boxes(params, in_size=(CANVAS, CANVAS)) -> np.ndarray:
    """float64 ``[n, 4]``: the boxes ``(x0, y0, x1, y1)`` that attention ``params`` crop.

    Where the output's outer edges land in the input, in pixel edge
    coordinates (:func:`stn.kinds.to_pixels` maps pixel centres; an output
    of ``h x w`` pixels has its edges at ``-0.5`` and ``w - 0.5``). The box
    does not depend on the output size.
    """
    out = (MNIST_SIZE, MNIST_SIZE)
    matrix = kinds.to_pixels(np.asarray(params, np.float64), KIND, in_size, out)
    corners = np.array([[-0.5, -0.5, 1.0], [out[1] - 0.5, out[0] - 0.5, 1.0]]).T  # (3, 2)
    mapped = np.einsum("nij,jk->nik", matrix, corners)[:, :2] + 0.5  # (n, 2 [x, y], 2)
    low, high = np.minimum(mapped[..., 0], mapped[..., 1]), np.maximum(mapped[..., 0],
                                                                       mapped[..., 1])
    return np.concatenate([low, high], axis=1)


def crop_params(boxes, in_size=(CANVAS, CANVAS)) -> np.ndarray:
    """float32 ``[n, 3]``: the attention parameters that crop square ``boxes [n, 4]``.

    The inverse of :func:`predicted_boxes` for square boxes on a square canvas: the
    scale is the box's side over the canvas's, the translation its centre's offset
    from the canvas's centre in normalized units (half the canvas is 1).
    """
    boxes = np.asarray(boxes, np.float64)
    side, half = boxes[:, 2] - boxes[:, 0], in_size[1] / 2.0
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    return np.concatenate([side[:, None] / in_size[1], (centre - half) / half],
                          axis=1).astype(np.float32)


def iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """float64 ``[n]``: intersection over union of paired boxes ``(x0, y0, x1, y1)``."""
    boxes, others = np.asarray(boxes, np.float64), np.asarray(others, np.float64)
    low = np.maximum(boxes[:, :2], others[:, :2])
    high = np.minimum(boxes[:, 2:], others[:, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=1)

    def area(b):
        return np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)

    union = area(boxes) + area(others) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# --- model and loss -------------------------------------------------------------

def localization_net(name: str = "localization") -> keras.Sequential:
    """The paper's co-localisation localization net (A.2), ``[B, 84, 84, 1] -> [B, 3]``.

    Conv 8 9x9 stride 4 -> max-pool 2x2 stride 2 -> FC 8 -> FC 8 (ReLU) ->
    FC 3, the last identity-initialised (stn.layers.theta_layer). On 84 x 84
    that is 5,947 parameters, not the paper's "100k": the layers are as
    stated, the count cannot be (valid padding: 19 x 19 x 8 after the conv).
    """
    return keras.Sequential([
        keras.layers.Conv2D(8, 9, strides=4, activation="relu"),
        keras.layers.MaxPooling2D(2, strides=2),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(8, activation="relu"),
        theta_layer("identity", kind=KIND),
    ], name=name)


def transformer() -> SpatialTransformer:
    """The attention transformer, 84 x 84 -> 28 x 28 crops (the CNN's input size)."""
    return SpatialTransformer(localization_net(), kind=KIND,
                              output_size=(MNIST_SIZE, MNIST_SIZE),
                              image_gradient=False, dtype="float32", name="transformer")


EMBEDDING_LAYERS = ("pool1", "pool2", "logits")
"""The ``paper-cnn`` layers whose activations, flattened and concatenated, embed a crop."""


def embedding(cnn: keras.Model, layers=EMBEDDING_LAYERS, normalise: bool = False,
              per_layer: bool = False) -> keras.Model:
    """``[B, 28, 28, 1] -> [B, D]``: the named layers' outputs of ``cnn``, concatenated.

    The paper concatenates "the three layers of activations" of its Table 1
    CNN, with the classification layer taken before the softmax (A.2). Our
    ``paper-cnn`` has conv1 -> pool1 -> conv2 -> pool2 -> dense -> logits;
    the default reads the two conv stages (after their pooling) and the
    logits: D = 6,400 + 256 + 10.

    ``normalise``: scale each embedding to unit length (ours, not the
    paper's; as FaceNet's triplet loss does, Schroff et al. 2015). Without
    it, on our CNN, shrinking every digit to a dot (the transformer zooming
    out past the canvas) has a lower loss than the true boxes; with it, the
    true boxes have the lowest loss of the boxes we tried (the validation
    screen in docs/colocalisation.md).

    ``per_layer``: scale each layer's part to length ``1 / sqrt(L)`` before
    the concatenation (ours), so that each of the ``L`` layers weighs the
    same and the whole is unit length: unit-length as a whole, the 6,400
    pool1 numbers (where two digits of one class differ pixel by pixel) drown
    the 10 logits (where they agree).
    """
    outputs = [keras.layers.Flatten(name=f"embedding_{name}")(cnn.get_layer(name).output)
               for name in layers]
    if per_layer:
        weight = 1.0 / float(np.sqrt(len(layers)))
        outputs = [keras.layers.Rescaling(weight, name=f"embedding_{name}_weight")(
            keras.layers.UnitNormalization(name=f"embedding_{name}_unit")(out))
            for name, out in zip(layers, outputs)]
    joined = keras.layers.Concatenate(name="embedding_concat")(outputs)
    if normalise:
        joined = keras.layers.UnitNormalization(name="embedding_unit")(joined)
    return keras.Model(cnn.inputs, joined, name="embedding")


def triplet_loss(anchor, positive, negative, margin: float = MARGIN):
    """Mean over the batch of ``max(0, |a - p|^2 - |a - r|^2 + margin)`` (Eq. 8).

    Args:
      anchor, positive, negative: ``[B, D]`` embeddings (keras tensors).

    Returns:
      A scalar: the paper's sum divided by the number of triplets.
    """
    ops = keras.ops
    near = ops.sum(ops.square(anchor - positive), axis=-1)
    far = ops.sum(ops.square(anchor - negative), axis=-1)
    return ops.mean(ops.relu(near - far + margin))


def crop(images, params):
    """``[B, 28, 28, C]``: each of ``images [B, H, W, C]`` cropped by its attention box
    ``params [B, 3]`` and resampled to the CNN's input size; no gradient to the images."""
    return kinds.keras_warp(images, params, KIND, (MNIST_SIZE, MNIST_SIZE),
                            image_gradient=False)


def flat(images):
    """``images [B, H, W, C]`` with every pixel set to its image's mean (over H, W and C).

    What a crop would be with nothing in it but its brightness: a crop of black canvas,
    or a box shrunk to a point, is its own flat version.
    """
    ops = keras.ops
    return ops.ones_like(images) * ops.mean(images, axis=(1, 2, 3), keepdims=True)


def random_crops(rng: np.random.Generator, n: int, scales=(1 / 6, 2 / 3)) -> np.ndarray:
    """float32 ``[n, 3]``: attention parameters of random crops inside the canvas.

    The scale ``s`` (the crop's side over the canvas's) uniform in ``scales``
    (14 to 56 px on 84), then the centre uniform where the whole crop fits:
    ``|tx|, |ty| <= 1 - s``.
    """
    s = rng.uniform(*scales, n)
    t = rng.uniform(-1.0, 1.0, (n, 2)) * (1.0 - s)[:, None]
    return np.concatenate([s[:, None], t], axis=1).astype(np.float32)


def partners(rng: np.random.Generator, n: int) -> np.ndarray:
    """int32 ``[n]``: for each image ``i`` another image ``m != i``, uniformly."""
    return ((np.arange(n) + rng.integers(1, n, n)) % n).astype(np.int32)
