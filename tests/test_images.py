"""The basic image path: any image -> a 28x28 white-on-black digit the model reads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitrec.images import ImageError, load_image, to_mnist
from tests.conftest import render_on_paper


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
    return float((a * yy).sum() / a.sum()), float((a * xx).sum() / a.sum())


def test_dark_ink_on_paper_becomes_a_centred_mnist_digit(mnist) -> None:
    digit = mnist[1][0][0]  # a 7
    page = render_on_paper(digit, size=240, offset=(40, -50))
    out = to_mnist(page)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[:, 0].max() == 0  # black background, as MNIST
    cy, cx = _centre_of_mass(out.astype(float))
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1
    ys, xs = np.nonzero(out > 40)
    assert max(np.ptp(ys), np.ptp(xs)) <= 21  # fitted into MNIST's 20x20 box


def test_transparent_canvas_drawing_keeps_its_ink() -> None:
    # Black ink on a fully transparent background: the ink lives in the alpha channel.
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[20:80, 45:55, 3] = 255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    out = to_mnist(buf.getvalue())
    assert out.max() == 255 and out[0].max() == 0
    assert (out > 128).sum() > 20


def test_blank_image_gives_an_empty_field() -> None:
    assert to_mnist(np.full((50, 50), 255, np.uint8)).max() == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "cannot decode|not an image"),
        (np.full((5, 5), np.nan, np.float32), "NaN"),
        (np.zeros((2, 2, 2, 2)), "shape"),
        (3.14, "cannot read an image from float"),
    ],
)
def test_bad_input_is_a_clear_error(value: object, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(value)


def test_recognizer_reads_paths_bytes_pil_and_arrays(tiny_run, mnist, tmp_path) -> None:
    from digitrec import load_recognizer

    rec = load_recognizer(tiny_run.run_dir)
    (x_test, y_test) = mnist[1]
    page = render_on_paper(x_test[1])  # a 2
    path = tmp_path / "two.png"
    Image.fromarray(page).save(path)
    answers = {rec.predict(v).digit for v in (path, path.read_bytes(), Image.fromarray(page), page)}
    assert answers == {int(y_test[1])}
