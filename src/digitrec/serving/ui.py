"""The web UI (Gradio): draw, upload or paste a digit; see each class's probability and what the model saw.

A "Number" tab reads a whole line of digits and shows a box around each. Everything goes through
the recognizer, so the UI answers exactly as the CLI and the API do.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..reading.images import MAX_PIXELS, ImageError, open_image, to_mnist
from ..reading.recognizer import Recognizer

__all__ = ["build_ui"]

CANVAS = 280  # px: the drawing canvas, 10x MNIST
BRUSH = 18  # px: a brush this wide stays 1.3 px after the 20/280 downscale, where thin strokes vanish
SHOW_SIDE = 1024  # px: the longest side of the picture shown back with the digits' boxes


# The drawing pad's picture may be this many pixels a side at most (the canvas at up to 4x device
# pixels): a 190 KB, 7000x7000 transparent PNG sent as the drawing took the server from 220 MB to
# 2.3 GB (3.1 GB with four layers) while Gradio decoded it.
MAX_SKETCH_SIDE = 4 * CANVAS


def _sketchpad(gr: Any, **kwargs: Any) -> Any:
    """Gradio's Sketchpad, reading only what digitrec uses: the composite picture, after its size was
    checked on its header. Gradio's own decodes the background, every layer and the composite, each
    at whatever size the browser (or anyone posting to the queue) sent.

    The pad's ``preprocess`` is replaced on the instance: a subclass of a Gradio component makes
    Gradio write a ``.pyi`` stub beside this module at import time."""
    import types
    from io import BytesIO

    from PIL import Image

    def preprocess(self: Any, payload: Any) -> Any:
        if payload is None:
            return None
        if payload.id is not None:  # the picture came as a blob, stored by id
            cached = self.blob_storage.pop(payload.id, None)
            composite = cached.composite if cached else None
        else:
            composite = payload.composite
        if composite is None:
            return None
        source = BytesIO(composite) if isinstance(composite, (bytes, bytearray)) else composite.path
        try:
            with Image.open(source) as header:  # reads the header only
                w, h = header.size
        except Exception as e:  # Pillow raises many types for what is not an image
            raise gr.Error(f"the drawing is not an image ({type(e).__name__})") from None
        if max(w, h) > MAX_SKETCH_SIDE:
            raise gr.Error(f"a drawing of {w}x{h} pixels is larger than the pad allows ({MAX_SKETCH_SIDE} a side)")
        picture = self.convert_and_format_image(composite, flatten_on_white=True)
        return {"background": None, "layers": [], "composite": picture}

    pad = gr.Sketchpad(**kwargs)
    pad.preprocess = types.MethodType(preprocess, pad)
    return pad


def _image_of(value: Any) -> np.ndarray | str | None:
    """The picture in a Sketchpad value (layers composited, an array), or an upload's file path; None
    when empty."""
    if value is None:
        return None
    if isinstance(value, str):  # an upload, not yet decoded: digitrec's own decoder checks it first
        return value
    if isinstance(value, dict):  # Sketchpad / ImageEditor: {"background", "layers", "composite"}
        value = value.get("composite")
        if value is None:
            return None
    a = np.asarray(value)
    return a if a.size else None


def _name(image: np.ndarray | str) -> str | None:
    """How errors name an upload: its file name, never the server's temporary folder it was saved in."""
    return os.path.basename(image) or "upload" if isinstance(image, str) else None


def _shown(image: np.ndarray | str) -> tuple[np.ndarray, float]:
    """The picture to show back (RGB, transparency on white, at most SHOW_SIDE px) and its scale."""
    from PIL import Image, ImageOps

    if isinstance(image, str):
        with open(image, "rb") as f:
            pil = open_image(f.read(), _name(image) or "upload")  # size and pixel caps checked before decoding
        full_side = max(pil.size)  # the boxes' frame: the longer side, whatever the EXIF orientation
        pil.draft("RGB", (SHOW_SIDE, SHOW_SIDE))  # JPEG: decoded at 1/2, 1/4 or 1/8 of its size
        pil = ImageOps.exif_transpose(pil)
    else:
        pil = Image.fromarray(image)
        full_side = max(pil.size)
    pil = pil.convert("RGBA")
    if max(pil.size) > SHOW_SIDE:
        k = SHOW_SIDE / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * k)), max(1, round(pil.height * k))))
    white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, pil).convert("RGB")), max(pil.size) / full_side


def _digit(rec: Recognizer, value: Any) -> tuple[dict[str, float], str, np.ndarray | None]:
    image = _image_of(value)
    if image is None:
        return {}, "Draw a digit, or upload or paste an image.", None
    try:
        seen = to_mnist(image, _name(image))  # shown back, and answered without decoding the image again
        answer = rec.predict_preprocessed(seen)
    except ImageError as e:
        return {}, f"Cannot read this image: {e}", None
    labels = {str(d): p for d, p in enumerate(answer.probabilities)}
    if answer.digit is None:
        text = f"No digit ({answer.reason})"
    else:
        text = f"**{answer.digit}** (confidence {answer.confidence:.1%})"
    big = np.kron(seen, np.ones((8, 8), np.uint8))  # 224x224, nearest: each MNIST pixel visible
    return labels, text, big


def _number(rec: Recognizer, value: Any) -> tuple[Any, str]:
    image = _image_of(value)
    if image is None:
        return None, "Upload, paste or draw a line of digits."
    try:
        reading = rec.read(image, _name(image))
    except ImageError as e:
        return None, f"Cannot read this image: {e}"
    rgb, scale = _shown(image)
    boxes = [
        (tuple(round(v * scale) for v in (x, y, x + w, y + h)), f"{d.digit} ({d.confidence:.0%})")
        for d in reading.digits
        for x, y, w, h in [d.box]
    ]
    # Lines one above the other, top to bottom: one per Markdown line (two spaces end a line).
    text = "  \n".join(f"**{line}**" for line in reading.text.split("\n")) if reading.text else "No digits found."
    return (rgb, boxes), text


def _image_input(gr: Any, label: str, elem_id: str) -> Any:
    # A file path, not pixels: Gradio then only reads the header (image_mode None: no conversion),
    # and the file goes through digitrec's decoder, with its size and pixel caps, like any other.
    return gr.Image(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id=elem_id)


def build_ui(rec: Recognizer) -> Any:
    """The Gradio Blocks of the UI, bound to ``rec``.

    Gradio decodes the drawing pad's images itself, with Pillow: Pillow's own decompression-bomb
    limit is lowered here (for the whole process) so that it refuses what digitrec's decoder refuses,
    images over MAX_PIXELS (Pillow raises over twice its MAX_IMAGE_PIXELS).
    """
    import gradio as gr
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = min(Image.MAX_IMAGE_PIXELS or MAX_PIXELS, MAX_PIXELS // 2)

    with gr.Blocks(title="digitrec", analytics_enabled=False) as demo:
        gr.Markdown(
            "# digitrec\nPick the brush and draw a digit, or upload or paste a photo. "
            "The model also says when it sees no digit."
        )
        with gr.Tab("Digit"):
            with gr.Row():
                with gr.Column():
                    sketch = _sketchpad(
                        gr,
                        label="Draw a digit",
                        type="numpy",
                        image_mode="RGBA",
                        canvas_size=(CANVAS, CANVAS),
                        brush=gr.Brush(default_size=BRUSH, colors=["#000000"], color_mode="fixed"),
                        elem_id="sketch",
                    )
                    upload = _image_input(gr, "Or upload / paste an image", "upload")
                with gr.Column():
                    verdict = gr.Markdown(elem_id="verdict")
                    probabilities = gr.Label(label="Probability of each digit", num_top_classes=10)
                    seen = gr.Image(label="What the model saw (28x28)", interactive=False, height=224)
            sketch.change(lambda v: _digit(rec, v), sketch, [probabilities, verdict, seen])
            upload.change(lambda v: _digit(rec, v), upload, [probabilities, verdict, seen])
        with gr.Tab("Number"):
            with gr.Row():
                number = _image_input(gr, "A line of digits: a zip code, an amount", "number")
                with gr.Column():
                    text = gr.Markdown(elem_id="number-text")
                    boxes = gr.AnnotatedImage(label="Digits found")
            number.change(lambda v: _number(rec, v), number, [boxes, text])
    return demo
