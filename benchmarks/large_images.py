"""Time and peak memory of reading one large image, per kind of file: what a 7,000-pixel-square upload
(49 megapixels, just under the 50-megapixel cap) costs the server.

    .venv/bin/python benchmarks/large_images.py [--side 7000] [--repeat 3]

Each file holds one dark bar (a "1") and is made here. PNG, TIFF and WebP have no reduced decoding,
so such a file, which compresses to 60-330 KB, is decoded whole; JPEG is decoded at 1/2 to 1/8 scale.
Each measurement runs `images.to_mnist` once in a fresh process (imports and a small image first, so
they are not counted) and prints the wall time and how much the peak resident memory grew (VmHWM in
/proc: Linux only); the figures are the median over ``--repeat`` processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# The child reads its peak from /proc (VmHWM, Linux): getrusage's ru_maxrss survives exec, so a child
# of this process, which has held the test images, would start with the parent's peak.
CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
from digitrec.reading.images import to_mnist
to_mnist(np.zeros((50, 50), np.uint8))
data = open(sys.argv[1], "rb").read()
def peak():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
base = peak()
t = time.perf_counter()
field = to_mnist(data, sys.argv[1])
seconds = time.perf_counter() - t
grown = (peak() - base) / 1024
print(json.dumps({"seconds": seconds, "peak_mb": grown, "ink": int(field.sum())}))
"""


def make_files(side: int, folder: Path) -> dict[str, Path]:
    """The test files: gray, RGB, 16-bit and float images of paper with one dark bar; a transparent
    canvas with the bar in its alpha channel; and a JPEG."""
    bar = (slice(side * 3 // 7, side * 4 // 7), slice(side * 34 // 70, side * 36 // 70))
    gray = np.full((side, side), 230, np.uint8)
    gray[bar] = 10
    rgb = np.dstack([gray] * 3)
    deep = gray.astype(np.uint16) * 257
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[(*bar, 3)] = 255
    images = {
        "8-bit gray PNG": (Image.fromarray(gray), "png", {"compress_level": 9}),
        "RGB PNG": (Image.fromarray(rgb), "png", {"compress_level": 9}),
        "RGBA PNG (canvas)": (Image.fromarray(rgba, "RGBA"), "png", {"compress_level": 9}),
        "16-bit gray PNG": (Image.fromarray(deep), "png", {"compress_level": 9}),
        "float TIFF": (
            Image.fromarray(gray.astype(np.float32) / 255, "F"),
            "tif",
            {"compression": "tiff_adobe_deflate"},
        ),
        "RGB JPEG": (Image.fromarray(rgb), "jpg", {"quality": 90}),
    }
    files = {}
    for k, (name, (image, ext, options)) in enumerate(images.items()):
        files[name] = folder / f"{k}.{ext}"
        image.save(files[name], **options)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=7000, help="pixels a side (default 7000: 49 megapixels)")
    ap.add_argument("--repeat", type=int, default=3, help="processes per file; the median is printed (default 3)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"Making {args.side}x{args.side} test files ...", file=sys.stderr)
        for name, path in make_files(args.side, Path(tmp)).items():
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{name}: the measurement failed:\n{out.stderr[-2000:]}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results[name] = {
                "file_kb": round(path.stat().st_size / 1024, 1),
                "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
                "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                "read": all(r["ink"] > 0 for r in runs),
            }
    if args.json:
        print(json.dumps({"side": args.side, "repeat": args.repeat, "results": results}))
        return
    print(f"{'file':<20} {'KB':>8} {'seconds':>8} {'peak MB':>8}  bar found")
    for name, r in results.items():
        print(f"{name:<20} {r['file_kb']:>8.1f} {r['seconds']:>8.3f} {r['peak_mb']:>8}  {'yes' if r['read'] else 'NO'}")


if __name__ == "__main__":
    main()
