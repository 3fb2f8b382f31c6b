"""Reading whole numbers: the learned line reader against the rule-based one, side by side.

    .venv/bin/python benchmarks/read_numbers.py [--reader LINES.onnx] [--n 500] [--seed 2027] [--json]
                                                [--split validation]

Sets (3-8 digits each, scored on the exact string; made here, with their own seed):
- MNIST test numbers, strip photos: `synth.number_strip` as photos, as `real_images.py` makes them
  (a generator the line reader was not trained with);
- MNIST test numbers, every style: `line_training.compose_line` lines as photos, canvases, form
  fields and small scans, a quarter each (the training generator, other draws, test digits);
- cvl-valid numbers, every style: the same from `../shared/data/real/cvl-valid` digits (writers never
  trained on; the line reader's validation chose its epoch and threshold on other numbers of them,
  so this is a validation figure, not a test);
- form fields: MNIST test digits in printed boxes, rows of boxes, combs and underlines, as photos;
- non-digits: `real_images.py`'s (clothing, letters, doodles, blank pages), scored as reading nothing.
``--split validation`` makes the MNIST sets of MNIST's validation digits (the last 5,000 training
images) instead of its test digits, and other draws: the sets on which to choose between readers.
Readers: "learned" (what `read` does: the line network, each digit it finds read again by the
digit model), "network" (the line network alone), "rules" (the rule-based reader). For each:
exact-string accuracy, the share read with the wrong number of digits, and the milliseconds per
image on one core (decoding and preprocessing included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DIGITREC_THREADS", "1")  # one core: ONNX Runtime's threads...
os.environ.setdefault("OMP_NUM_THREADS", "1")
CVL_VALID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "cvl-valid"


def number_sets(n: int, rng: np.random.Generator, split: str = "test") -> dict[str, list[tuple[object, str, str]]]:
    """name -> [(image, its digits, its style)]"""
    from digitrec.data import DEFAULT_VALIDATION, load_labelled, load_mnist, split_validation
    from digitrec.training import synth
    from digitrec.training.line_training import STYLES, compose_line, render_line

    (x, y), (x_test, y_test) = load_mnist()
    if split == "validation":
        _, (x_test, y_test) = split_validation(x, y, DEFAULT_VALIDATION)
    fonts = synth.dejavu_fonts("Serif")

    def numbers(xs: np.ndarray, ys: np.ndarray, style: str | None) -> list[tuple[object, str, str]]:
        out = []
        for k in range(n):
            idx = rng.integers(0, len(xs), int(rng.integers(3, 9)))
            digits = [xs[i] for i in idx]
            text = "".join(str(int(ys[i])) for i in idx)
            if style == "strip":
                out.append((synth.as_photo(synth.number_strip(digits, rng), rng), text, "photo"))
            elif style == "form":
                field = synth.form_field(digits, rng, synth.FORM_STYLES[k % len(synth.FORM_STYLES)])
                out.append((synth.as_photo(field, rng), text, "form"))
            else:
                ink = compose_line(digits, rng, fonts, augment=False)
                out.append((render_line(ink, digits, rng, STYLES[k % len(STYLES)]), text, STYLES[k % len(STYLES)]))
        return out

    sets = {
        f"MNIST {split} numbers, strip photos": numbers(x_test, y_test, "strip"),
        f"MNIST {split} numbers, every style": numbers(x_test, y_test, None),
    }
    if CVL_VALID.is_dir():
        lab = load_labelled(CVL_VALID)
        sets["cvl-valid numbers, every style"] = numbers(lab.x, lab.y, None)
    else:
        print(f"{CVL_VALID} not found: its numbers are left out", file=sys.stderr)
    sets[f"form fields (MNIST {split} digits)"] = numbers(x_test, y_test, "form")
    return sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", default="auto", help="line model file (default: the shipped line reader)")
    ap.add_argument("--model", help="digit model for the rule-based reader (default: the shipped model)")
    ap.add_argument("--n", type=int, default=500, help="numbers per set (default 500)")
    ap.add_argument("--non-digits", type=int, default=400, help="non-digit images (default 400)")
    ap.add_argument("--seed", type=int, default=2027, help="seed of the generated sets")
    ap.add_argument("--classifier-weight", type=float, help="the learned reader's CLASSIFIER_WEIGHT (default its own)")
    ap.add_argument("--split", choices=("test", "validation"), default="test", help="MNIST digits (default test)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()

    import cv2

    from digitrec.models import ModelError
    from digitrec.reading.images import ImageError
    from digitrec.reading.recognizer import load_recognizer

    sys.path.insert(0, str(Path(__file__).parent))
    from real_images import non_digit_images

    cv2.setNumThreads(1)
    try:
        readers = {
            "learned": load_recognizer(args.model, reader=args.reader),
            "network": load_recognizer(args.model, reader=args.reader),
            "rules": load_recognizer(args.model, reader="rules"),
        }
    except ModelError as e:
        print(f"read_numbers.py: {e}", file=sys.stderr)
        return 2
    if readers["learned"].line_reader is None:
        print("read_numbers.py: no line reader found (train one: digitrec train-reader)", file=sys.stderr)
        return 2
    readers["network"].line_reader.classifier_weight = 0.0  # the line network alone, no digit model
    if args.classifier_weight is not None:
        readers["learned"].line_reader.classifier_weight = args.classifier_weight
    rng = np.random.default_rng(args.seed)
    sets = number_sets(args.n, rng, args.split)
    images, kinds = non_digit_images(args.non_digits, rng)
    sets["non-digits read as no number"] = [(img, "", kind) for img, kind in zip(images, kinds, strict=True)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, items in sets.items():
        results[name] = {}
        for label, rec in readers.items():
            got = []
            t = time.perf_counter()
            for image, *_ in items:
                try:
                    got.append(rec.read(image).text)
                except ImageError:
                    got.append("")
            ms = 1000 * (time.perf_counter() - t) / len(items)
            right = np.array([g == t for g, (_, t, _) in zip(got, items, strict=True)])
            styles = np.array([style for *_, style in items])
            results[name][label] = {
                "images": len(items),
                "exact": float(right.mean()),
                "wrong_length": float(np.mean([len(g) != len(t) for g, (_, t, _) in zip(got, items, strict=True)])),
                "ms": ms,
                "by_style": {str(st): float(right[styles == st].mean()) for st in np.unique(styles)},
            }
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'set':46s} {'reader':8s} {'exact':>7s} {'wrong length':>13s} {'ms/image':>9s}  by style")
    for name, by in results.items():
        for label, r in by.items():
            styles = " ".join(f"{k} {v:.1%}" for k, v in r["by_style"].items()) if len(r["by_style"]) > 1 else ""
            print(f"{name:46s} {label:8s} {r['exact']:7.1%} {r['wrong_length']:13.1%} {r['ms']:9.1f}  {styles}")
    print("(one core; non-digits: 'exact' = read as no number)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
