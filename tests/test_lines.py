"""The learned line reader: strips, CTC decoding, synthetic lines, training and export, the shipped reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from digitrec.reading.lines import (
    BLANK,
    INK_HEIGHT,
    PAD,
    STRIDE,
    STRIP_HEIGHT,
    ctc_greedy,
    default_line_model_path,
    strip_pixels,
)

SHIPPED = default_line_model_path()
needs_shipped = pytest.mark.skipif(SHIPPED is None, reason="this build ships no line reader (make line-model)")


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_a_strip_is_the_lines_ink_box_scaled_to_the_ink_height() -> None:
    ink = np.zeros((80, 300), np.float32)
    ink[:, 10:14] = 0.4  # a weak pen: scaled to full strength
    ink[20:60, 100:104] = 0.4
    pixels, f = strip_pixels(ink)
    assert pixels.shape[0] == STRIP_HEIGHT and pixels.shape[1] % STRIDE == 0
    assert f == pytest.approx(INK_HEIGHT / 80)
    assert pixels.shape[1] == pytest.approx(300 * f + 2 * PAD, abs=STRIDE + 1)
    rows = np.flatnonzero(pixels.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 == pytest.approx(INK_HEIGHT, abs=1)
    assert pixels.max() == pytest.approx(1.0)
    assert not pixels[:, :PAD].any()  # blank columns before the line


def test_a_fat_brush_is_thinned_in_the_strip_and_a_pen_left_alone() -> None:
    import cv2

    from digitrec.reading.images import stroke_width

    def ring(thickness: int) -> np.ndarray:
        ink = np.zeros((120, 120), np.float32)
        cv2.circle(ink, (60, 60), 40, 1.0, thickness)
        ys, xs = np.nonzero(ink)
        return ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]

    fat = ring(30)  # a 0 drawn with a brush a third of its size
    scaled = cv2.resize(
        fat, None, fx=INK_HEIGHT / fat.shape[0], fy=INK_HEIGHT / fat.shape[0], interpolation=cv2.INTER_AREA
    )
    before = stroke_width(scaled > 0.3)
    after = stroke_width(strip_pixels(fat)[0] > 0.3)
    assert before > 6 and after <= before - 1.5
    thin = stroke_width(strip_pixels(ring(2))[0] > 0.3)
    assert thin < 3  # a pen's stroke is left as it is


def test_greedy_ctc_merges_repeats_and_keeps_those_a_blank_separates() -> None:
    frames = [3, 3, BLANK, 3, BLANK, BLANK, 7, 7, 7, BLANK, 0]
    probs = np.full((len(frames), BLANK + 1), 0.01, np.float32)
    for t, k in enumerate(frames):
        probs[t, k] = 0.9 - 0.01 * t
    path = ctc_greedy(probs)
    assert [d for d, *_ in path] == [3, 3, 7, 0]
    assert [(a, b) for _, a, b, _ in path] == [(0, 1), (3, 3), (6, 8), (10, 10)]
    assert path[2][3] == pytest.approx(0.9 - 0.06)  # a digit's confidence: its best frame
    assert ctc_greedy(np.eye(BLANK + 1, dtype=np.float32)[[BLANK] * 5]) == []


def test_composed_lines_hold_every_item_and_vary_with_the_seed(mnist) -> None:
    from digitrec.training import synth
    from digitrec.training.line_training import compose_line

    (x, _), _ = mnist
    fonts = synth.dejavu_fonts("Sans")
    items = [x[0], ",", x[1], x[2], "=", "$"]
    a = compose_line(items, np.random.default_rng(1), fonts)
    b = compose_line(items, np.random.default_rng(1), fonts)
    c = compose_line(items, np.random.default_rng(2), fonts)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    # Three digits of 40 px and three marks, side by side: much wider than high, and about 40-60 px high.
    assert a.shape[1] > 2 * a.shape[0] and 30 <= a.shape[0] <= 110


def test_the_line_model_gives_one_frame_per_stride_columns() -> None:
    from digitrec.training.line_training import build_line_model

    model = build_line_model("float32")
    for width in (32, 100, 256):
        out = np.asarray(model(np.zeros((2, STRIP_HEIGHT, width, 1), np.float32)))
        assert out.shape == (2, width // STRIDE, BLANK + 1)


@pytest.fixture(scope="module")
def tiny_reader(mnist, tmp_path_factory: pytest.TempPathFactory):
    """A line reader trained for one epoch on 400 lines of MNIST digits, through the CLI."""
    import contextlib

    from digitrec.cli import main

    out = tmp_path_factory.mktemp("lines")
    args = ["--out", str(out), "--lines", "400", "--epochs", "1", "--rendered", "0.05"]
    args += ["--validation-numbers", "8", "--workers", "1", "--precision", "float32", "--json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train-reader", *args]) == 0
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])


def test_refreshed_lines_are_made_for_every_epoch_after_the_first(mnist, tmp_path: Path) -> None:
    """--refresh 0.5: half of the 190 plain lines (200 less 10 rendered) made anew before the 2nd and
    3rd epochs, in a process of its own; the run trains, validates and exports as ever."""
    import contextlib

    from digitrec.cli import main

    args = ["--out", str(tmp_path), "--lines", "200", "--epochs", "3", "--rendered", "0.05", "--refresh", "0.5"]
    args += ["--validation-numbers", "4", "--workers", "1", "--precision", "bf16", "--json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train-reader", *args]) == 0
    summary = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert summary["lines_made"] == 200 + 2 * 95
    assert len(json.loads((tmp_path / "history.json").read_text())) == 3
    assert (tmp_path / "lines.onnx").is_file()


def test_line_settings_name_their_problems() -> None:
    from digitrec.training.line_training import LineConfig

    assert LineConfig(precision="bf16").problems() == []
    problems = "; ".join(LineConfig(precision="half", refresh=1.5).problems())
    assert "precision must be one of auto, float32, bf16, mixed_bfloat16, got 'half'" in problems
    assert "refresh must be in [0, 1], got 1.5" in problems


def test_training_writes_a_model_whose_onnx_twin_agrees_with_keras(tiny_reader) -> None:
    from digitrec.reading.lines import load_line_reader

    out, summary = tiny_reader
    assert (out / "lines.keras").is_file() and (out / "lines.onnx").is_file()
    onnx_reader = load_line_reader(out / "lines.onnx")
    keras_reader = load_line_reader(out / "lines.keras")  # its twin is preferred...
    assert keras_reader.path.suffix == ".onnx"
    from digitrec.reading.lines import _keras_runner

    run, meta = _keras_runner(out / "lines.keras")  # ...so run Keras itself
    x = (np.random.default_rng(0).random((1, STRIP_HEIGHT, 120, 1)) > 0.7).astype(np.float32)
    np.testing.assert_allclose(onnx_reader.run(x), run(x), atol=1e-3)
    assert onnx_reader.min_confidence == summary["min_confidence"] == meta["min_confidence"]
    card = summary["training_data"]
    assert card[0]["path"] == "MNIST"
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["loss"] > 0


def test_bad_training_settings_are_refused_with_the_reason() -> None:
    from digitrec.training.line_training import LineConfig

    problems = LineConfig(lines=5, epochs=0, rendered=2.0, extra_data=("a",), validation_data=("a",)).problems()
    text = "; ".join(problems)
    assert "lines" in text and "epochs" in text and "rendered" in text and "both training and validation" in text


# --- the shipped reader --------------------------------------------------------------------------


def _number_photo(mnist, digits: list[int], seed: int) -> tuple[bytes, str]:
    from digitrec.training import synth

    _, (x, y) = mnist
    rng = np.random.default_rng(seed)
    idx = [int(rng.choice(np.flatnonzero(y == d))) for d in digits]
    strip = synth.number_strip([x[i] for i in idx], rng, touching=0.0)
    return synth.as_photo(strip, rng, jpeg=False), "".join(map(str, digits))


@needs_shipped
def test_the_shipped_reader_reads_photographed_numbers_of_test_digits(mnist) -> None:
    from digitrec import load_recognizer

    rec = load_recognizer()
    assert rec.line_reader is not None
    rng = np.random.default_rng(5)
    right = 0
    for k in range(20):
        photo, text = _number_photo(mnist, list(rng.integers(0, 10, int(rng.integers(3, 9)))), k)
        reading = rec.read(photo)
        right += reading.text == text
        if reading.text:
            assert 0 < reading.confidence <= 1
            assert len(reading.digits) == len(reading.text)
            lefts = [d.box[0] for d in reading.digits]
            assert lefts == sorted(lefts)  # boxes left to right, as the digits
    assert right >= 17


@needs_shipped
def test_a_small_number_on_a_large_page_is_read_at_its_own_resolution(mnist) -> None:
    # A number written small on a page photographed whole: reduced with the page, its digits were
    # about 12 px high (4 of these 12 read before). It is read again from the image around it, and
    # its boxes are still the page's pixels, on the number.
    import cv2

    from digitrec import load_recognizer
    from digitrec.training import synth

    rec = load_recognizer()
    _, (x, y) = mnist
    rng = np.random.default_rng(8)
    right = 0
    for k in range(12):
        idx = rng.integers(0, len(x), 5)
        ink = np.clip(synth.number_strip([x[i] for i in idx], rng), 0, 255).astype(np.uint8)
        small = cv2.resize(ink, (ink.shape[1] * 3 // 2, ink.shape[0] * 3 // 2), interpolation=cv2.INTER_AREA)
        page = np.full((1500, 2000), 235, np.uint8)
        oy, ox = 600 + 20 * k, 500 + 30 * k
        page[oy : oy + small.shape[0], ox : ox + small.shape[1]] -= (0.8 * small).astype(np.uint8)
        reading = rec.read(page)
        right += reading.text == "".join(str(int(y[i])) for i in idx)
        for d in reading.digits:
            bx, by, bw, bh = d.box
            assert ox - 4 <= bx and bx + bw <= ox + small.shape[1] + 4
            assert oy - 4 <= by and by + bh <= oy + small.shape[0] + 4
    assert right >= 10


@needs_shipped
def test_boxes_hold_their_digits_ink(mnist) -> None:
    from PIL import Image

    from digitrec import load_recognizer

    photo, text = _number_photo(mnist, [4, 0, 7], 3)
    reading = load_recognizer().read(photo)
    assert reading.text == text
    w, h = Image.open(io.BytesIO(photo)).size
    for a, b in zip(reading.digits, reading.digits[1:], strict=False):
        assert a.box[0] + a.box[2] <= b.box[0] + 0.3 * b.box[2]  # side by side, hardly overlapping
    for d in reading.digits:
        x, y, bw, bh = d.box
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h and bw > 3 and bh > 10


@needs_shipped
def test_the_rule_based_reader_is_still_there_on_request(mnist) -> None:
    from digitrec import load_recognizer

    photo, text = _number_photo(mnist, [1, 2, 5, 0], 8)
    rec = load_recognizer(reader="rules")
    assert rec.line_reader is None
    assert rec.read(photo).text == text


@needs_shipped
def test_a_shoe_and_a_blank_page_read_nothing(mnist) -> None:
    from digitrec import load_recognizer
    from digitrec.data import DataError, load_dataset
    from digitrec.training import synth

    rec = load_recognizer()
    rng = np.random.default_rng(0)
    assert rec.read(synth.blank_page(rng)).text == ""
    try:
        shoes = load_dataset("fashion-mnist")
    except DataError:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    idx = np.flatnonzero(shoes.y_test == 7)[:10]  # sneakers
    empty = sum(rec.read(synth.as_photo(shoes.x_test[i], rng)).text == "" for i in idx)
    assert empty >= 8


def test_each_digit_read_again_takes_its_own_components_and_its_share_of_touching_ones() -> None:
    from digitrec.reading.lines import LineReader, Strip

    labels = np.zeros((20, 40), np.int32)
    labels[2:18, 0:10] = 1  # a digit on its own
    labels[0:3, 4:14] = 2  # its flag, reaching past its columns
    labels[2:18, 16:40] = 3  # two touching digits
    mask = labels > 0
    strip = Strip(
        np.zeros((STRIP_HEIGHT, 48), np.float32),
        1.0,
        mask.astype(np.float32),
        mask,
        (0, 0, 40, 20),
        labels,
        ((1, 0, 10), (2, 4, 14), (3, 16, 40)),
    )
    reader = LineReader(None, {}, Path("lines.onnx"))  # settings missing from the metadata: the defaults
    assert (reader.wide_part, reader.classifier_weight) == (1.5, 1.0)
    first = reader._digit_mask(strip, 0, 15)
    np.testing.assert_array_equal(first, (labels == 1) | (labels == 2))  # the flag whole, none of the pair
    second = reader._digit_mask(strip, 15, 28)
    expected = np.zeros_like(mask)
    expected[:, 15:28] = labels[:, 15:28] == 3
    np.testing.assert_array_equal(second, expected)  # its half of the touching pair only
    # The model's own setting rules: columns 22-34 take only their part of the 24-wide pair by
    # default (wider than 1.5 times 12), the whole pair centred in them with a wide_part of 3.
    part = reader._digit_mask(strip, 22, 34)
    assert part[:, 22:34].any() and not part[:, :22].any() and not part[:, 34:].any()
    whole = LineReader(None, {"wide_part": 3.0}, Path("lines.onnx"))._digit_mask(strip, 22, 34)
    np.testing.assert_array_equal(whole, labels == 3)
