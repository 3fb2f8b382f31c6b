"""Small helpers on arrays and masks that the reading modules share (NumPy and OpenCV only)."""

from __future__ import annotations

import functools

import numpy as np


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Rows [y0, y1) and columns [x0, x1) holding every True of ``mask``; None if it has none."""
    rows, cols = mask.any(axis=1), mask.any(axis=0)
    if not rows.any():
        return None
    y0, x0 = int(rows.argmax()), int(cols.argmax())
    return y0, len(rows) - int(rows[::-1].argmax()), x0, len(cols) - int(cols[::-1].argmax())


def percentile(a: np.ndarray, q: float) -> float:
    """``np.percentile(a, q)`` of a small array, without numpy's per-call overhead (one partial sort)."""
    flat = a.ravel()
    pos = q / 100 * (flat.size - 1)
    k = int(pos)
    k1 = min(k + 1, flat.size - 1)
    part = np.partition(flat, [k, k1] if k1 != k else k)
    return float(part[k] + (pos - k) * (part[k1] - part[k]))


@functools.cache
def disc(radius: int) -> np.ndarray:
    """A disc of ``radius`` pixels as a uint8 structuring element (OpenCV's ellipse)."""
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
