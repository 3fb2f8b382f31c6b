"""Export a trained model: ONNX for servers, LiteRT (TFLite) for phones, SavedModel for TF Serving.

Every export is verified before it is reported done: it is loaded in its own runtime and its
probabilities are compared with Keras' on real digits (max abs difference <= TOLERANCE).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "ExportError", "export_model", "onnx_path_for", "run_onnx", "sample_digits"]

FORMATS = ("onnx", "litert", "saved_model")
SUFFIX = {"onnx": ".onnx", "litert": ".tflite", "saved_model": ""}
TOLERANCE = 1e-4  # max abs difference of probabilities between the export and Keras


class ExportError(Exception):
    """An export could not be written or did not agree with Keras."""


def onnx_path_for(model_path: str | os.PathLike) -> Path:
    """Where the ONNX twin of a ``.keras`` model lives: the same name with ``.onnx``."""
    return Path(model_path).with_suffix(".onnx")


def sample_digits(n: int = 256) -> np.ndarray:
    """Real MNIST test digits for parity checks (random strokes if MNIST cannot be loaded)."""
    from .data import DataError, load_mnist

    try:
        _, (x, _) = load_mnist()
        return x[:n]
    except DataError:
        return (np.random.default_rng(0).random((n, 28, 28)) > 0.8).astype(np.uint8) * 255


def run_onnx(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x, np.float32)})[0]


def _run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(x), 28, 28])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.asarray(x, np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def _run_saved_model(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return np.asarray(loaded.serve(tf.constant(np.asarray(x, np.float32))))


def export_model(
    model: str | os.PathLike | None = None, fmt: str = "onnx", out: str | os.PathLike | None = None
) -> tuple[Path, float]:
    """Export ``model`` (a .keras file or run directory; None: the shipped model) as ``fmt``.

    Returns the path written and the max abs difference from Keras on sample digits. The file is
    written to a temporary name and renamed only once verified.
    """
    import keras

    from .models import load_model, resolve_model_path, to_float32
    from .reading.recognizer import default_model_path, predict_probabilities

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "onnx" and keras.backend.backend() != "tensorflow":
        raise ExportError(f"{fmt} export needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    source = resolve_model_path(model if model is not None else default_model_path() or "")
    out = (
        Path(out)
        if out is not None
        else source.with_suffix(SUFFIX[fmt])
        if fmt != "saved_model"
        else (source.parent / (source.stem + "_saved_model"))
    )
    out = _check_out(out, fmt, source)
    keras_model = to_float32(load_model(source)[0])  # a model saved in mixed precision is exported in float32
    x = sample_digits()
    expected = predict_probabilities(keras_model, x)  # also "calls" the model, as export requires
    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary copy sits beside its destination: a rename across file systems would fail.
    tmp_dir = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        tmp = tmp_dir / ("model" + SUFFIX[fmt])
        keras_format = {"onnx": "onnx", "litert": "litert", "saved_model": "tf_saved_model"}[fmt]
        runner = {"onnx": run_onnx, "litert": _run_litert, "saved_model": _run_saved_model}[fmt]
        with warnings.catch_warnings():
            # Notices from the converters' own code, not about this model: Keras' tf2onnx shim probes
            # the removed `np.object`, and TF 2.21 calls its tf.lite.Interpreter (used to verify the
            # LiteRT file) deprecated in favour of the separate ai_edge_litert package.
            warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated", category=UserWarning)
            try:
                keras_model.export(str(tmp), format=keras_format, verbose=False)
            except Exception as e:  # the converters raise many types
                raise ExportError(f"{source}: {fmt} export failed: {e}") from e
            if fmt == "onnx":
                _stamp_source(tmp, source)
            got = runner(tmp, x)
        if np.shape(got) != expected.shape:
            raise ExportError(f"{fmt} export gives outputs of shape {np.shape(got)}, Keras {expected.shape}")
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:  # NaN fails too
            raise ExportError(f"{fmt} export disagrees with Keras: max abs difference {diff:.2e} > {TOLERANCE}")
        if out.is_dir():
            shutil.rmtree(out)  # an earlier SavedModel (`_check_out` refused any other directory)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out, diff


def _check_out(out: Path, fmt: str, source: Path) -> Path:
    """Where the export goes. An existing directory given for a single-file format receives the file
    (named after the model); a SavedModel replaces only an earlier SavedModel, never another folder
    (``--out runs/mine`` must not delete a run)."""
    if fmt != "saved_model":
        return out / (source.stem + SUFFIX[fmt]) if out.is_dir() else out
    if out.is_dir() and not (out / "saved_model.pb").is_file():
        raise ExportError(f"{out}: a directory that is not a SavedModel; give a new path for the SavedModel")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: a file; a SavedModel is a directory, give a new path for it")
    return out


def _stamp_source(onnx_file: Path, keras_file: Path) -> None:
    """Record in the ONNX file which .keras file it was made from, so a stale twin is never used."""
    import onnx

    from .models import file_sha256
    from .reading.recognizer import ONNX_SOURCE_KEY

    proto = onnx.load(str(onnx_file))
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_SOURCE_KEY, file_sha256(keras_file)
    onnx.save(proto, str(onnx_file))
