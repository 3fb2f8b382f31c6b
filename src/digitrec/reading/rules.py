"""The rule-based reader: a line cut into digits by connected components and about twenty rules,
each piece read by the digit model.

`read` uses the learned line reader (`lines.py`), which reads more numbers right on every validation
set (docs/experiments.md, "The learned line reader"); this reader is what `read --reader rules` and
`Recognizer.read_rules` run, the baseline of `benchmarks/read_numbers.py`, and what `read` falls
back to where no line reader is found. The settings that weigh the digit model's probabilities
depend on its calibration, so they belong to the model: `RuleSettings`, stored in its metadata,
today's values where it has none. The geometric rules depend on the ink alone and stay constants
here.

May import what `reading` may import.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models import ModelError
from .images import (
    ONE_LIKE,
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
)
from .results import MAX_MARKS, DigitBox, Reading

__all__ = ["RuleReader", "RuleSettings"]

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
# --- candidate pieces of a group --------------------------------------------------------

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


def _best_cuts(
    n: int, spans: dict[tuple[int, int], int], score: np.ndarray, split_prior: float = SPLIT_PRIOR
) -> list[int]:
    """The pieces (indices into ``score``) of the chain of spans from cut 0 to cut n-1 whose least
    score, times ``split_prior`` per piece beyond the first, is highest (fewer pieces on a tie): a
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
    chains = [(best[c, n - 1] * split_prior ** (c - 1), -c) for c in range(2, n) if best[c, n - 1] >= 0]
    if not chains:
        return [0]  # no chain of allowed widths: the whole group
    pieces = -max(chains)[1]
    out, j = [], n - 1
    for c in range(pieces, 0, -1):
        i = int(back[c, j])
        out.append(spans[i, j])
        j = i
    return out[::-1]


# --- the settings a model carries --------------------------------------------------------------


@dataclass(frozen=True)
class RuleSettings:
    """The rule-based reader's weighing of the digit model's probabilities, from the model's metadata
    ("rule_reader"; each missing key takes the value tuned for the models shipped since 2026-11, see
    the constants of the same names)."""

    read_reject: float = READ_REJECT
    lone_margin: float = LONE_MARGIN
    line_reject: float = LINE_REJECT
    weak: float = WEAK
    split_prior: float = SPLIT_PRIOR
    unlike_one: float = UNLIKE_ONE

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> RuleSettings:
        given = metadata.get("rule_reader") or {}
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(given, dict) or set(given) - known:
            raise ModelError(
                f"the model's rule_reader settings must be a mapping of {', '.join(sorted(known))}; got {given!r}"
            )
        values = {}
        for key, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e6:
                raise ModelError(f"the model's rule_reader setting {key} must be a number from 0 to 1e6; got {value!r}")
            values[key] = float(value)
        return cls(**values)

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)


class RuleReader:
    """Reads lines of digits with a `Recognizer`'s digit model and the rules of this module."""

    def __init__(self, recognizer: Any) -> None:
        # ``recognizer``: a `recognizer.Recognizer` (not imported here: it imports this module).
        self.recognizer = recognizer
        self.settings: RuleSettings = recognizer.rule_settings  # read from its metadata once, at load

    def read(self, image: Any, name: str | None = None) -> Reading:
        """Each line cut into digits by connected components and rules (strokes joined, touching
        digits split, specks ignored), each piece read by the digit model."""
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
        if (
            chosen
            and np.mean([r >= self.recognizer.reject_threshold for _, _, r in chosen]) > self.settings.line_reject
        ):
            return []  # mostly marks that `predict` would call no digit: not a line of digits
        digits = []
        for (piece, cut), p, r in chosen:
            answer = self.recognizer._answer(
                p, r, empty=False, threshold=max(self.settings.read_reject, self.recognizer.reject_threshold)
            )
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
        if group.w > WIDE * min(group.h, line_height) or (group.w > NARROW * group.h and score[0] < self.settings.weak):
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
                readings.append(_best_cuts(len(cuts), spans, score, self.settings.split_prior))

        def value(r: list[int]) -> float:
            return (
                float(score[r].min())
                * self.settings.split_prior ** (len(r) - 1)
                * _width_prior(group.w / (len(r) * line_height))
            )

        best = max(readings, key=value)
        if alone and self.settings.lone_margin * reject[0] > value(best):
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
        probs, reject = self.recognizer.read_once(np.stack(fields))  # the settings were chosen on these
        plausible = np.ones(len(pieces))
        for k, (g, cut) in enumerate(pieces):
            if cut is None or probs[k].argmax() != 1:
                continue
            if elongation(fields[k]) >= ONE_LIKE:
                plausible[k] *= self.settings.unlike_one
            rows = np.flatnonzero(masks[g][:, cut[0] - g.x : cut[1] - g.x].any(axis=1))
            if len(rows) == 0 or rows[-1] - rows[0] + 1 < TALL_ONE * g.h:
                plausible[k] *= self.settings.unlike_one
        return probs, reject, plausible
