"""Load a trained model and answer: predict one digit, read a line of digits, reject what is not a digit.

The runtime that the CLI (and the API and UI) share. Every image goes through `images` first.
"""

from __future__ import annotations

import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..models import ModelError, file_sha256, load_model, read_metadata, resolve_model_path
from .images import (
    PREPROCESSING_COMPATIBLE,
    PREPROCESSING_VERSION,
    to_mnist,
)
from .results import DigitBox, Prediction, Reading, onnx_session
from .rules import RuleReader, RuleSettings

__all__ = [
    "DigitBox",
    "Prediction",
    "Reading",
    "Recognizer",
    "calibrated",
    "default_model_path",
    "digit_probabilities",
    "load_recognizer",
    "predict_probabilities",
    "turned",
]

BATCH = 1024  # images per forward pass when predicting many

# Test-time augmentation of `predict`'s answers: the digit probabilities are the mean over the field
# and two copies of it turned this many degrees either way (0: the field alone). On cvl-valid's
# unseen writers 97.44 -> 97.76% read right; three inferences a digit in one batch. `read` reads each
# digit once: on validation numbers it gained nothing and cost about 2 ms a number (docs/experiments.md,
# "Test-time augmentation"). A model may set its own ("tta_degrees").
TTA_DEGREES = 8.0


def predict_probabilities(model: Any, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, outputs) float32 probabilities, in batches, without training mode."""
    import keras

    out = []
    for i in range(0, len(x), batch_size):
        batch = np.asarray(x[i : i + batch_size], dtype="float32")
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)).astype("float32"))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), "float32")


def calibrated(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of softmax outputs: softmax(log(p) / T). T > 1 softens overconfident answers,
    T < 1 sharpens underconfident ones (label smoothing makes a model underconfident). The ranking of
    the classes of an image, and so every answer, stays the same."""
    if temperature == 1.0:
        return p
    z = np.log(np.maximum(p, 1e-30)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def digit_probabilities(p: np.ndarray, num_digits: int = 10) -> np.ndarray:
    """Drop a "not a digit" column, if any, and renormalize: the digit probabilities given a digit."""
    if p.shape[1] == num_digits:
        return p
    d = p[:, :num_digits]
    return d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12)


def turned(x: np.ndarray, degrees: float) -> np.ndarray:
    """Each 28x28 field of ``x`` (n, 28, 28) turned by ``degrees`` (anticlockwise) about its centre."""
    import cv2

    m = cv2.getRotationMatrix2D((13.5, 13.5), degrees, 1.0)
    return np.stack([cv2.warpAffine(f, m, (28, 28), flags=cv2.INTER_LINEAR) for f in x]) if len(x) else x


def default_model_path() -> Path | None:
    """The model shipped inside the package, if this build has one."""
    p = resources.files("digitrec") / "assets" / "default.keras"
    return Path(str(p)) if p.is_file() else None


class Recognizer:
    """A loaded model with its metadata. Build it with `load_recognizer`.

    ``run`` maps float32 pixels (n, 28, 28) to the model's probabilities (n, outputs): ONNX Runtime or
    Keras. They are then calibrated with the temperature fitted on validation data at training
    (metadata "temperature"; 1 for models saved before it existed).

    ``tta``: degrees of the test-time augmentation of the digit answer (see `TTA_DEGREES`); None:
    the model's own ("tta_degrees"), else `TTA_DEGREES`; 0: none.
    """

    def __init__(
        self,
        run: Any,
        metadata: dict[str, Any],
        path: Path,
        engine: str = "keras",
        line_reader: Any = None,
        tta: float | None = None,
    ) -> None:
        self.run = run
        self.line_reader = line_reader  # a `lines.LineReader` that `read` uses; None: the rule-based reader
        if line_reader is not None and line_reader.classifier is None:
            line_reader.classifier = self.read_once  # reads each digit the line reader found again
        self.engine = engine
        self.metadata = metadata
        self.path = path
        self.class_names: list[str] = list(metadata.get("class_names") or [str(i) for i in range(10)])
        self.num_digits = len(self.class_names)
        self.reject_class: int | None = metadata.get("reject_class")
        self.reject_threshold: float = float(metadata.get("reject", {}).get("threshold", 1.0))
        self.temperature: float = float(metadata.get("temperature", 1.0))
        self.tta = float(metadata.get("tta_degrees", TTA_DEGREES) if tta is None else tta)
        if not 0 <= self.tta <= 45:
            raise ModelError(f"test-time augmentation must be 0 to 45 degrees, got {self.tta:g}")
        # The preprocessing its training images took (`images.PREPROCESSING_VERSION`); models saved
        # before it was recorded were trained with today's.
        self.preprocessing_version = int(metadata.get("preprocessing_version", PREPROCESSING_VERSION))
        if not PREPROCESSING_COMPATIBLE <= self.preprocessing_version <= PREPROCESSING_VERSION:
            warnings.warn(
                f"{path}: trained on images preprocessed by version {self.preprocessing_version} of digitrec's "
                f"preprocessing, and this digitrec preprocesses by version {PREPROCESSING_VERSION}: it may read "
                "real images less well than its card says; retrain it, or read with the digitrec that made it",
                stacklevel=2,
            )
        # What `read_rules` weighs the model's answers with, checked here so a bad setting fails the load.
        self.rule_settings = RuleSettings.from_metadata(metadata)

    def __repr__(self) -> str:
        return (
            f"Recognizer({self.metadata.get('architecture', '?')!r}, path={str(self.path)!r}, engine={self.engine!r})"
        )

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        out = [self.run(np.asarray(x[i : i + BATCH], np.float32)) for i in range(0, len(x), BATCH)]
        p = np.concatenate(out) if out else np.zeros((0, self.num_digits), np.float32)
        return calibrated(p, self.temperature)

    # --- arrays ---------------------------------------------------------------------------------

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"expected MNIST-format arrays of shape (n, 28, 28), got {x.shape}")
        if x.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels 0-255 (white digit on black), got dtype {x.dtype}")
        return x

    def scores(self, x: np.ndarray, tta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """MNIST-format digits -> (digit probabilities (n, 10), "not a digit" probability (n,)).

        With test-time augmentation (``tta`` degrees, None: the recognizer's own) the digit
        probabilities are the mean over each field and two copies turned ``tta`` degrees either way,
        read in one batch; P(not a digit) is the field's own, so the rejection threshold chosen at
        training keeps its meaning."""
        x = self._check(x)
        n = len(x)
        tta = self.tta if tta is None else tta
        if tta:
            x = np.concatenate([x, turned(x, -tta), turned(x, tta)])
        p = self._probabilities(x)
        reject = p[:n, self.reject_class] if self.reject_class is not None else np.zeros(n, np.float32)
        digits = digit_probabilities(p, self.num_digits)
        if tta:
            digits = (digits[:n] + digits[n : 2 * n] + digits[2 * n :]) / np.float32(3)
        return digits, reject

    def read_once(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`scores` without test-time augmentation: what the line readers weigh each digit with."""
        return self.scores(x, tta=0)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """MNIST-format digits, uint8 (n, 28, 28) or one (28, 28) -> digit probabilities (n, 10)."""
        return self.scores(x)[0]

    def _answer(self, probs: np.ndarray, reject: float, empty: bool, threshold: float | None = None) -> Prediction:
        values = [float(v) for v in probs]
        if empty:
            return Prediction(None, 1.0, values, "no ink found: the image is blank")
        if reject >= (self.reject_threshold if threshold is None else threshold):
            return Prediction(None, float(reject), values, "not a digit")
        k = int(np.argmax(probs))
        return Prediction(k, float(probs[k] * (1.0 - reject)), values)

    # --- images ---------------------------------------------------------------------------------

    def predict(self, image: Any, name: str | None = None) -> Prediction:
        """A file path, bytes, PIL image or array holding one digit -> the digit, or None if there is none."""
        return self.predict_preprocessed(to_mnist(image, name))  # what the model sees: `digitrec preprocess`

    def predict_preprocessed(self, field_: np.ndarray) -> Prediction:
        """One image already through `images.to_mnist` (uint8 (28, 28)) -> the same answer as `predict`
        gives for the image; for callers that also show what the model saw, without preprocessing twice."""
        if np.shape(field_) != (28, 28):
            raise ValueError(f"expected one preprocessed image of shape (28, 28), got {np.shape(field_)}")
        probs, reject = self.scores(field_)
        return self._answer(probs[0], float(reject[0]), empty=not np.any(field_))

    def read(self, image: Any, name: str | None = None) -> Reading:
        """Read a line of digits left to right. Lines one above the other (`images.split_lines`) are
        read apart, top to bottom: ``text`` holds them separated by a newline, ``digits`` line by line.

        With a line reader (the shipped one by default, see `load_recognizer`) each line is read whole
        by its network (`lines.LineReader`); otherwise by `read_rules`."""
        if self.line_reader is not None:
            return self.line_reader.read(image, name)
        return self.read_rules(image, name)

    def read_rules(self, image: Any, name: str | None = None) -> Reading:
        """The rule-based reader (`rules.RuleReader`): each line cut into digits by connected components
        and rules, each piece read by the digit model, with the settings stored in the model."""
        return RuleReader(self).read(image, name)


ENGINES = ("auto", "onnx", "keras")


ONNX_SOURCE_KEY = "digitrec_keras_sha256"  # ONNX metadata: the sha256 of the .keras file it was made from


def _onnx_runner(keras_path: Path, required: bool = False) -> Any | None:
    """An ONNX Runtime runner for the ``.onnx`` twin of ``keras_path``, if one exists and matches it.

    A twin that ONNX Runtime cannot load (truncated, corrupt) is passed over, so the model runs in
    Keras, unless ``required``: then it is a `ModelError`.
    """
    onnx_path = keras_path.with_suffix(".onnx")
    if not onnx_path.is_file():
        return None
    try:
        session = onnx_session(onnx_path, threads=int(os.environ.get("DIGITREC_THREADS", "0")) or None)
    except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
        if required:
            raise ModelError(f"{onnx_path}: ONNX Runtime cannot load it ({e}); export it again") from e
        return None
    source = session.get_modelmeta().custom_metadata_map.get(ONNX_SOURCE_KEY)
    if source != file_sha256(keras_path):
        return None  # a stale export: it was made from another version of the model
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _line_reader(reader: str | os.PathLike | None, model: Path) -> Any:
    """The line reader `load_recognizer` attaches: see its ``reader``."""
    from .lines import default_line_model_path, load_line_reader

    if reader is None or str(reader) == "rules":
        return None
    if str(reader) != "auto":
        return load_line_reader(reader)
    for own in (model.parent / "lines.onnx", model.parent / "lines.keras"):
        if own.is_file():
            return load_line_reader(own)
    shipped = default_line_model_path()
    return load_line_reader(shipped) if shipped is not None else None


def load_recognizer(
    path: str | os.PathLike | None = None,
    engine: str = "auto",
    reader: str | os.PathLike | None = "auto",
    tta: float | None = None,
) -> Recognizer:
    """Load a model file or run directory; ``None`` means the default model shipped with the package.

    ``engine``: "onnx" runs the model's ONNX twin (``model.onnx`` beside ``model.keras``, made by
    `digitrec export`) with ONNX Runtime, without importing TensorFlow; "keras" runs it in Keras;
    "auto" (default) uses ONNX when a matching twin exists.

    ``reader``: what `Recognizer.read` reads lines with. "auto" (default): a line model beside the
    model (``lines.onnx`` or ``lines.keras`` in its folder, as `digitrec train-reader` writes), else
    the one shipped with the package, else the rule-based reader; "rules": the rule-based reader; a
    path: that line model.

    ``tta``: degrees of test-time augmentation of the digit answers (`Recognizer`); None: $DIGITREC_TTA
    if set, else the model's own, else `TTA_DEGREES`; 0 turns it off (a third of the inference).
    """
    if engine not in ENGINES:
        raise ModelError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if path is None:
        path = default_model_path()
        if path is None:
            raise ModelError(
                "this build of digitrec ships no default model: train one with "
                "`digitrec train --out runs/mine` and pass --model runs/mine"
            )
    p = resolve_model_path(path)
    if tta is None and os.environ.get("DIGITREC_TTA"):
        try:
            tta = float(os.environ["DIGITREC_TTA"])
        except ValueError:
            raise ModelError(f"DIGITREC_TTA must be a number of degrees, got {os.environ['DIGITREC_TTA']!r}") from None
    if engine in ("auto", "onnx"):
        meta = read_metadata(p)
        run = _onnx_runner(p, required=engine == "onnx")
        if run is not None:
            return Recognizer(run, meta, p, "onnx", _line_reader(reader, p), tta)
        if engine == "onnx":
            raise ModelError(f"{p}: no ONNX twin made from this model; run `digitrec export --model {p}` first")
    model, meta = load_model(p)
    return Recognizer(lambda x: predict_probabilities(model, x), meta, p, "keras", _line_reader(reader, p), tta)
