"""Serve the same photos from digitrec's server and from a tutorial-style Flask server, and compare.

    .venv/bin/python benchmarks/serve.py [--seconds 10] [--concurrency 1 8 32] [--workers N] [--no-ui]
                                         [--client wrk] [--digitrec-only]

The servers run on this machine, on loopback only, one at a time:
- digitrec: `digitrec serve` with no flags but --workers and --no-ui where given (FastAPI on
  uvicorn, ONNX Runtime, the real-image path; by default one worker per core and the web UI on);
- reference: the tutorials' design, a Flask route that resizes the upload to 28x28 and calls Keras
  `model.predict` for every request (Flask's threaded development server, as the tutorials run it);
- ceiling: FastAPI on uvicorn receiving the same upload as an `UploadFile` and answering without any
  work: what a standard FastAPI upload endpoint can serve here at best, with the load generator on
  the same cores (digitrec's upload endpoints parse the upload themselves, outside that path).
Clients post photos of MNIST test digits for a fixed time at each concurrency and report requests
per second, p50 and p99 latency, errors, and (for information) how many answers were right. The
clients are Python threads (default), or wrk with `--client wrk`: Python clients on the same two
cores take CPU time from the servers, wrk much less (it does not check the answers). It also
times the cold start of `digitrec predict one.png` and the in-process cost per image of decoding,
preprocessing and inference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = textwrap.dedent(
    """
    import io, sys
    import numpy as np
    import keras
    from flask import Flask, jsonify, request
    from PIL import Image

    model = keras.saving.load_model(sys.argv[1])
    app = Flask(__name__)

    @app.route("/predict", methods=["POST"])
    def predict():
        image = Image.open(io.BytesIO(request.files["file"].read())).convert("L").resize((28, 28))
        x = np.asarray(image, dtype="float32")[None]
        p = model.predict(x, verbose=0)[0]
        return jsonify({"digit": int(p.argmax()), "confidence": float(p.max())})

    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
    """
)

# The ceiling: a standard FastAPI upload endpoint (uvicorn, a multipart upload parsed into UploadFile,
# a JSON answer) doing no work at all: what such an endpoint can serve here at best, with the load
# generator on the same cores.
CEILING = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI, File, UploadFile

    app = FastAPI()

    @app.post("/v1/predict")
    def predict(file: UploadFile = File(...)):
        file.file.read()
        return {"digit": None}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user and system) used so far by process ``pid`` and its live descendants, from
    Linux's /proc: the server's own share of the cores, apart from the load generator's."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        parent[int(d.name)] = int(fields[1])
        used[int(d.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(used.get(p, 0.0) for p in tree)


def _predict_for(images: list[bytes], seconds: float, start: Any, rates: Any) -> None:
    """In a process of its own: `Recognizer.predict` over ``images`` in turn for ``seconds`` once every
    process has loaded the model (``start``, a barrier); its rate goes to ``rates`` (a queue)."""
    os.environ["DIGITREC_THREADS"] = "1"  # as `digitrec serve` sets
    import cv2

    from digitrec.reading.recognizer import load_recognizer

    cv2.setNumThreads(1)
    rec = load_recognizer()
    for data in images[:20]:
        rec.predict(data)
    start.wait()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        rec.predict(images[n % len(images)])
        n += 1
    rates.put(n / (time.perf_counter() - t))


def parallel_rate(images: list[bytes], processes: int, seconds: float) -> float:
    """Images per second of `Recognizer.predict` in ``processes`` processes at once, for ``seconds``,
    added up: what the library itself reaches on this machine's cores working together (they share
    caches, memory and, on a virtual machine, whatever the host shares), the server's ceiling."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start, rates = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_predict_for, args=(images, seconds, start, rates)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    total = sum(rates.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as e:
            if getattr(e, "code", None) in (404, 405):
                return  # the server answers
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "digitrecbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def run_clients(client: Any, n: int) -> float:
    """Run ``client(k)`` for k in range(n) on n threads; the wall time until all have finished."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def drive(url: str, images: list[tuple[bytes, int]], concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients post images in turn for ``seconds``; latencies of the answered ones."""
    import http.client
    from urllib.parse import urlparse

    target = urlparse(url)
    latencies: list[float] = []
    errors = 0
    right = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        nonlocal errors, right
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        i = k
        while time.monotonic() < stop:
            data, label = images[i % len(images)]
            i += concurrency
            body, ctype = _multipart(data)
            t = time.perf_counter()
            try:
                conn.request("POST", target.path, body, {"Content-Type": ctype})
                r = conn.getresponse()
                payload = r.read()
                answer = json.loads(payload) if r.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):  # no answer, cut short, not JSON
                answer = None
                conn.close()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            dt = time.perf_counter() - t
            with lock:
                if isinstance(answer, dict):
                    latencies.append(dt)
                    right += answer.get("digit") == label
                else:
                    errors += 1
        conn.close()

    elapsed = run_clients(client, concurrency)
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
        "right": right / max(len(latencies), 1),
    }


WRK_SCRIPT = """
local bodies = {}
local n = 0
init = function(args)
  for i = 1, tonumber(args[1]) do
    local f = io.open(args[2] .. "/" .. i .. ".bin", "rb")
    bodies[i] = f:read("*all")
    f:close()
  end
end
request = function()
  n = n + 1
  return wrk.format("POST", nil, {["Content-Type"] = "%s"}, bodies[(n %% #bodies) + 1])
end
"""


def drive_wrk(url: str, images: list[tuple[bytes, int]], concurrency: int, seconds: float) -> dict:
    """The same uploads, sent by wrk (C, one thread): the load generator leaves the cores to the servers.
    wrk does not read the answers, so "right" is not measured; non-2xx answers count as errors."""
    import re

    with tempfile.TemporaryDirectory() as tmp:
        for i, (data, _) in enumerate(images, 1):
            body, ctype = _multipart(data)
            Path(tmp, f"{i}.bin").write_bytes(body)
        script = Path(tmp, "post.lua")
        script.write_text(WRK_SCRIPT % ctype)
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
        out = subprocess.run([*cmd, "--", str(len(images)), tmp], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    done = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {
        "requests": done,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "errors": errors,
        "right": None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="per concurrency level (default 10)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--images", type=int, default=200, help="distinct photos to cycle through")
    ap.add_argument("--workers", type=int, help="digitrec server worker processes (default: serve's, one per core)")
    ap.add_argument("--no-ui", action="store_true", help="serve digitrec without its web UI")
    ap.add_argument("--digitrec-only", action="store_true", help="skip the reference and ceiling servers")
    ap.add_argument(
        "--alternate",
        type=int,
        default=0,
        metavar="N",
        help="then N times in turn: the library in one process per core, and digitrec's server at concurrency 8, "
        "each for --seconds (a machine whose speed drifts compares like with like)",
    )
    ap.add_argument(
        "--client",
        choices=("python", "wrk"),
        default="python",
        help="load generator: Python threads that also check every answer (default), or wrk (apt-get install "
        "wrk), which costs the shared cores far less and does not check answers",
    )
    args = ap.parse_args()
    if args.client == "wrk" and shutil.which("wrk") is None:
        ap.error("--client wrk needs wrk on the PATH (Debian: apt-get install wrk)")
    try:
        import flask  # noqa: F401  (the reference server runs in its own process; fail here, not after a wait)
    except ImportError:
        ap.error("the reference server needs Flask: make install-dev (or pip install flask)")
    load = drive_wrk if args.client == "wrk" else drive
    flags = (["--workers", str(args.workers)] if args.workers is not None else []) + (["--no-ui"] if args.no_ui else [])

    from digitrec.data import load_mnist
    from digitrec.reading.recognizer import default_model_path, load_recognizer
    from digitrec.training import synth

    _, (x, y) = load_mnist()
    rng = np.random.default_rng(0)
    images = [(synth.as_photo(x[i], rng, size=200), int(y[i])) for i in range(args.images)]
    cores = len(os.sched_getaffinity(0))
    model = str(default_model_path())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    bin_dir = Path(sys.executable).parent

    servers = {
        "digitrec": lambda port: [str(bin_dir / "digitrec"), "serve", "--port", str(port), *flags],
        "reference (Flask + Keras predict)": lambda port: [sys.executable, "-c", REFERENCE, model, str(port)],
        "ceiling (FastAPI, upload, no work)": lambda port: [sys.executable, "-c", CEILING, str(port)],
    }
    paths = {
        "digitrec": "/v1/predict",
        "reference (Flask + Keras predict)": "/predict",
        "ceiling (FastAPI, upload, no work)": "/v1/predict",
    }
    if args.digitrec_only:
        servers = {"digitrec": servers["digitrec"]}
    results: dict[str, dict[int, dict]] = {}
    for name, command in servers.items():
        port = _free_port()
        proc = subprocess.Popen(command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{port}{'/healthz' if name == 'digitrec' else paths[name]}")
            url = f"http://127.0.0.1:{port}{paths[name]}"
            drive(url, images[:20], 2, 1.0)  # warm-up
            results[name] = {}
            for c in args.concurrency:
                cpu, t = _tree_cpu(proc.pid), time.perf_counter()
                r = load(url, images, c, args.seconds)
                r["server_cpu_s"], r["elapsed_s"] = _tree_cpu(proc.pid) - cpu, time.perf_counter() - t
                results[name][c] = r
            if name.startswith("ceiling"):
                for r in results[name].values():
                    r["right"] = None  # it answers no digit at all
            if name == "digitrec" and args.alternate:
                uploads = [data for data, _ in images]
                pairs = []
                for _ in range(args.alternate):  # the server idles while the library runs, and the reverse
                    library = parallel_rate(uploads, cores, args.seconds)
                    pairs.append((library, load(url, images, 8, args.seconds)["rps"]))
                    print(f"library in {cores} processes {pairs[-1][0]:.1f} images/s, server {pairs[-1][1]:.1f} req/s")
                ratios = sorted(server / library for library, server in pairs)
                listed = ", ".join(f"{x:.1%}" for x in ratios)
                print(f"server / library, in turn: {listed}; median {ratios[len(ratios) // 2]:.1%}")
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"{'server':<36} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'right':>6}")
    for name, by_c in results.items():
        for c, r in by_c.items():
            right = "-" if r["right"] is None else f"{r['right'] * 100:5.1f}%"
            rps, p50, p99 = r["rps"], r["p50_ms"], r["p99_ms"]
            print(f"{name:<36} {c:>4} {rps:8.1f} {p50:8.1f} {p99:8.1f} {r['errors']:>6} {right:>6}")
    ref, ours = results.get("reference (Flask + Keras predict)"), results.get("digitrec")
    ours_by_c = ours or {}
    if ref and ours:
        for c in args.concurrency:
            print(f"throughput ratio at concurrency {c}: {ours[c]['rps'] / max(ref[c]['rps'], 1e-9):.1f}x")

    # Cold start of the CLI, and in-process cost per image.
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.jpg"
        one.write_bytes(images[0][0])
        starts = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([str(bin_dir / "digitrec"), "predict", str(one)], env=env, capture_output=True, check=True)
            starts.append(time.perf_counter() - t)
    print(f"cold start of `digitrec predict one.jpg`: best of 3 {min(starts) * 1000:.0f} ms")
    from digitrec.reading.images import load_image, to_mnist

    os.environ.setdefault("DIGITREC_THREADS", "1")  # as `digitrec serve` sets, before the model loads
    import cv2

    cv2.setNumThreads(1)
    rec = load_recognizer()
    n = 200
    t = time.perf_counter()
    for data, _ in images[:n]:
        load_image(data)
    decode = (time.perf_counter() - t) / n
    t = time.perf_counter()
    fields = [to_mnist(data) for data, _ in images[:n]]
    prep = (time.perf_counter() - t) / n - decode
    t = time.perf_counter()
    for f in fields:
        rec.predict_arrays(f)
    infer = (time.perf_counter() - t) / n
    print(
        f"in-process per 200x200 photo: decode {decode * 1000:.2f} ms, preprocess {prep * 1000:.2f} ms, "
        f"inference {infer * 1000:.2f} ms ({rec.engine})"
    )
    # The library's own single-thread rate (`Recognizer.predict` on the upload's bytes, as the server
    # calls it, with one thread for ONNX Runtime and OpenCV as the server sets), and what the server
    # reaches of that rate times the cores at concurrency 8.
    passes = []
    for _ in range(3):  # the best of three passes: this machine's speed moves from second to second
        t = time.perf_counter()
        for data, _ in images[:n]:
            rec.predict(data)
        passes.append(time.perf_counter() - t)
    rate = n / min(passes)
    print(f"library single-thread predict: {rate:.1f} images/s; x {cores} cores = {rate * cores:.1f}")
    if 8 in ours_by_c:
        r = ours_by_c[8]
        print(f"server at concurrency 8: {r['rps'] / (rate * cores) * 100:.1f}% of that")
        uploads = [data for data, _ in images[:n]]
        alone = parallel_rate(uploads, 1, args.seconds)
        together = parallel_rate(uploads, cores, args.seconds)
        print(
            f"  the library for {args.seconds:g} s in one process: {alone:.1f} images/s; in {cores} at once: "
            f"{together:.1f} ({together / alone:.2f}x; {together / (rate * cores) * 100:.1f}% of {cores} x its best "
            f"single-thread pass); the server at concurrency 8 reaches {r['rps'] / (alone * cores) * 100:.1f}% of "
            f"{cores} x the one process and {r['rps'] / together * 100:.1f}% of the {cores} together"
        )
        # Where the rest goes: the server's own CPU time per request against the library's per image
        # (its overhead), and the share of the cores it had (the load generator runs on them too).
        per_request = r["server_cpu_s"] / max(r["rps"] * r["elapsed_s"], 1)
        print(
            f"  the server's CPU time per request {per_request * 1000:.2f} ms against the library's "
            f"{1000 / rate:.2f} ms an image ({1 / rate / per_request * 100:.1f}%); it had "
            f"{r['server_cpu_s'] / r['elapsed_s']:.2f} of the {cores} cores"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
