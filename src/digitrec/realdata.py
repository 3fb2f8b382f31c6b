"""Training data for real images: digits as the model sees them after preprocessing, and non-digits.

- `domain_digits`: MNIST *training* digits rendered as photos and canvas drawings (`synth`) and sent
  back through the one preprocessing path (`images.to_mnist`), so the model learns what real inputs
  look like after normalization (thicker or thinner strokes, blur, JPEG).
- `negatives`: examples of the "not a digit" class: Fashion-MNIST *training* images, letters that
  cannot be read as digits, doodles, noise; all through the same path.

The benchmark's test images come from MNIST *test* digits, Fashion-MNIST *test*, other fonts and
other seeds, so none of this overlaps with what it measures.
"""

from __future__ import annotations

import numpy as np

from . import synth
from .images import digit_to_mnist, to_mnist

__all__ = ["domain_digits", "negatives"]


def domain_digits(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits drawn from (x, y), rendered as photos (2/3) or canvas drawings (1/3), preprocessed."""
    idx = rng.choice(len(x), size=min(n, len(x)), replace=False)
    out = np.empty((len(idx), 28, 28), np.uint8)
    for k, i in enumerate(idx):
        data = synth.as_canvas(x[i], rng) if k % 3 == 2 else synth.as_photo(x[i], rng)
        out[k] = to_mnist(data)
    return out, y[idx]


def negatives(n: int, rng: np.random.Generator, fashion: np.ndarray | None = None) -> np.ndarray:
    """``n`` non-digits as the model would see them: uint8 (n, 28, 28).

    About half from ``fashion`` (white-on-black 28x28 images, e.g. Fashion-MNIST training images)
    when given, the rest letters, doodles, blobs and noise.
    """
    fonts = synth.dejavu_fonts("Sans")  # the benchmark's letters use other fonts
    out = np.empty((n, 28, 28), np.uint8)
    for k in range(n):
        kind = k % 8 if fashion is not None else 4 + k % 4
        if kind < 4:  # clothing and shoes, fitted and centred like a digit
            item = fashion[int(rng.integers(len(fashion)))].astype(np.float32) / 255.0
            mask = item > 0.1
            out[k] = digit_to_mnist(item, mask) if mask.any() else 0
        elif kind < 6 and fonts:  # letters
            letter = synth.NON_DIGIT_LETTERS[int(rng.integers(len(synth.NON_DIGIT_LETTERS)))]
            glyph = synth.font_glyph(letter, fonts[int(rng.integers(len(fonts)))], size=int(rng.integers(40, 97)))
            out[k] = to_mnist(np.pad(glyph, 8))
        elif kind < 7:  # doodles
            out[k] = to_mnist(synth.scribble(rng))
        else:  # blobs of noise: textures and smudges a threshold lets through
            noise = rng.random((int(rng.integers(8, 40)), int(rng.integers(8, 40)))).astype(np.float32) * 255
            out[k] = to_mnist(np.pad(noise, 10))
    return out
