"""The real-image path: formats, colours, lighting, bad input, and what the shipped model reads from them."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitrec.reading import forms, images, rules
from digitrec.reading.images import (
    MAX_PIXELS,
    ImageError,
    digit_to_mnist,
    elongation,
    ink_image,
    load_image,
    segment,
    to_mnist,
)
from digitrec.reading.masks import bbox
from digitrec.reading.results import MAX_MARKS
from digitrec.reading.rules import MAX_CUTS, SPLIT_PRIOR, _best_cuts, _cut_candidates
from digitrec.training import synth
from tests.conftest import render_on_paper

DATA = Path(__file__).parent / "data"  # small image files; see its README


@pytest.fixture(scope="module")
def rec():
    from digitrec import load_recognizer

    return load_recognizer()


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
    return float((a * yy).sum() / a.sum()), float((a * xx).sum() / a.sum())


# --- normalization ---------------------------------------------------------------------------------


def test_dark_ink_on_paper_becomes_a_centred_mnist_digit(mnist) -> None:
    page = render_on_paper(mnist[1][0][0], size=240, offset=(40, -50))  # a 7, off-centre
    out = to_mnist(page)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[:, 0].max() == 0  # black background, as MNIST
    cy, cx = _centre_of_mass(out.astype(float))
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1
    ys, xs = np.nonzero(out > 40)
    assert max(np.ptp(ys), np.ptp(xs)) <= 21  # fitted into MNIST's 20x20 box


def test_an_image_already_in_mnists_format_is_read_as_it_is(mnist) -> None:
    # An MNIST digit saved as an image, in either polarity or at lower contrast, or a field that
    # `to_mnist` made, is read as it is: preprocessed again, MNIST's test digits came back enlarged,
    # blurred and shifted (99.23% read right against 99.60%).
    x = mnist[1][0]
    for digit in x[:20]:
        np.testing.assert_array_equal(to_mnist(digit), digit)
        np.testing.assert_array_equal(to_mnist(255 - digit), digit)
    grey = (60 + 0.6 * x[0]).astype(np.uint8)  # grey ink on grey paper: stretched to full contrast
    assert np.abs(to_mnist(grey).astype(int) - x[0]).max() <= 2
    dim = (0.3 * x[0]).astype(np.uint8)  # a dim export, 30% of full scale: the same (preprocessed before)
    assert np.abs(to_mnist(dim).astype(int) - x[0]).max() <= 4
    field = to_mnist(render_on_paper(x[1]))
    np.testing.assert_array_equal(to_mnist(field), field)
    # Not in MNIST's format: centred by its box rather than its mass (as CVL's 28x28 digits are), or
    # smaller than the 20x20 box. Those are preprocessed: centred by their mass, fitted to the box.
    import cv2

    small = np.zeros((28, 28), np.uint8)
    small[7:21, 7:21] = cv2.resize(x[0][4:24, 4:24], (14, 14), interpolation=cv2.INTER_AREA)
    for other in (np.roll(x[0], 3, axis=1), small):
        out = to_mnist(other)
        assert not np.array_equal(out, other)
        cy, cx = _centre_of_mass(out.astype(float))
        assert abs(cy - 13.5) < 0.5 and abs(cx - 13.5) < 0.5
        ys, xs = np.nonzero(out > 16)
        assert max(np.ptp(ys), np.ptp(xs)) + 1 in (20, 21)


def test_a_bitmap_of_two_levels_is_not_taken_for_mnists_format(mnist) -> None:
    # MNIST's strokes are anti-aliased; a digit thresholded to two levels that passed the other tests
    # was read as it was, jagged (cvl-valid's so: 92.3% right, 95.3% preprocessed). It is preprocessed.
    x = mnist[1][0][:40]
    binary = np.where(x > 100, 255, 0).astype(np.uint8)
    assert sum(images._as_field(d) is not None for d in x) >= 39  # (one has too few saturated pixels)
    assert sum(images._as_field(d) is not None for d in binary) == 0
    for d in binary[:5]:
        out = to_mnist(d)
        assert not np.array_equal(out, d)
        assert np.count_nonzero((out > 16) & (out < 250)) > 0.1 * np.count_nonzero(out > 16)  # graded again


def test_a_small_bitmap_cropped_tight_to_its_ink_keeps_its_strokes(mnist, rec) -> None:
    # A bitmap cropped tight to a bold digit is a third or more ink: its median pixel, taken off as the
    # paper's level, was the strokes' blurred edge, and took fainter strokes with it (a 4's stem); and
    # a stroke from top to bottom was taken for a margin's rule, bold strokes for squared paper. These
    # are the six of the first 1,500 test digits, cropped tight and made 14 px high, whose field lost
    # most: it now matches the field of the same bitmap with a margin, and each is read right (1 of
    # the 6 before).
    import cv2

    (x, y) = mnist[1]
    for k in (19, 399, 882, 1091, 1300, 1465):
        crop = synth._crop(x[k]).astype(np.float32)
        h, w = crop.shape
        bitmap = cv2.resize(crop, (round(w * 14 / h), 14), interpolation=cv2.INTER_AREA)
        bitmap = (255 - np.clip(bitmap, 0, 255)).astype(np.uint8)
        tight, margin = to_mnist(bitmap), to_mnist(np.pad(bitmap, 3, constant_values=255))
        assert np.corrcoef(tight.ravel(), margin.ravel())[0, 1] > 0.95, k
        assert rec.predict(bitmap).digit == y[k], k
    four = 255 - synth._crop(x[159])  # 20 px high: its stem from top to bottom was taken off
    assert rec.predict(four).digit == 4


def test_a_scan_cropped_tight_to_its_digit_is_read(mnist, rec) -> None:
    # Scanned with no margin, a digit's strokes are a tenth of the image wide and more: they survived
    # the closing that looks for what lies around a page, and were taken for a desk (blanked: "no
    # ink") or a cast shadow (lit away), and a 7 whose bar spans both top corners turned to chalk.
    # Before, 288 of these 300 read right; now 296.
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(5)
    right = 0
    for k in range(300):
        big = cv2.resize(synth._crop(x[k]), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        right += rec.predict(synth.as_scan(big, rng)).digit == y[k]
    assert right >= 295
    # What looks like a tight crop but is not: a page on a darker desk, lined paper across a digit.
    page = np.full((200, 200), 90, np.uint8)
    page[20:180, 30:170] = 235
    page[60:140, 90:100] = 30  # a 1
    assert not images._cropped_tight(page)
    lined = np.full((120, 90), 235, np.uint8)
    lined[[10, 40, 70, 100]] = 150  # lines across, edge to edge
    lined[5:115, 40:48] = 30  # a 1 from top to bottom
    assert not images._cropped_tight(lined)
    assert images._cropped_tight(255 - cv2.resize(synth._crop(x[0]), None, fx=4, fy=4))  # a 7, tight


def test_digit_to_mnist_takes_any_nonzero_mask(mnist) -> None:
    # A library caller may pass a 0/255 uint8 mask instead of a bool one: the same field.
    ii = ink_image(render_on_paper(mnist[1][0][1], size=200))
    as_bool = digit_to_mnist(ii.ink, ii.mask)
    np.testing.assert_array_equal(digit_to_mnist(ii.ink, ii.mask.astype(np.uint8) * 255), as_bool)
    np.testing.assert_array_equal(to_mnist(render_on_paper(mnist[1][0][1], size=200)), as_bool)
    assert as_bool.max() == 255


def test_same_digit_same_field_whatever_the_polarity_and_lighting(mnist) -> None:
    digit = mnist[1][0][3]
    page = render_on_paper(digit, size=200)[..., 0].astype(np.float32)
    gradient = np.linspace(0.55, 1.0, page.shape[1])[None, :]
    fields = [
        to_mnist(page.astype(np.uint8)),
        to_mnist((255 - page).astype(np.uint8)),  # chalk on a board
        to_mnist((page * gradient).astype(np.uint8)),  # lit from one side
    ]
    for f in fields[1:]:
        assert np.corrcoef(fields[0].ravel(), f.ravel())[0, 1] > 0.9


def test_strokes_are_thinned_only_when_thicker_than_mnists(mnist) -> None:
    import cv2

    def ink_kept(page: np.ndarray, digit: np.ndarray) -> float:  # the field's ink over the digit's own
        return float(to_mnist(page).astype(float).sum() / digit.astype(float).sum())

    (x, _) = mnist[1]
    # The 20 inkiest of the first 1,000 test digits: thick, but within MNIST's own range of widths,
    # so they keep their strokes (thinned as they were before, they kept 0.52-0.77 of their ink,
    # median 0.65: a thick 2 or 3 broke into faint pieces).
    thick = np.argsort(x[:1000].reshape(1000, -1).sum(axis=1))[-20:]
    assert np.median([ink_kept(render_on_paper(x[i], size=240), x[i]) for i in thick]) > 0.9
    # Ordinary digits drawn with a pen 16 px wider (on a 120 px digit): thinned back towards MNIST's
    # width (median 1.40 of their ink; 1.79 unthinned).
    fat = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))
    pages = [cv2.erode(render_on_paper(x[i], size=240)[..., 0], fat) for i in range(20)]
    assert np.median([ink_kept(page, x[i]) for i, page in enumerate(pages)]) < 1.6


def test_faint_ruled_lines_and_paper_texture_are_not_ink() -> None:
    rng = np.random.default_rng(0)
    page = np.full((300, 300), 230.0) + rng.normal(0, 4, (300, 300))
    page[::30, :] -= 35  # faint ruled lines across the page
    assert ink_image(np.clip(page, 0, 255).astype(np.uint8)).components == ()
    page[100:200, 145:152] = 30  # a dark stroke: a "1"
    ii = ink_image(np.clip(page, 0, 255).astype(np.uint8))
    assert len(ii.components) == 1 and ii.components[0].h >= 95


# --- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "PGM", "PBM", "AVIF"])
def test_every_format_reads_the_same_digit(fmt: str, mnist, rec) -> None:
    (x, y) = mnist[1]
    page = Image.fromarray(render_on_paper(x[1], size=160))  # a 2
    if fmt in ("PGM", "PBM"):  # Netpbm's gray and black-and-white files: Pillow writes them as "PPM"
        page = page.convert("L") if fmt == "PGM" else page.convert("L").point(lambda v: 255 * (v > 128), "1")
        data = _encode(page, "PPM")
        assert data[:2] == (b"P5" if fmt == "PGM" else b"P4")
    else:
        data = _encode(page, fmt)
    assert rec.predict(data).digit == int(y[1])


def _heic(page: Image.Image) -> bytes:
    if not images._heif_registered():  # pillow-heif's opener, which also saves HEIF through Pillow
        pytest.skip("the heic extra (pillow-heif) is not installed")
    return _encode(page.convert("RGB"), "HEIF", quality=90)


def test_an_iphones_heic_photo_reads_the_digit(mnist, rec) -> None:
    (x, y) = mnist[1]
    data = _heic(Image.fromarray(render_on_paper(x[1], size=160)))
    assert data[4:12] == b"ftypheic"
    assert rec.predict(data, "photo.heic").digit == int(y[1])


def test_a_heic_photo_without_pillow_heif_names_the_extra(mnist, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # A HEIC file's first box as iPhones write it (the pixels never reached: the brand says enough).
    data = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(64)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as where the extra is not installed
    images._heif_registered.cache_clear()  # (asked once a process)
    try:
        with pytest.raises(ImageError, match=r"photo.heic: a HEIC/HEIF photo.*pip install 'digitrec\[heic\]'"):
            to_mnist(data, "photo.heic")
    finally:
        images._heif_registered.cache_clear()


def test_exif_orientation_is_honoured(mnist) -> None:
    page = Image.fromarray(render_on_paper(mnist[1][0][0], size=160))  # a 7, upright
    stored = page.transpose(Image.Transpose.ROTATE_90)  # as a phone stores it: sideways, plus a tag
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(_encode(stored, "JPEG", exif=exif))
    upright = np.asarray(page.convert("L"), np.float32)
    assert out.shape == upright.shape
    assert np.corrcoef(out.ravel(), upright.ravel())[0, 1] > 0.95


def test_16_bit_palette_and_cmyk(mnist, rec) -> None:
    (x, y) = mnist[1]
    page = render_on_paper(x[4], size=120)  # a 4
    gray16 = Image.fromarray(page[..., 0].astype(np.uint16) * 257)  # 16-bit: mode I;16
    assert gray16.mode.startswith("I")
    palette = Image.fromarray(page).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    cmyk = Image.fromarray(page).convert("CMYK")
    for image in (_encode(gray16, "PNG"), _encode(palette, "PNG"), _encode(cmyk, "JPEG"), _encode(cmyk, "TIFF")):
        assert rec.predict(image).digit == int(y[4])


def test_a_tiny_bitmap_reads_alike_in_8_bit_16_bit_and_float(mnist, rec) -> None:
    """A 16x16 digit is enlarged before it is analysed; bicubic interpolation overshoots, which 8-bit
    arithmetic saturates and 16-bit and float images are clipped to their range for: the same
    bitmap stored three ways gets the same answer (99 of 100 without the clip)."""
    import cv2

    x, _ = mnist[1]
    fields = []
    for d in x[:100]:
        small = cv2.resize(255 - d, (16, 16), interpolation=cv2.INTER_AREA)
        for image in (
            Image.fromarray(small),
            Image.fromarray(small.astype(np.uint16) * 257),
            Image.fromarray(small.astype(np.float32) / 255, "F"),
        ):
            fields.append(to_mnist(_encode(image, "TIFF" if image.mode == "F" else "PNG")))
    answers = rec.predict_arrays(np.stack(fields)).argmax(axis=1).reshape(100, 3)
    assert (answers == answers[:, :1]).all()


def test_animated_gif_uses_the_first_frame(mnist, rec) -> None:
    (x, y) = mnist[1]
    first, second = (Image.fromarray(render_on_paper(x[i], size=120)).convert("P") for i in (0, 2))  # 7, then 1
    data = _encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert rec.predict(data).digit == int(y[0])


@pytest.mark.parametrize("color", [(0, 0, 0), (255, 255, 255), (200, 30, 30)])
def test_transparent_canvas_keeps_its_ink(color: tuple[int, int, int], mnist, rec) -> None:
    # Strokes on a fully transparent canvas: the ink is in the alpha channel, the colour anywhere.
    (x, y) = mnist[1]
    rng = np.random.default_rng(3)
    ink = np.asarray(Image.fromarray(x[7]).resize((200, 200), Image.Resampling.BICUBIC), np.float32)  # a 9
    rgba = np.zeros((300, 300, 4), np.uint8)
    rgba[..., :3] = color
    rgba[60:260, 20:220, 3] = np.clip((ink - 60) * 3, 0, 255).astype(np.uint8)
    assert rec.predict(_encode(Image.fromarray(rgba, "RGBA"), "PNG")).digit == int(y[7])
    assert rec.predict(synth.as_canvas(x[7], rng)).digit == int(y[7])


@pytest.mark.parametrize("width", [40, 70])
def test_a_fat_stroke_on_a_transparent_canvas_stays_solid(width: int, rec) -> None:
    # A "1" drawn with a brush wider than the background kernel (a fifth of the image): the morphology
    # that takes lighting off photos took the middle of the stroke for background, leaving a ring that
    # read as "0". A transparent background is flat: nothing to take off.
    canvas = Image.new("RGBA", (220, 220), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).rounded_rectangle([110 - width // 2, 20, 110 + width // 2, 200], width // 2, (0, 0, 0, 255))
    ii = ink_image(_encode(canvas, "PNG"))
    middle = ii.mask[110, 110 - width // 2 + 3 : 110 + width // 2 - 3]
    assert middle.all(), "the stroke was hollowed out"
    # A hollowed stroke reads as a 0; the solid one's most likely digit is 1. (Whether the model then
    # also calls a bar this fat a digit is its calibration: the model trained with real handwriting
    # gives the 40 px bar P(not a digit) 0.50, over its threshold, where the previous one gave 0.001.)
    assert int(np.argmax(rec.predict(_encode(canvas, "PNG")).probabilities)) == 1


@pytest.mark.parametrize("brush", [12, 14])
def test_a_brush_so_fat_that_loops_fill_in_still_reads(brush: int, mnist, rec) -> None:
    # 8s drawn 130 px high with a brush of radius 12-14 px: the loops fill in, and the "stroke" is the
    # whole blob. Thinned all the way to MNIST's width, only the blob's cores were left (17 and 14 of
    # these 20 read as 8); thinning now takes at most one MNIST stroke width off. The model shipped on
    # 2026-12-06 reads 19 / 18 / 18 of them as 8 at radii 12 / 13 / 14 (a 1 and a "not a digit"; the
    # other seeds of its recipe 19 each, the model before it 20).
    import cv2

    (x, y) = mnist[1]
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * brush + 1, 2 * brush + 1))
    read = []
    for i in np.flatnonzero(y == 8)[:20]:
        ink = np.zeros((220, 220), np.float32)
        ink[45:175, 45:175] = np.asarray(Image.fromarray(x[i]).resize((130, 130), Image.Resampling.BICUBIC)) / 255
        rgba = np.zeros((220, 220, 4), np.uint8)
        rgba[..., 3] = np.clip((cv2.dilate(ink, disc) - 0.3) * 4 * 255, 0, 255).astype(np.uint8)
        read.append(rec.predict(_encode(Image.fromarray(rgba, "RGBA"), "PNG")).digit)
    assert read.count(8) >= 18, read


# --- hand-made cases -------------------------------------------------------------------------------


def test_a_seven_drawn_in_a_corner_of_a_large_canvas(rec) -> None:
    canvas = Image.new("RGBA", (900, 700), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.line([(690, 530), (800, 530), (735, 680)], fill=(0, 0, 0, 255), width=14, joint="curve")
    answer = rec.predict(_encode(canvas, "PNG"))
    assert answer.digit == 7, answer


def test_a_digit_in_red_pen_on_a_yellow_note(mnist, rec) -> None:
    (x, y) = mnist[1]
    ink = np.asarray(Image.fromarray(x[18]).resize((140, 140), Image.Resampling.BICUBIC), np.float32) / 255  # a 3
    note = np.empty((220, 220, 3), np.float32)
    note[:] = (250, 235, 120)  # yellow sticky note
    red = np.array([200, 30, 40], np.float32)
    region = note[40:180, 50:190]
    note[40:180, 50:190] = region * (1 - ink[..., None]) + red * ink[..., None]
    answer = rec.predict(_encode(Image.fromarray(note.astype(np.uint8)), "JPEG", quality=85))
    assert answer.digit == int(y[18]) == 3, answer


def test_a_number_with_touching_digits(mnist, rec) -> None:
    (x, y) = mnist[1]
    rng = np.random.default_rng(5)
    picks = [3, 2, 1]  # MNIST test images #3, #2, #1: the text must match their labels
    strip = synth.number_strip([x[i] for i in picks], rng, touching=1.0)
    columns = np.flatnonzero(strip.max(axis=0) > 20)
    assert (strip.max(axis=0)[columns[0] : columns[-1] + 1] > 0).all()  # no empty column: they touch
    reading = rec.read(synth.as_photo(strip, rng, jpeg=False))
    assert reading.text == "".join(str(int(y[i])) for i in picks), reading


def test_a_narrow_digit_touching_its_neighbour(mnist, rec) -> None:
    # A 1 touching its neighbour makes a group hardly wider than one digit, and the cut lies far from
    # the middle. The reader used to try one cut near each expected boundary, and only in groups 0.85x
    # wider than tall: it read 21 of these 36 pairs ("10" as "0", "6" or nothing); now 30.
    (x, y) = mnist[1]
    right = 0
    for pair in ("10", "41", "17", "01", "71", "14"):
        for k in range(6):
            picks = [int(np.flatnonzero(y == int(d))[k]) for d in pair]
            rng = np.random.default_rng(k)
            strip = synth.number_strip([x[i] for i in picks], rng, touching=1.0)
            right += rec.read(synth.as_photo(strip, rng, jpeg=False)).text == pair
    assert right >= 28


def _number_in(name: str) -> str:
    """The number a fixture in tests/data holds, from its name: "number-2286.jpg" -> "2286"."""
    return name.removeprefix("number-").removesuffix(".jpg")


@pytest.mark.parametrize("name", ["number-210271.jpg", "number-897.jpg"])
def test_a_wide_digit_is_not_cut_in_two(name: str, rec) -> None:
    # Cut in two, a slanted 1 or a broad 7 reads as two digits at ~1.0 each, as sure as the whole: a
    # reading pays SPLIT_PRIOR per extra piece, so the whole wins (these read "2110271" and "8917").
    assert rec.read(DATA / name).text == _number_in(name)


def test_a_flag_beside_its_digit_belongs_to_it(rec) -> None:
    # The 5's flag starts just past the corner of its body (overlapping it by a fifth of the flag's
    # width): it was dropped as a speck and the 5 alone read "2" ("27007803").
    assert rec.read(DATA / "number-57007803.jpg").text == "57007803"


def test_a_group_too_wide_for_one_digit_is_read_as_two(rec) -> None:
    # "66" touching, 1.36 line heights wide: read whole as one sure "6" ("668858") until the width
    # of a reading's digits counted.
    assert rec.read(DATA / "number-6668858.jpg").text == "6668858"


def test_a_one_touching_a_digit_is_read(rec) -> None:
    # "18" touching: the tall 1 makes the group narrow for its own height (0.72) but not for the
    # line's (1.03). Measured against its own height alone, it was never cut and read "8" ("8875779").
    assert rec.read(DATA / "number-18875779.jpg").text == "18875779"


def test_a_curved_stroke_cut_from_a_digit_is_not_a_one(rec) -> None:
    # Cut in two, the 8 read as "8" and "1" at ~1.0 each ("22816"); its right-hand piece is a curved
    # stroke, not as thin as a 1, so that reading loses to the 8 read whole.
    assert rec.read(DATA / "number-2286.jpg").text == "2286"


def test_a_chain_of_cuts_pays_for_each_piece() -> None:
    # Cuts 0-3: a 1 whole (cuts 0-2, 0.999) or as two slivers (0-1, 1-2, each read "1" at 1.0), then
    # a 0 (2-3). The slivers' chain is as sure at its least piece, but it has a piece more.
    spans = {(0, 2): 0, (0, 1): 1, (1, 2): 2, (2, 3): 3}
    assert _best_cuts(4, spans, np.array([0.999, 1.0, 1.0, 1.0])) == [0, 3]
    # Pieces that read much better than the whole still win.
    assert _best_cuts(4, spans, np.array([0.5, 1.0, 1.0, 1.0])) == [1, 2, 3]
    assert _best_cuts(4, {(0, 3): 0}, np.array([1.0])) == [0]  # no chain of two pieces: the whole


def _chains(n: int, spans: dict[tuple[int, int], int], start: int = 0) -> list[list[int]]:
    """Every chain of spans from cut ``start`` to cut n-1 (the brute-force reference for _best_cuts)."""
    if start == n - 1:
        return [[]]
    return [[k, *rest] for (i, j), k in spans.items() if i == start for rest in _chains(n, spans, j)]


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 7), st.data())
def test_the_best_chain_of_cuts_is_found(n: int, data) -> None:
    # Against every chain, enumerated: the same best value (least score x SPLIT_PRIOR per extra piece),
    # and no more pieces than the fewest that reach it.
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) != (0, n - 1)]
    chosen = data.draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    spans = {pair: k for k, pair in enumerate(chosen)}
    # Scores from a few levels, close together as real pieces' are: ties and near-ties are common.
    levels = st.sampled_from([0.3, 0.9, 0.99, 0.995, 1.0])
    score = np.array(data.draw(st.lists(levels, min_size=len(spans), max_size=len(spans))))
    value = {tuple(c): score[c].min() * SPLIT_PRIOR ** (len(c) - 1) for c in _chains(n, spans) if len(c) >= 2}
    best = _best_cuts(n, spans, score)
    if not value:
        assert best == [0]
        return
    top = max(value.values())
    assert tuple(best) in value and value[tuple(best)] == top
    assert len(best) == min(len(c) for c, v in value.items() if v == top)


def test_a_zigzag_gets_a_bounded_number_of_cuts(monkeypatch) -> None:
    # A zigzag scribble has an ink minimum at every tooth; each pair of cuts is a piece for the model,
    # so without a bound one such image kept `read` busy for seconds.
    image = Image.new("L", (800, 220), 255)
    ImageDraw.Draw(image).line([(10 + 39 * t, 10 if t % 2 else 205) for t in range(21)], fill=0, width=3)
    ii = ink_image(image)
    (group,) = segment(ii)
    cuts = _cut_candidates(ii, group)
    assert len(cuts) == MAX_CUTS and cuts == sorted(cuts)
    assert cuts[0] == group.x and cuts[-1] == group.x + group.w  # the ends are always kept
    monkeypatch.setattr(rules, "MAX_CUTS", 10**6)
    assert set(cuts) < set(_cut_candidates(ii, group))  # the bound took some out


def test_a_digit_is_not_cut_into_slivers(rec) -> None:
    # The rule-based reader cut the last 0 into "0" and a sliver read "1" at ~1.0 ("2686010"), tied
    # with the 0 whole; the learned line reader reads the line whole.
    assert rec.read(DATA / "number-268600.jpg").text == "268600"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "number-71171881.jpg",
            marks=pytest.mark.xfail(
                strict=True, reason="a known miss of the learned line reader: the final fat 1 is not read"
            ),
        ),
        "number-6874.jpg",
    ],
)
def test_an_odd_digit_in_a_line_is_kept(name: str, rec) -> None:
    # A fat 1 and a 4 with an extra stroke, each as tall as the line: the model reads them right but
    # gives P(not a digit) 0.84; `read` dropped marks at 0.8 ("7117881", "687"), now at READ_REJECT.
    assert rec.read(DATA / name).text == _number_in(name)


def test_a_short_stroke_cut_from_a_digit_is_not_a_one(rec) -> None:
    # Cut from the 0, a thin piece whose ink spans only part of the group's height read as a "1"
    # ("1482107"); a 1 spans its group's height (TALL_ONE).
    assert rec.read(DATA / "number-148207.jpg").text == "148207"


@pytest.mark.xfail(
    strict=True,
    reason="the learned line reader reads 26 of these 30 right (the rule-based one 28+): its shipped model "
    "was trained without ticks among its marks (docs/benchmarks.md#reading-whole-numbers)",
)
def test_a_short_tick_is_not_read_as_a_one(mnist, rec) -> None:
    # Fitted into 20x20, any short bar looks like a 1: a tick at 40% of the line's height after "47"
    # was read "471" (28 of these 30 photos); a "1" under half the line's height is now dropped.
    (x, y) = mnist[1]
    right = 0
    for k in range(30):
        picks = [int(np.flatnonzero(y == 4)[k]), int(np.flatnonzero(y == 7)[k])]
        rng = np.random.default_rng(k)
        strip = np.pad(synth.number_strip([x[i] for i in picks], rng, touching=0.0), ((0, 0), (0, 12)))
        end = int(np.flatnonzero(strip.max(axis=0) > 20)[-1])
        mid = strip.shape[0] // 2
        strip[mid - 3 : mid + 5, end + 5 : end + 7] = 255  # 8 px high; the digits are 20
        right += rec.read(synth.as_photo(strip, rng, jpeg=False)).text == "47"
    assert right >= 28


def test_reading_a_zip_code_with_a_speck_and_boxes(mnist, rec) -> None:
    (x, y) = mnist[1]
    rng = np.random.default_rng(11)
    picks = [int(np.flatnonzero(y == d)[0]) for d in (9, 0, 2, 1, 0)]
    strip = synth.number_strip([x[i] for i in picks], rng, touching=0.0)
    strip = np.pad(strip, ((6, 6), (6, 6)))
    strip[2, 2] = 255  # a speck of dust
    page = 255 - np.repeat(np.kron(strip, np.ones((6, 6)))[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
    reading = rec.read(page)
    assert reading.text == "90210", reading
    xs = [d.box[0] for d in reading.digits]
    assert xs == sorted(xs)
    for d in reading.digits:
        bx, by, bw, bh = d.box
        assert 0 <= bx < page.shape[1] and 0 <= by < page.shape[0] and bw > 10 and bh > 40


def test_lines_one_above_the_other_are_read_apart(mnist, rec) -> None:
    # A zip code over an amount: read as one line, the two came out interleaved by position
    # ("73442" over "7531" read "773543112"). Each line is read on its own, top to bottom.
    (x, y) = mnist[1]
    rng = np.random.default_rng(3)
    right = []
    for _ in range(8):
        top, bottom = rng.choice(len(x), 5, replace=False), rng.choice(len(x), 4, replace=False)
        strips = [synth.number_strip([x[i] for i in pick], rng) for pick in (top, bottom)]
        page = np.zeros((strips[0].shape[0] + strips[1].shape[0] + 20, max(s.shape[1] for s in strips) + 20), np.uint8)
        page[5 : 5 + strips[0].shape[0], 10 : 10 + strips[0].shape[1]] = strips[0]
        page[15 + strips[0].shape[0] : -5, 10 : 10 + strips[1].shape[1]] = strips[1]
        reading = rec.read(synth.as_photo(page, rng, size=400))
        text = "\n".join("".join(str(int(y[i])) for i in pick) for pick in (top, bottom))
        right.append(reading.text == text)
        lines = reading.text.split("\n")
        if len(lines) == 2:  # the digits come line by line, each line left to right
            assert [d.digit for d in reading.digits] == [int(c) for c in "".join(lines)]
            assert max(d.box[1] for d in reading.digits[: len(lines[0])]) < min(
                d.box[1] for d in reading.digits[len(lines[0]) :]
            )
    assert sum(right) >= 8, right


def test_a_lone_mark_that_is_no_digit_reads_as_no_number(mnist, rec) -> None:
    # Cut into slivers, a letter or a doodle read as sure 1s and 7s ("1111"): `read` answered digits
    # for 533 of 800 validation non-digits, where `predict` rejected all but 21. A line's only mark
    # now reads nothing when the model is surer that it is no digit than of any reading of it.
    rng = np.random.default_rng(0)
    fonts = synth.validation_letter_fonts()
    letters = [synth.as_photo(synth.letter_glyph(rng, fonts), rng, fill=(0.3, 0.7)) for _ in range(20)]
    texts = [rec.read(image).text for image in letters]
    assert sum(t == "" for t in texts) >= 16, texts  # 20 with the learned line reader (rules: 11)
    # A lone digit, and a lone group of touching digits, still read.
    (x, y) = mnist[1]
    picks = [int(np.flatnonzero(y == d)[0]) for d in (4, 1)]
    strip = synth.number_strip([x[i] for i in picks], rng, touching=1.0)
    assert rec.read(synth.as_photo(strip, rng, jpeg=False)).text == "41"
    assert rec.read(synth.as_photo(x[picks[0]], rng)).text == "4"


def test_strokes_of_one_digit_are_joined(rec) -> None:
    # A 5 written in two strokes: the flag does not touch the body.
    page = Image.new("L", (300, 300), 255)
    draw = ImageDraw.Draw(page)
    draw.line([(110, 70), (195, 70)], fill=0, width=13)  # the flag
    draw.line([(112, 84), (105, 145)], fill=0, width=13)
    draw.arc([(95, 130), (205, 240)], start=-150, end=150, fill=0, width=13)
    reading = rec.read(np.asarray(page))
    assert reading.text == "5", reading


# --- form fields -----------------------------------------------------------------------------------


def _form_page(ink: np.ndarray, scale: int = 4) -> np.ndarray:
    """White-on-black ink (0-255, any size) as dark ink on light paper, enlarged ``scale`` times (uint8)."""
    import cv2

    size = (ink.shape[1] * scale, ink.shape[0] * scale)
    big = cv2.resize(ink.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.pad(235.0 - big * (200.0 / 255.0), 20, constant_values=235.0).clip(0, 255).astype(np.uint8)


def _form_numbers(mnist, style: str, seed: int, photo: bool) -> list[tuple[np.ndarray | bytes, str]]:
    (x, y) = mnist[1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(10):
        pick = rng.choice(len(x), int(rng.integers(3, 7)), replace=False)
        field = synth.form_field([x[i] for i in pick], rng, style)
        out.append((synth.as_photo(field, rng) if photo else _form_page(field), "".join(str(int(y[i])) for i in pick)))
    return out


@pytest.mark.parametrize("style", synth.FORM_STYLES)
def test_numbers_written_in_form_fields_are_read_without_the_printed_lines(style: str, mnist, rec) -> None:
    # Before printed lines were told from ink, a box's sides read as 1s or 0s, and a comb or an
    # underline joined every digit into one mark too wide to read: of these 20 numbers, at most 1
    # (boxes 0, row 0, comb 0, underline 1) was read right; now 17-19 of 20. Photos are turned up
    # to 8 degrees.
    clean = _form_numbers(mnist, style, seed=5, photo=False)
    photos = _form_numbers(mnist, style, seed=6, photo=True)
    right = [rec.read(image).text == text for image, text in clean + photos]
    assert sum(right[:10]) >= 9 and sum(right) >= 15, right


def test_a_digit_in_a_box_is_read_and_an_empty_box_is_no_digit(mnist, rec) -> None:
    (x, y) = mnist[1]
    rng = np.random.default_rng(2)
    answers = [rec.predict(_form_page(synth.form_field([x[i]], rng, "boxes"))).digit for i in range(10)]
    # Before: 0 of 10, every one "not a digit" (the box, not the digit, was fitted into the field).
    assert sum(a == y[i] for i, a in enumerate(answers)) >= 9, answers
    empty = _form_page(synth.form_field([np.zeros((28, 28), np.uint8)] * 4, rng, "row"))
    assert rec.predict(empty).digit is None
    assert rec.read(empty).text == ""  # before: "0777"
    assert rec.read(_form_page(synth.form_field([np.zeros((28, 28), np.uint8)] * 5, rng, "comb"))).text == ""


def test_the_sides_of_a_box_along_the_crops_edges_are_not_ink(mnist, rec) -> None:
    # A box cut by the crop at one or two corners leaves two or three of its sides along the image's
    # edges, joined (an L, a U): neither a frame nor lines apart, they were read with the digit (an L:
    # every one "not a digit"). A digit with no line keeps its own straight strokes (see below).
    import cv2

    (x, y) = mnist[1]
    right = {"L": 0, "U": 0}
    for i in range(20):
        image = 255 - np.pad(cv2.resize(x[i], (84, 84), interpolation=cv2.INTER_CUBIC), 6)
        t = 1 + i % 3  # 1-3 px
        if i % 2:
            image[:t], image[:, :t] = 0, 0  # top and left: an L
            right["L"] += rec.predict(image).digit == y[i]
        else:
            image[-t:], image[:, :t], image[:, -t:] = 0, 0, 0  # left, bottom and right: a U
            right["U"] += rec.predict(image).digit == y[i]
    assert right["L"] >= 9 and right["U"] >= 9, right
    for k in np.flatnonzero(y == 7)[:10]:  # a 7's bar flush with the crop's top edge is its own
        crop = synth._crop(x[k])
        big = cv2.resize(crop, (crop.shape[1] * 4, crop.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
        mask = np.pad(big, ((0, 40), (0, 0))) > 100
        assert forms._edge_lines(mask) is None


def test_a_bold_digit_cropped_from_its_top_to_its_bottom_is_not_a_desk(mnist, rec) -> None:
    # A digit cut as high as its ink, with paper either side (a cell as high as the line): closed, a
    # bold stroke from the top edge to the bottom one looked like a desk along the image's edge and
    # was blanked. These five of the first 200 test digits (20 of each) lost the stroke so, or all.
    import cv2

    (x, y) = mnist[1]
    for k in (1, 17, 128, 165, 269):
        crop = synth._crop(x[k])
        big = cv2.resize(crop, (crop.shape[1] * 4, crop.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
        image = 255 - np.pad(big, ((0, 0), (20, 20)))
        assert np.count_nonzero(to_mnist(image) > 100) > 40, k
        assert rec.predict(image).digit == y[k], k


def _flush_with_three_edges(digit: np.ndarray, side: int) -> np.ndarray:
    """A white-on-black 28x28 digit, dark on white, its ink enlarged 4x and cropped flush with three
    edges, with a margin of 28 px on ``side`` (0 top, 1 bottom, 2 left, 3 right)."""
    import cv2

    crop = synth._crop(digit)
    big = cv2.resize(crop, (crop.shape[1] * 4, crop.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    pad = [((28, 0), (0, 0)), ((0, 28), (0, 0)), ((0, 0), (28, 0)), ((0, 0), (0, 28))][side]
    return 255 - np.pad(big, pad)


def test_a_digit_flush_with_three_edges_of_its_crop_is_read(mnist, rec) -> None:
    # A digit cut off centre: its ink touches three edges, paper lies along the fourth. The blocks'
    # means fell towards the ink and were taken for lighting (the blank side levelled to a grey, the
    # polarity read as light ink), and bold strokes touching two edges closed into a "desk" and were
    # blanked. These 80 (the first 20 test digits, each side) read 69 right before, 78 now; of the
    # first 200 each side, 84-87% before, 96-98% now.
    (x, y) = mnist[1]
    right = sum(rec.predict(_flush_with_three_edges(x[k], side)).digit == y[k] for side in range(4) for k in range(20))
    assert right >= 76, right


def test_a_white_digit_drawn_flush_with_three_edges_of_a_canvas_is_read(mnist, rec) -> None:
    # As tall as a black 280 px canvas, against its left or right side: the light strokes closed into
    # a band along the edges that passed for a page (the black beside it blanked as a desk), or the
    # blocks' means rose towards them as lighting would. The first 100 test digits each side: 170
    # right of 200 before, 187 now.
    import cv2

    (x, y) = mnist[1]
    right = 0
    for k in range(100):
        ys, xs = np.nonzero(x[k] > 20)
        ink = x[k][ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        w = min(280, round(ink.shape[1] * 280 / ink.shape[0]))
        for x0 in (0, 280 - w):
            canvas = np.zeros((280, 280), np.uint8)
            canvas[:, x0 : x0 + w] = cv2.resize(ink, (w, 280), interpolation=cv2.INTER_CUBIC)
            right += rec.predict(canvas).digit == y[k]
    assert right >= 182, right


def test_a_bold_white_digit_flush_with_a_black_canvas_is_read_as_light_ink(mnist, rec) -> None:
    # Drawn with a brush a tenth of the canvas wide, the strokes outlast the opening that tells a page
    # from strokes (as a page does), so the black beside them was blanked as a desk and the digit read
    # as dark ink on it: the first 60 test digits so drawn, 25 read as dark ink and 35 right before,
    # 7 and 53 now. A page is not convex nor as wide as that.
    import cv2

    (x, y) = mnist[1]
    dark = right = 0
    for k in range(60):
        ink = synth._crop(x[k])
        w = min(280, round(ink.shape[1] * 280 / ink.shape[0]))
        big = cv2.resize(ink, (w, 280), interpolation=cv2.INTER_CUBIC)
        big = cv2.dilate(big, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25)))
        canvas = np.zeros((280, 280), np.uint8)
        x0 = 0 if k % 2 else 280 - w
        canvas[:, x0 : x0 + w] = big
        dark += images.ink_image(canvas).dark_ink
        right += rec.predict(canvas).digit == y[k]
    assert dark <= 12 and right >= 48, (dark, right)


def test_a_small_page_filled_by_its_digit_on_a_desk_is_read(mnist, rec, monkeypatch) -> None:
    # The page's light side does not outlast the opening in the image as it is (the digit fills it),
    # as light strokes on a black canvas do not; but it is convex, and so a page: without that, 15 of
    # these 40 were read as light ink.
    import cv2

    (x, y) = mnist[1]

    def photo(k: int) -> np.ndarray:
        img = np.full((200, 200), 90, np.float32) + np.random.default_rng(k).normal(0, 4, (200, 200))
        img[40:160, 40:160] = 225
        img[50:150, 50:150] -= cv2.resize(x[k], (100, 100), interpolation=cv2.INTER_CUBIC) / 255 * 170
        return np.clip(img, 0, 255).astype(np.uint8)

    assert sum(rec.predict(photo(k)).digit == y[k] for k in range(40)) >= 38
    monkeypatch.setattr(images, "PAGE_CONVEX", 2.0)  # no region is so convex: the page is not found
    assert sum(rec.predict(photo(k)).digit == y[k] for k in range(40)) <= 30


def test_a_photo_of_lined_paper_turned_a_few_degrees_is_no_tight_crop(mnist) -> None:
    # Its lines come near every edge, as a digit cropped tight to its ink does, and, turned, fill no
    # row; three straight lines apart one way are lined paper (two both ways, squared paper). Before,
    # only the latter: 6 of these 60 were read as tight crops (the lines kept as ink), 1 now. Scans
    # cropped tight stay so (a bold digit holds two straight chords one way at most): 176 of 200
    # before and after (the rest have a margin the scan's blur or a slant leaves).
    (x, _) = mnist[1]
    rng = np.random.default_rng(6)

    def tight(data: bytes) -> bool:
        gray, _ = images._resize_to_work(np.clip(load_image(data), 0, 255).astype(np.uint8))
        return images._cropped_tight(gray)

    photos = [synth.as_photo(synth.on_ruled_paper(x[k], rng, "lined"), rng, fill=(0.9, 1.0)) for k in range(60)]
    assert sum(tight(p) for p in photos) <= 2
    rng = np.random.default_rng(6)
    assert sum(tight(synth.captured(x[k], rng, "tight")) for k in range(200)) >= 170


def test_a_margins_rule_through_a_digit_in_a_photo_is_not_ink(mnist, rec) -> None:
    # The rule from top to bottom ends short of the frame in a photo of the page, and was looked for
    # only where the ink ran from the image's top to its bottom: read with the digit (a 0 as a 9).
    # Now also where it is much lighter than the pen: 45 of these 60 right before, 55 now. A digit's
    # own stem, as dark as the rest of it, stays (below; without the test of lightness, 2 of these
    # 200 1s and 4s lost theirs).
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(6)
    photos = [synth.as_photo(synth.on_ruled_paper(x[k], rng, "margin"), rng, fill=(0.9, 1.0)) for k in range(60)]
    assert sum(rec.predict(p).digit == y[k] for k, p in enumerate(photos)) >= 53
    for k in np.flatnonzero(np.isin(y, (1, 4)))[:200]:  # tall, a stroke from top to bottom, one pen
        image = 255 - np.pad(cv2.resize(x[k], (112, 112), interpolation=cv2.INTER_CUBIC), 60)
        assert np.array_equal(to_mnist(image), to_mnist(image, rules=False)), k


def test_a_margins_rule_is_searched_for_only_where_one_may_be(mnist, monkeypatch) -> None:
    # A drawing on a transparent canvas has no page, so no printed rule lighter than the pen; and in a
    # photo such a rule runs past the digit at both ends, so where a stroke reaches the top or the
    # bottom at the pen's strength there is none. The line transform that looks for one (about a
    # quarter of a photo's preprocessing) is asked only where both ends are light: of these ten
    # photos, every plain one spares it, 8 on margin paper ask it. Every field of the benchmarks'
    # sets is what it was before (docs/experiments.md, "The margin's rule search, spared").
    (x, _) = mnist[1]
    calls = []
    search = forms._touching_rule_reduced

    def counted(mask: np.ndarray, out: np.ndarray, upright: bool = False, loose: bool = False) -> None:
        calls.append(upright)
        search(mask, out, upright, loose)

    monkeypatch.setattr(forms, "_touching_rule_reduced", counted)
    rng = np.random.default_rng(3)
    tall = [k for k in range(200) if np.ptp(np.nonzero(x[k])[0]) > 1.3 * np.ptp(np.nonzero(x[k])[1])][:10]
    for k in tall:
        to_mnist(synth.as_canvas(x[k], rng))
    assert not any(calls)
    for k in tall:
        to_mnist(synth.as_photo(x[k], rng))
    assert sum(calls) <= 2
    calls.clear()
    for k in tall:
        to_mnist(synth.as_photo(synth.on_ruled_paper(x[k], rng, "margin"), rng, fill=(0.9, 1.0)))
    assert sum(calls) >= 7


def test_a_rule_runs_past_the_digit_lighter_than_the_pen_at_both_ends() -> None:
    marks = np.zeros((100, 40), bool)
    ink = np.zeros((100, 40), np.float32)
    marks[20:80, 10:30] = True  # the digit, at the pen's strength
    ink[20:80, 10:30] = 1.0
    marks[:, 18:21] = True  # a rule from the top of the marks to their bottom, half as strong
    ink[:, 18:21] = np.maximum(ink[:, 18:21], 0.5)
    assert forms._ends_light(marks, ink)
    ink[:4, 18:21] = 1.0  # a stroke at the pen's strength reaches the top: no rule runs past it there
    assert not forms._ends_light(marks, ink)


def test_lined_paper_whose_lines_end_within_the_photo_is_not_ink(mnist, rec) -> None:
    # The ruled block fills half of the photo: its lines come near no two opposite edges, and were
    # never looked for (40 of these 60 right; every miss kept the lines). Lines that run past the
    # digit on both sides by a quarter of its height, one of them apart from it, go now: 51.
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(6)
    photos = [synth.as_photo(synth.on_ruled_paper(x[k], rng, "lined"), rng, fill=(0.5, 0.7)) for k in range(60)]
    assert sum(rec.predict(p).digit == y[k] for k, p in enumerate(photos)) >= 48
    # Only where a component is long and thin enough to be such a line is the search made.
    line = np.zeros((60, 100), np.uint8)
    line[54:57, 2:98] = 1  # a page's line under the digit, apart from it
    digit = np.zeros((60, 100), np.uint8)
    digit[10:50, 40:44] = 1
    digit[10:14, 30:60] = 1  # a 7: its bar as wide as its ink, joined to its stem
    for mask, alone in ((line | digit, True), (digit, False)):
        stats = cv2.connectedComponentsWithStats(mask, connectivity=8)[2]
        assert forms._line_alone(stats, mask.shape) is alone


def test_a_thick_rule_crossed_by_a_stroke_is_found_by_the_transform_asked_again() -> None:
    # OpenCV's probabilistic transform takes off the pixels of a failed try: a slanted try through a
    # thick band and the ring crossing it ate the band, and no line was found at half its length in
    # votes. Asked again for more votes (only long lines start a try), it is.
    import cv2

    for y, dy, t, cx, ax, ay, th in ((20, 2, 3, 35, 15, 11, 3), (11, 1, 3, 31, 17, 9, 4), (26, -2, 5, 52, 8, 13, 3)):
        m = np.zeros((34, 89), np.uint8)
        cv2.line(m, (0, y), (88, y + dy), 1, t)
        cv2.ellipse(m, (cx, 17), (ax, ay), 0, 0, 360, 1, th)
        assert forms._hough_segments(m, 80, upright=False) == []
        segments = forms._hough_segments(m, 80, upright=False, again=True)
        assert segments and all(abs(int(s[1]) - y) <= t + 2 for s in segments)


def test_a_margins_rule_beside_a_number_on_lined_paper_is_not_read(mnist, rec) -> None:
    # A notebook page: ruled lines, a margin's rule beside the number joining them into one mark.
    # Between two lines the rule goes as a box's side does; past the last line found it stood as a
    # tall bar and was read as a 1 (or took the line's digits with it): 22 of these 30 right before,
    # 25 now (a bar joined to a rule, 1.5 times as tall as the marks standing apart, is printed).
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(8)
    right = 0
    for _ in range(30):
        idx = rng.integers(0, len(x), int(rng.integers(3, 7)))
        strip = cv2.resize(
            synth.number_strip([x[i] for i in idx], rng), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC
        )
        h, w = strip.shape
        step = int(1.4 * h)
        page = np.zeros((h + 2 * step, w + 160), np.float32)
        page[step : step + h, 80 : 80 + w] = strip
        for row in range(int(0.95 * h), page.shape[0], step):  # the number stands on one of them
            cv2.line(page, (0, row), (page.shape[1] - 1, row), 110, 4)
        cv2.line(page, (40, 0), (40, page.shape[0] - 1), 110, 4)
        right += rec.read(synth.as_photo(page, rng, fill=(0.9, 1.0))).text == "".join(str(int(y[i])) for i in idx)
    assert right >= 24


def test_lighting_is_told_from_ink_massed_on_one_side() -> None:
    # A bold 0 filling the right of the frame, flat paper: the blocks' means fall to the right as a
    # gradient's would, but the paper between its strokes is as light as on the left.
    import cv2

    ring = np.full((96, 96), 255, np.uint8)
    cv2.ellipse(ring, (62, 48), (30, 44), 0, 0, 360, 0, 16)
    slope, curve = images._paper_trend(ring), images._paper_curve(ring)
    assert abs(slope[0]) > images.INK_LIT_RANGE  # the fit alone takes it for lighting
    assert images._lit_by_ink(ring, slope, curve)
    # Lit from the left: the same ink on paper falling from 240 to 120 is lighting.
    lit = (ring.astype(np.float32) * np.linspace(240, 120, 96, dtype=np.float32)[None, :] / 255).astype(np.uint8)
    slope, curve = images._paper_trend(lit), images._paper_curve(lit)
    assert not images._lit_by_ink(lit, slope, curve)
    thin = np.full((96, 96), 255, np.uint8)  # and a thin 0 there leaves the fit flat enough
    cv2.ellipse(thin, (62, 48), (30, 44), 0, 0, 360, 0, 3)
    assert not images._lit_by_ink(thin, images._paper_trend(thin), images._paper_curve(thin))
    # Light ink on a flat black board, and on a board lit from the left: the darkest board asked.
    chalk = 255 - ring
    assert images._lit_by_ink(chalk, images._paper_trend(chalk), images._paper_curve(chalk))
    board = (np.linspace(120, 20, 96, dtype=np.float32)[None, :] + chalk.astype(np.float32) * 0.5).astype(np.uint8)
    assert not images._lit_by_ink(board, images._paper_trend(board), images._paper_curve(board))


def test_a_number_in_a_box_whose_top_the_crop_cut_off_is_read(mnist, rec) -> None:
    # The box's base runs along the crop's lowest rows: where the ink's box was not a whole number of
    # 4 px blocks high, the quick search for rules left those rows out, missed the base, and the box's
    # sides were read with the number (12 of these 16 right before).
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(3)
    right = 0
    for k in range(16):
        idx = rng.integers(0, len(x), 4)
        ink = np.clip(synth.number_strip([x[i] for i in idx], rng), 0, 255).astype(np.uint8)
        big = cv2.resize(ink, (ink.shape[1] * 3, ink.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
        ys, xs = np.nonzero(big > 20)
        m = 8 + k % 4  # ink boxes 1-3 rows past a whole number of blocks, or none
        image = 255 - big[max(0, ys.min() - m) : ys.max() + m + 1, max(0, xs.min() - 10) : xs.max() + 11]
        image[-2:], image[:, :2], image[:, -2:] = 0, 0, 0  # a box's base and sides: its top cut off
        right += rec.read(image).text == "".join(str(int(y[i])) for i in idx)
    assert right >= 14


def test_a_digit_written_on_an_underline_is_predicted(mnist, rec) -> None:
    # `predict` looked for printed rules only in frames: the underline joined the digit or was the
    # bigger mark, and 1 of these 12 (as photos, 9 of 200 validation digits) came back right.
    (x, y) = mnist[1]
    rng = np.random.default_rng(3)
    picks = rng.choice(len(x), 12, replace=False)
    answers = [rec.predict(_form_page(synth.form_field([x[i]], rng, "underline"))).digit for i in picks]
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= 11, (answers, y[picks])


def _on_a_line(digit: np.ndarray, rng: np.random.Generator, through: bool) -> np.ndarray:
    """A 28x28 digit enlarged 3x with a printed line across it: under it, touching its lowest ink
    (``through`` False), or through its lower half (True); the line runs on past the digit by 40-70%
    of its height on each side and is 2-4 px wide (a pen's stroke is about 7)."""
    import cv2

    big = cv2.resize(synth._crop(digit), None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
    h, w = big.shape
    past = [int(rng.uniform(0.3, 0.45) * h) for _ in range(2)]
    ink = np.zeros((h + 40, w + sum(past) + 20), np.float32)
    ink[20 : 20 + h, 10 + past[0] : 10 + past[0] + w] = big
    row = 20 + (int(rng.uniform(0.55, 0.85) * h) if through else h - 1)
    ink[row : row + int(rng.integers(2, 5)), 10 : 10 + past[0] + w + past[1]] = 255
    return ink


def test_a_digit_touching_or_crossed_by_a_printed_line_is_predicted(mnist, rec) -> None:
    # A line that the digit touches joins it into one mark, whose height (digit and line) made the
    # line look too short to be a rule: before, 5 of these 12 underlined digits and 6 of 12 crossed
    # ones were read right; now 11 and 8 (a line through a 1 is shorter than the 1 is high, and
    # stays). See docs/experiments.md, "Lines and boxes around one digit".
    (x, y) = mnist[1]
    rng = np.random.default_rng(4)
    picks = rng.choice(len(x), 12, replace=False)
    for through, least in ((False, 11), (True, 8)):
        answers = [rec.predict(_form_page(_on_a_line(x[i], rng, through), scale=1)).digit for i in picks]
        assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= least, (through, answers, y[picks])


def test_the_page_renders_draw_what_they_say(mnist) -> None:
    # The renders of benchmarks/real_handwriting.py's rows of digits cut from pages.
    import io

    from PIL import Image

    (x, _) = mnist[1]
    rng = np.random.default_rng(0)
    digit_columns = (synth._enlarged(x[0]) > 0).any(axis=0).sum()
    for style in synth.CELL_STYLES:
        ink = synth.in_a_form_cell(x[0], rng, style)
        assert (ink > 0).any(axis=0).sum() > digit_columns, style  # the printed lines reach beyond the digit
    for paper, rows, cols in (("lined", True, False), ("margin", False, True), ("squared", True, True)):
        ink = synth.on_ruled_paper(x[0], rng, paper)
        assert (ink > 0).all(axis=1).any() == rows and (ink > 0).all(axis=0).any() == cols, paper
    with pytest.raises(ValueError, match="unknown"):
        synth.in_a_form_cell(x[0], rng, "circle")
    with pytest.raises(ValueError, match="unknown"):
        synth.on_ruled_paper(x[0], rng, "dotted")
    ink = synth.cut_from_a_number(x[0], [x[1], x[2]], rng)
    columns = (ink > 0).any(axis=0)
    assert columns[0] and columns[-1] and not columns.all()  # the neighbours' pieces, apart from the digit
    scan = np.asarray(Image.open(io.BytesIO(synth.as_scan(ink, rng))))
    assert scan.ndim == 2 and scan.min() < scan.max() - 100  # dark ink on light paper, no margin added
    assert scan.shape[0] <= ink.shape[0] and scan.shape[1] <= ink.shape[1]


def test_every_capture_condition_gives_an_image_of_the_digit(mnist, rec) -> None:
    """`synth.captured`: each condition is an image file that the preprocessing turns back into a field
    the shipped model reads as the digit it was made from, for most digits."""
    (x, y) = mnist[1]
    picks = range(8)
    for condition in synth.CONDITIONS:
        rng = np.random.default_rng(1)
        files = [synth.captured(x[i], rng, condition, others=x[:50]) for i in picks]
        assert all(isinstance(f, bytes) and len(f) > 100 for f in files), condition
        answers = [rec.predict(f).digit for f in files]
        assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= 6, (condition, answers)
    with pytest.raises(ValueError, match="unknown condition"):
        synth.captured(x[0], np.random.default_rng(0), "underwater")


def _in_a_cell(digit: np.ndarray, rng: np.random.Generator, comb: bool) -> np.ndarray:
    """A 28x28 digit enlarged 3x, standing on a printed base line (3 px) with an upright bar either
    side: a comb (the base running on past its teeth, which are half the digit's height or more) or
    a cell open at the top (the base ending at its sides, which rise above the digit)."""
    import cv2

    big = cv2.resize(synth._crop(digit), None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
    h, w = big.shape
    side = int((1.4 if comb else 1.25) * h)
    ink = np.zeros((h + 30, side + 40), np.uint8)
    left = 20 + (side - w) // 2
    ink[10 : 10 + h, left : left + w] = big
    base = 10 + h - int(rng.integers(0, 3))  # under the digit, touching it or nearly
    top = base - int(rng.uniform(0.5, 1.0) * h) if comb else 5
    cv2.line(ink, (5, base) if comb else (20, base), (side + 35, base) if comb else (20 + side, base), 255, 3)
    for tx in (20, 20 + side):
        cv2.line(ink, (tx, base), (tx, top), 255, 3)
    return ink


@pytest.mark.parametrize(
    ("comb", "seed", "least"),
    [
        # A comb's teeth stood beside the digit after its base line went: before, 0 of these 12
        # right, now 11.
        (True, 7, 10),
        # A cell's base ends at its sides, so it never ran on past the digit as a line under it
        # must; where upright bars end it on both sides, it need not: before, 4 of 12, now 9.
        (False, 14, 8),
    ],
)
def test_a_digit_in_a_comb_or_an_open_cell_is_predicted(comb: bool, seed: int, least: int, mnist, rec) -> None:
    # See docs/experiments.md, "Lines and boxes around one digit".
    (x, y) = mnist[1]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), 12, replace=False)
    answers = [rec.predict(_form_page(_in_a_cell(x[i], rng, comb), scale=1)).digit for i in picks]
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= least, (answers, y[picks])


def test_a_bold_digit_touching_its_box_is_predicted(mnist, rec) -> None:
    # The box and a bold digit touching it cover over half of the box's area: it was not taken for a
    # frame, and the box was fitted into the field ("not a digit"): before, 0 of these 12; now 11.
    import cv2

    (x, y) = mnist[1]
    picks = np.random.default_rng(6).choice(len(x), 12, replace=False)
    answers = []
    for i in picks:
        big = cv2.dilate(cv2.resize(synth._crop(x[i]), None, fx=3, fy=3), np.ones((3, 3), np.uint8))
        h, w = big.shape
        side = max(h, w) + 8
        ink = np.zeros((side, side), np.uint8)
        ink[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = big
        cv2.rectangle(ink, (3, 3), (side - 4, side - 4), 255, 3)  # touching the digit's longer sides
        answers.append(rec.predict(_form_page(ink, scale=1)).digit)
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= 10, (answers, y[picks])


def _scanned(ink: np.ndarray) -> np.ndarray:
    """White-on-black ink as dark ink on light paper, with no margin (uint8)."""
    return (235.0 - ink * (200.0 / 255.0)).clip(0, 255).astype(np.uint8)


def _cut_from_a_number(x: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
    """Digit ``i`` of ``x`` enlarged 3x and cropped as from a written number: a margin of 15% of its
    height, into which the neighbours' nearest strokes reach from both sides, cut by the crop's edges."""
    import cv2

    def big(k: int) -> np.ndarray:
        return cv2.resize(synth._crop(x[k]), None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)

    d = big(i)
    h, w = d.shape
    m = int(0.15 * h)
    ink = np.zeros((h + 2 * m, w + 2 * m), np.uint8)
    ink[m : m + h, m : m + w] = d
    for left in (True, False):
        o = big(int(rng.integers(len(x))))
        o = cv2.resize(o, (max(2, o.shape[1] * h // o.shape[0]), h))
        take = m - int(rng.integers(2, m // 2))  # its piece ends a few pixels short of the digit
        if left:
            ink[m : m + h, :take] = np.maximum(ink[m : m + h, :take], o[:, -take:])
        else:
            ink[m : m + h, -take:] = np.maximum(ink[m : m + h, -take:], o[:, :take])
    return ink


def test_a_digit_cut_from_a_number_is_read_without_its_neighbours_pieces(mnist, rec) -> None:
    # The neighbours' strokes that the crop's edges cut were read with the digit: before, 9 of these
    # 12 right, now 12 (docs/experiments.md, "Lines and boxes around one digit").
    (x, y) = mnist[1]
    rng = np.random.default_rng(9)
    picks = rng.choice(len(x), 12, replace=False)
    answers = [rec.predict(_scanned(_cut_from_a_number(x, i, rng))).digit for i in picks]
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= 11, (answers, y[picks])
    # A digit's own pieces at the crop's edges stay: a 4 of two strokes cropped tight, its bar short
    # of the stem (each piece is heavier than a neighbour's sliver).
    ink = np.zeros((60, 40), np.uint8)
    ink[0:34, 0:5] = 255  # the left stroke, down from the top edge...
    ink[30:35, 0:26] = 255  # ...and along the bar, which stops short of the stem
    ink[:, 32:38] = 255  # the stem, from top to bottom
    page = _scanned(ink)
    assert ink_image(page).mask.sum() == ink_image(page, rules=False).mask.sum() > 0


def _on_paper(digit: np.ndarray, rng: np.random.Generator, paper: str) -> np.ndarray:
    """A 28x28 digit enlarged 3x, scanned with no margin on a crop of a page whose grey lines (level
    110, 3 px) run from edge to edge: "lined" (across, about half the digit's height apart),
    "margin" (one from top to bottom through the digit) or "squared" (both ways)."""
    import cv2

    big = cv2.resize(synth._crop(digit), None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
    h, w = big.shape
    ink = np.zeros((2 * h, w + h), np.uint8)
    ink[h // 2 : h // 2 + h, h // 2 : h // 2 + w] = big
    lines = np.zeros_like(ink)
    if paper == "margin":
        at = h // 2 + int(rng.uniform(0.3, 0.7) * w)
        lines[:, at : at + 3] = 110
    else:
        step = int(0.5 * h)
        for at in range(int(rng.integers(2, step)), max(ink.shape), step):
            lines[at : at + 3] = 110
            if paper == "squared":
                lines[:, at : at + 3] = 110
    return _scanned(np.maximum(ink, lines))


@pytest.mark.parametrize(
    ("paper", "least"),
    [
        # The lines apart from the digit made it look small against them: before, 8 of these 12
        # right; now 11, and 12 since lines across the whole crop go too (`forms._page_lines`).
        ("lined", 10),
        # A line from top to bottom was never looked for: before, 4 of 12; now 7.
        ("margin", 6),
        # The lines of each way kept those of the other from looking like lines under a digit:
        # before, 0 of 12; now 8.
        ("squared", 7),
    ],
)
def test_a_digit_cropped_from_lined_or_squared_paper_is_predicted(paper: str, least: int, mnist, rec) -> None:
    # See docs/experiments.md, "Lines and boxes around one digit".
    (x, y) = mnist[1]
    rng = np.random.default_rng(13)
    picks = rng.choice(len(x), 12, replace=False)
    answers = [rec.predict(_on_paper(x[i], rng, paper)).digit for i in picks]
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= least, (answers, y[picks])


@pytest.mark.parametrize(
    ("paper", "least"),
    [
        # Lined paper: before, 32 of these 40 right; now 33 (lines that end short of the edges).
        ("lined", 31),
        # Turned a few degrees, no row of squared paper was a line, so the page was taken for a
        # digit cropped tight to its ink and no line was looked for: before, 7 of 40; now 31.
        ("squared", 28),
        # A margin's rule from top to bottom through the digit was looked for only where the ink
        # reached the image's top and bottom edges: before, 18 of 40; now 26.
        ("margin", 24),
    ],
)
def test_a_digit_photographed_on_ruled_paper_is_predicted(paper: str, least: int, mnist, rec) -> None:
    # A phone photo of a digit in a notebook: the ruled page fills the frame, turned up to 8 degrees,
    # its grey lines crossing the digit (docs/experiments.md, "Ruled paper in a photo").
    _assert_ruled_photos_read(paper, least, 40, 21, mnist, rec)


def _assert_ruled_photos_read(paper: str, least: int, n: int, seed: int, mnist, rec) -> None:
    """At least ``least`` of ``n`` MNIST test digits photographed on ``paper`` filling the frame
    (`synth.on_ruled_paper`) are predicted right."""
    (x, y) = mnist[1]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), n, replace=False)
    photos = [synth.as_photo(synth.on_ruled_paper(x[i], rng, paper), rng, fill=(0.9, 1.0)) for i in picks]
    answers = [rec.predict(p).digit for p in photos]
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= least, (answers, y[picks])


@pytest.mark.parametrize(("paper", "least"), [("lined", 92), ("squared", 88)])
def test_a_pages_lines_the_transform_missed_are_found_along_those_it_found(paper: str, least: int, mnist, rec) -> None:
    # OpenCV's probabilistic transform takes the pixels of every line it tries off the image, and its
    # tries through a digit's strokes ate a page's line crossing the digit: kept as ink, it made the
    # lines found look like a digit's own strokes. Lines parallel to those found, with ink across most
    # of the crop, are found by the ink's projection now, and the fringes of their ends go with them:
    # before, 89 of these 100 lined and 81 squared read right; now 94 and 90.
    _assert_ruled_photos_read(paper, least, 100, 40, mnist, rec)


def test_a_margins_rule_along_a_stroke_is_taken_off_where_it_is_lighter_than_the_pen(mnist, rec) -> None:
    # Where a stroke lies along a margin's rule for a stretch, the rule less the ink thicker than itself
    # is no whole line, and it was kept through the digit. Counted with the strokes along it, and
    # taken off only where it is much lighter than the pen (a stem as dark as the rest of the digit
    # stays: `test_a_margins_rule_through_a_digit_in_a_photo_is_not_ink`): before, 94 of these 100
    # photos and 88 scans read right; now 97 and 95.
    (x, y) = mnist[1]
    rng = np.random.default_rng(41)
    picks = rng.choice(len(x), 100, replace=False)
    photos = [synth.as_photo(synth.on_ruled_paper(x[i], rng, "margin"), rng, fill=(0.9, 1.0)) for i in picks]
    assert sum(rec.predict(p).digit == y[i] for p, i in zip(photos, picks, strict=True)) >= 96
    scans = [synth.as_scan(synth.on_ruled_paper(x[i], rng, "margin"), rng) for i in picks]
    assert sum(rec.predict(p).digit == y[i] for p, i in zip(scans, picks, strict=True)) >= 93


def test_what_a_comb_leaves_beside_the_digit_is_no_ink(mnist, rec) -> None:
    # With a comb's base taken off, the stumps of short teeth (blurred, turned: no upright bars) stayed
    # as marks beside the digit, which then looked small in a wide box (".5."). Small marks that
    # touched the lines taken off and share no column with the biggest go: of these 200 photos, 42
    # left more than one mark before and 23 now; 168 read right before, 170 now.
    (x, y) = mnist[1]
    rng = np.random.default_rng(42)
    picks = rng.choice(len(x), 200, replace=False)
    photos = [synth.as_photo(synth.in_a_form_cell(x[i], rng, "comb"), rng) for i in picks]
    assert sum(len(ink_image(p).components) > 1 for p in photos) <= 26
    assert sum(rec.predict(p).digit == y[i] for p, i in zip(photos, picks, strict=True)) >= 169


def test_the_projection_finds_every_line_parallel_to_one_found_and_no_stroke() -> None:
    import cv2

    s8 = np.zeros((80, 96), np.uint8)
    for y0 in (10, 30, 50, 70):  # four lines turned about 3 degrees, two pixels thick
        cv2.line(s8, (0, y0), (95, y0 + 5), 1, 2)
    s8[25:60, 40:46] = 1  # a digit's stem across two of them
    s8[40:43, 20:60] = 1  # and a bar, under GRID_SPAN of the width
    found = forms._parallel_lines(s8, [np.array([0, 10, 95, 15])])
    starts = sorted({int(a[1]) for a in found})
    assert all(any(abs(s - y0) <= 1 for s in starts) for y0 in (10, 30, 50, 70)), starts
    assert all(any(abs(s - y0) <= 1 for y0 in (10, 30, 50, 70)) for s in starts), starts  # the bar is none
    assert forms._parallel_lines(s8, []) == []


def test_a_lines_fringe_at_the_crops_side_is_its_end_and_a_stroke_there_is_not() -> None:
    band = np.zeros((60, 90), np.uint8)
    band[20:23, 6:90] = 1  # a line found, its radius 2, its left end missed
    rest = np.zeros((60, 90), bool)
    rest[19:24, 0:6] = True  # the fringe of its end, at the crop's left side, touching it
    rest[30:55, 0:5] = True  # a stroke at the same side, taller than the line is wide
    rest[23:26, 40:50] = True  # a stroke resting on the line within the crop
    ends = forms._line_ends(rest, band, 2, turned=False)
    assert ends[19:24, 0:6].all()
    assert not ends[30:55].any() and not ends[23:26, 40:50].any()
    assert np.array_equal(forms._line_ends(rest.T, band.T, 2, turned=True), ends.T)


def test_a_digit_in_a_comb_loses_the_comb(mnist, rec) -> None:
    # A comb's base was kept where the teeth made the rest of the ink as wide as the base (no line
    # running past the digit), and its teeth where one stood within a line's width of the digit's
    # box (a bold hand in a narrow cell): before, 148 of these 200 photos read right; then 155. Its
    # teeth stayed too where one measured a little wider than the base (`forms.TOOTH_WIDTH`): 164
    # with the shipped model at 1.0, 169 at 1.2.
    right, answers = _read_in_cells(mnist, rec, "comb", 31)
    assert right >= 167, answers


def _read_in_cells(mnist, rec, style: str, seed: int) -> tuple[int, list]:
    """200 MNIST test digits photographed in form cells of ``style``: how many are read right, and the
    (answer, truth) pairs."""
    (x, y) = mnist[1]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), 200, replace=False)
    photos = [synth.as_photo(synth.in_a_form_cell(x[i], rng, style), rng) for i in picks]
    answers = [(rec.predict(p).digit, int(y[i])) for p, i in zip(photos, picks, strict=True)]
    return sum(a == t for a, t in answers), answers


def test_a_combs_tooth_a_little_wider_than_its_base_is_a_tooth() -> None:
    mask = np.zeros((70, 120), bool)
    mask[50:56, 0:120] = True  # the base: 6 px, so `_line_pixels`' radius is 7
    mask[15:50, 10:21] = True  # teeth 11 px wide (a blurred junction measures so)
    mask[15:50, 99:110] = True
    mask[18:46, 50:58] = True  # the digit between them, apart
    line = np.zeros(mask.shape, np.uint8)
    line[50:56] = 1
    teeth, apart = forms._teeth(mask, line)
    assert apart and teeth[20:40, 10:21].all() and teeth[20:40, 99:110].all() and not teeth[:, 40:70].any()
    mask[15:50, 10:26] = True  # twice the base's width: no printed tooth (a digit's stroke)
    assert not forms._teeth(mask, line)[0].any()


def test_a_frame_with_thick_lines_must_hold_a_digit() -> None:
    import cv2

    thin, thick = np.zeros((44, 44), np.uint8), np.zeros((44, 44), np.uint8)
    cv2.rectangle(thin, (3, 3), (40, 40), 1, 1)
    cv2.rectangle(thick, (3, 3), (40, 40), 1, 7)  # lines a sixth of the side: a box blurred, or a bold 0
    assert forms._frame(thin.view(bool)) is not None  # thin lines: a box, empty or not
    assert forms._frame(thick.view(bool)) is None  # alone: as likely a square 0 drawn bold
    assert forms._frame(thick.view(bool), holds=True) is not None  # a mark within it: a box round a digit
    touching = thick.copy()
    touching[8:36, 18:26] = 1  # a 1 touching the box's top and bottom
    assert forms._frame(touching.view(bool)) is not None


def test_a_small_box_whose_lines_blur_wide_is_taken_off(mnist, rec) -> None:
    # A box photographed small (20-60 px a side) blurs to lines 0.15-0.25 of its side: they were not
    # thin enough for a frame (FRAME_LINE 0.15) and stayed round the digit: 185 of these 200 photos
    # read right with the shipped model then, 189 with FRAME_LINE_HOLDING.
    right, answers = _read_in_cells(mnist, rec, "box", 61)
    assert right >= 188, answers


def test_straight_lines_counts_a_pages_lines_turned_and_not_a_thick_stroke() -> None:
    import cv2

    page = np.zeros((200, 200), np.uint8)
    for k in range(5):  # squared paper turned 5 degrees: no row or column is a line
        for a, b in (((-20, 20 + 40 * k), (220, 41 + 40 * k)), ((20 + 40 * k, -20), (41 + 40 * k, 220))):
            cv2.line(page, a, b, 1, 2)
    assert all(n >= 4 for n in forms.straight_lines(page.view(bool)))
    bar = np.zeros((200, 200), np.uint8)
    bar[80:120, 10:190] = 1  # one bold stroke across: one line, however many segments it holds
    assert forms.straight_lines(bar.view(bool)) == (0, 0)
    dark = np.full((200, 200), 235, np.uint8)
    dark[page > 0] = 120
    dark[50:150, 95:105] = 20  # a 1 on it
    assert not images._cropped_tight(dark)  # the page's lines reach every edge: no tight crop


def test_grey_lines_across_a_digit_on_lined_paper_are_not_ink(mnist, rec) -> None:
    # Lined paper scanned, grey lines 0.35-0.7 of the digit's height apart crossing it (the benchmark's
    # render): the lines joined the digit into one mark too tall for a rule under it, and stayed.
    # Lines across the whole crop that run past the rest of the ink on both sides go, but where a
    # stroke's ink is much stronger than theirs: before, 35 of these 40 right; now 38.
    (x, y) = mnist[1]
    rng = np.random.default_rng(16)
    picks = rng.choice(len(x), 40, replace=False)
    answers = [rec.predict(synth.as_scan(synth.on_ruled_paper(x[i], rng, "lined"), rng)).digit for i in picks]
    assert sum(a == y[i] for a, i in zip(answers, picks, strict=True)) >= 37, (answers, y[picks])


@pytest.mark.parametrize(
    ("top", "side", "base"),
    [
        # its flat base runs on past the rest of it to one side (as long as a rule under a digit):
        # rules under one digit must run past it on both sides
        ((10, 28), (26, 29), (10, 56)),
        # ...or past it on both sides, a little, as some writers draw it: a line the digit touches
        # must run on by a quarter of its height (RULE_PAST)
        ((10, 32), (30, 33), (6, 37)),
    ],
)
def test_a_digit_s_own_long_stroke_is_no_rule(top: tuple, side: tuple, base: tuple) -> None:
    # A 2 keeps its base.
    ink = np.zeros((40, 60), np.uint8)
    ink[6:9, top[0] : top[1]] = 255  # the top
    ink[6:20, side[0] : side[1]] = 255  # the right side
    for k in range(15):  # the diagonal down to the base
        ink[19 + k, side[0] - k : side[1] - k] = 255
    ink[33:36, base[0] : base[1]] = 255
    with_base = ink_image(_form_page(ink))
    without = ink_image(_form_page(ink), rules=False)
    assert with_base.mask.sum() == without.mask.sum() > 0


def test_digits_resting_on_a_rule_keep_their_strokes(mnist, rec) -> None:
    # A 1 standing on an underline is a straight bar joined to a rule, as a comb's tooth is, but as
    # tall as the digits: it stays. The rule's pixels go, not the strokes that cross or touch it.
    (x, y) = mnist[1]
    picks = [int(np.flatnonzero(y == d)[k]) for d, k in ((1, 0), (7, 0), (4, 0), (1, 1))]
    parts = [synth._crop(x[i]) for i in picks]
    ink = np.zeros((40, 30 * len(parts) + 20), np.float32)
    for k, part in enumerate(parts):
        h, w = part.shape
        ink[34 - h : 34, 12 + 30 * k : 12 + 30 * k + w] = part
    ink[33:35, 4:-4] = 255  # the underline, through the digits' last row
    assert rec.read(_form_page(ink)).text == "1741"


def _number_on_ruled_paper(
    digits: np.ndarray, height: int, rows: Iterable[int], width: int, level: float, top: int
) -> np.ndarray:
    """28x28 digits written 56 px high (ink at level 30), 60 px apart, from row ``top`` of a page 380
    px wide and ``height`` high (paper at 235) ruled at ``rows``, ``width`` px thick, at ``level``:
    uint8."""
    import cv2

    page = np.full((height, 380), 235.0)
    for row in rows:
        page[row : row + width] = level
    for k, digit in enumerate(digits):
        ink = cv2.resize(digit, (56, 56), interpolation=cv2.INTER_LINEAR) / 255.0
        region = page[top : top + 56, 42 + 60 * k : 98 + 60 * k]
        region[:] = region * (1 - ink) + 30.0 * ink
    return page.astype(np.uint8)


def test_strokes_along_a_grey_ruled_line_stay(mnist, rec) -> None:
    # Lined paper whose lines are lighter than the pen, one through the digits: the ink on the line
    # that is much stronger than the line's own is a stroke lying along or across it, and stays (a
    # 7's bar on the line read as a 1 before). Before, 5 of these 10 read right; now 10.
    (x, y) = mnist[1]
    rng = np.random.default_rng(9)
    right = []
    for _ in range(10):
        pick = rng.choice(len(x), 5, replace=False)
        rows = range(int(rng.integers(4, 12)), 150, 26)  # grey rules, half the pen's darkness
        page = _number_on_ruled_paper(x[pick], 150, rows, width=3, level=150.0, top=40)
        right.append(rec.read(page).text == "".join(str(int(y[i])) for i in pick))
    assert sum(right) >= 8, right


def test_strokes_along_a_dark_ruled_line_stay(mnist, rec) -> None:
    # Lined paper with dark lines, one through the digits' upper half: a stroke lying along it (a 7's
    # bar, the top of a 9's loop) used to go with the line, and a stroke crossing it was cut ("35977"
    # read "35911"). Of 40 such lines of validation digits, 16 were read right; now 39.
    (x, y) = mnist[1]
    rng = np.random.default_rng(5)
    right = []
    for _ in range(10):
        pick = rng.choice(len(x), 5, replace=False)
        page = _number_on_ruled_paper(x[pick], 120, (14, 50, 86), width=2, level=100.0, top=30)
        right.append(rec.read(page).text == "".join(str(int(y[i])) for i in pick))
    assert sum(right) >= 9, right


def test_a_solid_block_between_two_rules_is_no_crash(rec) -> None:
    # Found by fuzzing: a piece with no paper inside its own box gave OpenCV's distance transform
    # nothing to measure to (distances of ~1e20), and `read` raised a TypeError from a kernel size.
    page = np.full((200, 600), 240, np.uint8)
    page[40:44, 20:580] = page[150:154, 20:580] = 20  # two rules
    page[44:150, 300:340] = 20  # a solid block joining them
    assert rec.read(page).text == ""
    answer = rec.predict(page)
    assert answer.digit is None and answer.reason == "not a digit"  # the model saw ink and refused it


def test_printed_line_detection_leaves_digits_and_letters_alone(mnist, monkeypatch) -> None:
    # A digit or a letter is never a frame: its preprocessed field is the same with the detection off.
    # (The training data rendered through `to_mnist` is unchanged by it.)
    from digitrec.reading import images

    (x, _) = mnist[1]
    rng = np.random.default_rng(0)
    fonts = synth.letter_fonts()
    pages = [render_on_paper(x[i], size=160) for i in range(60)]
    pages += [np.pad(synth.letter_glyph(rng, fonts, sizes=(40, 97)), 8) for _ in range(40)] if fonts else []
    with_detection = [to_mnist(p) for p in pages]
    monkeypatch.setattr(images, "form_rules", lambda *a, **k: None)
    for page, field in zip(pages, with_detection, strict=True):
        np.testing.assert_array_equal(to_mnist(page), field)


def test_a_digit_larger_than_a_line_reads_through_the_reduced_copy(mnist, rec) -> None:
    # `read` fits a group over READ_SIDE working pixels from a copy reduced by a whole factor (a page
    # of graph paper took 8.7 s without it). A digit filling a 640 px page still reads.
    from digitrec.reading import images

    (x, y) = mnist[1]
    for i in range(5):
        page = _form_page(x[i], scale=21)  # 628 px
        groups = segment(ink_image(page, line=True))
        assert len(groups) == 1 and max(groups[0].h, groups[0].w) > images.READ_SIDE
        assert rec.read(page).text == str(y[i])


def test_a_digit_in_faint_pencil_is_read(rec, mnist) -> None:
    # Pencil 8-11% darker than the paper, photographed: its strongest ink was under MIN_CONTRAST, and
    # such photos read as blank. Faint ink that is one mark is ink; blank pages' scattered grain is not
    # (test_a_blank_page_is_no_digit, with pages whose strongest "ink" is as faint).
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(12)
    right = []
    for k in range(20):
        d = k % 10
        ink = cv2.resize(x[int(np.flatnonzero(y == d)[70 + k])], (160, 160), interpolation=cv2.INTER_LINEAR)
        page = np.full((320, 320), rng.uniform(170, 230), np.float32)
        top, left = (int(v) for v in rng.integers(40, 120, 2))
        page[top : top + 160, left : left + 160] *= 1 - rng.uniform(0.08, 0.11) * ink / 255.0
        page = cv2.GaussianBlur(page, (0, 0), 1.0) + rng.normal(0, 2, page.shape)
        right.append(rec.predict(_jpeg(page)).digit == d)
    assert sum(right) >= 18, right
    grain = cv2.GaussianBlur(np.full((120, 400), 200.0), (0, 0), 1) + rng.normal(0, 2, (120, 400))
    assert rec.read(_jpeg(grain)).text == ""


# --- rejection -------------------------------------------------------------------------------------


def test_a_blank_page_is_no_digit(rec) -> None:
    # Photographed empty sheets, half of them ruled, with sensor noise and JPEG. Before the ink map
    # took off the noise's bias, 3 of these 10 were read as strings like "1111" (pieces of ruling and
    # noise specks), and predict said "1" for one.
    pages = [synth.blank_page(np.random.default_rng(seed)) for seed in range(10)]
    assert all(rec.predict(p).digit is None for p in pages)
    assert [rec.read(p).text for p in pages] == [""] * 10
    white = rec.predict(np.full((50, 200), 255, np.uint8))
    assert white.digit is None and "blank" in white.reason
    assert rec.read(np.full((50, 200), 255, np.uint8)).text == ""


def _lit_page(angle: float, lo: float, hi: float, h: int = 300, w: int = 400) -> np.ndarray:
    """A blank page lit from one side: levels from ``lo`` to ``hi`` along ``angle`` degrees (float32)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.cos(np.radians(angle)) * xx / w + np.sin(np.radians(angle)) * yy / h
    return lo + (hi - lo) * (t - t.min()) / (t.max() - t.min())


@pytest.mark.parametrize("angle", [15, 30, 60, 120, 240])
def test_a_lighting_gradient_alone_is_not_ink(angle: int, rec) -> None:
    # No noise to blame: the background's morphology, its window cut short at the image's edge, saw
    # only the lighter side there and took the darker edge for ink. Of 96 such pages (24 angles, four
    # ranges of levels), 36 left ink and some were read as "8" or "1111".
    page = _lit_page(angle, 60, 200).astype(np.uint8)
    assert ink_image(page, line=True).components == ()
    assert rec.read(page).text == ""
    assert rec.predict(page).digit is None


def test_bright_blank_pages_are_not_read_as_chalk(rec) -> None:
    # Blank photos of bright paper whose polarity came out "light ink on a board": measured against
    # the 30-45 levels of room above the paper, their sensor noise became ink, read as "111111",
    # "11511116121", "3311", "111".
    pages = [synth.blank_page(np.random.default_rng(1000 + seed)) for seed in (501, 924, 1111, 1176)]
    assert [rec.read(p).text for p in pages] == [""] * 4


@pytest.mark.parametrize("angle", [0, 30, 200])
def test_the_paper_plane_is_found_under_the_ink(angle: int, mnist) -> None:
    from digitrec.reading.images import _paper_trend

    h = w = 300
    darkness = 235.0 - render_on_paper(mnist[1][0][8], size=w, offset=(40, 50))[..., 0]  # a 5, off-centre
    page = np.clip(_lit_page(angle, 90, 230, h, w) - darkness, 0, 255).astype(np.uint8)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    span = abs(c) * (w - 1) / w + abs(s) * (h - 1) / h  # the range of t in _lit_page
    expected = np.array([c, s]) * (230 - 90) / span  # levels per image width, per image height
    np.testing.assert_allclose(_paper_trend(page), expected, atol=2.0)  # of a 140-level gradient


def test_a_digit_by_the_dark_edge_of_a_gradient_keeps_its_field(mnist, rec) -> None:
    # The other side of the two tests above: levelling the paper must not take ink from a digit near
    # the darker edge (the plane is fitted to blocks the ink does not pull off it).
    x, y = mnist[1]
    for i in range(5):
        page = render_on_paper(x[i], size=300, offset=(0, -60))[..., 0].astype(np.float32)
        lit = np.clip(page * _lit_page(0, 0.3, 1.0, 300, 300), 0, 255).astype(np.uint8)  # darkest on the left
        even = to_mnist(page.astype(np.uint8))
        assert np.corrcoef(even.ravel(), to_mnist(lit).ravel())[0, 1] > 0.98
        assert rec.predict(lit).digit == int(y[i])


def test_a_preprocessed_image_gets_the_answer_of_its_image(mnist, rec) -> None:
    # The UI shows what the model saw and answers from it, so it must be `predict`'s answer exactly,
    # and it must not preprocess again: an off-centre field goes to the model as it is.
    for digit in mnist[1][0][:3]:
        page = render_on_paper(digit)
        assert rec.predict_preprocessed(to_mnist(page)) == rec.predict(page)
    off_centre = np.roll(mnist[1][0][0], (5, 6), axis=(0, 1))
    assert not np.array_equal(to_mnist(off_centre), off_centre)
    answer = rec.predict_preprocessed(off_centre)
    assert answer.probabilities == [float(v) for v in rec.predict_arrays(off_centre)[0]]
    blank = rec.predict_preprocessed(np.zeros((28, 28), np.uint8))
    assert blank.digit is None and "blank" in blank.reason
    with pytest.raises(ValueError, match="one preprocessed image"):
        rec.predict_preprocessed(np.zeros((2, 28, 28), np.uint8))


def test_test_time_augmentation_averages_the_field_and_two_turned_copies(rec, mnist) -> None:
    from digitrec import load_recognizer
    from digitrec.reading.recognizer import TTA_DEGREES, turned

    x = mnist[1][0][:50]
    once = load_recognizer(rec.path, tta=0)
    assert rec.tta == TTA_DEGREES > 0 and once.tta == 0
    probs, reject = rec.scores(x)
    alone, own_reject = once.scores(x)
    copies = [alone, once.scores(turned(x, -TTA_DEGREES))[0], once.scores(turned(x, TTA_DEGREES))[0]]
    np.testing.assert_allclose(probs, np.mean(copies, axis=0), atol=1e-5)
    np.testing.assert_allclose(reject, own_reject, atol=1e-6)  # rejection: the field's own, as at training
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs, alone, atol=1e-3)  # the copies do change the answer's probabilities
    # A turned field is the digit turned about its centre: anticlockwise for positive degrees.
    bar = np.zeros((1, 28, 28), np.uint8)
    bar[0, 4:24, 13:15] = 255
    ink = np.argwhere(turned(bar, 30)[0] > 128)
    top, bottom = ink[ink[:, 0].argmin()], ink[ink[:, 0].argmax()]
    assert top[1] < bottom[1]  # the top of an upright bar leans left once turned anticlockwise


def test_read_weighs_each_digit_read_once(rec, mnist) -> None:
    # Test-time augmentation is predict's: the line readers' second reading gained nothing from it on
    # validation numbers and would cost a third of a number's time.
    from digitrec import load_recognizer

    (x, y) = mnist[1]
    line = np.zeros((28, 4 + 32 * 4), np.uint8)
    for k, d in enumerate((3, 8, 5, 1)):
        line[:, 4 + 32 * k : 32 + 32 * k] = x[int(np.flatnonzero(y == d)[1])]
    image = 255 - np.kron(line, np.ones((4, 4), np.uint8))
    once = load_recognizer(rec.path, tta=0)
    for reader in ("auto", "rules"):
        a, b = (
            load_recognizer(rec.path, reader=reader).read(image),
            load_recognizer(rec.path, tta=0, reader=reader).read(image),
        )
        assert a.text == b.text == "3851"
        assert [d.confidence for d in a.digits] == [d.confidence for d in b.digits]
    assert once.tta == 0 and rec.tta > 0


def test_test_time_augmentation_settings_are_checked(rec, monkeypatch) -> None:
    from digitrec import load_recognizer
    from digitrec.models import ModelError

    monkeypatch.setenv("DIGITREC_TTA", "0")
    assert load_recognizer(rec.path).tta == 0
    assert load_recognizer(rec.path, tta=5).tta == 5  # an argument beats the environment
    monkeypatch.setenv("DIGITREC_TTA", "eight")
    with pytest.raises(ModelError, match="DIGITREC_TTA must be a number"):
        load_recognizer(rec.path)
    monkeypatch.delenv("DIGITREC_TTA")
    for bad in (-1, 90, float("nan")):
        with pytest.raises(ModelError, match="0 to 45 degrees"):
            load_recognizer(rec.path, tta=bad)


def _small_on_a_page(ink: np.ndarray, page: int, rng: np.random.Generator, contrast: float = 0.83) -> bytes:
    """White-on-black ``ink`` as dark ink on a noisy ``page``-pixel photo of paper, a JPEG; the ink
    darkens the paper by ``contrast`` at most."""
    h, w = ink.shape
    y, x = (int(v) for v in rng.integers(0, [page - h, page - w]))
    paper = np.full((page, page), 228.0, np.float32)
    paper[y : y + h, x : x + w] -= ink.astype(np.float32) * (228.0 * contrast / 255.0)
    return _jpeg(paper + rng.normal(0, 3, paper.shape))


def _jpeg(gray: np.ndarray) -> bytes:
    """A float gray image, clipped to 0-255, as a JPEG of quality 85."""
    buf = io.BytesIO()
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _number(mnist: tuple, digits: tuple[int, ...], k: int) -> np.ndarray:
    """The k-th test images of ``digits`` side by side, 2 px apart: a 28 px high white-on-black line."""
    (x, y) = mnist[1]
    number = np.zeros((28, 4 + 30 * len(digits)), np.uint8)
    for i, d in enumerate(digits):
        number[:, 4 + 30 * i : 32 + 30 * i] = x[int(np.flatnonzero(y == d)[k])]
    return number


def test_a_small_digit_in_a_large_photo_is_found(rec, mnist) -> None:
    # A digit a twentieth of the frame's side (a page photographed whole): under 0.1% of the pixels
    # are ink, which the 99.9th percentile of the ink map took for none ("blank").
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(7)
    for d in range(10):
        digit = cv2.resize(x[int(np.flatnonzero(y == d)[2])], (56, 56), interpolation=cv2.INTER_CUBIC)
        answer = rec.predict(_small_on_a_page(digit, 1100, rng))
        assert answer.digit == d, (d, answer)
    number = _number(mnist, (2, 0, 4, 7, 1), 3)
    line = cv2.resize(number, (number.shape[1] * 2, 56), interpolation=cv2.INTER_CUBIC)
    assert rec.read(_small_on_a_page(line, 1400, rng)).text == "20471"


def _on_a_desk(
    page: np.ndarray, rng: np.random.Generator, share: float = 0.8, desk: float | None = None, noise: float = 4
) -> bytes:
    """A photo of a light ``page`` (gray) lying on a darker desk that shows round it (its level
    ``desk``, default 50-120), a JPEG."""
    import cv2

    h, w = page.shape
    ph, pw = int(h * share), int(w * share)
    level = rng.uniform(50, 120) if desk is None else desk
    photo = np.full((h, w), level, np.float32) + rng.normal(0, noise, (h, w))
    y, x = (int(v) for v in rng.integers(0, [h - ph, w - pw]))
    photo[y : y + ph, x : x + pw] = cv2.resize(page, (pw, ph), interpolation=cv2.INTER_AREA)
    return _jpeg(photo)


def test_a_page_on_a_desk_is_read(rec, mnist) -> None:
    # The desk round the page was ink to every step: a strip of it a stroke to the background's window,
    # a desk in the corners the polarity of chalk on a board. Such photos read "not a digit" or nothing.
    (x, y) = mnist[1]
    rng = np.random.default_rng(3)
    for d in range(10):
        page = render_on_paper(x[int(np.flatnonzero(y == d)[5])], size=320)[..., 0]
        answer = rec.predict(_on_a_desk(page, rng, share=float(rng.uniform(0.7, 0.9))))
        assert answer.digit == d, (d, answer)
    number = _number(mnist, (5, 8, 3, 6), 6)
    page = np.full((200, 420), 230, np.uint8)
    line = 230 - (np.kron(number, np.ones((4, 3), np.uint8)) * 0.8).astype(np.uint8)
    page[44 : 44 + line.shape[0], 10 : 10 + line.shape[1]] = line
    assert rec.read(_on_a_desk(page, rng)).text == "5836"


@pytest.mark.parametrize(
    ("seed", "first", "cut", "gradient"),
    [
        # The paper beyond a shadow's sharp edge, half as bright, was ink along the edge (the
        # background's window cannot follow the step): a third of such digits were read. The shadowed
        # paper is lit again to the page's level, the digit in it with it.
        (4, 8, 0.5, 0.0),
        # The page lit unevenly as well (a lamp to one side): the shadowed paper's level varies as much
        # as a gradient's, and was left to the ink map, whose window took the shadow's edge for a
        # stroke (8 of these 20 right). The sharp drop across the edge tells the shadow from a gradient.
        (8, 30, 0.45, 0.45),
    ],
)
def test_a_shadow_cast_across_the_page_is_not_ink(
    seed: int, first: int, cut: float, gradient: float, rec, mnist
) -> None:
    (x, y) = mnist[1]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:320, 0:320]
    right = []
    for k in range(20):
        d = k % 10
        page = render_on_paper(x[int(np.flatnonzero(y == d)[first + k])], size=320)[..., 0].astype(np.float32)
        if gradient:
            phi = rng.uniform(0, 2 * np.pi)
            page *= 1 - gradient * ((xx - 160) * np.cos(phi) + (yy - 160) * np.sin(phi) + 226) / 452
        theta = rng.uniform(0, 2 * np.pi)
        beyond = (xx - 160) * np.cos(theta) + (yy - 160) * np.sin(theta) > rng.uniform(-60, 60)
        right.append(
            rec.predict(_jpeg(page * np.where(beyond, 1 - cut, 1.0) + rng.normal(0, 3, page.shape))).digit == d
        )
    assert sum(right) >= 18, right


def test_a_shadow_over_most_of_the_page_is_lit_again(rec, mnist) -> None:
    """A shadow over three quarters of the frame, the digit in the light beyond its edge: the shadow,
    with no marks in it, looked like a desk, but too much of the frame to lie round a page, so nothing
    was found and its edge was a stroke beside the digit. It is lit again as a shadow."""
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[0:320, 0:320]
    right = 0
    for k in range(20):
        i = int(np.flatnonzero(y == k % 10)[70 + k])
        page = np.full((320, 320), 215.0)
        page[20:120, 20:120] -= 0.7 * cv2.resize(x[i], (100, 100), interpolation=cv2.INTER_CUBIC)
        beyond = xx + yy > 240 + rng.uniform(-10, 10)
        shadow = cv2.GaussianBlur(np.where(beyond, rng.uniform(0.45, 0.6), 1.0), (0, 0), 2)
        right += rec.predict(_jpeg(page * shadow + rng.normal(0, 3, page.shape))).digit == y[i]
    assert right >= 18, right  # 4 before


def test_a_dark_grainy_desk_is_found_as_a_desk_not_lit_as_a_shadow(mnist) -> None:
    """A desk's sensor grain is no mark: a region without marks is what lies around the page, blanked
    (lit as a shadow instead, the page's blurred edge stayed as a stroke in the field)."""
    from digitrec.reading import images

    (x, _) = mnist[1]
    rng = np.random.default_rng(4)
    found = 0
    for i in range(60):
        gray, _, _ = images._gray(synth.on_a_desk(synth.as_photo(x[i], rng), rng), None)
        page = images._off_page(images._resize_to_work(gray, False)[0])
        found += page is not None and bool(page[0].any())
    assert found >= 57  # 55 when the grain made marks


def test_a_desk_under_its_own_lighting_gradient_is_found_as_a_desk(mnist) -> None:
    """A desk whose light falls off across the photo, with little grain: its darker half was darker
    than the desk's median by the share that makes marks, so it was lit as paper in a shadow and the
    page's edge stayed a stroke. Marks are darker than the level around them."""
    import cv2

    (x, _) = mnist[1]
    rng = np.random.default_rng(5)
    found = 0
    for i in range(60):
        gray, _, _ = images._gray(synth.as_photo(x[i], rng), None)
        h, w = gray.shape
        share = rng.uniform(0.65, 0.85)
        ph, pw = int(h * share), int(w * share)
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = xx / w if i % 2 else yy / h
        photo = rng.uniform(60, 120) * (1 - 0.45 * ramp) + rng.normal(0, 1, (h, w))
        oy, ox = (int(v) for v in rng.integers(0, [h - ph, w - pw]))
        photo[oy : oy + ph, ox : ox + pw] = cv2.resize(gray.astype(np.float32), (pw, ph), interpolation=cv2.INTER_AREA)
        gray, _, _ = images._gray(_jpeg(photo), None)
        page = images._off_page(images._resize_to_work(gray, False)[0])
        found += page is not None and bool(page[0].any())
    assert found >= 57  # 28 before


def test_a_page_turned_with_a_corner_near_the_frame_leaves_no_sliver(rec, mnist) -> None:
    """A page turned a few degrees and filling most of the photo: between a corner and the frame's
    edge a strip of desk narrower than the closing's window was closed into the page, and stayed in
    the field as a speck or a bar beside the digit."""
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(6)
    right = one = 0
    for i in range(200, 300):
        rgb = synth._rgb(synth.as_photo(x[i], rng))
        h, w = rgb.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.choice([-1, 1]) * rng.uniform(3, 6), rng.uniform(0.85, 0.92))
        inside = cv2.warpAffine(np.ones((h, w), np.float32), m, (w, h))[..., None]
        photo = _jpeg((inside * cv2.warpAffine(rgb, m, (w, h)) + (1 - inside) * rng.uniform(30, 90)).mean(-1))
        right += rec.predict(photo).digit == y[i]
        one += cv2.connectedComponents((images.to_mnist(photo) > 40).astype(np.uint8))[0] == 2
    assert one >= 99  # 97 before (100 now)
    assert right >= 98  # 99 before (100 now): the model mostly reads past a sliver


def test_a_white_digit_drawn_large_on_black_is_light_ink(rec, mnist) -> None:
    """Light strokes filling most of a dark frame (a drawing app's white brush on black): the closed
    strokes were taken for a page and the black around them for a desk, or the middles of the edges
    the strokes reach for the light of a vignette; either way the digit read as dark ink on paper."""
    import cv2

    (x, y) = mnist[1]
    light = right = 0
    for i in range(60):
        side = (128, 200, 280)[i % 3]
        ys, xs = np.nonzero(x[i])
        digit = x[i][ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        h, w = digit.shape
        s = 0.88 * side / max(h, w)
        big = cv2.resize(digit, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_CUBIC)
        frame = np.zeros((side, side), np.uint8)
        y0, x0 = (side - big.shape[0]) // 2, (side - big.shape[1]) // 2
        frame[y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]] = big
        light += not images.ink_image(frame).dark_ink
        right += rec.predict(frame).digit == y[i]
    assert light >= 58  # 45 before
    assert right >= 57  # 49 before


def test_a_desk_little_darker_than_the_page_is_not_ink(rec, mnist) -> None:
    # A desk 12-20% darker than the page was too close to its level to be told from a gradient, and
    # the page's edges were read as strokes. The page's straight edge, a sharp drop, tells them apart.
    (x, y) = mnist[1]
    rng = np.random.default_rng(9)
    right = []
    for k in range(20):
        d = k % 10
        page = render_on_paper(x[int(np.flatnonzero(y == d)[50 + k])], size=320)[..., 0].astype(np.float32)
        share, darker = rng.uniform(0.65, 0.85), rng.uniform(0.8, 0.88)
        photo = _on_a_desk(page, rng, share=share, desk=float(np.median(page)) * darker, noise=3)
        right.append(rec.predict(photo).digit == d)
    assert sum(right) >= 18, right


def test_a_vignette_is_not_ink(rec, mnist) -> None:
    # Light falling off towards every corner (a flash, a lamp above the page): a plane cannot level it,
    # the background's window took the darker corners for ink, and such photos read "not a digit".
    (x, y) = mnist[1]
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[0:320, 0:320]
    falloff = np.clip(((xx - 160) ** 2 + (yy - 160) ** 2) / 160**2, 0, 1.5)
    right = []
    for d in range(10):
        page = render_on_paper(x[int(np.flatnonzero(y == d)[9])], size=320)[..., 0].astype(np.float32)
        strength = rng.uniform(0.25, 0.45)  # the corners darkened by 37-67%
        right.append(rec.predict(_jpeg(page * (1 - strength * falloff) + rng.normal(0, 3, page.shape))).digit == d)
    assert sum(right) >= 9, right


def test_a_weak_vignette_leaves_dark_ink_dark(rec, mnist) -> None:
    # Corners 10-20 levels darker than the middles of the edges were levelled by a plane, whose light
    # middle then outweighed the ink: the digit read as light ink on a dark ground, a halo round it.
    # Of these 200 photos (`synth.CONDITIONS`' vignettes), 8 read so and 192 right before; 0 and 198 now.
    (x, y) = mnist[1]
    rng = np.random.default_rng(43)
    picks = rng.choice(len(x), 200, replace=False)
    photos = [synth.captured(x[i], rng, "vignette") for i in picks]
    assert sum(not ink_image(p).dark_ink for p in photos) <= 1
    assert sum(rec.predict(p).digit == y[i] for p, i in zip(photos, picks, strict=True)) >= 196


def test_a_fold_from_top_to_bottom_is_not_part_of_the_digit(rec, mnist) -> None:
    # Two pages side by side, or a fold: a thin line from top to bottom beside the digit, read with it.
    (x, y) = mnist[1]
    rng = np.random.default_rng(8)
    for d in range(10):
        page = render_on_paper(x[int(np.flatnonzero(y == d)[10])], size=320)[..., 0].astype(np.float32)
        fold = int(rng.integers(250, 300))
        page[:, fold : fold + 3] = 150
        page[:, fold + 3 :] = 245
        assert rec.predict(_jpeg(page + rng.normal(0, 3, page.shape))).digit == d


def test_faint_pencil_is_read(rec, mnist) -> None:
    # Pencil photographed darkens the paper by a sixth or less: a fixed floor of 12% contrast cut into
    # the strokes themselves.
    import cv2

    (x, y) = mnist[1]
    right = []
    for contrast in (0.16, 0.14):
        rng = np.random.default_rng(5)
        for d in range(10):
            digit = cv2.resize(x[int(np.flatnonzero(y == d)[4])], (140, 140), interpolation=cv2.INTER_CUBIC)
            digit = cv2.GaussianBlur(cv2.erode(digit, np.ones((5, 5), np.uint8)), (0, 0), 1.5)  # a pencil's line
            right.append(rec.predict(_small_on_a_page(digit, 300, rng, contrast=contrast)).digit == d)
    assert sum(right) >= 13, right  # 8 of 20 with the fixed floor


def test_a_small_digit_in_a_large_scan_is_read_at_its_own_resolution(rec, mnist) -> None:
    # A 48-64 px digit on a 2,000-2,400 px page is 13-20 px once the page is reduced to 640 px: too few
    # pixels for its strokes. It is read again from the page around it, at the page's resolution.
    import cv2

    (x, y) = mnist[1]
    rng = np.random.default_rng(2)
    right = []
    for size, page in ((64, 2400), (48, 2000)):
        for k in range(10):
            digit = cv2.resize(x[int(np.flatnonzero(y == k)[7 + k])], (size, size), interpolation=cv2.INTER_CUBIC)
            digit = cv2.erode(digit, np.ones((3, 3), np.uint8))  # a pen's stroke, thinner than MNIST's
            right.append(rec.predict(_small_on_a_page(digit, page, rng)).digit == k)
    assert sum(right) >= 19, right  # 6 of 20 read from the reduced page alone


def test_small_digits_in_photos_of_a_whole_page_are_read(rec, mnist) -> None:
    # Under 0.5% of the pixels are ink: the tails of the levels are the paper's noise and lighting, so
    # the polarity was a toss-up (the light paper around the digit read as chalk on a board).
    (x, y) = mnist[1]
    rng = np.random.default_rng(11)
    idx = rng.choice(len(x), 20, replace=False)
    pages = [synth.as_photo(x[i], rng, size=int(rng.integers(800, 1201)), fill=(0.05, 0.1), blur=2.0) for i in idx]
    right = [rec.predict(page).digit == y[i] for page, i in zip(pages, idx, strict=True)]
    assert sum(right) >= 17, right


def test_a_dash_is_not_read_as_a_digit(rec, mnist) -> None:
    # A zip code with a dash: the dash is not a digit.
    (x, y) = mnist[1]
    digits = [x[int(np.flatnonzero(y == d)[0])] for d in (9, 0)]
    line = np.zeros((28, 100), np.uint8)
    line[:, 4:32], line[:, 68:96] = digits
    line[13:16, 40:60] = 255
    assert rec.read(255 - np.kron(line, np.ones((4, 4), np.uint8))).text == "90"


def test_letters_and_doodles_are_rejected(rec) -> None:
    rng = np.random.default_rng(4)
    fonts = synth.dejavu_fonts("Serif")
    images = [synth.as_photo(synth.font_glyph(c, fonts[0]), rng, fill=(0.4, 0.6)) for c in "AKMRWXhkm"]
    images += [synth.as_photo(synth.scribble(rng), rng) for _ in range(6)]
    rejected = [rec.predict(d).digit is None for d in images]
    assert np.mean(rejected) >= 0.8, rejected


# --- bad input -------------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _truncated(fmt: str) -> bytes:
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (_truncated("PNG"), "cannot decode"),
        (_truncated("JPEG"), "cannot decode"),
        (np.random.default_rng(1).bytes(4096), "not an image"),
        (b"hello, this is text and not a picture\n" * 10, "not an image"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        (_png_header_only(30000, 30000), "than the limit of"),
        (_png_header_only(9000, 8000), "pixels is more than the limit"),  # under Pillow's limit, over ours
    ],
    ids=["empty", "truncated-png", "truncated-jpeg", "random", "text", "svg", "pdf", "bomb", "over-our-cap"],
)
def test_bad_files_are_clear_errors(data: bytes, message: str, tmp_path) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message) as e:
        load_image(path)
    assert "upload.png" in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_pipes_devices_and_directories_are_refused_without_blocking(tmp_path: Path) -> None:
    # Opening a FIFO waits for a writer, and /dev/zero never ends: both used to hang the reader (and
    # `digitrec predict DIR` finds a FIFO named like an image).
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, kind in (
        (fifo, "a pipe, socket or device"),
        ("/dev/zero", "a pipe, socket or device"),
        (tmp_path, "a directory"),
    ):
        with pytest.raises(ImageError, match=f"^{path}: not a regular file \\({kind}\\)$"):
            load_image(path)


def test_digitrecs_pixel_cap_refuses_from_the_header_before_pillows_own_limit() -> None:
    """A PNG header declaring just over MAX_PIXELS is refused from its header, though Pillow's own
    bomb limit (which only warns below twice MAX_IMAGE_PIXELS) would let it through; one of 25 MP passes."""
    from digitrec.reading.images import open_image

    w = int(MAX_PIXELS**0.5) + 1
    assert w * w < 2 * Image.MAX_IMAGE_PIXELS  # Pillow alone would decode it
    with pytest.raises(ImageError, match="more than the limit"):
        open_image(_png_header_only(w, w), "big.png")
    assert open_image(_png_header_only(5000, 5000), "ok.png").size == (5000, 5000)


def test_huge_photo_is_decoded_small() -> None:
    big = Image.new("RGB", (8000, 6000), (235, 235, 230))
    ImageDraw.Draw(big).line([(4000, 1500), (4000, 4500)], fill=(20, 20, 20), width=300)  # a "1"
    data = _encode(big, "JPEG", quality=80)
    gray = load_image(data)
    assert max(gray.shape) <= 2000  # JPEG draft decoding: never the full 48 MP
    assert to_mnist(data).max() == 255


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_large_deep_images_are_reduced_before_they_become_floats(mode: str) -> None:
    # A 12-megapixel 16-bit PNG or float TIFF compresses to about 100 KB; as float32 it is 48 MB a
    # copy, and the decoder used to make three such copies at full size (112 MB traced). Reduced by
    # a whole factor first, as large transparent images already were, no full-size copy is made.
    h, w = 3000, 4000
    a = np.full((h, w), 0.9, np.float32)
    a[1000:2000, 1900:2100] = 0.1  # a dark "1"
    if mode == "I;16":
        data = _encode(Image.fromarray((a * 65535).astype(np.uint16)), "PNG", compress_level=1)
    else:
        data = _encode(Image.fromarray(a, "F"), "TIFF", compression="tiff_adobe_deflate")
    tracemalloc.start()
    try:
        gray = load_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert gray.shape == (h // 2, w // 2)  # sqrt(12 MP) = 3,464 px: reduced by 2
    assert peak < h * w * 4  # less than one full-size float32 copy
    assert abs(float(gray[0, 0]) - 0.9 * 255) < 1 and float(gray[1500 // 2, 1000]) < 0.1 * 255 + 1  # levels kept
    field = to_mnist(data)
    assert field.max() == 255 and elongation(field) < 0.25  # the bar found, fitted as a 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.full((5, 5), np.nan, np.float32), "NaN"),
        (np.full((5, 5), np.inf), "NaN or infinite"),
        (np.zeros((2, 2, 2, 2)), "shape"),
        (np.zeros((0, 5)), "shape"),
        (np.array([["a", "b"]]), "must hold numbers"),
        (3.14, "cannot read an image from float"),
    ],
)
def test_bad_arrays_are_clear_errors(value: object, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(value)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.5, 50.0, 90.0, 99.9, 100.0]))
def test_fast_percentiles_equal_numpys(n: int, seed: int, q: float) -> None:
    # The ink map takes its percentiles from histograms (exact for uint8, to 1/INK_STEPS for the ink)
    # and small ones from one partial sort: the values must be numpy's own, or preprocessing would
    # drift from what the model was trained on.
    from digitrec.reading.images import INK_STEPS, _ink_percentiles, _percentile, _percentiles_u8

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, n).astype(np.uint8) if seed % 2 else np.full(n, seed % 256, np.uint8)
    qs = (0.5, 50, 99.5)
    np.testing.assert_allclose(_percentiles_u8(a, qs), np.percentile(a, qs), rtol=0, atol=1e-9)
    f = np.clip(rng.normal(0, 0.4, n), -1, 1).astype(np.float32)
    np.testing.assert_allclose(_ink_percentiles(f, (50, q)), np.percentile(f, (50, q)), rtol=0, atol=1 / INK_STEPS)
    assert _percentile(f, q) == pytest.approx(float(np.percentile(f, q)), abs=1e-6)


def test_only_float_arrays_are_read_as_zero_to_one() -> None:
    ones = np.ones((4, 4))
    assert load_image(ones.astype(np.float32)).max() == 255  # float in [0, 1]: 1.0 is white
    assert load_image(ones.astype(np.uint8)).max() == 1  # uint8: 1 is nearly black


def test_tiny_and_flat_images_are_blank_not_digits(rec) -> None:
    # Flat images have no ink: they are answered as blank without asking the model.
    for a in (np.zeros((1, 1), np.uint8), np.full((1, 1), 255, np.uint8), np.zeros((64, 64), np.uint8)):
        answer = rec.predict(a)
        assert answer.digit is None and answer.reason == "no ink found: the image is blank"
        assert not to_mnist(a).any()


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 80),
    w=st.integers(1, 80),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int32]),
    seed=st.integers(0, 2**16),
)
def test_preprocessing_never_fails_on_any_valid_array(h: int, w: int, channels, dtype, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    a = (rng.random(shape) * (1.0 if dtype == np.float32 else 255)).astype(dtype)
    out = to_mnist(a)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    # Either no ink, or ink as MNIST frames it: its strongest at full white, its centre of mass near the
    # field's centre.
    assert out.max() in (0, 255)
    if out.any():
        f = out.astype(np.float64)
        cy, cx = (f.sum(axis=1) @ np.arange(28)) / f.sum(), (f.sum(axis=0) @ np.arange(28)) / f.sum()
        assert abs(cy - 13.5) < 3 and abs(cx - 13.5) < 3


@settings(max_examples=80, deadline=None)
@given(data=st.binary(min_size=0, max_size=2048))
def test_decoder_gives_only_image_errors_on_arbitrary_bytes(data: bytes) -> None:
    try:
        load_image(data)
    except ImageError:
        pass


def _small_files() -> dict[str, bytes]:
    """One small valid file per format and mode the decoder handles: the seeds of the mutation fuzz."""
    a = np.full((40, 32), 230, np.uint8)
    a[8:32, 14:18] = 20
    gray = Image.fromarray(a)
    rgb = Image.merge("RGB", (gray, gray, gray))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(255 - a))
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter
    return {
        "png-L": _encode(gray, "PNG"),
        "png-RGBA": _encode(rgba, "PNG"),
        "png-P-transparent": _encode(rgb.convert("P"), "PNG", transparency=0),
        "png-16": _encode(Image.fromarray(a.astype(np.uint16) * 257), "PNG"),
        "jpeg-RGB-exif": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg-CMYK": _encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg-progressive": _encode(rgb, "JPEG", progressive=True),
        "bmp-P": _encode(rgb.convert("P"), "BMP"),
        "gif-animated": _encode(gray, "GIF", save_all=True, append_images=[Image.fromarray(255 - a)]),
        "tiff-lzw": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-16": _encode(Image.fromarray(a.astype(np.uint16) * 257), "TIFF"),
        "webp-lossless-RGBA": _encode(rgba, "WEBP", lossless=True),
        "pgm": _encode(gray, "PPM"),
        "pbm": _encode(gray.point(lambda v: 255 * (v > 128), "1"), "PPM"),
        "ppm": _encode(rgb, "PPM"),
        "avif": _encode(rgb, "AVIF", quality=90),
        **_heif_files(rgb),
    }


def _heif_files(rgb: Image.Image) -> dict[str, bytes]:
    """A HEIC file where the heic extra is installed (pillow-heif's decoder is fuzzed too), else none."""
    return {"heic": _encode(rgb, "HEIF", quality=90)} if images._heif_registered() else {}


SMALL_FILES = _small_files()


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(SMALL_FILES)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    keep=st.floats(0.05, 1.0),
)
def test_decoder_gives_only_image_errors_on_damaged_files(name: str, edits: list, keep: float) -> None:
    # Arbitrary bytes rarely get past the format check; a valid file with a few bytes changed and
    # its end perhaps cut off reaches deep into each decoder (chunk lengths, palettes, EXIF, strips).
    data = bytearray(SMALL_FILES[name])
    for where, value in edits:
        data[int(where * len(data))] = value
    data = bytes(data[: max(1, int(keep * len(data)))])
    try:
        gray = load_image(data, name)
    except ImageError as e:
        assert str(e).startswith(f"{name}: ")  # every refusal names the file
    else:
        assert gray.ndim == 2 and gray.dtype == np.float32 and np.isfinite(gray).all()


# --- test-set and training-data generators ---------------------------------------------------------


def test_handwriting_fonts_are_found_by_file_or_folder_name(tmp_path, monkeypatch) -> None:
    # fonts-bwht installs .../opentype/bwht/BecauseWeLearn-Regular.otf: only its folder says "bwht".
    # (The benchmark missed those six fonts until this was fixed.)
    for rel in ("opentype/bwht/BecauseWeLearn-Regular.otf", "truetype/humor-sans/Humor-Sans.ttf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "truetype/dejavu").mkdir(parents=True)
    (tmp_path / "truetype/dejavu/DejaVuSans.ttf").write_bytes(b"")  # not a handwriting font
    monkeypatch.setattr(synth, "FONT_DIRS", (str(tmp_path),))
    assert [p.name for p in synth.handwriting_fonts()] == ["BecauseWeLearn-Regular.otf", "Humor-Sans.ttf"]


# --- from a review of the decoder and the reader (2026-11-22) ------------------------------


def test_read_boxes_are_in_the_pixels_of_a_large_jpeg(mnist, rec) -> None:
    """A large JPEG is decoded at reduced size; the boxes must still be in the file's own pixels."""
    x, y = mnist[1]
    page = render_on_paper(x[0], size=2400, offset=(300, -200))  # a 7, 1,200 px high
    boxes = {fmt: rec.read(_encode(Image.fromarray(page), fmt, quality=95)).digits for fmt in ("PNG", "JPEG")}
    assert [d.digit for d in boxes["PNG"]] == [d.digit for d in boxes["JPEG"]] == [int(y[0])]
    np.testing.assert_allclose(boxes["JPEG"][0].box, boxes["PNG"][0].box, atol=12)  # 0.5% of the side
    _, by, _, bh = boxes["PNG"][0].box
    assert 900 <= by <= 1500 and bh > 600  # the 28x28 field drawn 1,200 px high from row 900: full-size pixels


def test_a_page_of_marks_is_refused_quickly(rec, tmp_path: Path) -> None:
    page = Image.new("L", (640, 640), 255)
    draw = ImageDraw.Draw(page)
    for top in range(4, 640, 16):
        for left in range(2, 640, 5):
            draw.line([(left, top), (left, top + 10)], fill=0, width=2)
    # 40 rows of 128 ticks: 40 lines (each tick a mark of its own; as one line, 128 marks of 40 ticks)
    with pytest.raises(ImageError, match=f"ticks.png: 5120 separate marks.*at most {MAX_MARKS}"):
        rec.read(_encode(page, "PNG"), "ticks.png")
    page.save(tmp_path / "ticks.png")
    with pytest.raises(ImageError, match=f"^{tmp_path / 'ticks.png'}: 5120 separate marks"):  # named by its path
        rec.read(tmp_path / "ticks.png")


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX"])
def test_formats_beyond_those_named_are_refused_unread(fmt: str) -> None:
    with pytest.raises(ImageError, match="not a supported format: PNG, JPEG, BMP, GIF, TIFF, WEBP, PPM, AVIF"):
        to_mnist(_encode(Image.new("RGB", (64, 64), "white"), fmt), f"x.{fmt.lower()}")


def test_unusual_modes_read_or_give_a_clear_error(mnist, rec) -> None:
    seven = Image.fromarray(render_on_paper(mnist[1][0][0]))
    assert rec.predict(_encode(seven.convert("LAB"), "TIFF"), "lab.tif").digit == 7  # read by its lightness
    with pytest.raises(ImageError, match="la: cannot read pixels of mode La"):
        rec.predict(seven.convert("LA").convert("La"), "la")
    mask = np.asarray(seven.convert("L")) < 128  # a bool mask: True is ink, so white on black
    assert rec.predict(mask).digit == 7


def test_a_callers_pil_image_is_left_as_it_was(mnist, rec) -> None:
    page = Image.fromarray(render_on_paper(mnist[1][0][0], size=1600))
    jpeg = Image.open(io.BytesIO(_encode(page, "JPEG")))
    assert rec.predict(jpeg).digit == 7
    assert jpeg.size == (1600, 1600) and jpeg.mode == "RGB"  # not drafted to a smaller gray image
    blank = Image.new("RGB", (200, 200), "white")
    gif = Image.open(io.BytesIO(_encode(page.resize((200, 200)), "GIF", save_all=True, append_images=[blank])))
    gif.seek(1)
    assert rec.predict(gif).digit == 7  # the first frame
    assert gif.tell() == 1


def test_a_large_transparent_drawing_reads_like_a_small_one(mnist, rec) -> None:
    ink = np.kron(mnist[1][0][0], np.ones((100, 100), np.uint8))  # 2,800 px
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = ink
    big = _encode(Image.fromarray(rgba, "RGBA"), "PNG")
    small = _encode(Image.fromarray(rgba, "RGBA").resize((280, 280)), "PNG")
    assert rec.predict(big).digit == rec.predict(small).digit == 7
    assert rec.read(big).digits[0].box[3] > 1500  # in the image's own pixels


def test_a_long_line_keeps_its_digits_readable(mnist, rec) -> None:
    """A line of 80 digits, 108 px high and about 5,400 px long: analysed with its longer side at 640
    px, its digits were 10 px high, and lines this long lost or split digits."""
    x, y = mnist[1]
    pick = np.arange(100, 180)
    strip = synth.number_strip([x[i] for i in pick], np.random.default_rng(0), touching=0.0)
    page = (255 - np.kron(strip, np.ones((3, 3))) * 230).clip(0, 255).astype(np.uint8)
    text = rec.read(_encode(Image.fromarray(page), "PNG")).text
    truth = "".join(str(int(v)) for v in y[pick])
    assert len(text) == 80 and sum(a == b for a, b in zip(text, truth, strict=True)) >= 78, (text, truth)


def test_a_phone_cameras_multi_picture_jpeg_is_read(mnist, rec) -> None:
    """Many phones write MPO files (a JPEG with more pictures after it): Pillow's JPEG reader opens them."""
    seven = Image.fromarray(render_on_paper(mnist[1][0][0], size=300))
    data = _encode(seven, "MPO", save_all=True, append_images=[Image.new("RGB", (300, 300), "white")])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert rec.predict(data, "phone.jpg").digit == 7


def _tight_bitmap(digit: np.ndarray, side: int) -> np.ndarray:
    """An MNIST digit as a scanned form's bitmap: cropped to its ink, stretched to fill a side x side
    box, binarised, dark ink on white (as UCI and USPS-style sets store theirs)."""
    import cv2

    rows, cols = np.flatnonzero(digit.any(axis=1) > 0), np.flatnonzero(digit.any(axis=0) > 0)
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    stretched = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return np.where(stretched > 100, 0, 255).astype(np.uint8)


def test_tight_stretched_bitmaps_keep_their_polarity_and_are_read(mnist):
    """A bold digit stretched to fill a 16x16 bitmap has about as much ink as paper: the corners, not
    the minority, say which is paper; the shipped model then reads such bitmaps of test digits nearly
    as well as the digits themselves (the paper read as ink fills the field's box and reads as nothing)."""
    from digitrec.reading.recognizer import load_recognizer

    _, (x, y) = mnist
    bitmaps = [_tight_bitmap(digit, 16) for digit in x[:200]]
    assert all(images.ink_image(b).dark_ink for b in bitmaps[:40]), "a dark digit on white was read as light ink"
    fields = np.stack([images.to_mnist(b) for b in bitmaps])
    forced = load_recognizer().predict_arrays(fields).argmax(axis=1)
    assert np.mean(forced == y[:200]) >= 0.9


def _ink_box(field: np.ndarray) -> tuple[int, int]:
    y0, y1, x0, x1 = bbox(field > 50)  # type: ignore[misc]  # every field here holds ink
    return y1 - y0, x1 - x0


def test_a_digit_stretched_to_fill_a_small_bitmap_gets_back_a_digits_width(mnist, rec):
    """USPS and Semeion store digits stretched to fill 16x16: the ink fills the field's 20x20 box both
    ways, and a 9 stretched so read as a 4 or a 5. Such a bitmap (square, small, ink at every edge) is
    fitted STRETCHED_ASPECT as wide as high, the training digits' median; the same bitmap with a margin,
    or a larger image, is fitted as it is."""
    import cv2

    _, (x, y) = mnist
    nines = [k for k in range(400) if y[k] == 9][:12]
    for k in nines:
        grey = _grey_stretched(x[k])
        h, w = _ink_box(to_mnist(grey))
        assert h >= 19 and abs(w - images.STRETCHED_ASPECT * h) <= 1, (k, h, w)
        squeezed = images.STRETCHED_ASPECT * h + 1  # fitted as they are, these nines are 17-21 px wide
        h, w = _ink_box(to_mnist(np.pad(grey, 4, constant_values=255)))  # a margin: not stretched
        assert w > squeezed, (k, h, w)
        big = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_CUBIC)  # a large image filled by its digit
        assert _ink_box(to_mnist(big))[1] > squeezed, k
    # The shipped model reads the stretched bitmaps of the first 300 test digits, grey and binarised.
    for binary in (False, True):
        bitmaps = [_tight_bitmap(d, 16) if binary else _grey_stretched(d) for d in x[:300]]
        forced = rec.predict_arrays(np.stack([to_mnist(b) for b in bitmaps])).argmax(axis=1)
        assert np.mean(forced == y[:300]) >= 0.95, binary


def test_a_digit_filling_its_bitmap_keeps_a_piece_at_its_edge(mnist):
    """A piece at the left or right edge, apart from the rest, is a neighbour's that the crop cut
    (`_without_neighbours`), except in a small bitmap the digit fills: there it is the digit's own (a
    stretched 9's loop broken off its stem)."""
    _, (x, _) = mnist
    kept = dropped = 0
    for digit in x[:20]:
        broken = _grey_stretched(digit)
        broken[:, 3] = 255  # a column of paper parts the three leftmost columns from the rest
        if (broken[:, :3] > 128).all():
            continue  # nothing there to part
        ii = images.ink_image(broken)
        kept += ii.mask[:, : 3 * round(ii.scale)].any()
        framed = np.pad(broken, ((3, 3), (0, 3)), constant_values=255)  # paper on three sides: a crop
        ii = images.ink_image(framed)
        dropped += not ii.mask[:, : 3 * round(ii.scale)].any()
    assert kept >= 18 and dropped >= 10, (kept, dropped)


def _grey_stretched(digit: np.ndarray) -> np.ndarray:
    import cv2

    crop = synth._crop(digit).astype(np.float32)
    return np.clip(255 - cv2.resize(crop, (16, 16), interpolation=cv2.INTER_AREA), 0, 255).astype(np.uint8)


def test_a_small_digit_in_a_large_photo_is_enlarged_into_its_box_sharply(mnist, rec):
    """A digit 12-23 px high in a photo of 250-400 px is enlarged to MNIST's 20 px box by bicubic
    interpolation: the model reads 94% of 200 such photos of test digits right (90% when they were
    enlarged bilinearly; docs/experiments.md, "Small digits enlarged into their box")."""
    _, (x, y) = mnist
    rng = np.random.default_rng(11)
    photos = [
        synth.as_photo(d, rng, size=int(rng.integers(250, 400)), fill=(0.06, 0.08), blur=0.5, jpeg=False)
        for d in x[:200]
    ]
    fields = np.stack([to_mnist(p) for p in photos])
    assert np.mean([max(_ink_box(f)) >= 19 for f in fields if f.any()]) > 0.95  # fitted to the box
    probs, reject = rec.scores(fields)
    right = (probs.argmax(axis=1) == y[:200]) & (reject < rec.reject_threshold)
    assert right.mean() >= 0.92, right.mean()


def test_tiny_images_are_enlarged_before_their_strokes_are_measured():
    """A 16x16 digit is worked on at 64x64 (a whole factor), so the boxes `read` reports still
    refer to the image as given."""
    gray = np.full((16, 16), 255, np.uint8)
    gray[3:13, 7:9] = 0  # a 1, two pixels wide
    ii = images.ink_image(gray)
    assert ii.ink.shape == (64, 64) and ii.scale == 4.0
    assert images.to_mnist(gray).any()


def test_the_rule_reader_takes_its_settings_from_the_model(rec, mnist) -> None:
    """The settings that weigh the model's probabilities come from its metadata, today's where missing."""
    from digitrec.models import ModelError
    from digitrec.reading.recognizer import Recognizer
    from digitrec.reading.rules import RuleReader, RuleSettings

    seven = render_on_paper(mnist[1][0][0])  # a lone digit on paper
    assert RuleReader(rec).settings == RuleSettings()  # the shipped model's metadata has none
    assert rec.read_rules(seven).text == "7"

    def with_settings(settings: object) -> Recognizer:
        return Recognizer(rec.run, {**rec.metadata, "rule_reader": settings}, rec.path, rec.engine)

    # A lone mark reads nothing when LONE_MARGIN x P(not a digit) beats its best reading: a huge
    # margin makes any lone digit no number.
    assert RuleReader(with_settings({"lone_margin": 1e6})).settings.lone_margin == 1e6
    assert with_settings({"lone_margin": 1e6}).read_rules(seven).text == ""
    assert with_settings({"split_prior": 0.9}).read_rules(seven).text == "7"
    for bad in ({"lone_margin": "big"}, {"splt_prior": 0.9}, {"weak": -1}, [0.9]):
        with pytest.raises(ModelError, match="rule_reader"):
            with_settings(bad).read_rules(seven)
