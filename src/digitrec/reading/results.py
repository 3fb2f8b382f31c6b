"""What reading answers (`Prediction`, `DigitBox`, `Reading`), the ONNX Runtime sessions that compute
it, and the bound on a reading's work: shared by the digit recognizer and the line reader."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

# A line of digits holds at most this many marks (a line 640 working pixels long holds about 100
# digits 6 px high, the least `segment` keeps). A 2 KB PNG of thousands of ticks took `read` 10-27 s
# (every mark is fitted and scored on its own): more marks than this are refused at once. The
# slowest image found under the bound, 92 ticks as tall as the image (each thickened at full size
# to MNIST's stroke width), takes about 4.5 s. The bound is on the marks of all of an image's lines
# together (the time goes by marks).
MAX_MARKS = 100


@dataclass(frozen=True)
class Prediction:
    """One image's answer. ``digit`` is None when the image holds no digit (``reason`` says why).

    ``probabilities`` are the ten digit probabilities given that it is a digit (they sum to 1);
    ``confidence`` is the probability of the answer given: the digit, or "not a digit".
    """

    digit: int | None
    confidence: float
    probabilities: list[float]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"digit": self.digit, "confidence": self.confidence, "probabilities": self.probabilities}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass(frozen=True)
class DigitBox:
    """One digit of a line: the digit, its confidence and its box (x, y, w, h) in image pixels."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"digit": self.digit, "confidence": self.confidence, "box": list(self.box)}


@dataclass(frozen=True)
class Reading:
    """A line of handwritten digits read left to right (lines one above the other: top to bottom,
    separated in ``text`` by a newline)."""

    text: str
    digits: list[DigitBox] = field(default_factory=list)
    confidence: float | None = None  # of the whole text (its least sure line); None when nothing was read

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "confidence": self.confidence, "digits": [d.to_dict() for d in self.digits]}


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime session for serving: CPU, with a bounded thread pool."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
