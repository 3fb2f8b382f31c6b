"""Train the learned line reader (`lines`): synthetic lines of real digits, a CNN, CTC loss, ONNX.

Training lines are made from real digits of many writers: MNIST's training split (never its last
5,000, `data.DEFAULT_VALIDATION`, which validate), and labelled folders such as `cvl-train` and
`optdigits`. Each line holds 1-MAX_DIGITS digits, touching, overlapping or widely spaced, of varying
sizes and baselines, slanted, with the marks that real numbers carry and that are not digits
(thousands separators, decimal marks, a dash or "=" closing an amount, a currency sign). Most are
composed straight at the ink level (cheap); a share is rendered as a photo, a canvas drawing or a
form field and read back through `images.ink_image`, exactly as `read` sees a user's image. Lines of
letters, clothing and doodles teach that a line without digits reads nothing.

Validation (epoch choice, the confidence threshold, the choice between this reader and the
rule-based one): numbers of MNIST validation digits and of the ``validation_data`` folders'
digits (`cvl-valid`), rendered in every style, and non-digit images.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..reading.images import ImageError, ink_image, split_lines
from ..reading.lines import (
    BLANK,
    CLASSIFIER_WEIGHT,
    STRIDE,
    STRIP_HEIGHT,
    WIDE_PART,
    LineReader,
    line_strip,
    strip_pixels,
)
from . import synth

__all__ = ["LineConfig", "build_line_model", "compose_line", "render_line", "train_line_reader"]

MAX_DIGITS = 12  # digits in a training line, at most
BUCKETS = (96, 160, 224, 320, 448)  # strip widths training pads to (each batch holds one width)
SEPARATORS = ".,'"
REAL_WEIGHT = 3.0
SLANT, TRAIN_SLANT = 0.1, 0.25  # the largest shear of a composed line (x per y): about 6 and 14 degrees
CURRENCY = "$€£"


# "bf16" as `digitrec train` says it; "mixed_bfloat16" as Keras does.
PRECISIONS = ("auto", "float32", "bf16", "mixed_bfloat16")


@dataclass(frozen=True)
class LineConfig:
    out: str = "runs/lines"  # run directory: lines.keras, lines.onnx, validation.json
    lines: int = 100_000  # synthetic training lines (shuffled every epoch)
    rendered: float = 0.2  # share of them rendered as photos, canvases and forms and read back
    # Share of the lines not rendered that are made anew for every epoch after the first (while the
    # epoch before trains, in a process of its own); the rendered ones, 25 times dearer, are made once.
    refresh: float = 0.0
    epochs: int = 7  # passes over the training lines
    batch_size: int = 64  # lines per step
    learning_rate: float = 2e-3  # peak of a one-cycle schedule (Adam)
    seed: int = 0  # every draw (lines, weights, order) follows from it
    precision: str = "auto"  # "bf16" (or "mixed_bfloat16") where the CPU has AMX (auto), else "float32"
    extra_data: tuple[str, ...] = ()  # labelled folders whose digits join MNIST's
    validation_data: tuple[str, ...] = ()  # labelled folders whose digits make validation numbers too
    validation_numbers: int = 600  # validation numbers per digit source (MNIST validation, each folder)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes that make the lines

    def problems(self) -> list[str]:
        out = []
        if self.lines < 100:
            out.append(f"lines must be >= 100, got {self.lines}")
        if not 0 <= self.rendered <= 1:
            out.append(f"rendered must be in [0, 1], got {self.rendered}")
        if not 0 <= self.refresh <= 1:
            out.append(f"refresh must be in [0, 1], got {self.refresh}")
        if self.precision not in PRECISIONS:
            out.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.epochs < 1:
            out.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            out.append(f"batch size must be >= 1, got {self.batch_size}")
        overlap = {os.path.realpath(p) for p in self.extra_data} & {os.path.realpath(p) for p in self.validation_data}
        if overlap:
            out.append(f"{', '.join(sorted(overlap))}: both training and validation data; a set is one or other")
        return out


# --- composing lines ------------------------------------------------------------------------------


def _crop(a: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(a > 0.08)
    if len(ys) == 0:
        return a[:1, :1]
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _scaled(a: np.ndarray, height: float) -> np.ndarray:
    import cv2

    f = height / a.shape[0]
    return cv2.resize(a, (max(1, round(a.shape[1] * f)), max(1, round(height))), interpolation=cv2.INTER_LINEAR)


def _mark(kind: str, h: float, rng: np.random.Generator, fonts: list[Path]) -> tuple[np.ndarray, float]:
    """A hand-made mark that is not a digit, as ink (float, 0-1), and where its top sits as a
    fraction of the digits' height (0: at their top)."""
    import cv2

    t = max(2, round(h * rng.uniform(0.06, 0.12)))  # pen width
    if kind in ".":
        r = max(1, round(h * rng.uniform(0.04, 0.09)))
        a = np.zeros((2 * r + 3, 2 * r + 3), np.float32)
        cv2.circle(a, (r + 1, r + 1), r, 1.0, -1)
        return a, 1.0 - (2 * r + 3) / h + rng.uniform(-0.05, 0.05)
    if kind in ",'":
        ln = h * rng.uniform(0.15, 0.3)
        a = np.zeros((round(ln) + 2 * t, round(ln * 0.6) + 2 * t), np.float32)
        cv2.line(a, (a.shape[1] - t, t), (t, a.shape[0] - t), 1.0, t)
        return a, (0.85 if kind == "," else 0.0) + rng.uniform(-0.05, 0.05)
    if kind == "-":
        ln = h * rng.uniform(0.3, 0.8)
        a = np.zeros((2 * t + 2, round(ln) + 2 * t), np.float32)
        cv2.line(a, (t, t + 1), (a.shape[1] - t, t + 1), 1.0, t)
        return a, rng.uniform(0.4, 0.6)
    if kind == "|":  # a tick or a stray short stroke, under half a digit's height
        ln = h * rng.uniform(0.15, 0.45)
        lean = ln * rng.uniform(-0.3, 0.3)
        a = np.zeros((round(ln) + 2 * t, round(abs(lean)) + 2 * t), np.float32)
        x0, x1 = (t, a.shape[1] - t) if lean >= 0 else (a.shape[1] - t, t)
        cv2.line(a, (x1, t), (x0, a.shape[0] - t), 1.0, t)
        return a, rng.uniform(0.1, 0.9 - ln / h)
    if kind == "/":  # a date's separator, as tall as the digits
        ln = h * rng.uniform(0.8, 1.1)
        a = np.zeros((round(ln) + 2 * t, round(ln * 0.4) + 2 * t), np.float32)
        cv2.line(a, (a.shape[1] - t, t), (t, a.shape[0] - t), 1.0, t)
        return a, rng.uniform(-0.1, 0.1)
    if kind == "=":
        ln = h * rng.uniform(0.4, 0.8)
        gap = round(h * rng.uniform(0.15, 0.3))
        a = np.zeros((gap + 2 * t + 2, round(ln) + 2 * t), np.float32)
        cv2.line(a, (t, t), (a.shape[1] - t, t), 1.0, t)
        cv2.line(a, (t, t + gap), (a.shape[1] - t, t + gap), 1.0, t)
        return a, rng.uniform(0.3, 0.5)
    glyph = synth.font_glyph(kind, fonts[int(rng.integers(len(fonts)))], size=64) / 255.0  # a currency sign
    return _scaled(glyph, h * rng.uniform(0.8, 1.15)), rng.uniform(-0.1, 0.05)


def _with_marks(digits: list[int], rng: np.random.Generator) -> list[int | str]:
    """The line's sequence: digits, and (some of the time) separators, a currency sign, a closing mark."""
    seq: list[int | str] = list(digits)
    if rng.random() < 0.15 and 6 <= len(digits) <= 8:  # a date: 12/05/26, 12.05.2026, 12-05-2026
        sep = "/.-"[int(rng.integers(3))]
        return [*digits[:2], sep, *digits[2:4], sep, *digits[4:]]
    if rng.random() < 0.35 and len(digits) >= 4:  # thousands separators, or a decimal mark
        sep = SEPARATORS[int(rng.integers(len(SEPARATORS)))]
        if rng.random() < 0.5:
            seq = []
            for i, d in enumerate(digits):
                if i and (len(digits) - i) % 3 == 0:
                    seq.append(sep)
                seq.append(d)
        else:
            seq.insert(len(seq) - 2, "," if sep == "'" else sep)
    if rng.random() < 0.1:
        seq.insert(0, CURRENCY[int(rng.integers(len(CURRENCY)))])
    if rng.random() < 0.1:
        seq.append("=" if rng.random() < 0.5 else "-")
    if rng.random() < 0.05:
        seq.insert(0, "-")
    if rng.random() < 0.1:  # a tick or a stray stroke, anywhere
        seq.insert(int(rng.integers(len(seq) + 1)), "|")
    return seq


def compose_line(
    items: list[np.ndarray | str],
    rng: np.random.Generator,
    fonts: list[Path],
    height: float = 40.0,
    augment: bool = True,
) -> np.ndarray:
    """Digits (white-on-black arrays, any size, e.g. 28x28 MNIST fields) and marks (".", ",", "'",
    "-", "=", a currency sign) -> one line of ink, float32 (h, w) in [0, 1], cropped to its ink.

    Each digit gets its own size (±15%), baseline (and the line a drift), the gaps vary from
    overlapping to wide, and the whole line is slanted (up to SLANT); with ``augment`` (training) more
    slant (up to TRAIN_SLANT), and strokes thickened or thinned. Validation and the benchmark compose
    without it: their digits are as their writers made them."""
    import cv2

    pieces = []  # (ink, top) per item
    for it in items:
        if isinstance(it, str):
            a, top = _mark(it, height, rng, fonts)
            pieces.append((a, top * height, True))
        else:
            a = _crop(np.asarray(it, np.float32) / max(float(np.max(it)), 1e-6))
            hd = height * rng.uniform(0.85, 1.15)
            pieces.append((_scaled(a, hd), rng.normal(0, 0.06) * height + (height - hd) / 2, False))
    drift = rng.uniform(-0.06, 0.06) * height  # per digit
    xs, x = [], 0.0
    for i, (a, _, mark) in enumerate(pieces):
        if i:
            r = rng.random()
            if mark or pieces[i - 1][2]:
                gap = rng.uniform(0.05, 0.3) * height
            elif r < 0.15:  # touching or overlapping
                gap = -rng.uniform(0.0, 0.3) * min(a.shape[1], pieces[i - 1][0].shape[1])
            elif r < 0.25:  # wide apart
                gap = rng.uniform(0.5, 1.5) * height
            else:
                gap = rng.uniform(0.05, 0.4) * height
            x += gap
        xs.append(x)
        x += a.shape[1]
    tops = [top + k * drift for k, (_, top, _) in enumerate(pieces)]
    y_min = min(tops)
    h = int(np.ceil(max(t - y_min + a.shape[0] for t, (a, _, _) in zip(tops, pieces, strict=True)))) + 4
    w = int(np.ceil(x)) + 4
    line = np.zeros((h, w), np.float32)
    for x0, t, (a, _, _) in zip(xs, tops, pieces, strict=True):
        y0, x0i = round(t - y_min) + 2, round(x0) + 2
        region = line[y0 : y0 + a.shape[0], x0i : x0i + a.shape[1]]
        np.maximum(region, a[: region.shape[0], : region.shape[1]], out=region)
    slant = TRAIN_SLANT if augment else SLANT
    shear = rng.uniform(-slant, slant)  # either way
    pad = int(abs(shear) * h) + 2
    m = np.float32([[1, -shear, pad + (shear * h if shear > 0 else 0)], [0, 1, 0]])
    line = cv2.warpAffine(line, m, (w + 2 * pad, h), flags=cv2.INTER_LINEAR)
    k = rng.random() if augment else 1.0
    if k < 0.1:  # a canvas brush
        r = int(rng.integers(3, max(4, round(0.12 * height))))
        line = cv2.dilate(line, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    elif k < 0.3:  # a broad pen
        r = int(rng.integers(1, 3))
        line = cv2.dilate(line, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    elif k < 0.4:  # a fine one
        line = cv2.erode(line, np.ones((2, 2), np.uint8))
    return _crop(line)


def _noisy(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The variety of ink maps: blur, weak or uneven ink, noise, binarisation."""
    import cv2

    if rng.random() < 0.5:
        ink = cv2.GaussianBlur(ink, (0, 0), rng.uniform(0.3, 1.2))
    ink = ink * rng.uniform(0.5, 1.0)
    if rng.random() < 0.3:
        ink = ink + rng.normal(0, rng.uniform(0.01, 0.06), ink.shape).astype(np.float32) * (ink > 0.05)
    if rng.random() < 0.15:
        ink = (ink > rng.uniform(0.2, 0.5) * ink.max()).astype(np.float32)
    return np.clip(ink, 0, 1).astype(np.float32)


def _non_digit_items(rng: np.random.Generator, letter_fonts: list[Path], fashion: np.ndarray | None) -> list[Any]:
    """Items of a line that holds no digit: letters, clothing, doodles."""
    k = rng.random()
    if k < 0.5 and letter_fonts:
        return [synth.letter_glyph(rng, letter_fonts, sizes=(40, 97)) for _ in range(int(rng.integers(1, 7)))]
    if k < 0.75 and fashion is not None:
        return [fashion[int(rng.integers(len(fashion)))] for _ in range(int(rng.integers(1, 3)))]
    return [synth.scribble(rng) for _ in range(int(rng.integers(1, 3)))]


def render_line(
    ink: np.ndarray, digits28: list[np.ndarray] | None, rng: np.random.Generator, style: str
) -> bytes | np.ndarray:
    """A composed line as a user's image: "photo", "canvas", "form" (``digits28`` written in a printed
    field), or "scan" (small, often binarised)."""
    if style == "photo":
        return synth.as_photo(ink * 255.0, rng)
    if style == "canvas":
        return _line_canvas(ink, rng)
    if style == "form" and digits28:
        field_ = synth.form_field(digits28, rng, synth.FORM_STYLES[int(rng.integers(len(synth.FORM_STYLES)))])
        return synth.as_photo(field_, rng)
    import cv2

    f = rng.uniform(16, 40) / ink.shape[0]  # a scan at low resolution
    small = cv2.resize(ink, (max(2, round(ink.shape[1] * f)), max(2, round(ink.shape[0] * f))), cv2.INTER_AREA)
    small = np.pad(small, 3)
    if rng.random() < 0.5:
        small = (small > rng.uniform(0.25, 0.6)).astype(np.float32)
    return (255 - np.clip(small * 255, 0, 255)).astype(np.uint8)


STYLES = ("photo", "canvas", "form", "scan")


def _line_canvas(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A line drawn on a web canvas: digits 40-120 px high, opaque strokes of a brush 3-12% of that
    wide (a brush is a fixed number of pixels, and people draw digits a few times its width), on a
    transparent PNG with room around them. (`synth.as_canvas` sizes its brush by a square canvas's
    side, which for a long number is many digits wide: its strokes filled the digits' loops.)"""
    import cv2
    from PIL import Image

    f = rng.uniform(40, 120) / ink.shape[0]
    a = cv2.resize(ink, (max(2, round(ink.shape[1] * f)), max(2, round(ink.shape[0] * f))), cv2.INTER_LINEAR)
    r = max(1, round(rng.uniform(0.015, 0.06) * a.shape[0]))  # radius: the width is 3-12% of the height
    a = cv2.dilate(a, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    m = int(rng.integers(10, 60))
    a = np.pad(a, ((m, m), (m, m)))
    alpha = np.clip((a - 0.3) * 4, 0, 1)  # hard-edged strokes, a little anti-aliasing
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., :3] = rng.choice([[0, 0, 0], [0, 0, 0], [30, 30, 200], [255, 255, 255]])
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def read_back(image: bytes | np.ndarray) -> np.ndarray | None:
    """A rendered line through `read`'s path -> its strip pixels; None unless it is one line."""
    try:
        parts = split_lines(ink_image(image, line=True))
    except ImageError:
        return None
    if len(parts) != 1:
        return None
    strip = line_strip(parts[0])
    return None if strip is None else strip.pixels


# --- the training set, made in worker processes ---------------------------------------------------

_POOL: dict[str, Any] = {}  # the digits (x, y) and negatives the workers draw from, set before forking


def _make_lines(task: tuple[int, int, float, int]) -> list[tuple[np.ndarray, str]]:
    _, count, rendered, seed = task  # (start, count, share rendered, seed)
    rng = np.random.default_rng(seed)
    x, y = _POOL["x"], _POOL["y"]
    mark_fonts, letter_fonts, fashion = _POOL["mark_fonts"], _POOL["letter_fonts"], _POOL["fashion"]
    out = []
    while len(out) < count:
        if rng.random() < 0.07:
            items = _non_digit_items(rng, letter_fonts, fashion)
            text, digits28 = "", None
        else:
            n = int(rng.choice(np.arange(1, MAX_DIGITS + 1), p=_LENGTHS))
            idx = rng.choice(len(x), n, p=_POOL["p"])
            digits28 = [x[i] for i in idx]
            text = "".join(str(int(y[i])) for i in idx)
            items = _with_marks(list(digits28), rng) if rng.random() < 0.5 else list(digits28)  # type: ignore[arg-type]
        ink = compose_line(items, rng, mark_fonts, height=rng.uniform(28, 56))
        if rng.random() < rendered:
            style = STYLES[int(rng.integers(len(STYLES)))]
            pixels = read_back(render_line(ink, digits28, rng, style))
            if pixels is None:
                continue  # read back as several lines, or as nothing: drawn again
        else:
            pixels = strip_pixels(_noisy(ink, rng))[0]
        if pixels.shape[1] > BUCKETS[-1]:
            continue  # too long for the widest bucket: drawn again
        out.append(((pixels * 255).astype(np.uint8), text))
    return out


# Numbers are mostly 3-8 digits long (zip codes, amounts, dates); 1-2 and 9-12 happen.
_LENGTHS = np.array([4, 5, 8, 9, 9, 9, 9, 9, 7, 5, 4, 3], np.float64)
_LENGTHS /= _LENGTHS.sum()


def _line_tasks(n: int, rendered: float, seed: int) -> list[tuple[int, int, float, int]]:
    chunk = 500
    rng = np.random.default_rng(seed)
    return [(s, min(chunk, n - s), rendered, int(rng.integers(2**63))) for s in range(0, n, chunk)]


def make_lines(
    n: int, rendered: float, seed: int, pool: dict[str, Any], workers: int, progress: bool = True
) -> list[tuple[np.ndarray, str]]:
    """``n`` training lines: (strip uint8 (STRIP_HEIGHT, width), digit string)."""
    _POOL.clear()
    _POOL.update(pool)
    tasks = _line_tasks(n, rendered, seed)
    out: list[tuple[np.ndarray, str]] = []
    bar = _bar(n, "lines") if progress else None
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as p:
            for part in p.imap(_make_lines, tasks):
                out += part
                if bar is not None:
                    bar.update(len(part))
    else:
        for t in tasks:
            part = _make_lines(t)
            out += part
            if bar is not None:
                bar.update(len(part))
    if bar is not None:
        bar.close()
    return out


class _Bar:
    """Keras' progress bar, counted up by ``update(n)``."""

    def __init__(self, total: int, unit: str) -> None:
        import keras

        self.bar, self.done, self.values = keras.utils.Progbar(total, unit_name=unit), 0, []

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(self.done, values=self.values)

    def set_postfix(self, **values: float) -> None:
        self.values = list(values.items())

    def close(self) -> None:
        pass


def _bar(total: int, unit: str) -> _Bar:
    return _Bar(total, unit)


def _pool(cfg: LineConfig, log: Any) -> dict[str, Any]:
    from ..data import DEFAULT_VALIDATION, DataError, load_dataset, load_labelled, load_mnist, split_validation

    (x, y), _ = load_mnist()
    (x_train, y_train), _ = split_validation(x, y, DEFAULT_VALIDATION)
    xs, ys = [x_train], [y_train]
    for path in cfg.extra_data:
        lab = load_labelled(path, verbose=True)
        xs.append(lab.x)
        ys.append(lab.y)
        log(f"{path}: {len(lab.x)} digits")
    try:
        fashion = load_dataset("fashion-mnist").x_train[:50_000]
    except DataError:
        fashion = None
    mark_fonts = synth.dejavu_fonts("Sans") + synth.handwriting_fonts()
    # Real writers' digits are drawn REAL_WEIGHT times as often as MNIST's: a third of all digits.
    p = np.concatenate([np.full(len(a), 1.0 if k == 0 else REAL_WEIGHT) for k, a in enumerate(xs)])
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "p": p / p.sum(),
        "mark_fonts": mark_fonts,
        "letter_fonts": synth.letter_fonts(),
        "fashion": fashion,
    }


# --- validation -----------------------------------------------------------------------------------


def validation_images(cfg: LineConfig, log: Any) -> dict[str, list[tuple[Any, str]]]:
    """Validation numbers (3-8 digits) rendered in every style, per digit source, and non-digit images
    (text ""): name -> [(image, text)]."""
    from ..data import DEFAULT_VALIDATION, DataError, load_dataset, load_labelled, load_mnist, split_validation

    rng = np.random.default_rng(10_000 + cfg.seed)
    (x, y), _ = load_mnist()
    _, (xv, yv) = split_validation(x, y, DEFAULT_VALIDATION)
    sources = {"MNIST validation digits": (xv, yv)}
    for path in cfg.validation_data:
        lab = load_labelled(path, verbose=True)
        sources[f"{Path(path).name} digits"] = (lab.x, lab.y)
    fonts = synth.dejavu_fonts("Serif")
    sets: dict[str, list[tuple[Any, str]]] = {}
    for name, (xs, ys) in sources.items():
        items = []
        for k in range(cfg.validation_numbers):
            n = int(rng.integers(3, 9))
            idx = rng.integers(0, len(xs), n)
            digits = [xs[i] for i in idx]
            style = STYLES[k % len(STYLES)]
            ink = compose_line(digits, rng, fonts, height=40.0, augment=False)  # type: ignore[arg-type]
            items.append((render_line(ink, digits, rng, style), "".join(str(int(ys[i])) for i in idx)))
        sets[f"numbers of {name}"] = items
    try:
        fashion = load_dataset("fashion-mnist").x_train[50_000:]  # never drawn for training lines
    except DataError:
        fashion = None
    vfonts = synth.validation_letter_fonts()
    negatives = []
    for k in range(cfg.validation_numbers // 2):
        kind = k % 3
        if kind == 0 and fashion is not None:
            img = synth.as_photo(fashion[int(rng.integers(len(fashion)))], rng)
        elif kind == 1 and vfonts:
            img = synth.as_photo(synth.letter_glyph(rng, vfonts), rng, fill=(0.3, 0.7))
        else:
            img = synth.as_photo(synth.scribble(rng), rng)
        negatives.append((img, ""))
    sets["non-digits"] = negatives
    return sets


def _strips_of(images: list[tuple[Any, str]]) -> list[tuple[list[Any], float, str]]:
    """Each image's lines as strips, with the image's scale and text."""
    out = []
    for image, text in images:
        try:
            ii = ink_image(image, line=True)
        except ImageError:
            out.append(([], 1.0, text))
            continue
        out.append(([s for p in split_lines(ii) if (s := line_strip(p)) is not None], ii.scale, text))
    return out


def score_reader(reader: LineReader, strips: dict[str, list[tuple[list[Any], float, str]]]) -> dict[str, Any]:
    """Exact-string accuracy per validation set, over a grid of confidence thresholds."""
    grid = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    out: dict[str, Any] = {}
    saved = reader.min_confidence
    for name, items in strips.items():
        results = []  # per item: (text read with threshold 0, its confidence)
        reader.min_confidence = 0.0
        for ss, scale, text in items:
            texts, confs = [], []
            for s in ss:
                t, _, c = reader.read_strip(s, scale)
                if t:
                    texts.append(t)
                    confs.append(c)
            results.append(("\n".join(texts), min(confs) if confs else 1.0, text))
        out[name] = {
            str(th): float(np.mean([(got if conf >= th else "") == text for got, conf, text in results])) for th in grid
        }
    reader.min_confidence = saved
    return out


def choose_threshold(scores: dict[str, dict[str, float]]) -> float:
    """The confidence threshold with the best mean of: exact numbers (each source) and non-digits read
    as nothing."""
    grid = list(next(iter(scores.values())).keys())
    return float(max(grid, key=lambda th: (np.mean([s[th] for s in scores.values()]), -float(th))))


# --- the model ------------------------------------------------------------------------------------


def build_line_model(precision: str = "float32") -> Any:
    """The line CNN: strips (batch, STRIP_HEIGHT, width, 1) -> logits (batch, width / STRIDE, 11).

    Two 2x2 poolings give one frame per STRIDE columns (a digit about 18 strip columns wide spans 4-5
    frames); two more pool the height only; a convolution over the remaining rows gives a feature
    column per frame, and two 1-D convolutions over the frames give each the context of its
    neighbours (whether a stroke ends a digit or starts the next)."""
    import keras

    keras.mixed_precision.set_dtype_policy(precision)
    layers = keras.layers

    # No batch-norm, as in `digitnet`: on these 2 CPU cores (Xeon, AMX, mixed bfloat16) a step of 64
    # lines 224 columns wide took 604 ms with it and 177 ms without.
    def conv(x: Any, filters: int, kernel: Any = 3, padding: str = "same") -> Any:
        return layers.Conv2D(filters, kernel, padding=padding, activation="relu", kernel_initializer="he_normal")(x)

    inputs = keras.Input((STRIP_HEIGHT, None, 1), name="strip")
    x = conv(inputs, 32)
    x = layers.MaxPooling2D(2)(x)  # 16 x w/2
    x = conv(x, 48)
    x = layers.MaxPooling2D(2)(x)  # 8 x w/4
    x = conv(x, 96)
    x = layers.MaxPooling2D((2, 1))(x)  # 4 x w/4
    x = conv(x, 128)
    x = layers.MaxPooling2D((2, 1))(x)  # 2 x w/4
    x = conv(x, 160, (2, 1), padding="valid")  # 1 x w/4
    x = layers.Reshape((-1, 160))(x)
    for _ in range(2):
        x = layers.Conv1D(160, 5, padding="same", activation="relu", kernel_initializer="he_normal")(x)
        x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(BLANK + 1, dtype="float32", name="logits")(x)
    keras.mixed_precision.set_dtype_policy("float32")
    return keras.Model(inputs, outputs, name="line_cnn")


def ctc_loss(y_true: Any, y_pred: Any) -> Any:
    """CTC over the frames; ``y_true``: digits padded with -1 (batch, MAX_DIGITS)."""
    from keras import ops

    y_true = ops.cast(y_true, "int32")
    label_length = ops.sum(ops.cast(y_true >= 0, "int32"), axis=1)
    target = ops.where(y_true >= 0, y_true, 0)
    batch, frames = ops.shape(y_pred)[0], ops.shape(y_pred)[1]
    frame_length = ops.full((batch,), frames, dtype="int32")
    return ops.ctc_loss(target, ops.cast(y_pred, "float32"), label_length, frame_length, mask_index=BLANK)


def _batches(lines: list[tuple[np.ndarray, str]], batch_size: int, rng: np.random.Generator) -> Any:
    """Training batches by bucket of width: (x float32 (b, H, w, 1), y int32 (b, MAX_DIGITS))."""
    by_bucket: dict[int, list[int]] = {w: [] for w in BUCKETS}
    for i, (pixels, _) in enumerate(lines):
        by_bucket[next(w for w in BUCKETS if pixels.shape[1] <= w)].append(i)
    batches = []
    for w, idx in by_bucket.items():
        idx = list(rng.permutation(idx))
        batches += [(w, idx[i : i + batch_size]) for i in range(0, len(idx), batch_size)]
    order = rng.permutation(len(batches))
    for k in order:
        w, idx = batches[k]
        x = np.zeros((len(idx), STRIP_HEIGHT, w, 1), np.float32)
        y = np.full((len(idx), MAX_DIGITS), -1, np.int32)
        for j, i in enumerate(idx):
            pixels, text = lines[i]
            x[j, :, : pixels.shape[1], 0] = pixels / 255.0
            y[j, : len(text)] = [int(c) for c in text]
        yield x, y


def _precision(choice: str) -> str:
    """'auto': mixed bfloat16 where `train` finds it faster (TensorFlow on a CPU with AMX), else float32."""
    if choice != "auto":
        return "mixed_bfloat16" if choice == "bf16" else choice
    import keras

    from .train import _cpu_flags

    return "mixed_bfloat16" if keras.backend.backend() == "tensorflow" and "amx_bf16" in _cpu_flags() else "float32"


def train_line_reader(cfg: LineConfig, log: Any = print) -> dict[str, Any]:
    """Make the training lines, train, choose the epoch and the confidence threshold on validation,
    and write ``lines.keras`` and ``lines.onnx`` in ``cfg.out``. Returns the run's summary."""
    import keras

    problems = cfg.problems()
    if problems:
        raise ValueError("; ".join(problems))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    pool = _pool(cfg, log)
    log(f"Making {cfg.lines} training lines from {len(pool['x'])} digits ({cfg.workers} processes) ...")
    n_rendered = round(cfg.lines * cfg.rendered)
    n_fresh = round((cfg.lines - n_rendered) * cfg.refresh) if cfg.epochs > 1 else 0
    if n_fresh:  # the rendered lines first, then the plain ones, the last n_fresh of them made anew
        lines = make_lines(n_rendered, 1.0, cfg.seed, pool, cfg.workers)
        lines += make_lines(cfg.lines - n_rendered, 0.0, cfg.seed + 1, pool, cfg.workers)
        # Forked now, before Keras starts its threads; it holds the digits of _POOL from make_lines.
        maker: Any = multiprocessing.get_context("fork").Pool(1)
    else:
        maker = None
        lines = make_lines(cfg.lines, cfg.rendered, cfg.seed, pool, cfg.workers)
    try:
        log(f"Rendering validation numbers ... ({time.perf_counter() - t0:.0f} s so far)")
        val = {k: _strips_of(v) for k, v in validation_images(cfg, log).items()}
        precision = _precision(cfg.precision)
        model = build_line_model(precision)
        steps = sum(-(-n // cfg.batch_size) for n in _bucket_sizes(lines))
        schedule = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 10, cfg.epochs * steps, warmup_target=cfg.learning_rate, warmup_steps=steps // 2
        )
        model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=5.0), loss=ctc_loss)
        history: list[dict[str, Any]] = []
        best: tuple[float, int] = (-1.0, -1)
        rng = np.random.default_rng(cfg.seed)
        for epoch in range(cfg.epochs):
            te = time.perf_counter()
            making = None
            if n_fresh and epoch + 1 < cfg.epochs:  # the next epoch's new lines, made while this one trains
                making = maker.map_async(_make_lines, _line_tasks(n_fresh, 0.0, cfg.seed + 2 + epoch))
            bar = _bar(steps, "steps")
            losses = []
            for x, y in _batches(lines, cfg.batch_size, rng):
                losses.append(float(model.train_on_batch(x, y)))
                bar.update(1)
                bar.set_postfix(loss=float(np.mean(losses[-50:])))
            bar.close()
            if making is not None:
                fresh = [line for part in making.get() for line in part]
                lines[len(lines) - n_fresh :] = fresh
                steps = sum(-(-n // cfg.batch_size) for n in _bucket_sizes(lines))
            reader = LineReader(_keras_run(model), {}, out / "lines.keras")
            scores = score_reader(reader, val)
            exact = float(np.mean([s["0.0"] for k, s in scores.items() if k != "non-digits"]))
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(np.mean(losses)),
                    "validation": scores,
                    "seconds": time.perf_counter() - te,
                }
            )
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses):.3f}, validation exact "
                + ", ".join(f"{k}: {s['0.0']:.3f}" for k, s in scores.items() if k != "non-digits")
                + f" ({time.perf_counter() - te:.0f} s)"
            )
            if exact > best[0]:
                best = (exact, epoch + 1)
                model.save_weights(out / "best.weights.h5")
    finally:  # the line maker goes with the run, whichever way it ends
        if maker is not None:
            maker.terminate()
            maker.join()
    model.load_weights(out / "best.weights.h5")
    (out / "best.weights.h5").unlink()
    chosen = history[best[1] - 1]["validation"]
    threshold = choose_threshold(chosen)
    metadata = {
        "kind": "line reader",
        "strip_height": STRIP_HEIGHT,
        "stride": STRIDE,
        "blank": BLANK,
        "min_confidence": threshold,
        "classifier_weight": CLASSIFIER_WEIGHT,
        "wide_part": WIDE_PART,
        "epoch": best[1],
        "lines_made": cfg.lines + n_fresh * (cfg.epochs - 1),
        "validation": {k: v[str(threshold)] for k, v in chosen.items()},
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "precision": precision,
        "training_data": _data_card(cfg),
        "train_seconds": time.perf_counter() - t0,
    }
    from ..models import save_model

    final = build_line_model("float32")  # saved and exported in float32, without the training's loss
    final.set_weights(model.get_weights())
    keras_path = save_model(final, out / "lines.keras", metadata)
    onnx_path = export_line_model(keras_path, metadata)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    log(f"wrote {keras_path} and {onnx_path}; threshold {threshold}; validation {metadata['validation']}")
    return metadata


def _bucket_sizes(lines: list[tuple[np.ndarray, str]]) -> list[int]:
    counts = dict.fromkeys(BUCKETS, 0)
    for pixels, _ in lines:
        counts[next(w for w in BUCKETS if pixels.shape[1] <= w)] += 1
    return list(counts.values())


def _keras_run(model: Any) -> Any:
    return lambda x: np.asarray(model(x, training=False), np.float32)


def _data_card(cfg: LineConfig) -> list[dict[str, Any]]:
    """Every set the reader was trained and validated on, with source and licence as stated."""
    from .train import _data_card as folder_card

    card: list[dict[str, Any]] = [{"path": "MNIST", "role": "training (all but the last 5,000 training images)"}]
    card += [folder_card(p, "training") for p in cfg.extra_data]
    card += [folder_card(p, "validation") for p in cfg.validation_data]
    return card


def export_line_model(keras_path: Path, metadata: dict[str, Any]) -> Path:
    """``lines.keras`` -> ``lines.onnx`` beside it, with the reader's settings in its metadata; checked
    against Keras on synthetic strips of several widths."""
    import onnx

    from ..export import ExportError
    from ..models import load_model
    from ..reading.results import onnx_session

    model, _ = load_model(keras_path)
    model(np.zeros((1, STRIP_HEIGHT, 64, 1), np.float32))  # Keras exports only a model that has been called
    onnx_path = keras_path.with_suffix(".onnx")
    tmp = onnx_path.with_suffix(".tmp.onnx")
    model.export(str(tmp), format="onnx", verbose=False)
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "digitrec", json.dumps(metadata)
    onnx.save(proto, str(tmp))
    session = onnx_session(tmp)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    for w in (64, 200, 512):
        x = (rng.random((1, STRIP_HEIGHT, w, 1)) > 0.8).astype(np.float32)
        diff = float(np.abs(session.run(None, {name: x})[0] - np.asarray(model(x))).max())
        if not diff <= 1e-3:
            tmp.unlink()
            raise ExportError(f"line model ONNX export disagrees with Keras at width {w}: {diff:.2e}")
    os.replace(tmp, onnx_path)
    return onnx_path
