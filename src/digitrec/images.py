"""The one path from an image to a 28x28 MNIST-style array (white ink on black, uint8).

This first version handles MNIST-like input: decode, flatten transparency, grayscale, detect polarity
(dark ink on light paper is inverted), crop to the ink, fit it into a 20x20 box and centre it by
centre of mass in a 28x28 field, as MNIST itself was made.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

__all__ = ["ImageError", "load_image", "to_mnist"]

FIELD = 28  # MNIST image side
BOX = 20  # MNIST fitted each digit into a 20x20 box, preserving aspect ratio
MAX_PIXELS = 40_000_000  # refuse larger images before decoding them (Pillow's bomb limit is ~89M)


class ImageError(Exception):
    """An image could not be read or holds nothing usable; the message says which and why."""


def load_image(image: Any) -> np.ndarray:
    """Decode a path, bytes, PIL image or array into a float32 grayscale array in [0, 255]."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, np.ndarray):
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
            a = a[..., :3].mean(axis=-1) if a.shape[-1] >= 3 else a[..., 0]
        if a.ndim != 2 or a.size == 0:
            raise ImageError(f"expected a 2-D grayscale or (h, w, 3|4) color array, got shape {image.shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ImageError("the array holds NaN or infinite values")
        if a.max(initial=0) <= 1.0 and image.dtype.kind == "f":
            a = a * 255.0  # float images in [0, 1]
        return np.clip(a, 0, 255)
    name = "image"
    if isinstance(image, (str, os.PathLike)):
        name = os.fspath(image)
        try:
            with open(image, "rb") as f:
                image = f.read()
        except OSError as e:
            raise ImageError(f"{name}: cannot read: {e.strerror or e}") from e
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise ImageError(f"{name}: empty file")
        try:
            pil = Image.open(io.BytesIO(image))
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image (unrecognized format)") from None
        w, h = pil.size
        if w * h > MAX_PIXELS:
            raise ImageError(f"{name}: {w}x{h} pixels is more than the limit of {MAX_PIXELS}")
        try:
            pil.load()
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"{name}: cannot decode the image ({e})") from e
    elif isinstance(image, Image.Image):
        pil = image
    else:
        raise ImageError(f"cannot read an image from {type(image).__name__}: give a path, bytes, PIL image or array")
    pil = ImageOps.exif_transpose(pil)
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        # Composite on white: transparent canvas drawings become dark ink on light paper.
        rgba = pil.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(white, rgba)
    return np.asarray(pil.convert("L"), dtype=np.float32)


def to_mnist(image: Any) -> np.ndarray:
    """Any image -> uint8 (28, 28), white digit on black, fitted and centred the MNIST way."""
    import cv2

    a = load_image(image)
    background = float(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))
    if background > 127:  # light background: dark ink on paper, invert to MNIST's polarity
        a, background = 255.0 - a, 255.0 - background
    a = np.clip(a - background, 0, None)
    peak = a.max(initial=0)
    if peak <= 0:
        return np.zeros((FIELD, FIELD), np.uint8)
    a = a * (255.0 / peak)
    ys, xs = np.nonzero(a > 0.25 * 255)
    crop = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(crop, (nw, nh), interpolation=interp)
    field = np.zeros((FIELD, FIELD), np.float32)
    top, left = (FIELD - nh) // 2, (FIELD - nw) // 2
    field[top : top + nh, left : left + nw] = small
    total = field.sum()
    if total > 0:  # shift so the centre of mass sits at the centre of the field
        yy, xx = np.mgrid[:FIELD, :FIELD]
        cy, cx = (field * yy).sum() / total, (field * xx).sum() / total
        m = np.float32([[1, 0, (FIELD - 1) / 2 - cx], [0, 1, (FIELD - 1) / 2 - cy]])
        field = cv2.warpAffine(field, m, (FIELD, FIELD), flags=cv2.INTER_LINEAR, borderValue=0)
    return np.clip(np.rint(field), 0, 255).astype(np.uint8)
