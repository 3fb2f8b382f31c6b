"""Realistic images made from MNIST digits and fonts: photos, canvas drawings, whole numbers, non-digits.

The benchmark (`benchmarks/real_images.py`) measures digitrec on these, built from MNIST *test*
digits, so nothing it measures was seen in training. Training negatives for rejection use other
sources (Fashion-MNIST *train*, other fonts, other seeds). Each function takes a NumPy Generator, so
every set is reproducible from its seed.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

__all__ = [
    "CELL_STYLES",
    "CONDITIONS",
    "FORM_STYLES",
    "PAPER_STYLES",
    "as_canvas",
    "as_photo",
    "as_scan",
    "blank_page",
    "captured",
    "cut_from_a_number",
    "dejavu_fonts",
    "font_glyph",
    "form_field",
    "handwriting_fonts",
    "in_a_form_cell",
    "letter_glyph",
    "number_strip",
    "on_a_desk",
    "on_ruled_paper",
    "scribble",
    "validation_letter_fonts",
    "with_a_shadow",
    "with_a_vignette",
]

# Letters that a person could read as a digit (O/0, l/1, S/5, Z/2, B/8, g/9, b/6, ...) are not negatives.
NON_DIGIT_LETTERS = "ACEFHJKLMNPRTUVWXYacdefhkmnprtuvwxy"

FONT_DIRS = ("/usr/share/fonts",)
HANDWRITING_FONT_HINTS = ("humor", "dkg", "bwht", "handwrit", "comic", "script")


def _crop(digit: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(digit > 20)
    if len(ys) == 0:
        return digit
    return digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _place(ink: np.ndarray, size: tuple[int, int], rng: np.random.Generator, fill: tuple[float, float]) -> np.ndarray:
    """Scale white-on-black ``ink`` to fill a random fraction of a page of ``size`` (h, w), off-centre."""
    import cv2

    h, w = size
    frac = rng.uniform(*fill)
    scale = frac * min(h / ink.shape[0], w / ink.shape[1])
    nh, nw = max(2, int(ink.shape[0] * scale)), max(2, int(ink.shape[1] * scale))
    big = cv2.resize(ink.astype(np.float32), (nw, nh), interpolation=cv2.INTER_CUBIC)
    page = np.zeros((h, w), np.float32)
    y = int(rng.integers(0, max(1, h - nh + 1)))
    x = int(rng.integers(0, max(1, w - nw + 1)))
    page[y : y + nh, x : x + nw] = np.clip(big, 0, 255)
    return page / 255.0


def _rotate(a: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    h, w = a.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


NOISE_SIDE = 1024  # side of the bank of Gaussian noise that photos take their sensor noise from


@functools.cache
def _noise_bank() -> np.ndarray:
    return np.random.default_rng(20261121).standard_normal((NOISE_SIDE, NOISE_SIDE, 3), dtype=np.float32)


def _sensor_noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian noise (h, w, 3): a window of a fixed bank at a random offset, wrapping around.

    Drawing fresh normal samples took 6 ms for a 400x450 photo, more than half its rendering time.
    """
    bank = _noise_bank()
    if h <= NOISE_SIDE and w <= NOISE_SIDE:  # a view: no copy
        oy, ox = rng.integers(0, NOISE_SIDE - h + 1), rng.integers(0, NOISE_SIDE - w + 1)
        return bank[oy : oy + h, ox : ox + w]
    oy, ox = rng.integers(0, NOISE_SIDE, 2)
    rows, cols = (oy + np.arange(h)) % NOISE_SIDE, (ox + np.arange(w)) % NOISE_SIDE
    return bank[rows[:, None], cols[None, :]]


def as_photo(
    ink: np.ndarray,
    rng: np.random.Generator,
    size: int | None = None,
    fill: tuple[float, float] = (0.45, 0.85),
    jpeg: bool = True,
    blur: float | None = None,
    faint: tuple[float, float] | None = None,
) -> bytes:
    """White-on-black ink (any size) -> a photo of dark ink on paper, as encoded bytes (JPEG or PNG).

    Paper of varying colour, a lighting gradient, sensor noise, blur, a small rotation, off-centre
    placement, 100-500 px, JPEG compression. ``blur``: the largest Gaussian blur in pixels (default
    1.2 per 200 px of the photo's side, as if the ink filled about half of it). ``faint``: the ink is
    grey, darker than the paper by a share drawn from this range (pencil), instead of a pen's colour.
    """
    import cv2
    from PIL import Image

    side = int(size or rng.integers(100, 501))
    aspect = rng.uniform(0.8, 1.25)
    h, w = side, max(40, int(side * aspect))
    if ink.shape[1] > 1.5 * ink.shape[0]:  # a whole number: a wide strip of paper
        w = int(h * ink.shape[1] / ink.shape[0] * rng.uniform(1.1, 1.4))
    for _ in range(20):
        placed = _place(ink, (h, w), rng, fill)
        a = _rotate(placed, rng.uniform(-8, 8))
        # Turning the page can carry ink near its edge out of the picture: the end digits of a long
        # number did so in about 1 number in 20. Place it again (a single digit never needs to).
        if a.sum() >= 0.99 * placed.sum():
            break
    blur = rng.uniform(0, 1.2) * (side / 200 if blur is None else blur / 1.2)
    if blur > 0.3:
        a = cv2.GaussianBlur(a, (0, 0), blur)
    # float32 throughout: these full-image operations are most of the time of rendering a photo.
    tint = np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.8, 1.0)])
    paper = (rng.uniform(175, 255, 3) * tint).astype(np.float32)
    pen = rng.choice([[20, 20, 25], [20, 30, 110], [10, 10, 10], [60, 40, 40]]) + rng.uniform(0, 40, 3)
    pen = pen.astype(np.float32)
    if faint is not None:
        pen = paper * np.float32(1 - rng.uniform(*faint))
    strength = np.float32(rng.uniform(0.75, 1.0))
    rgb = paper + (strength * a)[..., None] * (pen - paper)  # (h, w, 3): paper where a=0, pen where a=1
    # Lighting: a linear gradient in a random direction, and a soft vignette.
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx / w + np.sin(theta) * yy / h) + 1.0
    light = 1.0 - np.float32(rng.uniform(0.0, 0.45) / 2) * ramp
    rgb = rgb * light[..., None]
    rgb += _sensor_noise(h, w, rng) * np.float32(rng.uniform(1, 7))
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    if jpeg:
        img.save(buf, "JPEG", quality=int(rng.integers(40, 96)))
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _rgb(photo: bytes) -> np.ndarray:
    """An encoded photo -> float32 RGB (h, w, 3)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), np.float32)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Float RGB (h, w, 3), clipped to 0-255, as a JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def on_a_desk(photo: bytes, rng: np.random.Generator) -> bytes:
    """A photo of a page (as `as_photo` makes it) -> the same page photographed on a desk: the page
    60-90% of the frame, turned a little, off-centre, on a darker surface with its own lighting, JPEG."""
    import cv2

    page = _rgb(photo)
    h, w = page.shape[:2]
    share = rng.uniform(0.6, 0.9)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), share)
    m[:, 2] += rng.uniform(-0.5, 0.5, 2) * (1 - share) * np.array([w, h])
    inside = cv2.warpAffine(np.ones((h, w), np.float32), m, (w, h))[..., None]
    desk = rng.uniform(30, 160) * np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.5, 0.9)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 - rng.uniform(0, 0.3) * (xx / w if rng.random() < 0.5 else yy / h)
    surface = desk * light[..., None] + _sensor_noise(h, w, rng) * np.float32(rng.uniform(2, 8))
    out = inside * cv2.warpAffine(page, m, (w, h)) + (1 - inside) * surface
    return _jpeg(out, int(rng.integers(60, 96)))


def with_a_shadow(photo: bytes, rng: np.random.Generator) -> bytes:
    """A photo -> the same with a shadow cast across it: the light cut by 30-60% beyond a straight edge
    (at any angle, past the middle or short of it), sharp or blurred over up to 3% of the side, JPEG."""
    import cv2

    rgb = _rgb(photo)
    h, w = rgb.shape[:2]
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = (xx - w / 2) * np.cos(theta) + (yy - h / 2) * np.sin(theta) > rng.uniform(-0.3, 0.3) * min(h, w)
    shade = side.astype(np.float32)
    soft = rng.uniform(0, 0.03) * min(h, w)
    if soft > 0.5:
        shade = cv2.GaussianBlur(shade, (0, 0), soft)
    out = rgb * (1 - np.float32(rng.uniform(0.3, 0.6)) * shade)[..., None]
    return _jpeg(out, int(rng.integers(60, 96)))


def with_a_vignette(photo: bytes, rng: np.random.Generator) -> bytes:
    """A photo -> the same with light falling off towards every corner (a flash, a lamp above the
    page): darkened by 20-50% of r^2, r the distance from the centre in half the shorter side (capped
    at 1.5: the corners 30-75% darker), JPEG of quality 85."""
    rgb = _rgb(photo)
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    falloff = np.clip(((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (min(h, w) / 2) ** 2, 0, 1.5)
    return _jpeg(rgb * (1 - rng.uniform(0.2, 0.5) * falloff)[..., None], 85)


def as_canvas(ink: np.ndarray, rng: np.random.Generator, size: int | None = None) -> bytes:
    """White-on-black ink -> a web-canvas drawing: opaque thick strokes on a fully transparent PNG."""
    import cv2
    from PIL import Image

    side = int(size or rng.integers(200, 481))
    a = _place(ink, (side, side), rng, (0.3, 0.9))
    r = max(1, int(rng.uniform(0.005, 0.03) * side))  # brush radius: canvas strokes are thick
    a = cv2.dilate(a, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    alpha = np.clip((a - 0.3) * 4, 0, 1)  # hard-edged strokes, a little anti-aliasing
    color = rng.choice([[0, 0, 0], [0, 0, 0], [30, 30, 200], [255, 255, 255]])
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = color  # many canvases store ink colour everywhere, alpha saying where it is
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def as_bitmap(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White-on-black ink -> a digit as small scanned sets store it: cropped to its ink (or nearly),
    often stretched to fill its box, 12 to 32 pixels a side, often binarised, dark ink on white (uint8)."""
    import cv2

    crop = _crop(ink).astype(np.float32)
    h, w = crop.shape
    side = int(rng.integers(12, 33))
    if rng.random() < 0.5:  # stretched to fill a square (or a box of another shape)
        nh, nw = side, max(2, round(side * rng.uniform(0.6, 1.0)))
    else:
        scale = side / max(h, w)
        nh, nw = max(2, round(h * scale)), max(2, round(w * scale))
    small = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    margin = int(rng.integers(0, 4)) if rng.random() < 0.5 else 0
    small = np.pad(small, margin)
    if rng.random() < 0.5:
        small = np.where(small > rng.uniform(60, 160), 255.0, 0.0)
    return (255 - np.clip(small, 0, 255)).astype(np.uint8)


def as_scan(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """White-on-black ink (any size) -> a flatbed scan of it as it is, with no margin added: dark ink
    on near-white paper, 40-100% of its size, a slight blur, PNG."""
    import cv2
    from PIL import Image

    a = ink.astype(np.float32) / 255.0
    s = rng.uniform(0.4, 1.0)
    a = cv2.resize(a, (max(8, round(a.shape[1] * s)), max(8, round(a.shape[0] * s))), interpolation=cv2.INTER_AREA)
    blur = rng.uniform(0.0, 0.8)
    if blur > 0.3:
        a = cv2.GaussianBlur(a, (0, 0), blur)
    paper = rng.uniform(225, 252)
    gray = paper - a * rng.uniform(150, 215)
    buf = io.BytesIO()
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _enlarged(digit: np.ndarray, up: int = 4) -> np.ndarray:
    import cv2

    return cv2.resize(_crop(digit), None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)


CELL_STYLES = ("box", "comb", "underline", "ruled")


def in_a_form_cell(digit: np.ndarray, rng: np.random.Generator, style: str | None = None) -> np.ndarray:
    """A 28x28 digit written in a printed form cell, as one white-on-black array 4x its size: a box
    around it, a comb (a base line with a tooth either side, a quarter to all of the digit's height),
    an underline, or a ruled line through its lower half, lighter than the pen (``style``, default one
    of `CELL_STYLES` at random). The printed lines are 0.3-1 times a pen's stroke wide; the digit
    may touch them (a bold hand in a small cell)."""
    import cv2

    style = style or str(rng.choice(CELL_STYLES))
    if style not in CELL_STYLES:
        raise ValueError(f"unknown cell style {style!r}; one of {', '.join(CELL_STYLES)}")
    d = _enlarged(digit)
    h, w = d.shape
    pad = int(0.6 * h)
    ink = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    ink[pad : pad + h, pad : pad + w] = d
    t = max(1, round(0.12 * h * rng.uniform(0.3, 1.0)))  # MNIST's strokes are about 0.12 of its height
    m = int(rng.uniform(-0.02, 0.3) * h)  # the cell's margin round the digit (below 0: it touches)
    half = max(h, w) // 2 + m  # the cell is square about the digit's centre
    cx, cy = pad + w // 2, pad + h // 2
    base = pad + h + int(rng.uniform(-0.03, 0.15) * h)
    if style == "box":
        cv2.rectangle(ink, (cx - half, cy - half), (cx + half, cy + half), 255, t)
    elif style == "comb":
        reach = int(rng.uniform(0.0, 0.5) * h)  # the base runs on past the teeth
        cv2.line(ink, (cx - half - reach, base), (cx + half + reach, base), 255, t)
        tooth = int(rng.uniform(0.25, 1.0) * h)
        for x in (cx - half, cx + half):
            cv2.line(ink, (x, base), (x, base - tooth), 255, t)
    elif style == "underline":
        cv2.line(ink, (cx - half - int(0.2 * h), base), (cx + half + int(0.2 * h), base), 255, t)
    else:
        y = pad + int(rng.uniform(0.5, 1.0) * h)
        cv2.line(ink, (0, y), (ink.shape[1] - 1, y), int(rng.uniform(90, 200)), max(1, t // 2))
    return ink


PAPER_STYLES = ("lined", "margin", "squared")


def on_ruled_paper(digit: np.ndarray, rng: np.random.Generator, paper: str | None = None) -> np.ndarray:
    """A 28x28 digit written on a crop of ruled paper, as one white-on-black array 4x its size whose
    lines run from edge to edge: "lined" (across, 0.35-0.7 of the digit's height apart), "margin"
    (one line from top to bottom through the digit) or "squared" (both ways); ``paper`` defaults to
    one of `PAPER_STYLES` at random. The lines are grey (27-63% of the pen's darkness), 2-6% of the
    digit's height wide."""
    import cv2

    paper = paper or str(rng.choice(PAPER_STYLES))
    if paper not in PAPER_STYLES:
        raise ValueError(f"unknown paper {paper!r}; one of {', '.join(PAPER_STYLES)}")
    d = _enlarged(digit)
    h, w = d.shape
    pad = int(0.4 * max(h, w))
    ink = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    ink[pad : pad + h, pad : pad + w] = d
    lines = np.zeros_like(ink)
    level = int(rng.uniform(70, 160))
    t = max(1, round(0.04 * h * rng.uniform(0.5, 1.5)))
    if paper == "margin":
        x = pad + int(rng.uniform(0.1, 0.9) * w)
        cv2.line(lines, (x, 0), (x, ink.shape[0] - 1), level, t)
    else:
        step = max(2, int(rng.uniform(0.35, 0.7) * h))
        for y in range(int(rng.integers(step)), ink.shape[0], step):
            cv2.line(lines, (0, y), (ink.shape[1] - 1, y), level, t)
        if paper == "squared":
            for x in range(int(rng.integers(step)), ink.shape[1], step):
                cv2.line(lines, (x, 0), (x, ink.shape[0] - 1), level, t)
    return np.maximum(ink, lines)


def cut_from_a_number(digit: np.ndarray, neighbours: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A 28x28 digit cut from a written number, as one white-on-black array 4x its size: a margin of
    8-20% of its height, into which pieces of its ``neighbours`` (two 28x28 digits, left and right)
    reach from the crop's edges, ending short of the digit."""
    import cv2

    d = _enlarged(digit)
    h, w = d.shape
    m = max(4, int(rng.uniform(0.08, 0.2) * h))
    ink = np.zeros((h + 2 * m, w + 2 * m), np.uint8)
    ink[m : m + h, m : m + w] = d
    for left, other in zip((True, False), neighbours, strict=False):
        o = _enlarged(other)
        o = cv2.resize(o, (max(2, o.shape[1] * h // o.shape[0]), h))
        take = min(o.shape[1], m - int(rng.integers(1, max(2, m // 2))))
        dy = int(rng.uniform(-0.1, 0.1) * h)
        rows = slice(max(0, m + dy), min(ink.shape[0], m + dy + h))
        piece = o[: rows.stop - rows.start]
        if left:
            ink[rows, :take] = np.maximum(ink[rows, :take], piece[:, o.shape[1] - take :])
        else:
            ink[rows, ink.shape[1] - take :] = np.maximum(ink[rows, ink.shape[1] - take :], piece[:, :take])
    return ink


# How else a single digit reaches the reader, beyond a plain photo, canvas or bitmap (`captured`).
CONDITIONS = (
    "small",  # a whole page photographed, the digit 4-12% of its side
    "pencil",  # a photo of faint pencil, the ink 12-30% darker than the paper
    "desk",  # a photo of the page on a desk, the page 60-90% of the frame
    "shadow",  # a photo with a shadow cast across it
    "vignette",  # a photo whose corners are 30-75% darker
    "cell",  # a photo of the digit in a printed form cell
    "cut",  # a scan cut from a number: pieces of the neighbours at the crop's edges
    "ruled",  # a scan cut from ruled paper, grey lines from edge to edge
    "ruled photo",  # a photo of ruled paper filling the frame
    "tight",  # a scan cropped to the ink's box, no margin
)


def captured(ink: np.ndarray, rng: np.random.Generator, condition: str, others: np.ndarray | None = None) -> bytes:
    """A 28x28 digit (white on black) as an image file taken under one of `CONDITIONS`.

    ``others``: digits (n, 28, 28) that the "cut" condition draws the two neighbours from (default:
    the digit itself). Real captures are seldom the clean photo `as_photo` makes: these are the
    conditions users' photos and scans showed and the preprocessing was taught to handle
    (docs/reading.md); `benchmarks/real_handwriting.py` renders unseen writers' digits through each.
    """
    import cv2

    if condition == "small":
        return as_photo(ink, rng, size=int(rng.integers(800, 1201)), fill=(0.04, 0.12), blur=2.0)
    if condition == "pencil":
        return as_photo(ink, rng, faint=(0.12, 0.3))
    if condition == "desk":
        return on_a_desk(as_photo(ink, rng), rng)
    if condition == "shadow":
        return with_a_shadow(as_photo(ink, rng), rng)
    if condition == "vignette":
        return with_a_vignette(as_photo(ink, rng), rng)
    if condition == "cell":
        return as_photo(in_a_form_cell(ink, rng), rng)
    if condition == "cut":
        pool = ink[None] if others is None else others
        return as_scan(cut_from_a_number(ink, [pool[int(k)] for k in rng.integers(0, len(pool), 2)], rng), rng)
    if condition == "ruled":
        return as_scan(on_ruled_paper(ink, rng), rng)
    if condition == "ruled photo":
        return as_photo(on_ruled_paper(ink, rng), rng, fill=(0.9, 1.0))
    if condition == "tight":
        ys, xs = np.nonzero(ink)
        box = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else ink
        return as_scan(cv2.resize(box, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC), rng)
    raise ValueError(f"unknown condition {condition!r}; one of {', '.join(CONDITIONS)}")


def number_strip(digits: list[np.ndarray], rng: np.random.Generator, touching: float = 0.1) -> np.ndarray:
    """Several 28x28 MNIST digits side by side, as one white-on-black strip (28 px high)."""
    parts = [_crop(d) for d in digits]
    height = 28 + 8
    widths = []
    gaps = []
    for i, p in enumerate(parts):
        widths.append(p.shape[1])
        if i:
            gaps.append(-1 if rng.random() < touching else int(rng.integers(2, 7)))
    total = sum(widths) + sum(gaps) + 8
    strip = np.zeros((height, total), np.float32)
    x = 4
    for i, p in enumerate(parts):
        if i:
            x += gaps[i - 1]
        y = int(rng.integers(2, height - p.shape[0] - 1)) if height - p.shape[0] > 3 else 0
        region = strip[y : y + p.shape[0], x : x + p.shape[1]]
        np.maximum(region, p[: region.shape[0], : region.shape[1]], out=region)
        x += p.shape[1]
    return strip


FORM_STYLES = ("boxes", "row", "comb", "underline")


def form_field(digits: list[np.ndarray], rng: np.random.Generator, style: str = "boxes") -> np.ndarray:
    """Several 28x28 MNIST digits written into a printed form field, as one white-on-black array
    (the rules as ink too, as on a photocopied form):

    - "boxes": a box around each digit, apart;
    - "row": a row of boxes that share their sides;
    - "comb": a base line with a short tick between the digits;
    - "underline": a base line under all of them.

    Each digit sits at a random place in its cell; on a base line a third of them touch it.
    """
    if style not in FORM_STYLES:
        raise ValueError(f"unknown form style {style!r}; one of {', '.join(FORM_STYLES)}")
    import cv2

    cell_w, cell_h = int(rng.integers(28, 35)), int(rng.integers(30, 37))
    gap = int(rng.integers(4, 9)) if style == "boxes" else 0
    rule = 1  # printed lines are thin: a tenth of a millimetre to a third on boxes of 5-10 mm
    strength = rng.uniform(0.6, 1.0)  # printed rules lighter or as dark as the pen
    n = len(digits)
    margin = 6
    h = cell_h + 2 * margin
    w = n * cell_w + (n - 1) * gap + 2 * margin
    page = np.zeros((h, w), np.float32)
    for i, d in enumerate(digits):
        x0 = margin + i * (cell_w + gap)
        part = _crop(d).astype(np.float32) / 255.0
        ph, pw = part.shape
        room_y = cell_h - ph - 2 * rule
        y = margin + rule + int(rng.integers(0, max(1, room_y)))
        if style in ("comb", "underline") and rng.random() < 1 / 3:
            y = margin + cell_h - ph + rule  # resting on the line
        x = x0 + rule + int(rng.integers(0, max(1, cell_w - pw - 2 * rule)))
        region = page[y : y + ph, x : x + pw]
        np.maximum(region, part[: region.shape[0], : region.shape[1]], out=region)
    lines = np.zeros_like(page)
    top, bottom = margin, margin + cell_h
    if style == "boxes":
        for i in range(n):
            x0 = margin + i * (cell_w + gap)
            cv2.rectangle(lines, (x0, top), (x0 + cell_w, bottom), 1.0, rule)
    elif style == "row":
        cv2.rectangle(lines, (margin, top), (w - margin, bottom), 1.0, rule)
        for i in range(1, n):
            cv2.line(lines, (margin + i * cell_w, top), (margin + i * cell_w, bottom), 1.0, rule)
    else:
        cv2.line(lines, (margin // 2, bottom), (w - margin // 2, bottom), 1.0, rule)
        if style == "comb":
            for i in range(n + 1):
                x = margin + i * cell_w
                cv2.line(lines, (x, bottom - cell_h // 4), (x, bottom), 1.0, rule)
    return np.maximum(page, strength * lines) * 255.0


def handwriting_fonts() -> list[Path]:
    """Handwriting-style fonts installed on this machine (Debian: fonts-humor-sans, fonts-dkg-handwriting...)."""
    found = []
    for d in FONT_DIRS:
        for p in Path(d).rglob("*"):
            # The hint may be in the file name or in its folder's (fonts-bwht: .../bwht/BecauseWe*.otf).
            where = str(p.relative_to(d)).lower()
            if p.suffix.lower() in (".ttf", ".otf") and any(k in where for k in HANDWRITING_FONT_HINTS):
                found.append(p)
    return sorted(found)


def font_glyph(text: str, font: str | Path, rng: np.random.Generator | None = None, size: int = 96) -> np.ndarray:
    """``text`` drawn in ``font``, white on black, cropped to its ink (float32, 0-255)."""
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(str(font), size)
    canvas = Image.new("L", (size * (len(text) + 2), size * 2), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 3), text, fill=255, font=f)
    a = np.asarray(canvas, dtype=np.float32)
    return _crop(a)


def letter_glyph(rng: np.random.Generator, fonts: list[Path], sizes: tuple[int, int] | None = None) -> np.ndarray:
    """A random letter of NON_DIGIT_LETTERS in a random one of ``fonts`` (at a random size in
    [sizes[0], sizes[1]) when given, else 96), as `font_glyph` draws it. The draws (letter, font, size)
    come in that order: the training non-digits and the benchmark's are made with this."""
    letter = NON_DIGIT_LETTERS[int(rng.integers(len(NON_DIGIT_LETTERS)))]
    font = fonts[int(rng.integers(len(fonts)))]
    return font_glyph(letter, font, size=96 if sizes is None else int(rng.integers(*sizes)))


def blank_page(rng: np.random.Generator) -> bytes:
    """An empty sheet photographed: paper colour, gradient, noise, maybe faint ruled lines."""
    h, w = int(rng.integers(100, 400)), int(rng.integers(100, 400))
    ink = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:
        for y in range(int(rng.integers(10, 30)), h, int(rng.integers(20, 40))):
            ink[y : y + 1, :] = 60  # faint blue-grey ruling
    return as_photo(ink, rng, size=max(h, w), fill=(0.99, 1.0))


def scribble(rng: np.random.Generator) -> np.ndarray:
    """A random doodle: a few smooth random strokes, white on black (float32, 0-255)."""
    import cv2

    a = np.zeros((64, 64), np.float32)
    for _ in range(int(rng.integers(3, 7))):
        pts = np.cumsum(rng.normal(0, 8, (6, 2)), axis=0) + rng.uniform(16, 48, 2)
        cv2.polylines(a, [np.clip(pts, 0, 63).astype(np.int32)], False, 255, int(rng.integers(2, 4)))
    return a


def _matplotlib_fonts() -> Path:
    """The folder of the TrueType fonts that matplotlib ships (DejaVu, Computer Modern, STIX)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def dejavu_fonts(family: str) -> list[Path]:
    """Matplotlib's own copies of the DejaVu fonts of ``family`` ("Sans", "Serif"): always installed.

    The benchmark's letters use Serif and handwriting fonts, never seen in training (`letter_fonts`).
    """
    d = _matplotlib_fonts()
    return sorted(p for p in d.glob(f"DejaVu{family}*.ttf") if "Display" not in p.name and "Mono" not in p.name)


def letter_fonts() -> list[Path]:
    """The fonts of the training letters (the "not a digit" class): matplotlib's DejaVu Sans and Sans
    Mono and its four Computer Modern faces (roman, sans, italic, typewriter), always installed.

    Never the fonts of the benchmark's letters (handwriting fonts and DejaVu Serif), nor STIX, whose
    letters validate rejection (`validation_letter_fonts`).
    """
    d = _matplotlib_fonts()
    mono = sorted(d.glob("DejaVuSansMono*.ttf"))
    modern = [d / f"cm{face}10.ttf" for face in ("r", "ss", "ti", "tt") if (d / f"cm{face}10.ttf").is_file()]
    return dejavu_fonts("Sans") + mono + modern


def validation_letter_fonts() -> list[Path]:
    """The fonts of the letters that choose the "not a digit" threshold on validation data: matplotlib's
    four STIX General faces, always installed, never used for training or by the benchmark."""
    d = _matplotlib_fonts()
    faces = ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf")
    return [d / f for f in faces if (d / f).is_file()]
