"""digitrec: handwritten digit recognition, from verified MNIST to predictions.

    import digitrec
    (x_train, y_train), (x_test, y_test) = digitrec.load_mnist()
    result = digitrec.train(model="cnn", epochs=3)
    recognizer = digitrec.load_recognizer(result.run_dir)
    recognizer.predict("seven.png").digit

Heavy modules (Keras and its backend) load on first use, not on import.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["TrainConfig", "evaluate", "load_dataset", "load_mnist", "load_recognizer", "train"]

_LAZY = {
    "load_mnist": "data",
    "load_dataset": "data",
    "train": "training.train",
    "TrainConfig": "training.train",
    "evaluate": "evaluate",
    "load_recognizer": "reading.recognizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")
