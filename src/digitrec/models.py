"""Model registry: name -> Keras 3 builder, plus self-describing save and load.

Every model takes raw pixel values, float32 of shape (batch, 28, 28) in [0, 255], and returns class
probabilities (batch, classes) in float32. Normalization is the model's first layer, so it travels with
the saved file and training and inference cannot drift apart.

A saved model is one ``.keras`` file (Keras' own zip format) with one extra entry, ``digitrec.json``:
the architecture name, normalization, class names, training config, data hash and metrics. Loading
uses Keras' ``safe_mode`` (no Lambda layers, no arbitrary code) and needs no other file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import usual_permissions

__all__ = [
    "MODELS",
    "ModelError",
    "ModelSpec",
    "build_model",
    "load_model",
    "read_metadata",
    "save_model",
    "to_float32",
]

INPUT_SHAPE = (28, 28)
METADATA_ENTRY = "digitrec.json"
FORMAT_VERSION = 1
# MNIST's pixel mean and standard deviation over the training set, on the [0, 1] scale.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class ModelError(Exception):
    """A model could not be built, saved or loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture and the training recipe its tutorial used."""

    name: str
    build: Callable[..., Any]  # (num_classes) -> keras.Model
    description: str
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields the recipe sets
    # Whether mixed bfloat16 trained faster than float32 on a CPU with AMX (TensorFlow backend), as
    # measured by benchmarks/precision.py. Batch-norm models were slower in bf16 there.
    cpu_bf16: bool = False


MODELS: dict[str, ModelSpec] = {}


def register(
    name: str, description: str, cpu_bf16: bool = False, **recipe: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        MODELS[name] = ModelSpec(name, fn, description, recipe, cpu_bf16)
        return fn

    return wrap


def _input(keras: Any, standardize: bool) -> tuple[Any, Any]:
    """Input of raw pixels (28, 28) -> normalized (28, 28, 1) tensor."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")
    if standardize:  # (x / 255 - mean) / std
        scale, offset = 1.0 / (255.0 * MNIST_STD), -MNIST_MEAN / MNIST_STD
    else:  # x / 255, as the tutorials do
        scale, offset = 1.0 / 255.0, 0.0
    x = keras.layers.Rescaling(scale, offset, name="normalize")(inputs)
    return inputs, keras.layers.Reshape((*INPUT_SHAPE, 1), name="channel")(x)


def _head(keras: Any, x: Any, num_classes: int) -> Any:
    x = keras.layers.Dense(num_classes, name="logits")(x)
    # Softmax in float32 even under mixed precision: probabilities must sum to 1 exactly enough.
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)


@register(
    "mlp",
    "Dense 512 relu, Dense 10: the Keras RMSprop MLP tutorial",
    optimizer="rmsprop",
    learning_rate=1e-3,
    epochs=20,
    batch_size=128,
)
def mlp(num_classes: int = 10) -> Any:
    import keras

    inputs, x = _input(keras, standardize=False)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="mlp")


@register(
    "seed-cnn",
    "Conv 32 3x3, MaxPool 2, Flatten, Dense 128, Dense 10: the TensorFlow beginner CNN",
    cpu_bf16=True,
    optimizer="adam",
    learning_rate=1e-3,
    epochs=5,
    batch_size=100,
)
def seed_cnn(num_classes: int = 10) -> Any:
    import keras

    inputs, x = _input(keras, standardize=False)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="seed_cnn")


@register(
    "lenet",
    "Conv 32, Pool, Conv 64, Pool, Conv 64, Flatten, Dense 64, Dense 10: the TensorFlow CNN tutorial",
    optimizer="adam",
    learning_rate=1e-3,
    epochs=10,
    batch_size=64,
)
def lenet(num_classes: int = 10) -> Any:
    import keras

    inputs, x = _input(keras, standardize=False)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="lenet")


@register(
    "cnn",
    "Conv 32, Pool, Conv 64, Pool, Flatten, Dense 128, Dropout 0.5, Dense 10: the Keras 'simple MNIST convnet'",
    cpu_bf16=True,
    optimizer="adam",
    learning_rate=1e-3,
    epochs=15,
    batch_size=128,
)
def cnn(num_classes: int = 10) -> Any:
    import keras

    inputs, x = _input(keras, standardize=False)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="cnn")


@register(
    "speednet",
    "Conv 24 5x5, Pool, Conv 32 3x3, Pool, Dense 256, Dense 10: the 1-epoch MNIST speed-record network",
    cpu_bf16=True,
    optimizer="adam",
    learning_rate=1e-2,
    beta_1=0.7,  # the record's Adam betas; validation 99.22/99.06% (seeds 0/1) vs 98.86/99.04% with Keras' 0.9/0.999
    beta_2=0.9,
    schedule="onecycle",
    epochs=1,
    batch_size=256,
)
def speednet(num_classes: int = 10) -> Any:
    import keras

    inputs, x = _input(keras, standardize=True)
    x = keras.layers.Conv2D(24, 5, activation="relu")(x)  # 24x24x24
    x = keras.layers.MaxPooling2D(2)(x)  # 12x12
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)  # 10x10x32
    x = keras.layers.MaxPooling2D(2)(x)  # 5x5x32 = 800
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="speednet")


@register(
    "fastnet",
    "Crop to 24x24, Conv 16 5x5 stride 2, Conv 32 3x3, Pool, Dense 256, Dense 10: speednet made 2x cheaper",
    cpu_bf16=True,
    optimizer="adam",
    learning_rate=1e-2,
    beta_1=0.7,  # speednet's recipe (the speed record's)
    beta_2=0.9,
    schedule="onecycle",
    epochs=1,
    batch_size=256,
)
def fastnet(num_classes: int = 10) -> Any:
    """speednet's first stage (Conv 24 5x5 on 24x24 outputs, then a pool) took about 70% of each training
    step on 2 CPU cores, in memory traffic rather than arithmetic. Here the first conv strides by 2
    instead (10x10 outputs, no pool) with 16 filters, and a 2-pixel border is cropped first: MNIST's
    digits sit in the centre 20x20. A training step of 256 images: about 13 -> 7 ms in bf16. With label
    smoothing 0.1 one epoch scores as well as speednet without it (the `fast` preset; README)."""
    import keras

    inputs, x = _input(keras, standardize=True)
    x = keras.layers.Cropping2D(2)(x)  # 24x24
    x = keras.layers.Conv2D(16, 5, strides=2, activation="relu")(x)  # 10x10x16
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)  # 8x8x32
    x = keras.layers.MaxPooling2D(2)(x)  # 4x4x32 = 512
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="fastnet")


def _conv(keras: Any, x: Any, filters: int) -> Any:
    # No batch-norm: Keras' BatchNormalization (unfused ops) took more than half of each training step
    # on a TensorFlow CPU, and without it mixed bfloat16 runs 2.3x faster than float32 through AMX
    # (benchmarks/precision.py). Five conv layers with He initialisation train well without it.
    return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_uniform")(x)


@register(
    "digitnet",
    "digitrec's default: Conv 32, Pool, Conv 64 x2, Pool, Conv 128 x2, global average pooling, Dense 10",
    cpu_bf16=True,
    optimizer="adam",
    learning_rate=2e-3,
    schedule="onecycle",
    epochs=20,
    batch_size=256,
    augment=True,
    domain=8000,  # real-image training digits: 4,000 photos, 2,000 canvases, 2,000 bitmaps (realdata.py)
    negatives=10000,  # "not a digit" examples: the model can say an image holds no digit
)
def digitnet(num_classes: int = 10) -> Any:
    return _digitnet(num_classes, 64, "digitnet")


def _digitnet(num_classes: int, width: int, name: str) -> Any:
    # ``width``: filters of the middle block (the last has twice as many). 96 (611,082 parameters
    # against 278,474) read no more of cvl-valid: docs/experiments.md, "A wider digitnet".
    import keras

    inputs, x = _input(keras, standardize=True)
    x = _conv(keras, x, 32)  # 28x28x32: one input channel, so full resolution is cheap
    x = keras.layers.MaxPooling2D(2)(x)  # 14x14
    x = _conv(keras, x, width)
    x = _conv(keras, x, width)
    x = keras.layers.MaxPooling2D(2)(x)  # 7x7
    x = _conv(keras, x, 2 * width)
    x = _conv(keras, x, 2 * width)
    x = keras.layers.GlobalAveragePooling2D()(x)  # 2 x width
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name=name)


DEFAULT_MODEL = "digitnet"


def build_model(name: str, num_classes: int = 10, precision: str = "float32") -> Any:
    """Build a registered model. ``precision`` is "float32" or "bf16" (mixed bfloat16 compute)."""
    import keras

    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(MODELS)}")
    if precision not in ("float32", "bf16"):
        raise ModelError(f"precision must be 'float32' or 'bf16', got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        return MODELS[name].build(num_classes)
    finally:
        keras.config.set_dtype_policy(previous)


def to_float32(model: Any) -> Any:
    """The same model computing in float32: a copy when any layer computes in (b)float16, else itself.

    Mixed bfloat16 is a training speed-up. A model is saved, measured and exported in float32, which
    every runtime runs (ONNX Runtime has no bfloat16 kernels for most CPU ops) and which gives the
    same probabilities everywhere.
    """
    import keras

    config = model.to_json()
    mixed = ('"mixed_bfloat16"', '"mixed_float16"', '"bfloat16"', '"float16"')
    if not any(m in config for m in mixed):
        return model
    for m in mixed:
        config = config.replace(m, '"float32"')
    copy = keras.models.model_from_json(config)
    copy.set_weights(model.get_weights())
    return copy


def import_keras() -> Any:
    """``import keras``, quietly when asked to be: with TF_CPP_MIN_LOG_LEVEL at 2 or more (the CLI sets
    2), whatever TensorFlow's C++ code writes to stderr while it loads is dropped. TensorFlow 2.21
    prints its oneDNN notice, twice, whatever that level says (tensorflow/tensorflow#100442). A
    failed import still raises its Python exception; later messages (warnings, errors) still show.
    Callers that load Keras first call this; every later ``import keras`` finds it loaded."""
    import sys

    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    with _KERAS_IMPORT:  # one redirection at a time: a second would save and restore the muted stderr
        if "keras" in sys.modules or not level.isdigit() or int(level) < 2:
            import keras

            return keras
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            import keras
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
        return keras


_KERAS_IMPORT = threading.Lock()


# --- saving and loading --------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: Any, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Save ``model`` with ``metadata`` as one ``.keras`` file, atomically (temp file, fsync, rename).

    A kill at any moment leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: a model file must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.stem + "-", suffix=".keras")
    os.close(fd)
    usual_permissions(tmp)  # mkstemp makes 0600; a model file is as readable as any other file
    try:
        model.save(tmp)
        meta = {"format": "digitrec", "format_version": FORMAT_VERSION, **metadata}
        meta["content_sha256"] = content_sha256(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(METADATA_ENTRY, json.dumps(meta, indent=2, default=_json_default))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in model metadata")


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a .keras file's model entries (architecture, Keras metadata, weights), by name order.

    Stored in digitrec.json when saving and checked when loading, so a changed or damaged weight,
    config or metadata entry is refused. (The whole file's sha256 cannot be stored inside the file.)
    """
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if n != METADATA_ENTRY):
            h.update(name.encode() + b"\0")
            with z.open(name) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A run directory means its ``model.keras``; a file is itself."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.keras"
    if not p.is_file():
        raise ModelError(f"{path}: no model file there (expected a .keras file or a run directory with model.keras)")
    return p


# Sizes a model file's entries may inflate to, checked on the zip's directory before anything is read:
# a 1 MB file whose metadata inflates to 1 GB made `digitrec info` peak at 2.1 GB before it refused it.
# digitnet's metadata (with its training history) is about 40 KB and all its entries about 2 MB.
MAX_METADATA_BYTES = 16 * 1024 * 1024
MAX_MODEL_BYTES = 1024 * 1024 * 1024


def _check_entry_sizes(z: zipfile.ZipFile, path: Path) -> None:
    """Refuse a model file whose entries would inflate past the caps (zipfile reads no more than the
    sizes the directory declares, so these are the sizes that can reach memory)."""
    infos = z.infolist()
    total = sum(i.file_size for i in infos)
    if total > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: its entries inflate to {total} bytes, more than the {MAX_MODEL_BYTES} allowed")
    meta = next((i for i in infos if i.filename == METADATA_ENTRY), None)
    if meta is not None and meta.file_size > MAX_METADATA_BYTES:
        raise ModelError(
            f"{path}: its {METADATA_ENTRY} inflates to {meta.file_size} bytes, more than the {MAX_METADATA_BYTES} "
            "allowed: not a model digitrec saved"
        )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``digitrec.json`` entry of a saved model, without loading Keras."""
    p = resolve_model_path(path)
    try:
        with zipfile.ZipFile(p) as z:
            _check_entry_sizes(z, p)
            meta = json.loads(z.read(METADATA_ENTRY))
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{p}: not a readable .keras model file ({e})") from e
    except KeyError:
        raise ModelError(f"{p}: a Keras file without digitrec metadata; save models with digitrec") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{p}: corrupt digitrec metadata ({e})") from e
    if meta.get("format") != "digitrec":
        raise ModelError(f"{p}: not a digitrec model")
    expected = meta.get("content_sha256")
    if expected is None:
        raise ModelError(f"{p}: no content digest in its metadata (saved by an older digitrec): re-save it")
    try:
        actual = content_sha256(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{p}: not a readable .keras model file ({e})") from e
    if actual != expected:
        raise ModelError(f"{p}: corrupt or altered: its content sha256 is {actual}, its metadata says {expected}")
    return meta


def load_model(path: str | os.PathLike, compile: bool = False) -> tuple[Any, dict[str, Any]]:
    """Load a saved model and its metadata. Keras' safe_mode refuses Lambda layers and pickled code."""
    keras = import_keras()
    p = resolve_model_path(path)
    meta = read_metadata(p)
    try:
        model = keras.saving.load_model(p, compile=compile, safe_mode=True)
    except Exception as e:  # Keras raises many types for a broken file; the message is what matters
        raise ModelError(f"{p}: cannot load the model: {e}") from e
    return model, meta
