"""MNIST addition (paper, appendix A.1): two warped digits, one per channel; label = their sum.

The dataset ``addition`` of :mod:`stn.data.datasets`. An image is ``[S, S, 2]``:
channel 0 holds one MNIST digit, channel 1 another, each zero-padded to the
protocol's canvas (:func:`stn.data.pipeline.pad`) and warped by its own independent
draw of the protocol (``rts`` for the paper's task: rotation +-45 deg, scale
0.7 to 1.2, translation +-7 px on 42 x 42; stn.data.protocols), through the
one warping function, :func:`stn.data.protocols.apply`. The label is the sum of the two
digits' classes, 0 to 18 (:data:`CLASSES`).

* **Splits.** Pairs are made from the split's own digits, the splits of
  :mod:`stn.data.pipeline`: ``train`` pairs from the 55,000 training digits,
  ``validation`` pairs from the first 5,000 MNIST training images, ``test``
  pairs from the 10,000 test images; no digit crosses splits. A split has one
  pair per digit: pair ``i`` is ``(digit i, digit partner[i])``, ``partner``
  a permutation of the split's digits, so each digit is once a first and
  once a second digit (rarely both in one pair, ``partner[i] == i``).
* **Exact and seeded.** A split's partners are drawn from a generator keyed
  by ``(seed, "pairs", split name)`` and its warps, float32 ``[N, 2, P]``
  (channel 0 first), from ``(seed, "warps", split name)``, both for all of
  the split before ``max_train_examples`` truncates it; the test split is
  a pure function of the seed.
* **Resampling** (``resample=True`` in :func:`train_dataset`): every epoch
  pairs each training digit with a fresh partner, drawn from
  ``(seed, "resample-pairs", epoch)`` among all the split's digits, and warps
  both channels afresh from ``(seed, "resample", epoch)``, inside the pipeline.
"""

import dataclasses
import zlib

import numpy as np

from stn.data import protocols
from stn.layer import kinds

CHANNELS = 2
"""Digits per image, one per channel."""
CLASSES = 19
"""Labels: the sums 0 .. 18."""


@dataclasses.dataclass(frozen=True, eq=False)
class PairSplit:
    """One split of MNIST addition (read-only arrays).

    Attributes:
      images: float32 ``[N, S, S, 2]`` in [0, 1], channel ``c`` the warped
        digit ``digits[pairs[:, c]]``.
      labels: int32 ``[N]``, the sums ``digit_labels[pairs].sum(1)``.
      pairs: int32 ``[N, 2]``, indices of each pair's digits into ``digits``.
      warps: float32 ``[N, 2, P]``, each channel's sampling parameters of
        ``kind``: ``images[..., c] == stn.data.protocols.apply(protocol,
        stn.data.pipeline.pad(digits[pairs[:, c]]), warps[:, c])[..., 0]``.
      digits: uint8 ``[M, 28, 28]``, all of the split's digits (the pairs'
        and the resampler's source, before any truncation).
      digit_labels: int32 ``[M]``, their classes.
      protocol: name of the warp protocol; kind: its kind (stn.layer.kinds).
    """
    images: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    warps: np.ndarray
    digits: np.ndarray
    digit_labels: np.ndarray
    protocol: str
    kind: str = "affine"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def canvas(self) -> int:
        """Side ``S`` of the images in pixels."""
        return self.images.shape[1]

    def tensor(self, name: str):
        """The array ``name`` as a TF tensor, made on first use and kept (one copy a split)."""
        import tensorflow as tf

        cache = self.__dict__.setdefault("_tensor_cache", {})
        if name not in cache:
            cache[name] = tf.constant(getattr(self, name))
        return cache[name]


def _rng(seed: int, *key) -> np.random.Generator:
    """Generator keyed by ``seed`` and a path of ints and strings (as stn.data.pipeline keys)."""
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in key]
    return np.random.default_rng([int(seed), *words])


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def warp_pairs(digits: np.ndarray, pairs: np.ndarray, warps: np.ndarray,
               protocol: protocols.Protocol, chunk_size: int = 4096) -> np.ndarray:
    """Pads and warps each pair's two digits into its two channels.

    Args:
      digits: uint8 ``[M, 28, 28]``.
      pairs: int ``[N, 2]`` indices into ``digits``.
      warps: float32 ``[N, 2, P]`` parameters of the protocol's kind.
      protocol: gives the canvas ``S`` and the kind.
      chunk_size: pairs per call (bounds the memory of the padded digits).

    Returns:
      float32 ``[N, S, S, 2]``.
    """
    from stn.data.pipeline import pad

    canvas = protocol.canvas
    out = np.empty((len(pairs), canvas, canvas, CHANNELS), np.float32)
    for start in range(0, len(pairs), chunk_size):
        part = slice(start, start + chunk_size)
        for c in range(CHANNELS):
            canonical = pad(digits[pairs[part, c]], canvas).numpy()
            out[part, ..., c] = protocols.apply(protocol, canonical, warps[part, c])[..., 0]
    return out


def make_split(name: str, digits: np.ndarray, labels: np.ndarray,
               protocol: protocols.Protocol, seed: int, limit: int | None = None) -> PairSplit:
    """The pairs of split ``name`` from its ``digits``: partners and warps drawn, then truncated."""
    n, size = len(digits), kinds.get_kind(protocol.kind).size
    partner = _rng(seed, "pairs", name).permutation(n)
    warps = protocol.sample(CHANNELS * n, _rng(seed, "warps", name)).astype(np.float32)
    pairs = np.stack([np.arange(n), partner], 1).astype(np.int32)[:limit]
    warps = warps.reshape(n, CHANNELS, size)[:limit]
    digits = np.ascontiguousarray(digits, np.uint8)
    labels = np.asarray(labels, np.int32)
    return PairSplit(images=_read_only(warp_pairs(digits, pairs, warps, protocol)),
                     labels=_read_only(labels[pairs].sum(1).astype(np.int32)),
                     pairs=_read_only(pairs), warps=_read_only(warps),
                     digits=_read_only(digits), digit_labels=_read_only(labels),
                     protocol=protocol.name, kind=protocol.kind)


def build_data(mnist, protocol: str | protocols.Protocol = "rts", seed: int = 0, *,
               max_train_examples: int | None = None, max_eval_examples: int | None = None):
    """The three splits of pairs from MNIST arrays (the work of :func:`load_data`).

    Args:
      mnist: ``((x_train, y_train), (x_test, y_test))`` as from ``load_mnist``.
      protocol: the warp of each channel (name or Protocol).
      seed: non-negative int; the pairs and warps are a pure function of it.
      max_train_examples: keep only the first this-many training pairs.
      max_eval_examples: keep only the first this-many validation and test pairs.

    Returns:
      :class:`stn.data.pipeline.Data` whose splits are :class:`PairSplit`.
    """
    from stn.data.pipeline import VALIDATION_SIZE, Data, check_split_sizes

    protocol = protocols.get_protocol(protocol)
    (x_train, y_train), (x_test, y_test) = mnist
    check_split_sizes(len(x_train), max_train_examples, max_eval_examples)
    v = VALIDATION_SIZE
    return Data(train=make_split("train", x_train[v:], y_train[v:], protocol, seed,
                                 max_train_examples),
                validation=make_split("validation", x_train[:v], y_train[:v], protocol, seed,
                                      max_eval_examples),
                test=make_split("test", x_test, y_test, protocol, seed, max_eval_examples),
                protocol=protocol, seed=seed)


def load_data(protocol: str = "rts", seed: int = 0, *, mnist_path=None, cache_dir=None,
              max_train_examples: int | None = None, max_eval_examples: int | None = None):
    """Loads MNIST (``stn.data.mnist.load_mnist``) and builds the pairs: :func:`build_data`."""
    protocols.get_protocol(protocol)  # fail fast, before the download
    from stn.data.mnist import load_mnist

    mnist = load_mnist(cache_dir=cache_dir, path=mnist_path)
    return build_data(mnist, protocol, seed, max_train_examples=max_train_examples,
                      max_eval_examples=max_eval_examples)


def epoch_pairs(split: PairSplit, seed: int, epoch: int, protocol: protocols.Protocol):
    """Fresh ``(pairs int32 [N, 2], warps float32 [N, 2, P])`` of epoch ``epoch``.

    Pair ``i`` keeps its first digit and takes a partner drawn among all of
    the split's digits; both channels' warps are new draws of ``protocol``.
    """
    m, n = len(split.digits), len(split)
    partner = _rng(seed, "resample-pairs", epoch).permutation(m)[:n]
    pairs = np.stack([split.pairs[:, 0], partner], 1).astype(np.int32)
    size = kinds.get_kind(protocol.kind).size
    warps = protocol.sample(CHANNELS * n, _rng(seed, "resample", epoch)).astype(np.float32)
    return pairs, warps.reshape(n, CHANNELS, size)


def _batches(order: np.ndarray, batch_size: int, fetch):
    """Batches of indices in ``order`` mapped by ``fetch``, prefetched (as stn.data.pipeline's)."""
    import tensorflow as tf

    from stn.data.pipeline import PIPELINE_DEPTH

    options = tf.data.Options()
    options.autotune.enabled = False  # stn.data.pipeline: the autotuner can stall the main thread
    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int32)).batch(batch_size)
    ds = ds.map(tf.autograph.experimental.do_not_convert(fetch),
                num_parallel_calls=PIPELINE_DEPTH, deterministic=True)
    return ds.prefetch(PIPELINE_DEPTH).with_options(options)


def _fixed_fetch(split: PairSplit):
    import tensorflow as tf

    images, labels = split.tensor("images"), split.tensor("labels")
    return lambda index: (tf.gather(images, index), tf.gather(labels, index))


def _resample_fetch(split: PairSplit, protocol: protocols.Protocol, pairs, warps):
    """Batch-of-indices -> (the pairs' digits warped by ``warps``, their sums)."""
    import tensorflow as tf

    from stn.data.pipeline import pad

    digits, digit_labels = split.tensor("digits"), split.tensor("digit_labels")
    pairs, warps, canvas = tf.constant(pairs), tf.constant(warps), split.canvas

    def fetch(index):
        chosen = tf.transpose(tf.gather(pairs, index))  # (2, b): channel-major
        canonical = pad(tf.reshape(tf.gather(digits, chosen), [-1, 28, 28]), canvas)
        params = tf.reshape(tf.transpose(tf.gather(warps, index), [1, 0, 2]),
                            [-1, warps.shape[-1]])
        warped = protocols.apply(protocol, canonical, params)  # (2b, S, S, 1)
        images = tf.transpose(tf.reshape(warped, [CHANNELS, -1, canvas, canvas]), [1, 2, 3, 0])
        return images, tf.reduce_sum(tf.gather(digit_labels, chosen), 0)
    return fetch


def train_dataset(split: PairSplit, batch_size: int, *, seed: int, epoch: int,
                  resample: bool = False, protocol=None):
    """One epoch of shuffled training batches, a pure function of (seed, epoch).

    Args:
      split: usually ``data.train``.
      batch_size: pairs per batch (the last batch may be smaller).
      seed, epoch: the order is ``stn.data.pipeline.epoch_order(len(split), seed, epoch)``.
      resample: fresh partners and warps this epoch (:func:`epoch_pairs`)
        instead of the split's fixed images.
      protocol: of the fresh warps; defaults to ``split.protocol``.

    Returns:
      Dataset of ``(images float32 [b, S, S, 2], labels int32 [b])``.
    """
    from stn.data.pipeline import epoch_order

    order = epoch_order(len(split), seed, epoch)
    if not resample:
        return _batches(order, batch_size, _fixed_fetch(split))
    protocol = protocols.get_protocol(protocol or split.protocol)
    if protocol.canvas != split.canvas:
        raise ValueError(f"protocol {protocol.name!r} has a {protocol.canvas} px canvas "
                         f"but the split's images are {split.canvas} px")
    pairs, warps = epoch_pairs(split, seed, epoch, protocol)
    return _batches(order, batch_size, _resample_fetch(split, protocol, pairs, warps))


def eval_dataset(split: PairSplit, batch_size: int):
    """The split's fixed images in their order, batched: ``(images, labels)``."""
    return _batches(np.arange(len(split)), batch_size, _fixed_fetch(split))
