"""Real handwriting from other writers: digitrec against the tutorials' recipe, set by set.

    .venv/bin/python benchmarks/real_handwriting.py [--model M] [--real ../shared/data/real] [--n 2000]
        [--rendered 1000] [--formats 1000] [--tta DEGREES] [--json]

Sets:
- cvl-valid:  CVL single digits of 60 writers that no model here trains on (validation only);
- optdigits:  UCI optdigits, 30 writers, 32x32 binary bitmaps (a training set of the shipped model: for
              a model trained on it this row is not a held-out score);
- cvl-valid as photos, canvases, bitmaps: ``--rendered`` of the cvl-valid digits (every k-th, spread
  over the writers) rendered again as a phone photo, a web-canvas drawing and a small scanned bitmap
  (`synth.as_photo`, `as_canvas`, `as_bitmap`, as training renders MNIST's digits) and read from those
  images: unseen writers on other devices; and as a photo of a whole page (800-1200 px) in which the
  digit is 4-12% of the side (blurred as the photos are, up to 2 px); as a photo of faint pencil
  (grey ink 12-30% darker than the paper); as a photo of the page on a desk (`synth.on_a_desk`);
  as a photo with a shadow cast across it (`synth.with_a_shadow`); as a photo whose corners are
  30-75% darker (`synth.with_a_vignette`: a vignette, a flash's fall-off); in a form cell
  (`synth.in_a_form_cell`); as scans cut from a number (`synth.cut_from_a_number`) or from ruled
  paper (`synth.on_ruled_paper`), or photographed on it, the page filling 90-100% of the frame; and
  as a scan cropped tight to the digit's ink (its box, 4x);
- cvl-valid in other sets' formats: ``--formats`` of the cvl-valid digits (every k-th) stored as
  other digit collections and drawing apps store theirs (`FORMATS`: dark on white, EMNIST's 24 px
  box, white drawn large on black, USPS's and Semeion's 16x16 boxes filled, two levels, a bold pen,
  blue ink in a coarse JPEG, low contrast, a form's box cut at a corner, a digit flush with three
  edges of a scan or of a drawing app's canvas), from the 28x28 images as they are;
- MNIST test: the 10,000 test digits as MNIST-format arrays;
- the generated sets of `benchmarks/real_images.py` (photos, canvas drawings and font digits from
  MNIST *test* digits and fonts no training uses; non-digits), ``--n`` images each, its seed.
The labelled sets are folders with a labels.csv (`digitrec.data.load_labelled`); the real ones are
read from ``--real`` (default ../shared/data/real beside the repository) and skipped when absent.

For each set: read right (the answer `predict` gives is the label; a "not a digit" counts wrong),
rejected, misread, forced answer (the most likely digit, no rejection) and the tutorials' recipe:
Otsu's threshold, the ink's box fitted into 20x20, centred by its centre of mass in 28x28 (the MNIST
recipe as tutorials write it), read by the tutorials' CNN (the TensorFlow beginner CNN: Conv 32,
Pool, Dense 128, Adam, batch 100, 5 epochs, x/255), trained here on the 60,000 MNIST training digits
(about 40 s; ``--tutorial-model`` reuses one saved by an earlier run).

Digits are read as `predict` reads them, with the model's test-time augmentation (each answer
averaged over the field and two copies turned +-8 degrees for the shipped model; ``--tta DEGREES``
sets it, 0 turns it off); the column "once" reads each digit once, for comparison. Whether a digit
is rejected is decided on the field alone either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # real_images.py, beside this file

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def tutorial_field(image: object) -> np.ndarray:
    """The tutorials' MNIST framing of one image: Otsu, the ink's box into 20x20, centre of mass at the
    centre of 28x28; white ink on black, uint8."""
    import cv2

    from digitrec.reading.images import load_image

    gray = np.clip(load_image(image), 0, 255).astype(np.uint8)
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)  # dark ink -> white
    if np.count_nonzero(ink) > ink.size / 2:  # light ink on dark: the other side of the threshold
        ink = 255 - ink
    ys, xs = np.nonzero(ink)
    if len(ys) == 0:
        return np.zeros((28, 28), np.uint8)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    s = 20.0 / max(h, w)
    crop = cv2.resize(crop, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    field = np.zeros((28, 28), np.float32)
    top, left = (28 - crop.shape[0]) // 2, (28 - crop.shape[1]) // 2
    field[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    total = field.sum()
    if total > 0:
        cy = (field.sum(axis=1) @ np.arange(28)) / total
        cx = (field.sum(axis=0) @ np.arange(28)) / total
        m = np.float32([[1, 0, 13.5 - cx], [0, 1, 13.5 - cy]])
        field = cv2.warpAffine(field, m, (28, 28))
    return np.clip(field, 0, 255).astype(np.uint8)


def tutorial_model(path: str | None) -> object:
    """The tutorials' CNN, trained on MNIST's 60,000 training digits (or loaded from ``path``)."""
    import keras

    from digitrec.data import load_mnist

    if path and Path(path).is_file():
        return keras.saving.load_model(path)
    (x, y), _ = load_mnist()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    print("Training the tutorials' CNN on MNIST (5 epochs) ...", file=sys.stderr, flush=True)
    model.fit(x[..., None] / 255.0, y, batch_size=100, epochs=5, verbose=0)
    if path:
        model.save(path)
    return model


def rendered(x: np.ndarray, y: np.ndarray, n: int, seed: int, score: Callable[..., None]) -> None:
    """Score ``n`` of the digits (x, y), every k-th, rendered as photos, canvases and bitmaps, and
    taken under each of `synth.CONDITIONS` (a whole page, pencil, a desk, ruled paper, ...)."""
    from digitrec.reading.images import to_mnist
    from digitrec.training import synth

    idx = np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int)
    styles = (("photos", synth.as_photo), ("canvases", synth.as_canvas), ("bitmaps", synth.as_bitmap))

    def condition(name: str) -> Callable[[np.ndarray, np.random.Generator], bytes]:
        return lambda ink, rng: synth.captured(ink, rng, name, others=x)

    others = tuple(
        (style, condition(name))
        for style, name in (
            ("photos, small in the frame", "small"),
            ("photos in faint pencil", "pencil"),
            ("photos on a desk", "desk"),
            ("photos with a cast shadow", "shadow"),
            ("photos with a vignette", "vignette"),
            ("photos in a form cell", "cell"),
            ("scans cut from a number", "cut"),
            ("scans cut from ruled paper", "ruled"),
            ("photos of ruled paper filling the frame", "ruled photo"),
            ("scans cropped tight", "tight"),
        )
    )
    for style, render in (*styles, *others):
        rng = np.random.default_rng([seed, len(style)])
        images = [render(x[i], rng) for i in idx]
        fields = np.stack([to_mnist(d) for d in images])
        score(f"cvl-valid as {style}", fields, y[idx], np.stack([tutorial_field(d) for d in images]))


def _fit(digit: np.ndarray, side: int, box: float, stretch: bool = False) -> np.ndarray:
    """A white-on-black digit's ink, fitted into ``box`` pixels (keeping its aspect, or ``stretch``ed
    to fill a square) in the middle of a black ``side`` x ``side`` image (uint8)."""
    import cv2

    ys, xs = np.nonzero(digit > 20)
    ink = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    h, w = ink.shape
    if stretch:
        nh = nw = round(box)
    else:
        nh, nw = max(1, round(h * box / max(h, w))), max(1, round(w * box / max(h, w)))
    out = np.zeros((side, side), np.float32)
    y0, x0 = (side - nh) // 2, (side - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(ink, (nw, nh), interpolation=cv2.INTER_AREA)
    return np.clip(out, 0, 255).astype(np.uint8)


def _drawn_large(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    side = int(rng.choice((128, 200, 280)))
    big = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC)
    return _fit(big, side, rng.uniform(0.85, 0.9) * side)


def _grown(digit: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.dilate(digit, np.ones((3, 3), np.uint8))


def _box_cut(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark on white, 96 px, with two or three sides of a box (1-3 px) along the crop's edges, joined
    at the corners: a form's box that the crop cut at one or two corners."""
    import cv2

    image = 255 - np.pad(cv2.resize(digit, (84, 84), interpolation=cv2.INTER_CUBIC), 6)
    t, level = int(rng.integers(1, 4)), int(rng.integers(0, 120))
    sides = [k for k in range(4) if rng.random() < 0.5]
    while len(sides) < 2:
        sides = sorted({*sides, int(rng.integers(4))})
    for k in sides[:3]:
        image = np.rot90(image, k)
        image[:t] = level
        image = np.rot90(image, -k)
    return np.ascontiguousarray(image)


def _one_margin(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark on white, the ink enlarged 4x and cropped flush with three edges, a margin of a third of
    its size on the fourth (a digit cut from a cell or a page off centre)."""
    import cv2

    big = cv2.resize(digit, (112, 112), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.nonzero(big > 40)
    ink = big[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    m = round(0.35 * max(ink.shape))
    pad = [(m, 0, 0, 0), (0, m, 0, 0), (0, 0, m, 0), (0, 0, 0, m)][int(rng.integers(4))]
    return 255 - np.pad(ink, ((pad[0], pad[1]), (pad[2], pad[3])))


def _drawn_flush(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White on a black 280 px canvas, drawn as tall as the canvas and against its left or right
    side (flush with three edges)."""
    import cv2

    ys, xs = np.nonzero(digit > 20)
    ink = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    w = min(280, max(1, round(ink.shape[1] * 280 / ink.shape[0])))
    canvas = np.zeros((280, 280), np.uint8)
    x0 = 0 if rng.random() < 0.5 else 280 - w
    canvas[:, x0 : x0 + w] = cv2.resize(ink, (w, 280), interpolation=cv2.INTER_CUBIC)
    return canvas


def _blue_jpeg(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    import io

    import cv2
    from PIL import Image

    a = cv2.resize(digit, (112, 112), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    rgb = np.stack([255 - 0.8 * a, 255 - 0.7 * a, 255 - 0.2 * a], -1)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=40)
    return buf.getvalue()


# How other digit collections and drawing apps store a digit, made from a 28x28 white-on-black digit:
# name -> (digit, rng) -> image (uint8 array or encoded bytes).
FORMATS: dict[str, Callable[[np.ndarray, np.random.Generator], object]] = {
    "dark on white (28x28, inverted)": lambda d, rng: 255 - d,
    "EMNIST's framing (white on black, a 24 px box in 28)": lambda d, rng: _fit(d, 28, 24),
    "white drawn large on black (128-280 px, 85-90% of it)": _drawn_large,
    "USPS's framing (16x16, stretched to fill, grey)": lambda d, rng: (
        _fit(d, 16, 16, stretch=True) if rng.random() < 0.5 else 255 - _fit(d, 16, 16, stretch=True)
    ),
    "Semeion's framing (16x16, stretched, two levels, dark on white)": lambda d, rng: np.where(
        _fit(d, 16, 16, stretch=True) > 100, 0, 255
    ).astype(np.uint8),
    "two levels (28x28, thresholded at 100)": lambda d, rng: np.where(d > 100, 255, 0).astype(np.uint8),
    "a bold pen (28x28, strokes grown by a pixel)": lambda d, rng: _grown(d),
    "blue ink on white, 112 px, JPEG quality 40": _blue_jpeg,
    "low contrast (white on black at 30% of full scale)": lambda d, rng: (d.astype(np.float32) * 0.3).astype(np.uint8),
    "cut from a form's box (two or three of its sides along the edges)": _box_cut,
    "flush with three edges (dark on white, a margin on one side)": _one_margin,
    "drawn flush with three edges of a black canvas (white, 280 px)": _drawn_flush,
}


def formats(x: np.ndarray, y: np.ndarray, n: int, score: Callable[..., None]) -> None:
    """Score ``n`` of the digits (x, y), every k-th, stored in each of `FORMATS`."""
    from digitrec.reading.images import to_mnist

    idx = np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int)
    for k, (name, store) in enumerate(FORMATS.items()):
        rng = np.random.default_rng([2026, k])
        images = [store(x[i], rng) for i in idx]
        fields = np.stack([to_mnist(d) for d in images])
        score(f"cvl-valid as {name}", fields, y[idx], np.stack([tutorial_field(d) for d in images]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file or run directory (default: the shipped model)")
    ap.add_argument("--real", default=str(REAL), help=f"folder of the real labelled sets (default {REAL})")
    ap.add_argument("--n", type=int, default=2000, help="images per generated set (default 2000; 0: none)")
    ap.add_argument(
        "--rendered",
        type=int,
        default=1000,
        help="cvl-valid digits rendered again as photos, canvases and bitmaps, each (default 1000; 0: none)",
    )
    ap.add_argument(
        "--formats",
        type=int,
        default=1000,
        help="cvl-valid digits stored in each of other sets' formats (FORMATS; default 1000; 0: none)",
    )
    ap.add_argument("--seed", type=int, default=2026, help="seed of the generated sets (real_images.py's default)")
    ap.add_argument("--tutorial-model", help="a .keras file: load the tutorials' CNN from it, or save it there")
    ap.add_argument(
        "--tta",
        type=float,
        metavar="DEGREES",
        help="test-time augmentation of the digit answers, as `digitrec predict --tta` (default: the model's own)",
    )
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()

    from digitrec.data import load_labelled, load_mnist
    from digitrec.models import ModelError
    from digitrec.reading.images import to_mnist
    from digitrec.reading.recognizer import load_recognizer
    from real_images import digit_sets, non_digit_images

    try:
        rec = load_recognizer(args.model, tta=args.tta)
        once = load_recognizer(args.model, tta=0) if rec.tta else rec  # each digit read once, for comparison
    except ModelError as e:
        print(f"real_handwriting.py: {e}", file=sys.stderr)
        return 2
    tutorial = tutorial_model(args.tutorial_model)
    results: dict[str, dict[str, float | int]] = {}

    def score(name: str, fields: np.ndarray, labels: np.ndarray, tutorial_fields: np.ndarray) -> None:
        probs, reject = rec.scores(fields)
        empty = ~fields.reshape(len(fields), -1).any(axis=1)
        rejected = empty | (reject >= rec.reject_threshold)
        forced = probs.argmax(axis=1) == labels
        tut = tutorial.predict(tutorial_fields[..., None] / 255.0, batch_size=1000, verbose=0).argmax(axis=1)
        results[name] = {
            "images": len(labels),
            "read_right": float(np.mean(forced & ~rejected)),
            "rejected": float(rejected.mean()),
            "misread": float(np.mean(~forced & ~rejected)),
            "forced": float(forced.mean()),
            "tutorial": float(np.mean(tut == labels)),
        }
        if rec.tta:
            single = once.scores(fields)[0].argmax(axis=1) == labels  # rejection is the same: the field's own
            results[name]["read_once"] = float(np.mean(single & ~rejected))

    real = Path(args.real)
    for name in ("cvl-valid", "optdigits"):
        folder = real / name
        if not (folder / "labels.csv").is_file():
            print(f"{folder}: not found, skipped", file=sys.stderr)
            continue
        labelled = load_labelled(folder)
        tutorial_fields = np.stack([tutorial_field(folder / f) for f in labelled.files])
        score(name, labelled.x, labelled.y, tutorial_fields)
        if name == "cvl-valid" and args.rendered:
            rendered(labelled.x, labelled.y, args.rendered, args.seed, score)
        if name == "cvl-valid" and args.formats:
            formats(labelled.x, labelled.y, args.formats, score)

    _, (x_test, y_test) = load_mnist()
    score("MNIST test", x_test, y_test, x_test)

    if args.n:
        rng = np.random.default_rng(args.seed)
        for name, (images, labels) in digit_sets(x_test, y_test, args.n, rng).items():
            t = time.perf_counter()
            fields = np.stack([to_mnist(d) for d in images])
            score(name, fields, np.asarray(labels), np.stack([tutorial_field(d) for d in images]))
            results[name]["preprocess_ms"] = 1000 * (time.perf_counter() - t) / len(images)
        # real_images.py draws its numbers and form fields before its non-digits; these are other draws
        non_digits, _ = non_digit_images(args.n // 2, rng)
        answers = [rec.predict(d).digit for d in non_digits]
        results["non-digits"] = {"images": len(non_digits), "rejected": float(np.mean([a is None for a in answers]))}

    if args.json:
        print(json.dumps({"model": str(rec.path), "tta_degrees": rec.tta, "seed": args.seed, "results": results}))
        return 0
    print(f"model: {rec.path}, test-time augmentation +-{rec.tta:g} degrees")
    tta = " once" if rec.tta else ""
    print(f"{'set':<40} {'images':>6} {'right':>7} {'rejected':>8} {'misread':>7} {'forced':>7} {'tutorial':>8}{tta}")
    for name, r in results.items():
        if "read_right" not in r:
            print(f"{name:<40} {r['images']:>6} {'':>7} {r['rejected'] * 100:7.2f}%")
            continue
        keys = ("read_right", "rejected", "misread", "forced", "tutorial") + (("read_once",) if rec.tta else ())
        cells = [r[k] * 100 for k in keys]
        print(f"{name:<40} {r['images']:>6} " + " ".join(f"{v:6.2f}%" for v in cells))
    print("right: the digit predict answers is the label; rejected: answered 'not a digit' (counted wrong);")
    print("forced: the most likely digit, no rejection; tutorial: Otsu + 20x20 box + centre of mass, tutorial CNN")
    if rec.tta:
        print(
            f"once: read right, each digit read once (the other columns average it with two copies turned "
            f"+-{rec.tta:g} degrees)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
