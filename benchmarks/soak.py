"""Soak the server: many clients for a while, good and bad images mixed; count, check, watch memory.

    .venv/bin/python benchmarks/soak.py [--seconds 60] [--clients 32] [--workers 2] [--attackers 4]

Starts `digitrec serve --no-ui` on a free loopback port and drives it with photos of MNIST test
digits (which must come back 200 with the right digit) mixed with bad uploads (random bytes, text,
truncated PNG, empty, a pixel bomb's header), which must come back 4xx. Reports requests served by
status, 5xx count, answers that differ from the library's own for the same image, and the server's
resident memory after warm-up and at the end (with `--workers N`, summed over the server's
processes). The bad uploads include files built to decode slowly (a JPEG of 150 scans, one of 6,000
comment markers, a GIF with a 300 KB comment). ``--attackers N`` threads meanwhile hold connections
the way an attacker would (a request head sent a byte at a time, a 200 KB header line, connections
that send nothing), and a prober times `/healthz` every 0.2 s: its slowest answer is reported.
The loop is bounded in time and stops by itself; it talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve import _free_port, _multipart, _wait, run_clients  # the serving benchmark's helpers


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its children (a server's worker processes), in MB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += _rss_mb(int(child))
    return total


def _bad_uploads() -> list[bytes]:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
    return [np.random.default_rng(1).bytes(3000), b"hello, not an image", png[: len(png) // 2], b"", bomb, *_slow()]


def _slow() -> list[bytes]:
    """Files whose structure makes a decoder slow: many JPEG scans, many JPEG markers, a GIF comment."""
    from PIL import Image

    noise = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "JPEG", progressive=True)
    progressive = buf.getvalue()
    last_scan = progressive[progressive.rindex(b"\xff\xda") : -2]
    gif = io.BytesIO()
    noise.convert("P").save(gif, "GIF")
    g = gif.getvalue()
    table = 13 + (3 << ((g[10] & 7) + 1)) if g[10] & 0x80 else 13
    return [
        progressive[:-2] + last_scan * 150 + b"\xff\xd9",
        b"\xff\xd8" + b"\xff\xfe\x00\x02" * 6000 + progressive[2:],
        g[:table] + b"\x21\xfe" + (b"\xff" + b"c" * 255) * 1200 + b"\x00" + g[table:],
    ]


def _attack(port: int, stop: float, counts: Counter, k: int) -> None:
    """Hold connections as an attacker would until ``stop``, starting with kind ``k``; count how the
    server ended each."""
    import socket

    kinds = ("slowloris", "big header", "idle")
    while time.monotonic() < stop:
        kind = kinds[k % len(kinds)]
        k += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                if kind == "slowloris":
                    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: " + b"a" * 1000:
                        s.sendall(bytes([byte]))
                        time.sleep(0.2)
                        if time.monotonic() > stop:
                            break
                elif kind == "big header":
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: " + b"a" * 200_000 + b"\r\n\r\n")
                answer = s.recv(64)
            counts[f"{kind}: {answer.split(b' ')[1].decode() if answer.startswith(b'HTTP/') else 'closed'}"] += 1
        except OSError:
            counts[f"{kind}: closed"] += 1


def _probe(port: int, stop: float, times: list[float]) -> None:
    """Time GET /healthz every 0.2 s until ``stop`` (seconds each; 30 for no answer)."""
    while time.monotonic() < stop:
        t = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            times.append(time.perf_counter() - t)
        except (OSError, http.client.HTTPException):
            times.append(30.0)
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--bad-every", type=int, default=4, help="every Nth request is a bad upload (default 4)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    ap.add_argument("--attackers", type=int, default=0, help="threads holding connections as attackers do")
    args = ap.parse_args()

    from digitrec.data import load_mnist
    from digitrec.training import synth

    _, (x, y) = load_mnist()
    rng = np.random.default_rng(3)
    from digitrec import load_recognizer

    photos = [synth.as_photo(x[i], rng, size=200) for i in range(300)]
    # The expected answer of each photo is the library's own, in this process: under load the server
    # must give every client exactly that (whether the model is right is the accuracy benchmarks' job).
    rec = load_recognizer()
    expected = [rec.predict(p).digit for p in photos]
    right = sum(e == int(y[i]) for i, e in enumerate(expected))
    good = list(zip(photos, expected, strict=True))
    bad = _bad_uploads()
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [str(Path(sys.executable).parent / "digitrec"), "serve", "--no-ui", "--port", str(port)]
    command += ["--max-concurrency", str(4 * args.clients), "--workers", str(args.workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    statuses: Counter[int] = Counter()
    wrong = bad_not_4xx = 0
    lock = threading.Lock()
    try:
        _wait(f"http://127.0.0.1:{port}/healthz")
        # Warm up every worker: the server deals connections to its workers in turn, so use several.
        for k in range(8 * args.workers):
            warm = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for data, _ in good[k : k + 10]:
                body, ctype = _multipart(data)
                warm.request("POST", "/v1/predict", body, {"Content-Type": ctype})
                warm.getresponse().read()
            warm.close()
        rss_start = _rss_mb(server.pid)
        stop = time.monotonic() + args.seconds

        def client(k: int) -> None:
            nonlocal wrong, bad_not_4xx
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i = k
            while time.monotonic() < stop:
                i += 1
                is_bad = i % args.bad_every == 0
                data, label = (bad[i // args.bad_every % len(bad)], None) if is_bad else good[i % len(good)]
                body, ctype = _multipart(data)
                try:
                    conn.request("POST", "/v1/predict", body, {"Content-Type": ctype})
                    r = conn.getresponse()
                    payload = r.read()
                    status = r.status
                except (OSError, http.client.HTTPException):  # refused, reset, cut short: no answer
                    status, payload = 0, b""
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    statuses[status] += 1
                    if is_bad and not 400 <= status < 500:
                        bad_not_4xx += 1
                    answer = b'"digit":null' if label is None else b'"digit":%d' % label
                    if not is_bad and (status != 200 or answer not in payload):
                        wrong += 1
            conn.close()

        attacks: Counter[str] = Counter()
        probes: list[float] = []
        side = [threading.Thread(target=_probe, args=(port, stop, probes))]
        side += [threading.Thread(target=_attack, args=(port, stop, attacks, k)) for k in range(args.attackers)]
        for t in side:
            t.start()
        elapsed = run_clients(client, args.clients)
        for t in side:
            t.join()
        rss_end = _rss_mb(server.pid)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(30)

    total = sum(statuses.values())
    five = sum(n for s, n in statuses.items() if s >= 500 or s == 0)
    print(f"{total} requests in {elapsed:.0f} s from {args.clients} clients ({total / elapsed:.0f} req/s)")
    print("by status: " + ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(statuses.items())))
    print(f"5xx or no answer: {five}; good images not answered 200 with the library's answer: {wrong}")
    print(f"(the model reads {right} of the {len(photos)} photos right, in the library and the server alike)")
    print(f"bad uploads not answered 4xx: {bad_not_4xx}; server still up at the end: {alive}")
    print(
        f"server resident memory: {rss_start:.0f} MB after warm-up, {rss_end:.0f} MB at the end "
        f"({rss_end - rss_start:+.0f} MB)"
    )
    if probes:
        print(f"/healthz every 0.2 s: {len(probes)} probes, slowest {max(probes) * 1000:.0f} ms")
    if attacks:
        print("attack connections, by how they ended: " + ", ".join(f"{k} {n}" for k, n in sorted(attacks.items())))
    return 0 if five == 0 and bad_not_4xx == 0 and wrong == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
