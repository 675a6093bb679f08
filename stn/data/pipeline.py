"""Warped MNIST: splits, padding, fixed and resampled warps, tf.data pipelines.

This module owns the data constants (image sizes, split sizes); other modules
import them from here. What the warps are (each protocol's canvas, kind and
sampling) and the one function that applies them: :mod:`stn.data.protocols`.

* **Splits.** ``validation`` is the *first* 5,000 MNIST training images,
  ``train`` the other 55,000 (the split of TF 1.x ``read_data_sets``), and
  ``test`` the 10,000 test images.
* **Preprocessing.** ``x / 255`` as float32 in [0, 1], zero-padded to the
  protocol's canvas with the 28 x 28 digit centred (6 px a side on 40 x 40,
  7 px on 42 x 42, none on 28 x 28). The background is exactly 0, the value
  the sampler's zero padding reads outside the image, so no border appears
  when a warp pulls in points from outside the canvas. No mean/std
  normalization here: it would make the padding differ from the background,
  and a transformer then learns to zoom out (pytorch/tutorials issue #1117,
  the spatial transformer tutorial); normalize after the transformer if at all.
* **Fixed warps.** Each split's warps are drawn by the protocol's
  ``sample`` from a generator keyed by ``(seed, "warps", split name)``, for
  all of the split's images before any truncation, and applied by
  :func:`stn.data.protocols.apply`: the warped test set is a pure function of the
  seed, and ``max_train_examples`` only drops images, it never changes the
  others.
* **Memory.** A :class:`Split` keeps its canonical digits as the original
  uint8 28 x 28 (55,000 of them are 43 MB, against 352 MB as padded
  float32) and pads them on demand (:meth:`Split.canonical_images`, and in
  the resampling pipeline, per batch). A split's fixed warped images are
  built on first access to ``images`` (:class:`Deferred`), from the stored
  digits, warps and clutter, chunk by chunk: the same array an eager build
  gives, bit for bit. A run that resamples its warps never reads the train
  split's images, so it never holds them (352 MB for 55,000 at 40 x 40).
  The first training pipeline over a split copies the arrays it gathers
  from into TF tensors, once: the fixed pipeline the warped images, the
  resampling one only the digits. Evaluation serves slices of the NumPy
  arrays, with no TF copy of the split.
* **Pipelines.** :func:`train_dataset` shuffles with a permutation from a
  generator keyed by ``(seed, "order", epoch)``, so epoch ``e`` is the same
  whether or not the run was interrupted; with ``resample=True`` it draws
  fresh warps from ``(seed, "resample", epoch)`` and applies them inside the
  pipeline, per batch, with the same :func:`stn.data.protocols.apply`.
"""

import dataclasses
import zlib

import numpy as np
import tensorflow as tf

from stn.data import protocols
from stn.data.lazy import BuiltOnFirstUse, Deferred
from stn.data.mnist import NUM_CLASSES  # noqa: F401  (re-exported: stn.data.pipeline.NUM_CLASSES)

MNIST_SIZE = 28
"""Side of an MNIST digit in pixels."""
IMAGE_SIZE = 40
"""Side of the padded canvas of the default protocols (6 px a side)."""
VALIDATION_SIZE = 5000
"""The first this-many training images are the validation split."""
SPLITS = ("train", "validation", "test")


def __getattr__(name):
    # Lazy re-export: ``stn.data.mnist.load_mnist`` without importing the download
    # code (or needing it to exist) until someone asks for it.
    if name == "load_mnist":
        from stn.data.mnist import load_mnist
        return load_mnist
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pad(digits, canvas: int = IMAGE_SIZE) -> tf.Tensor:
    """Scales uint8 digits to [0, 1] and zero-pads them, centred, to the canvas.

    Plain TF ops, so the same code runs eagerly and inside the pipeline.

    Args:
      digits: uint8 ``[N, 28, 28]``.
      canvas: side ``S`` of the output; ``S - 28`` must be even.

    Returns:
      float32 ``[N, S, S, 1]`` tensor, exactly 0 outside the digit's box.
    """
    margin, odd = divmod(canvas - MNIST_SIZE, 2)
    if margin < 0 or odd:
        raise ValueError(f"canvas {canvas} cannot centre a {MNIST_SIZE} px digit")
    images = tf.cast(digits, tf.float32) / 255.0
    images = tf.pad(images, [[0, 0], [margin, margin], [margin, margin]])
    return images[..., None]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split of warped MNIST (read-only arrays).

    Attributes:
      images: float32 ``[N, S, S, 1]``, the warped images in [0, 1]. Given
        as a :class:`Deferred`, they are built on first access (and kept).
      labels: int32 ``[N]``, digit classes 0..9.
      warps: float32 ``[N, P]``, the ground-truth sampling parameters of
        ``kind``, flat (``[N, 6]`` row-major affine matrices for the affine
        protocols): ``images == stn.layer.kinds.warp(canonical_images(), warps,
        kind)`` (float rounding).
      canonical: uint8 ``[N, 28, 28]``, the unwarped digits; pad them with
        :meth:`canonical_images`.
      protocol: name of the warp protocol (:data:`stn.data.protocols.PROTOCOLS`).
      kind: the transformation kind of ``warps`` (:data:`stn.layer.kinds.KINDS`),
        the protocol's ``kind``.
      clutter: int32 ``[N, P, 5]`` pieces pasted on each image (:mod:`stn.clutter`),
        cut from ``sources``; None for protocols without clutter.
      sources: uint8 ``[M, 28, 28]``: all of the split's own digits, before
        any truncation (None without clutter).
    """
    images: np.ndarray = BuiltOnFirstUse()
    labels: np.ndarray
    warps: np.ndarray
    canonical: np.ndarray
    protocol: str
    kind: str = "affine"
    clutter: np.ndarray | None = None
    sources: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def canvas(self) -> int:
        """Side ``S`` of the images in pixels (read without building them)."""
        return vars(Split)["images"].shape(self)[1]

    @property
    def images_built(self) -> bool:
        """Whether ``images`` are held: given as an array, or read once."""
        return vars(Split)["images"].is_built(self)

    def canonical_images(self, index=slice(None)) -> np.ndarray:
        """The unwarped digits, padded: float32 ``[n, S, S, 1]``.

        Args:
          index: anything that indexes the first axis (slice, int array).
        """
        return pad(self.canonical[index], self.canvas).numpy()

    def _tensor(self, name: str) -> tf.Tensor:
        """The array ``name`` as a TF tensor, made on first use and kept.

        Every epoch's pipeline gathers from the same tensor: capturing a fresh
        copy per epoch leaked the copy (~350 MB an epoch for train images).
        The cache lives in the instance dict, beside the frozen fields.
        """
        cache = self.__dict__.setdefault("_tensor_cache", {})
        if name not in cache:
            cache[name] = tf.constant(getattr(self, name))
        return cache[name]


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
    """The three splits of one protocol and seed."""
    train: Split
    validation: Split
    test: Split
    protocol: protocols.Protocol
    seed: int


def _rng(seed: int, *key) -> np.random.Generator:
    """Generator keyed by ``seed`` and a path of ints and strings."""
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in key]
    return np.random.default_rng([int(seed), *words])


WARP_CHUNK = 1024
"""Images padded, warped and cluttered per call when a split's images are
built: the transients (padded digits, the sampler's output, a few copies of
6.5 MB at 40 x 40) stay small. A multiple of ``protocols.apply``'s chunk, so
each image is warped in a sampler call of the same shape as ever, and the
images are the same bit for bit whatever the chunk."""


def _warp_digits(digits: np.ndarray, params: np.ndarray, protocol: protocols.Protocol,
                 clutter: np.ndarray | None = None,
                 sources: np.ndarray | None = None) -> np.ndarray:
    """Pads and warps uint8 digits chunk by chunk, then pastes the clutter.

    Returns:
      float32 ``[N, S, S, 1]``, a split's fixed images.
    """
    canvas = protocol.canvas
    out = np.empty((len(digits), canvas, canvas, 1), np.float32)
    for start in range(0, len(digits), WARP_CHUNK):
        part = slice(start, start + WARP_CHUNK)
        warped = protocols.apply(protocol, pad(digits[part], canvas).numpy(), params[part])
        out[part] = warped if clutter is None else protocol.paste(warped, sources, clutter[part])
    return out


def _make_split(name: str, digits: np.ndarray, labels: np.ndarray,
                protocol: protocols.Protocol, seed: int, limit: int | None = None) -> Split:
    """Draws the split's fixed warps and clutter (for all of it), truncates.

    The images, those warps (and clutter) applied to the digits, are built
    on first access (:class:`Deferred`), from the arrays the split keeps.
    Clutter is cut from the split's own digits (test from test), drawn from
    ``(seed, "clutter", name)``.
    """
    params = protocol.sample(len(digits), _rng(seed, "warps", name)).astype(np.float32)
    record = protocol.clutter_record(len(digits), len(digits), _rng(seed, "clutter", name),
                                     own=np.arange(len(digits)))
    sources = None if record is None else _read_only(np.ascontiguousarray(digits, np.uint8))
    digits = _read_only(np.ascontiguousarray(digits[:limit], np.uint8))
    params = _read_only(params[:limit])
    record = None if record is None else _read_only(record[:limit])
    canvas = protocol.canvas
    return Split(
        images=Deferred(lambda: _warp_digits(digits, params, protocol, record, sources),
                        (len(digits), canvas, canvas, 1)),
        labels=_read_only(np.asarray(labels[:limit], np.int32)),
        warps=params,
        canonical=digits,
        protocol=protocol.name,
        kind=protocol.kind,
        clutter=record,
        sources=sources)


def check_split_sizes(n_train: int, max_train_examples: int | None,
                      max_eval_examples: int | None = None) -> None:
    """Refuses a training set too small to hold out validation, or a limit below 1."""
    if n_train <= VALIDATION_SIZE:
        raise ValueError(f"need more than {VALIDATION_SIZE} training images "
                         f"(validation is the first {VALIDATION_SIZE}), got {n_train}")
    for name, limit in (("max_train_examples", max_train_examples),
                        ("max_eval_examples", max_eval_examples)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1, got {limit}")


def build_data(mnist, protocol: str | protocols.Protocol = "predecessor", seed: int = 0, *,
               max_train_examples: int | None = None,
               max_eval_examples: int | None = None) -> Data:
    """Splits, pads and warps MNIST arrays (the work of :func:`load_data`).

    Args:
      mnist: ``((x_train, y_train), (x_test, y_test))``, uint8
        ``[N, 28, 28]`` digits and ``[N]`` labels, as from ``load_mnist``.
      protocol: name in :data:`stn.data.protocols.PROTOCOLS` (or a Protocol).
      seed: non-negative int; the warps are a pure function of it.
      max_train_examples: keep only the first this-many train images.
      max_eval_examples: keep only the first this-many validation and test
        images (smoke runs; each is the full split's image, as for
        ``max_train_examples``).

    Returns:
      :class:`Data`.
    """
    protocol = protocols.get_protocol(protocol)
    (x_train, y_train), (x_test, y_test) = mnist
    check_split_sizes(len(x_train), max_train_examples, max_eval_examples)
    v = VALIDATION_SIZE
    return Data(
        train=_make_split("train", x_train[v:], y_train[v:], protocol, seed,
                          limit=max_train_examples),
        validation=_make_split("validation", x_train[:v], y_train[:v], protocol, seed,
                               limit=max_eval_examples),
        test=_make_split("test", x_test, y_test, protocol, seed, limit=max_eval_examples),
        protocol=protocol, seed=seed)


def load_data(protocol: str = "predecessor", seed: int = 0, *, mnist_path=None, cache_dir=None,
              max_train_examples: int | None = None,
              max_eval_examples: int | None = None) -> Data:
    """Loads MNIST (``stn.data.mnist.load_mnist``) and builds the warped splits.

    Args:
      protocol: a name in :data:`stn.data.protocols.PROTOCOLS` (or an old name,
        :data:`stn.data.protocols.ALIASES`): ``"predecessor"`` (default), ``"r"``, ``"rts"``, ``"p"``, ``"e"`` or ``"none"``.
      seed: non-negative int; the warps are a pure function of it.
      mnist_path: MNIST file or directory, passed to ``load_mnist(path=)``.
      cache_dir: download cache, passed to ``load_mnist(cache_dir=)``.
      max_train_examples: keep only the first this-many train images.
      max_eval_examples: keep only the first this-many validation and test images.

    Returns:
      :class:`Data` with ``train`` (55,000), ``validation`` (5,000) and
      ``test`` (10,000) splits.

    Raises:
      ValueError: unknown protocol (before any loading).
      stn.data.mnist.MnistError: MNIST cannot be found or read.
    """
    protocols.get_protocol(protocol)  # fail fast, before the download
    from stn.data.mnist import load_mnist
    mnist = load_mnist(cache_dir=cache_dir, path=mnist_path)
    return build_data(mnist, protocol, seed, max_train_examples=max_train_examples,
                      max_eval_examples=max_eval_examples)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: int64 ``[n]``, pure in (seed, epoch)."""
    return _rng(seed, "order", epoch).permutation(n)


def epoch_warps(split: Split, seed: int, epoch: int,
                protocol: str | protocols.Protocol | None = None) -> np.ndarray:
    """Fresh warps of epoch ``epoch`` for every image of ``split``.

    Args:
      split: the split (its length, canvas and protocol name).
      seed, epoch: the generator's key, ``(seed, "resample", epoch)``.
      protocol: name or Protocol; defaults to ``split.protocol``.

    Returns:
      float32 ``[N, P]`` parameters of the protocol's kind (``protocol.sample``),
      indexed like the split.
    """
    protocol = protocols.get_protocol(protocol or split.protocol)
    if protocol.canvas != split.canvas:
        raise ValueError(f"protocol {protocol.name!r} has a {protocol.canvas} px canvas "
                         f"but the split's images are {split.canvas} px")
    return protocol.sample(len(split), _rng(seed, "resample", epoch)).astype(np.float32)


def epoch_clutter(split: Split, seed: int, epoch: int,
                  protocol: str | protocols.Protocol | None = None) -> np.ndarray | None:
    """Fresh clutter of the epoch, int32 ``[N, P, 5]`` (None: a protocol without clutter).

    Drawn from ``(seed, "resample-clutter", epoch)``, cut from ``split.sources``.
    """
    protocol = protocols.get_protocol(protocol or split.protocol)
    n_sources = 0 if split.sources is None else len(split.sources)
    rng = _rng(seed, "resample-clutter", epoch)
    record = protocol.clutter_record(len(split), n_sources, rng, own=np.arange(len(split)))
    if record is not None and split.sources is None:
        raise ValueError(f"protocol {protocol.name!r} cuts clutter from the split's digits, "
                         f"but the split (protocol {split.protocol!r}) keeps none")
    return record


def warp_strength(epoch: int, ramp_epochs: float) -> float:
    """Strength of epoch ``epoch``'s warps under a curriculum of ``ramp_epochs``.

    ``min(1, epoch / ramp_epochs)``: 0 (undistorted digits) at epoch 0,
    growing linearly to the protocol's full warps at ``ramp_epochs``; 1
    throughout when ``ramp_epochs`` is 0. See :meth:`stn.data.protocols.Protocol.scaled`.
    """
    return 1.0 if ramp_epochs <= 0 else min(1.0, epoch / ramp_epochs)


def _batches(order: np.ndarray, batch_size: int, fetch) -> tf.data.Dataset:
    """Batches of indices in ``order`` mapped by ``fetch``, prefetched.

    Batching indices first keeps per-example work out of the pipeline: each
    step is one gather (and one sampler call) for the whole batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int32))
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(tf.autograph.experimental.do_not_convert(fetch),
                num_parallel_calls=PIPELINE_DEPTH, deterministic=True)
    return ds.prefetch(PIPELINE_DEPTH).with_options(_NO_AUTOTUNE)


# Batches prepared ahead of the step: a batch costs a gather and one sampler
# call, far less than a step, so two keep the step fed (bench/: "one full
# epoch"). Fixed, not tf.data.AUTOTUNE: the autotuner's thread, when the
# iterator is deleted at the end of an epoch, could hold the main thread for
# tens of seconds (20 s and 38 s seen on this CPU; bench/pipeline.py).
PIPELINE_DEPTH = 2
_NO_AUTOTUNE = tf.data.Options()
_NO_AUTOTUNE.autotune.enabled = False


def _fixed_fetch(split: Split):
    """Batch-of-indices -> (warped images, labels) from the split's arrays."""
    images, labels = split._tensor("images"), split._tensor("labels")
    return lambda index: (tf.gather(images, index), tf.gather(labels, index))


def _resample_fetch(split: Split, protocol: protocols.Protocol, params: np.ndarray,
                    clutter: np.ndarray | None = None):
    """Batch-of-indices -> (canonical digits warped by ``params``, cluttered, labels)."""
    digits, labels = split._tensor("canonical"), split._tensor("labels")
    params, canvas = tf.constant(params), split.canvas
    if clutter is not None:
        sources, clutter = split._tensor("sources"), tf.constant(clutter)

    def fetch(index):
        canonical = pad(tf.gather(digits, index), canvas)  # (b, S, S, 1)
        # XLA inside the pipeline: ~8x less CPU time per epoch than the plain
        # graph, CPU the training step would otherwise lose (make bench).
        warped = protocols.apply(protocol, canonical, tf.gather(params, index))
        if clutter is not None:
            warped = protocol.paste(warped, sources, tf.gather(clutter, index))
        return warped, tf.gather(labels, index)
    return fetch


def train_dataset(split: Split, batch_size: int, *, seed: int, epoch: int,
                  resample: bool = False,
                  protocol: str | protocols.Protocol | None = None) -> tf.data.Dataset:
    """One epoch of shuffled training batches, a pure function of (seed, epoch).

    Build one dataset per epoch. The last partial batch is kept.

    Args:
      split: usually ``data.train``.
      batch_size: images per batch.
      seed: run seed (non-negative int).
      epoch: epoch number; the order is :func:`epoch_order`.
      resample: if True, warp the canonical digits with fresh warps for this
        epoch (:func:`epoch_warps`), and fresh clutter if the protocol has
        any (:func:`epoch_clutter`), inside the pipeline, instead of serving
        the split's fixed warped images.
      protocol: protocol of the fresh warps; defaults to ``split.protocol``.

    Returns:
      Dataset of ``(images float32 [b, S, S, 1], labels int32 [b])``.
    """
    order = epoch_order(len(split), seed, epoch)
    if resample:
        protocol = protocols.get_protocol(protocol or split.protocol)
        fetch = _resample_fetch(split, protocol, epoch_warps(split, seed, epoch, protocol),
                                epoch_clutter(split, seed, epoch, protocol))
    else:
        fetch = _fixed_fetch(split)
    return _batches(order, batch_size, fetch)


def eval_dataset(split: Split, batch_size: int) -> tf.data.Dataset:
    """The split's fixed warped images in their natural order, batched.

    The batches are slices of the split's NumPy arrays, copied one batch at
    a time: unlike the training pipelines' gathers, evaluation holds no TF
    copy of the split (64 MB for the test images at 40 x 40).

    Returns:
      Dataset of ``(images float32 [b, S, S, 1], labels int32 [b])``; the
      last batch may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, labels = split.images, split.labels

    def batches():
        for start in range(0, len(labels), batch_size):
            yield images[start:start + batch_size], labels[start:start + batch_size]
    spec = (tf.TensorSpec((None, *images.shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
    return dataset.prefetch(PIPELINE_DEPTH).with_options(_NO_AUTOTUNE)
