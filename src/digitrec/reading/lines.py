"""The learned line reader: a line of handwriting -> a digit string, without cutting it into digits.

A small convolutional network reads the line's ink, normalised to a strip STRIP_HEIGHT pixels
high, and gives, for every STRIDE columns, the probabilities of the ten digits and of "nothing
here" (the CTC blank). The string is the best path's digits with repeats merged (greedy CTC
decoding); each digit's box is the ink around the columns where it was read. It imports NumPy,
OpenCV and ONNX Runtime only (Keras for a model without its ONNX twin); training lives in
`line_training`.

    reader = load_line_reader()           # the reader shipped with the package
    reader.read("zip.jpg")                # Reading(text='90210', digits=[...], confidence=0.99)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .images import InkImage, line_ink_image, split_lines

__all__ = ["BLANK", "STRIDE", "STRIP_HEIGHT", "LineReader", "Strip", "default_line_model_path", "load_line_reader"]

STRIP_HEIGHT = 32  # pixels: the line's ink box is scaled to INK_HEIGHT and centred in this height
INK_HEIGHT = 28  # MNIST's digits are 20 of 28 px; a line's box also holds slant and baseline wander
DIGIT_HEIGHT = 24  # about how high a digit is in the strip (its box also holds baseline wander)
PAD = 8  # blank columns before and after the line: the first digit's frames need context too
STRIDE = 4  # columns of the strip per output frame (two 2x2 poolings)
BLANK = 10  # the CTC blank's index; digits are 0-9
MAX_STRIP_WIDTH = 2048  # a longer line (about 100 digits) is shrunk to fit: bounds memory and time
CLASSIFIER_WEIGHT = 1.0  # see `LineReader.classifier`
WIDE_PART = 1.5  # a component this many times as wide as a digit's columns holds more than that digit
# Ink scaled to [0, 1] by this percentile of the line's ink pixels: pens, pencils and photos give the
# ink map different strengths; the network sees one.
INK_PERCENTILE = 95


@dataclass(frozen=True)
class Strip:
    """One line's ink as the network reads it, and how to map its columns back to the image."""

    pixels: np.ndarray  # float32 (STRIP_HEIGHT, width) in [0, 1], white ink on black
    factor: float  # strip pixels per working-image pixel
    ink: np.ndarray  # the working image's ink map in the line's box, its own ink only (for boxes)
    mask: np.ndarray  # bool, the same box: the line's ink pixels
    box: tuple[int, int, int, int]  # the line's ink box (x, y, w, h) in the working image
    labels: np.ndarray  # int32, the same box: each ink pixel's component (`InkImage.labels`), else 0
    parts: tuple[tuple[int, int, int], ...]  # each component: (label, first column, end column) in the box


def strip_pixels(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """A line's ink cropped to its box (float, white on black, any scale) -> the strip the network
    reads (float32 (STRIP_HEIGHT, width)) and the scale used (strip pixels per ink pixel).

    The one normalisation of training and reading: `line_training` synthesises lines at any size and
    passes them through here, as reading passes a photo's ink map."""
    import cv2

    h, w = ink.shape
    f = INK_HEIGHT / max(h, 1)
    if w * f > MAX_STRIP_WIDTH - 2 * PAD:
        f = (MAX_STRIP_WIDTH - 2 * PAD) / w
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    small = cv2.resize(ink.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    top = (STRIP_HEIGHT - nh) // 2
    width = nw + 2 * PAD
    width += -width % STRIDE
    out = np.zeros((STRIP_HEIGHT, width), np.float32)
    out[top : top + nh, PAD : PAD + nw] = small
    inked = out[out > 0.05]
    if inked.size:
        out /= max(float(np.percentile(inked, INK_PERCENTILE)), 0.05)
    np.clip(out, 0.0, 1.0, out=out)
    return _stroke_normalised(out), f


def _stroke_normalised(strip: np.ndarray) -> np.ndarray:
    """Strokes far thicker than a pen's at this height (a fat canvas brush) thinned into MNIST's
    range, by the rules of `images.digit_to_mnist`. (Nothing is grown: at 28 pixels a line's thinnest
    stroke, scaled to full strength, already measures about 1.9 pixels, MNIST's range at this height.)"""
    import cv2

    from .images import MNIST_STROKE, THIN_ABOVE, THIN_AT_MOST, THIN_TO, stroke_width

    mask = strip > 0.3
    if not mask.any():
        return strip
    width = stroke_width(mask)
    target = MNIST_STROKE * DIGIT_HEIGHT
    if width > THIN_ABOVE * target:
        r = max(1, round(min(width - THIN_TO * target, THIN_AT_MOST * target) / 2))
        thinned = cv2.erode(strip, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        return thinned if thinned.max() > 0.5 else strip  # never erase the line
    return strip


def line_strip(ii: InkImage) -> Strip | None:
    """One line of an `InkImage` (its kept components) as a `Strip`; None when it holds no ink."""
    import cv2

    if not ii.components:
        return None
    x0 = min(c.x for c in ii.components)
    y0 = min(c.y for c in ii.components)
    x1 = max(c.x + c.w for c in ii.components)
    y1 = max(c.y + c.h for c in ii.components)
    labels = [lab for c in ii.components for lab in c.labels]
    box_labels = ii.labels[y0:y1, x0:x1]
    mask = np.isin(box_labels, labels)
    # The mask's edge pixels keep their soft border (anti-aliasing, blur) as the synthetic lines have it.
    soft = cv2.dilate(mask.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ink = np.where(soft, ii.ink[y0:y1, x0:x1], 0.0).astype(np.float32)
    pixels, f = strip_pixels(ink)
    parts = tuple((c.labels[0], c.x - x0, c.x + c.w - x0) for c in ii.components)  # one label each
    return Strip(pixels, f, ink, mask, (x0, y0, x1 - x0, y1 - y0), np.where(mask, box_labels, 0), parts)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ctc_greedy(probs: np.ndarray) -> list[tuple[int, int, int, float]]:
    """Frame probabilities (frames, 11) -> the best path's digits: (digit, first frame, last frame,
    confidence), where a digit's confidence is its highest probability over its frames."""
    best = probs.argmax(axis=1)
    out: list[tuple[int, int, int, float]] = []
    prev = BLANK
    for t, k in enumerate(best):
        k = int(k)
        if k != BLANK:
            if k == prev:
                d, a, _, c = out[-1]
                out[-1] = (d, a, t, max(c, float(probs[t, k])))
            else:
                out.append((k, t, t, float(probs[t, k])))
        prev = k
    return out


def default_line_model_path() -> Path | None:
    """The line reader shipped inside the package, if this build has one."""
    p = resources.files("digitrec") / "assets" / "lines.onnx"
    return Path(str(p)) if p.is_file() else None


class LineReader:
    """A loaded line model. ``run`` maps strips (1, STRIP_HEIGHT, width, 1) to logits (1, width / STRIDE, 11).

    ``min_confidence``: a line whose least sure digit is below this reads nothing (not a number);
    chosen on validation at training and stored in the model's metadata.
    """

    def __init__(self, run: Any, metadata: dict[str, Any], path: Path, classifier: Any = None) -> None:
        self.run = run
        self.metadata = metadata
        self.path = path
        self.min_confidence = float(metadata.get("min_confidence", 0.5))
        # A digit model (`Recognizer.read_once`: MNIST fields -> digit probabilities, P(not a digit)) that
        # reads each digit the line reader found again, in its columns; the two opinions are multiplied
        # (CLASSIFIER_WEIGHT). None: the line reader alone.
        self.classifier = classifier
        # Settings of the model, in its metadata; today's values for a model saved without them.
        self.classifier_weight = float(metadata.get("classifier_weight", CLASSIFIER_WEIGHT))
        self.wide_part = float(metadata.get("wide_part", WIDE_PART))

    def __repr__(self) -> str:
        return f"LineReader(path={str(self.path)!r})"

    def frame_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """One strip (STRIP_HEIGHT, width) -> frame probabilities (width / STRIDE, 11)."""
        logits = self.run(np.ascontiguousarray(pixels[None, :, :, None], np.float32))
        return softmax(np.asarray(logits, np.float32)[0])

    def read_strip(self, strip: Strip, scale: float) -> tuple[str, list[Any], float]:
        """One line -> (text, digit boxes in image pixels, the string's confidence). ``scale``:
        working-image pixels per image pixel."""
        from .results import DigitBox

        probs = self.frame_probabilities(strip.pixels)
        path = ctc_greedy(probs)
        if not path:
            return "", [], float(probs[:, BLANK].min()) if len(probs) else 1.0
        # A digit's columns: from halfway to the previous digit's frames to halfway to the next's.
        centres = [(a + b + 1) / 2 * STRIDE for _, a, b, _ in path]  # strip columns
        edges = [0.0] + [(centres[i] + centres[i + 1]) / 2 for i in range(len(path) - 1)] + [1e9]
        bx, by, bw, bh = strip.box
        spans = []
        for i in range(len(path)):
            lo = int(np.clip((edges[i] - PAD) / strip.factor, 0, bw))
            spans.append((lo, int(np.clip(np.ceil((edges[i + 1] - PAD) / strip.factor), lo + 1, bw))))
        answers = [(d, c) for d, _, _, c in path]
        if self.classifier is not None and self.classifier_weight > 0:
            answers = self._with_classifier(strip, probs, path, spans)
        # The line's confidence: its least sure digit's, after the second reading. Below the threshold it
        # is no number (letters, clothing, doodles mostly give no path at all, or a short unsure one).
        confidence = min(c for _, c in answers)
        if confidence < self.min_confidence:
            return "", [], confidence
        digits = []
        for (d, c), (lo, hi) in zip(answers, spans, strict=True):
            part = strip.mask[:, lo:hi]
            cols, rows = np.flatnonzero(part.any(axis=0)), np.flatnonzero(part.any(axis=1))
            if len(cols) and len(rows):
                x, y, w, h = bx + lo + cols[0], by + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
            else:
                x, y, w, h = bx + lo, by, hi - lo, bh
            box = tuple(round(v / scale) for v in (x, y, w, h))
            digits.append(DigitBox(d, c, box))  # type: ignore[arg-type]
        text = "".join(str(d) for d, _ in answers)
        return text, digits, confidence

    def _with_classifier(
        self, strip: Strip, probs: np.ndarray, path: list[tuple[int, int, int, float]], spans: list[tuple[int, int]]
    ) -> list[tuple[int, float]]:
        """Each digit of the path read again by the digit model in its columns: (digit, probability)
        from the product of the line reader's distribution (at the digit's surest frame) and the
        model's, the latter raised to ``classifier_weight``."""
        from .images import digit_to_mnist

        fields = np.stack([digit_to_mnist(strip.ink, self._digit_mask(strip, lo, hi)) for lo, hi in spans])
        p_model, _ = self.classifier(fields)
        out = []
        for k, (d, a, b, _) in enumerate(path):
            t = a + int(np.argmax(probs[a : b + 1, d]))
            q = probs[t, :BLANK] / max(float(probs[t, :BLANK].sum()), 1e-9)
            joint = q * np.power(np.maximum(p_model[k], 1e-9), self.classifier_weight)
            joint /= joint.sum()
            best = int(np.argmax(joint))
            out.append((best, float(joint[best])))
        return out

    def _digit_mask(self, strip: Strip, lo: int, hi: int) -> np.ndarray:
        """The ink of the digit read in the box's columns [lo, hi): whole the components centred there
        (a 5's flag, a slanted digit's ends past its columns), and of a component much wider than the
        columns (touching digits) only its part in them; a neighbour's ink reaching in stays out."""
        mask = np.zeros(strip.mask.shape, bool)
        for label, c0, c1 in strip.parts:
            if c1 <= lo or c0 >= hi:
                continue
            if c1 - c0 > self.wide_part * (hi - lo):
                mask[:, lo:hi] |= strip.labels[:, lo:hi] == label
            elif lo <= (c0 + c1) / 2 < hi:
                mask[:, c0:c1] |= strip.labels[:, c0:c1] == label
        if not mask.any():  # no component centred here: the columns' ink, whatever it belongs to
            mask[:, lo:hi] = strip.mask[:, lo:hi]
        return mask

    def read(self, image: Any, name: str | None = None) -> Any:
        """A file path, bytes, PIL image or array holding one or more lines of digits -> a `Reading`
        (lines top to bottom, separated by a newline in ``text``)."""
        from .images import ImageError, input_name
        from .results import MAX_MARKS, Reading

        ii, (ox, oy) = line_ink_image(image, name)
        if len(ii.components) > MAX_MARKS:
            raise ImageError(
                f"{input_name(image, name)}: {len(ii.components)} separate marks, more than `read` takes in "
                f"one image (at most {MAX_MARKS}, in all its lines): is this a page of text or a texture?"
            )
        texts, digits, confidences = [], [], []
        for part in split_lines(ii):
            strip = line_strip(part)
            if strip is None:
                continue
            text, boxes, confidence = self.read_strip(strip, ii.scale)
            if ox or oy:  # read from a part of the image (a small number on a page): its boxes in the image
                boxes = [replace(b, box=(b.box[0] + round(ox), b.box[1] + round(oy), *b.box[2:])) for b in boxes]
            if text:
                texts.append(text)
                digits += boxes
                confidences.append(confidence)
        return Reading("\n".join(texts), digits, min(confidences) if confidences else None)


def _keras_runner(path: Path) -> tuple[Any, dict[str, Any]]:
    from ..models import load_model, to_float32

    model, meta = load_model(path)
    model = to_float32(model)
    return (lambda x: np.asarray(model(x, training=False))), meta


def load_line_reader(path: str | os.PathLike | None = None) -> LineReader:
    """Load a line model: an ``.onnx`` file (run with ONNX Runtime; its settings in its metadata), a
    ``.keras`` file (its ONNX twin when one matches it, else Keras) or a run directory holding
    ``lines.keras``. ``None``: the reader shipped with the package."""
    import json

    from ..models import ModelError

    if path is None:
        path = default_line_model_path()
        if path is None:
            raise ModelError("this build of digitrec ships no line reader: train one with `digitrec train-reader`")
    p = Path(path)
    if p.is_dir():
        p = p / "lines.keras"
    if p.suffix == ".keras" and p.with_suffix(".onnx").is_file():
        p = p.with_suffix(".onnx")
    if not p.is_file():
        raise ModelError(f"{p}: no such line model")
    if p.suffix == ".onnx":
        from .results import onnx_session

        try:
            session = onnx_session(p, threads=int(os.environ.get("DIGITREC_THREADS", "0")) or None)
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise ModelError(f"{p}: ONNX Runtime cannot load it ({e})") from e
        meta = json.loads(session.get_modelmeta().custom_metadata_map.get("digitrec", "{}"))
        name = session.get_inputs()[0].name
        return LineReader(lambda x: session.run(None, {name: x})[0], meta, p)
    run, meta = _keras_runner(p)
    return LineReader(run, meta, p)
