"""Load a trained model and answer: predict one digit, read a line of digits, reject what is not a digit.

The runtime that the CLI (and the API and UI) share. Every image goes through `images` first.
"""

from __future__ import annotations

import itertools
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..models import ModelError, file_sha256, load_model, read_metadata, resolve_model_path
from .images import (
    ONE_LIKE,
    PREPROCESSING_VERSION,
    Component,
    ImageError,
    InkImage,
    elongation,
    group_mask,
    group_to_mnist,
    ink_image,
    input_name,
    merge_components,
    segment,
    split_lines,
    to_mnist,
)
from .results import MAX_MARKS, DigitBox, Prediction, Reading, onnx_session

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
]

BATCH = 1024  # images per forward pass when predicting many
# A group wider than this times its height, or than the line's, may be touching digits (two narrow
# ones: "65"). A 1 is taller than most digits, so a 1 touching an 8 makes a group narrow for its own
# height (0.72) but not for the line's (1.03): measured against its own height alone, "18" read "8".
# On 2,500 numbers of MNIST validation digits: 2,400 -> 2,405 right (seeds 1 and 2 of the shipped
# model's recipe: +6 each), none broken.
WIDE = 0.85
# In a line of digits, segmentation has already dropped specks, and a digit-sized mark is most likely
# a digit: `read` drops a mark only when the model is at least this sure it is not one. On 2,500
# numbers of MNIST validation digits, every mark dropped at 0.8 was a real digit as tall as the line
# (an odd 1 or 4, read right, P(not a digit) 0.83-0.93): 0.8 -> 0.95 read 2,390 -> 2,396 right with the
# shipped model (seeds 1 and 2 of its recipe: +4, +1; 0.99: +6, +5, +2); it keeps 4.0% of 1,000
# validation non-digits instead of 1.7% (0.99: 8.0%), were they marks in the line.
READ_REJECT = 0.95
# A "1" is as tall as the digits around it; a bar under half the line's median height read as "1" is
# a fragment. On 500 numbers of MNIST validation digits: 477 -> 480 right (0.6 and 0.7: also 480); on
# another 150, 142 either way.
SHORT_ONE = 0.5
# Without other digits beside it, a mark is not presumed to be one (READ_REJECT's reason is gone): a
# line of one mark reads nothing when the model's P(not a digit) for the whole mark beats the best
# reading's score by a third (LONE_MARGIN times it is higher). Cut into slivers, a shoe, a letter or
# a doodle read as sure 1s and 7s ("1111"). And a line where more than LINE_REJECT of the digits read
# have a P(not a digit) at `predict`'s threshold or above is no line of digits. On validation images
# (a one-off measurement, 2026-11-23, see docs/experiments.md): of 800 non-digits (Fashion-MNIST items
# held out from training, letters in the validation fonts, doodles, blank pages), `read` answered
# digits for 533 before, 163 now (with LONE_MARGIN 1.0: 105, but 34 of 600 photographed groups of two
# or three touching validation digits read nothing; 0.5: 190); those 600 groups 551 right before and
# after, 2,500 numbers 2,407 before and after, 1,000 lone photographed digits 988 -> 986 (the two
# `predict` rejects too), 1,000 canvases 984.
LONE_MARGIN = 0.75
LINE_REJECT = 0.5


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


def default_model_path() -> Path | None:
    """The model shipped inside the package, if this build has one."""
    p = resources.files("digitrec") / "assets" / "default.keras"
    return Path(str(p)) if p.is_file() else None


class Recognizer:
    """A loaded model with its metadata. Build it with `load_recognizer`.

    ``run`` maps float32 pixels (n, 28, 28) to the model's probabilities (n, outputs): ONNX Runtime or
    Keras. They are then calibrated with the temperature fitted on validation data at training
    (metadata "temperature"; 1 for models saved before it existed).
    """

    def __init__(
        self, run: Any, metadata: dict[str, Any], path: Path, engine: str = "keras", line_reader: Any = None
    ) -> None:
        self.run = run
        self.line_reader = line_reader  # a `lines.LineReader` that `read` uses; None: the rule-based reader
        if line_reader is not None and line_reader.classifier is None:
            line_reader.classifier = self.scores  # reads each digit the line reader found again
        self.engine = engine
        self.metadata = metadata
        self.path = path
        self.class_names: list[str] = list(metadata.get("class_names") or [str(i) for i in range(10)])
        self.num_digits = len(self.class_names)
        self.reject_class: int | None = metadata.get("reject_class")
        self.reject_threshold: float = float(metadata.get("reject", {}).get("threshold", 1.0))
        self.temperature: float = float(metadata.get("temperature", 1.0))
        # The preprocessing its training images took (`images.PREPROCESSING_VERSION`); models saved
        # before it was recorded were trained with today's.
        self.preprocessing_version = int(metadata.get("preprocessing_version", PREPROCESSING_VERSION))
        if self.preprocessing_version != PREPROCESSING_VERSION:
            warnings.warn(
                f"{path}: trained on images preprocessed by version {self.preprocessing_version} of digitrec's "
                f"preprocessing, and this digitrec preprocesses by version {PREPROCESSING_VERSION}: it may read "
                "real images less well than its card says; retrain it, or read with the digitrec that made it",
                stacklevel=2,
            )

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

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MNIST-format digits -> (digit probabilities (n, 10), "not a digit" probability (n,))."""
        p = self._probabilities(self._check(x))
        reject = p[:, self.reject_class] if self.reject_class is not None else np.zeros(len(p), np.float32)
        return digit_probabilities(p, self.num_digits), reject

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
        """The rule-based reader: each line cut into digits by connected components and rules (strokes
        joined, touching digits split, specks ignored), each piece read by the digit model."""
        ii = ink_image(image, name, line=True)
        lines = [(part, segment(part)) for part in split_lines(ii)]
        marks = sum(len(groups) for _, groups in lines)
        if marks > MAX_MARKS:
            raise ImageError(
                f"{input_name(image, name)}: {marks} separate marks, more than `read` takes in one image "
                f"(at most {MAX_MARKS}, in all its lines): is this a page of text or a texture?"
            )
        texts, digits = [], []
        for part, groups in lines:
            line = self._read_line(part, groups)
            if line:
                texts.append("".join(str(d.digit) for d in line))
                digits += line
        return Reading("\n".join(texts), digits, min((d.confidence for d in digits), default=None))

    def _read_line(self, ii: InkImage, groups: list[Component]) -> list[DigitBox]:
        """The digits of one line's groups, left to right."""
        line_height = float(np.median([g.h for g in groups])) if groups else 0.0
        chosen = [piece for group in groups for piece in self._split(ii, group, line_height, alone=len(groups) == 1)]
        if chosen and np.mean([r >= self.reject_threshold for _, _, r in chosen]) > LINE_REJECT:
            return []  # mostly marks that `predict` would call no digit: not a line of digits
        digits = []
        for (piece, cut), p, r in chosen:
            answer = self._answer(p, r, empty=False, threshold=max(READ_REJECT, self.reject_threshold))
            if answer.digit is None:
                continue  # a mark that is not a digit
            if answer.digit == 1 and piece.h < SHORT_ONE * line_height:
                continue  # a 5's loose flag, a tick or a speck: fitted into 20x20, any short bar is a "1"
            x0, x1 = cut if cut else (piece.x, piece.x + piece.w)
            box = tuple(round(v / ii.scale) for v in (x0, piece.y, x1 - x0, piece.h))
            digits.append(DigitBox(answer.digit, answer.confidence, box))  # type: ignore[arg-type]
        digits.sort(key=lambda d: d.box[0] + d.box[2] / 2)  # pieces of one group may overlap: centres
        return digits

    def _split(
        self, ii: InkImage, group: Component, line_height: float, alone: bool = False
    ) -> list[tuple[Piece, np.ndarray, float]]:
        """One group as the digits it most likely holds: (piece, cut), digit probabilities, reject.
        ``line_height``: the median height of the line's groups (> 0: each is `images.MIN_DIGIT_HEIGHT` or more).

        Candidate readings: the group whole; its tall components apart (digits that overlap without
        touching); and, for a group that may hold touching digits, the best chain of column cuts, found
        by dynamic programming over cut positions. A reading's score is the confidence of its least
        sure digit (a cut piece read as a 1 that is not as thin or not as tall as one counts
        UNLIKE_ONE of it for each), times SPLIT_PRIOR per piece beyond the first, times `_width_prior`
        of its digits' mean width; the best reading wins, and the whole group on a tie. ``alone``: the
        group is its line's only mark, and holds no digit (an empty list) when the model's P(not a
        digit) for it beats the best reading (see LONE_MARGIN).
        """
        pieces: list[Piece] = [(group, None)]
        readings: list[list[int]] = [[0]]  # indices into pieces
        parts = _tall_parts(ii, group)
        if len(parts) >= 2:
            readings.append(list(range(1, 1 + len(parts))))
            pieces += [(p, None) for p in parts]
        probs, reject, plausible = self._score_pieces(ii, pieces)
        score = probs.max(axis=1) * (1 - reject) * plausible
        # Cuts: for a group wide enough to hold two digits, or a narrower one that reads badly whole
        # (a 1 leaning on a 0 makes a group hardly wider than a digit, read as a poor 6 or not at all).
        if group.w > WIDE * min(group.h, line_height) or (group.w > NARROW * group.h and score[0] < WEAK):
            cuts = _cut_candidates(ii, group)
            spans: dict[tuple[int, int], int] = {}
            for i, j in itertools.combinations(range(len(cuts)), 2):
                width = cuts[j] - cuts[i]
                if MIN_PIECE * group.h <= width <= MAX_PIECE * group.h and (i, j) != (0, len(cuts) - 1):
                    spans[i, j] = len(pieces)
                    pieces.append((group, (cuts[i], cuts[j])))
            if spans:
                p2, r2, s2 = self._score_pieces(ii, pieces[len(probs) :])
                probs, reject = np.concatenate([probs, p2]), np.concatenate([reject, r2])
                plausible = np.concatenate([plausible, s2])
                score = probs.max(axis=1) * (1 - reject) * plausible
                readings.append(_best_cuts(len(cuts), spans, score))

        def value(r: list[int]) -> float:
            return float(score[r].min()) * SPLIT_PRIOR ** (len(r) - 1) * _width_prior(group.w / (len(r) * line_height))

        best = max(readings, key=value)
        if alone and LONE_MARGIN * reject[0] > value(best):
            return []  # the only mark of its line, and more likely no digit than any reading of it
        return [(pieces[k], probs[k], float(reject[k])) for k in best]

    def _score_pieces(self, ii: InkImage, pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Digit probabilities, reject scores and a plausibility factor (1, UNLIKE_ONE or its square)
        per piece."""
        masks: dict[Component, np.ndarray] = {}  # most pieces are cuts of one group: its mask once
        fields = []
        for g, cut in pieces:
            if g not in masks:
                masks[g] = group_mask(ii, g)
            fields.append(group_to_mnist(ii, g, cut, masks[g]))
        probs, reject = self.scores(np.stack(fields))
        plausible = np.ones(len(pieces))
        for k, (g, cut) in enumerate(pieces):
            if cut is None or probs[k].argmax() != 1:
                continue
            if elongation(fields[k]) >= ONE_LIKE:
                plausible[k] *= UNLIKE_ONE
            rows = np.flatnonzero(masks[g][:, cut[0] - g.x : cut[1] - g.x].any(axis=1))
            if len(rows) == 0 or rows[-1] - rows[0] + 1 < TALL_ONE * g.h:
                plausible[k] *= UNLIKE_ONE
        return probs, reject, plausible


# --- reading: candidate pieces of a group --------------------------------------------------------

# A piece of a group: the group's ink, or the part of it in the columns [c0, c1) of the working image.
Piece = tuple[Component, "tuple[int, int] | None"]
MIN_PIECE, MAX_PIECE = 0.1, 1.3  # a cut piece is this many times the group's height wide, at least/most
NARROW = 0.5  # a group narrower than this times its height is one digit (a 1, a 7)...
WEAK = 0.5  # ...and so is a wider one that reads whole with at least this confidence
# Each extra piece of a reading (and of a chain of cuts, see `_best_cuts`) costs this factor on its
# score: a wide single digit (a broad 7, a slanted 1) cut in two often reads as two digits at ~1.0
# each, as sure as the digit read whole. On a validation set of 500 numbers (MNIST validation
# digits): 472 right with 1.0, 475 with 0.99 (0.999: 474; 0.95: 472, real touching pairs start to be
# read whole). The confidences it weighs against depend on the model's temperature: 0.99 was chosen
# at T = 0.46; after the validation non-digits became real images (2026-11-22) the shipped model's T
# is 0.52, its answers less sure, and a sliver between two touching 0s (read "1" at 0.998) beat the
# clean cut (tests/data/number-268600.jpg). On 2,500 validation numbers at T = 0.52: 0.99 -> 2,410
# right, 0.985 -> 2,411, 0.98 -> 2,409 (0.99 at T = 0.46: 2,408); rescaled for the temperature as
# (1 - p) ** (0.459 / 0.524), 1% becomes about 1.8%.
SPLIT_PRIOR = 0.985
# Fitted into 20x20, any stroke cut from a wider digit reads as a "1" (the right half of a 0, the
# stem of a 4): a cut piece read as "1" whose ink is not as thin as a 1's (`elongation` at least
# ONE_LIKE: 8% of MNIST's training 1s) scores this factor. On 2,500 numbers of validation digits:
# 2,381 -> 2,390 right (0.8: 2,388; ONE_LIKE 0.3 instead: 2,382); on 1,000 test numbers 92.4 -> 92.9%.
UNLIKE_ONE = 0.5
# A 1 spans its group's height; a cut piece read as "1" whose ink spans less than TALL_ONE of it (the
# end of a 7's bar, the arm of a 4) scores UNLIKE_ONE again. On those 2,500 numbers: 2,405 -> 2,409
# right, none broken (seeds 1 and 2 of the shipped model's recipe: +2, +4); 0.5: no change; 0.8:
# 2,407 (5 broken); 0.9: 2,397.
TALL_ONE = 0.7


# No digit is much wider than the line is tall: of the single digits in 2,500 numbers of validation
# digits read right, 99% are under 1.09 line heights wide; touching pairs are 0.7-2.0 (median 1.5).
# A reading whose digits would average more than WIDEST line heights wide is unlikely: two touching
# digits read whole as one sure digit used to win over the pair. The factor falls from 1 to 0 over
# about 4 * WIDTH_SOFTNESS around WIDEST. On those 2,500 numbers: 2,386 -> 2,393 right (with 1.4
# too; 1.3 took wide 0s apart: 1,424 against 1,439 of the first 1,500).
WIDEST = 1.5
WIDTH_SOFTNESS = 0.05


def _width_prior(mean_width: float) -> float:
    """How plausible a reading is whose digits average ``mean_width`` line heights wide."""
    # The logistic 1 / (1 + exp(x)), written with tanh: exp overflows (and warns) for a group tens of
    # line heights wide, as one big digit among small ones makes.
    return float(0.5 * (1.0 - np.tanh((mean_width - WIDEST) / (2 * WIDTH_SOFTNESS))))


def _tall_parts(ii: InkImage, group: Component) -> list[Component]:
    """The group's components of at least half its height, each with the small components (a 5's flag,
    a 7's bar) that overlap it most horizontally: digits that overlap without touching."""
    labels = set(group.labels)
    comps = [c for c in ii.components if c.labels[0] in labels]
    tall = [c for c in comps if c.h >= 0.5 * group.h]
    if len(tall) < 2:
        return []
    parts = list(tall)
    for c in comps:
        if c in tall:
            continue
        k = max(range(len(tall)), key=lambda i: min(c.x + c.w, tall[i].x + tall[i].w) - max(c.x, tall[i].x))
        parts[k] = merge_components(parts[k], c)
    return sorted(parts, key=lambda c: c.x + c.w / 2)


# At most this many cut candidates per group, its ends included. Real groups have few (on 300
# numbers of validation digits, 587 groups tried for cuts: median 8, at most 18); a zigzag scribble
# has a minimum at every tooth, and each pair of cuts is a piece for the model: unbounded, one image
# of a zigzag 4 line heights wide took `read` 5-10 s.
MAX_CUTS = 24


def _cut_candidates(ii: InkImage, group: Component) -> list[int]:
    """Columns of the working image where touching digits may part: the group's ends, every local
    minimum of its ink per column, and the thinnest column of each window of a sixth of its height
    (a stroke that leaves its neighbour at a slant leaves no minimum); past MAX_CUTS, the ends and
    the columns with the least ink."""
    profile = np.convolve(group_mask(ii, group).sum(axis=0), np.ones(3) / 3, mode="same")
    inner = profile[1:-1]
    minima = 1 + np.flatnonzero((inner < profile[:-2]) & (inner <= profile[2:]))
    step = max(2, round(group.h / 6))
    cuts = {int(m) for m in minima}
    for start in range(step // 2, group.w - step // 2, step):
        cuts.add(start + int(np.argmin(profile[start : start + step])))
    inside = sorted((c for c in cuts if 2 <= c <= group.w - 2), key=lambda c: (profile[c], c))
    return [group.x + c for c in sorted([0, group.w, *inside[: MAX_CUTS - 2]])]


def _best_cuts(n: int, spans: dict[tuple[int, int], int], score: np.ndarray) -> list[int]:
    """The pieces (indices into ``score``) of the chain of spans from cut 0 to cut n-1 whose least
    score, times SPLIT_PRIOR per piece beyond the first, is highest (fewer pieces on a tie): a
    bottleneck path over the cut positions, for each number of pieces. At least two pieces.

    Without the prior inside the chain, a 1 sliced into two slivers (each read "1" at ~1.0) tied with
    the 1 whole, and the tie went to whichever was found first ("10" read "110")."""
    # best[c, j]: the highest least score of a chain of c pieces from cut 0 to cut j (-1: none).
    best = np.full((n, n), -1.0)
    back = np.full((n, n), -1)
    best[0, 0] = np.inf
    ordered = sorted(spans.items(), key=lambda item: item[0][::-1])  # by end cut, then start: ties go to the first
    for c in range(1, n):
        if not (best[c - 1] >= 0).any():
            break  # no chain of c - 1 pieces: none of more
        for (i, j), k in ordered:
            least = min(best[c - 1, i], score[k])
            if best[c - 1, i] >= 0 and least > best[c, j]:
                best[c, j], back[c, j] = least, i
    chains = [(best[c, n - 1] * SPLIT_PRIOR ** (c - 1), -c) for c in range(2, n) if best[c, n - 1] >= 0]
    if not chains:
        return [0]  # no chain of allowed widths: the whole group
    pieces = -max(chains)[1]
    out, j = [], n - 1
    for c in range(pieces, 0, -1):
        i = int(back[c, j])
        out.append(spans[i, j])
        j = i
    return out[::-1]


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
    path: str | os.PathLike | None = None, engine: str = "auto", reader: str | os.PathLike | None = "auto"
) -> Recognizer:
    """Load a model file or run directory; ``None`` means the default model shipped with the package.

    ``engine``: "onnx" runs the model's ONNX twin (``model.onnx`` beside ``model.keras``, made by
    `digitrec export`) with ONNX Runtime, without importing TensorFlow; "keras" runs it in Keras;
    "auto" (default) uses ONNX when a matching twin exists.

    ``reader``: what `Recognizer.read` reads lines with. "auto" (default): a line model beside the
    model (``lines.onnx`` or ``lines.keras`` in its folder, as `digitrec train-reader` writes), else
    the one shipped with the package, else the rule-based reader; "rules": the rule-based reader; a
    path: that line model.
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
    if engine in ("auto", "onnx"):
        meta = read_metadata(p)
        run = _onnx_runner(p, required=engine == "onnx")
        if run is not None:
            return Recognizer(run, meta, p, "onnx", _line_reader(reader, p))
        if engine == "onnx":
            raise ModelError(f"{p}: no ONNX twin made from this model; run `digitrec export --model {p}` first")
    model, meta = load_model(p)
    return Recognizer(lambda x: predict_probabilities(model, x), meta, p, "keras", _line_reader(reader, p))
