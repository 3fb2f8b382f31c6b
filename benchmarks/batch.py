"""Images per second of `digitrec batch` on this machine, against the plain loop.

    .venv/bin/python benchmarks/batch.py [--n 2000] [--task predict|read] [--alternate R] [--json]

Makes ``--n`` photos of MNIST test digits (or of numbers, ``--task read``) in a temporary folder,
then times, each on the same files:
- the plain loop: one process, `load_recognizer()` once, then predict/read file by file (one core);
- `batch` with one actor, and with one actor per core, on a local Ray cluster started once beforehand
  (its start-up is reported apart: a cluster is started once and reads many folders).
Reported: images per second, Ray's overhead on one core against the plain loop, the scaling from one
actor to one per core, and the bytes per image read. Each `batch` also runs on the first quarter of
the files: the difference between the two runs gives its steady rate (images per second once its
actors are up) and its fixed cost per run (actors started, the model loaded, the pipeline planned),
which a run of millions of images pays once.

This machine's speed drifts by a quarter from minute to minute, as much as the gaps measured here, so
``--alternate R`` times R rounds, each the plain loop, one actor and one per core in turn, and
reports every ratio per round and its median over the rounds: a drift then moves a round's three
timings together instead of one path's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def make_images(folder: Path, n: int, task: str) -> int:
    from digitrec.data import load_mnist
    from digitrec.training import synth

    _, (x, _) = load_mnist()
    rng = np.random.default_rng(0)
    total = 0
    for k in range(n):
        if task == "read":
            ink = synth.number_strip([x[i] for i in rng.integers(0, len(x), int(rng.integers(3, 9)))], rng)
        else:
            ink = x[int(rng.integers(len(x)))]
        data = synth.as_photo(ink, rng)
        (folder / f"{k:06d}.jpg").write_bytes(data)
        total += len(data)
    return total


def _round(files: list[Path], answer: Callable[[Path], Any], task: str, cores: int, tmp: Path) -> dict[str, float]:
    """One round: the plain loop, then `batch` with one actor and with one per core, each on ``files``
    and on their first quarter; the rates, the steady rates and fixed costs, and their ratios."""
    from digitrec.serving.batch import batch

    n = len(files)
    got: dict[str, float] = {}
    t = time.perf_counter()
    for f in files:
        answer(f)
    got["plain_loop_per_s"] = n / (time.perf_counter() - t)
    quarter = n // 4
    for actors in (1, cores):
        seconds = {}
        for k in (quarter, n):
            out = tmp / f"out-{actors}-{k}.parquet"
            t = time.perf_counter()
            done = batch([str(f) for f in files[:k]], out, task=task, actors=actors, progress=False, log=print)
            seconds[k] = time.perf_counter() - t
            assert done["rows"] == k, done
        got[f"batch_{actors}_actors_per_s"] = n / seconds[n]
        steady = (n - quarter) / (seconds[n] - seconds[quarter])
        got[f"batch_{actors}_actors_steady_per_s"] = steady
        got[f"batch_{actors}_actors_fixed_s"] = seconds[n] - n / steady
    got["overhead_one_core"] = 1 - got["batch_1_actors_per_s"] / got["plain_loop_per_s"]
    got["overhead_one_core_steady"] = 1 - got["batch_1_actors_steady_per_s"] / got["plain_loop_per_s"]
    got["scaling_to_all_cores"] = got[f"batch_{cores}_actors_per_s"] / got["batch_1_actors_per_s"]
    got["scaling_to_all_cores_steady"] = got[f"batch_{cores}_actors_steady_per_s"] / got["batch_1_actors_steady_per_s"]
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    ap.add_argument("--task", choices=("predict", "read"), default="predict")
    ap.add_argument(
        "--alternate", type=int, default=1, metavar="R", help="rounds of the three paths timed in turn (default 1)"
    )
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()
    if args.alternate < 1 or args.n < 4:
        ap.error("--alternate must be at least 1 and --n at least 4 (a quarter of the files is timed too)")
    os.environ["DIGITREC_THREADS"] = "1"
    import cv2
    import ray

    from digitrec import load_recognizer

    cv2.setNumThreads(1)
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"cores": cores, "images": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        results["bytes_per_image"] = make_images(folder, args.n, args.task) / args.n
        files = sorted(folder.iterdir())
        rec = load_recognizer()
        answer = rec.predict if args.task == "predict" else rec.read
        answer(files[0])  # warm
        t = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        results["cluster_start_s"] = time.perf_counter() - t
        rounds = [_round(files, answer, args.task, cores, Path(tmp)) for _ in range(args.alternate)]
        ray.shutdown()
    for name in rounds[0]:
        results[name] = float(np.median([r[name] for r in rounds]))
    if args.alternate > 1:
        results["rounds"] = rounds
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{args.n} images ({results['bytes_per_image'] / 1024:.1f} KB each), {cores} cores, task {args.task}")
    if args.alternate > 1:
        print(f"medians of {args.alternate} rounds, each path in turn; per round (overhead, scaling, steady scaling):")
        for r in rounds:
            over, scale, steady = r["overhead_one_core"], r["scaling_to_all_cores"], r["scaling_to_all_cores_steady"]
            print(f"  {over:6.1%}  {scale:.2f}x  {steady:.2f}x")
    print(f"plain loop, one core:       {results['plain_loop_per_s']:8.1f} images/s")
    for actors in (1, cores):
        print(
            f"batch, {actors} actor(s):          {results[f'batch_{actors}_actors_per_s']:8.1f} images/s; steady "
            f"{results[f'batch_{actors}_actors_steady_per_s']:.1f} images/s, fixed cost "
            f"{results[f'batch_{actors}_actors_fixed_s']:.1f} s a run"
        )
    print(
        f"Ray's overhead on one core: {results['overhead_one_core']:8.1%} "
        f"(steady: {results['overhead_one_core_steady']:.1%})"
    )
    print(
        f"scaling 1 -> {cores} actors:       {results['scaling_to_all_cores']:8.2f}x "
        f"(steady: {results['scaling_to_all_cores_steady']:.2f}x)"
    )
    print(f"local cluster start-up:     {results['cluster_start_s']:8.1f} s (once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
