"""The web UI (Gradio): draw, upload or paste a digit; see each class's probability and what the model saw.

A "Number" tab reads a whole line of digits and shows a box around each. Everything goes through
the recognizer, so the UI answers exactly as the CLI and the API do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .images import ImageError, to_mnist
from .recognizer import Recognizer

__all__ = ["build_ui"]

CANVAS = 280  # px: the drawing canvas, 10x MNIST
BRUSH = 18  # px: a brush this wide stays 1.3 px after the 20/280 downscale, where thin strokes vanish


def _image_of(value: Any) -> np.ndarray | None:
    """The picture in a Sketchpad value (layers composited) or an Image value; None when empty."""
    if value is None:
        return None
    if isinstance(value, dict):  # Sketchpad / ImageEditor: {"background", "layers", "composite"}
        value = value.get("composite")
        if value is None:
            return None
    a = np.asarray(value)
    return a if a.size else None


def _digit(rec: Recognizer, value: Any) -> tuple[dict[str, float], str, np.ndarray | None]:
    image = _image_of(value)
    if image is None:
        return {}, "Draw a digit, or upload or paste an image.", None
    try:
        seen = to_mnist(image)
        answer = rec.predict(image)
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
        reading = rec.read(image)
    except ImageError as e:
        return None, f"Cannot read this image: {e}"
    rgb = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:  # show transparent drawings on white
        alpha = image[..., 3:4].astype(np.float32) / 255
        rgb = (rgb * alpha + 255 * (1 - alpha)).astype(np.uint8)
    boxes = [
        ((x, y, x + w, y + h), f"{d.digit} ({d.confidence:.0%})") for d in reading.digits for x, y, w, h in [d.box]
    ]
    text = f"**{reading.text}**" if reading.text else "No digits found."
    return (rgb, boxes), text


def _image_input(gr: Any, label: str, elem_id: str) -> Any:
    # RGBA keeps transparency, so the one image path can composite it the right way round.
    return gr.Image(label=label, type="numpy", image_mode="RGBA", sources=["upload", "clipboard"], elem_id=elem_id)


def build_ui(rec: Recognizer) -> Any:
    """The Gradio Blocks of the UI, bound to ``rec``."""
    import gradio as gr

    with gr.Blocks(title="digitrec", analytics_enabled=False) as demo:
        gr.Markdown(
            "# digitrec\nPick the brush and draw a digit, or upload or paste a photo. "
            "The model also says when it sees no digit."
        )
        with gr.Tab("Digit"):
            with gr.Row():
                with gr.Column():
                    sketch = gr.Sketchpad(
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
