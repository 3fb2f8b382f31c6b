"""Load a trained model and predict: the runtime that the CLI (and later the API and UI) share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .models import ModelError, load_model, resolve_model_path

__all__ = ["Prediction", "Recognizer", "default_model_path", "load_recognizer", "predict_probabilities"]

BATCH = 1024  # images per forward pass when predicting many


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the most likely class, its probability, and all class probabilities."""

    digit: int
    confidence: float
    probabilities: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"digit": self.digit, "confidence": self.confidence, "probabilities": self.probabilities}


def predict_probabilities(model: Any, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, classes) float32 probabilities, in batches, without training mode."""
    import keras

    out = []
    for i in range(0, len(x), batch_size):
        batch = np.asarray(x[i : i + batch_size], dtype="float32")
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)).astype("float32"))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), "float32")


def default_model_path() -> Path | None:
    """The model shipped inside the package, if this build has one."""
    p = resources.files("digitrec") / "assets" / "default.keras"
    return Path(str(p)) if p.is_file() else None


class Recognizer:
    """A loaded model with its metadata. Build it with `load_recognizer`."""

    def __init__(self, model: Any, metadata: dict[str, Any], path: Path) -> None:
        self.model = model
        self.metadata = metadata
        self.path = path
        self.class_names: list[str] = list(metadata.get("class_names") or [str(i) for i in range(10)])

    def __repr__(self) -> str:
        return f"Recognizer({self.metadata.get('architecture', '?')!r}, path={str(self.path)!r})"

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """MNIST-format digits, uint8 (n, 28, 28) or one (28, 28) -> probabilities (n, classes)."""
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"expected MNIST-format arrays of shape (n, 28, 28), got {x.shape}")
        if x.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels 0-255 (white digit on black), got dtype {x.dtype}")
        return predict_probabilities(self.model, x)

    def predict(self, image: Any) -> Prediction:
        """A file path, bytes, PIL image or array -> the digit, its probability, all probabilities."""
        from .images import to_mnist

        p = self.predict_arrays(to_mnist(image))[0]
        k = int(p.argmax())
        return Prediction(digit=k, confidence=float(p[k]), probabilities=[float(v) for v in p])


def load_recognizer(path: str | os.PathLike | None = None) -> Recognizer:
    """Load a model file or run directory; ``None`` means the default model shipped with the package."""
    if path is None:
        path = default_model_path()
        if path is None:
            raise ModelError(
                "this build of digitrec ships no default model yet: train one with "
                "`digitrec train --out runs/mine` and pass --model runs/mine"
            )
    p = resolve_model_path(path)
    model, meta = load_model(p)
    return Recognizer(model, meta, p)
