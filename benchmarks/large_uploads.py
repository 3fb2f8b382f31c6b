"""The server's memory under many large uploads at once: at rest, at the peak, and after.

    .venv/bin/python benchmarks/large_uploads.py [--uploads 32] [--mb 15] [--rounds 3] [--workers 1]

Starts `digitrec serve --no-ui` on a free loopback port, then sends ``--uploads`` concurrent uploads of
``--mb`` MB each (random bytes named like a PNG, so each is answered 415 after it is read whole),
``--rounds`` times. Prints the server's resident memory (from /proc, summed over its worker processes)
before, at its peak (sampled every 50 ms) and a second after each round. Run it from an older
checkout to compare. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve import _free_port, _wait  # the serving benchmark's helpers
from soak import _rss_mb  # resident memory of a process and its children


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=32, help="concurrent uploads (default 32)")
    ap.add_argument("--mb", type=float, default=15, help="megabytes per upload (default 15; the cap is 20)")
    ap.add_argument("--rounds", type=int, default=3, help="times the uploads are sent (default 3)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    args = ap.parse_args()

    port = _free_port()
    command = [str(Path(sys.executable).parent / "digitrec"), "serve", "--no-ui", "--port", str(port)]
    command += ["--max-concurrency", str(2 * args.uploads), "--workers", str(args.workers)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    payload = os.urandom(int(args.mb * 1024 * 1024))
    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + payload + b"\r\n--x--\r\n"
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    answers: list[bytes] = []

    def upload() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(head + body)
            answers.append(s.recv(64))

    try:
        _wait(f"http://127.0.0.1:{port}/healthz")
        rest = peak = _rss_mb(server.pid)
        print(f"at rest: {rest:.0f} MB")
        for k in range(args.rounds):
            threads = [threading.Thread(target=upload) for _ in range(args.uploads)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, _rss_mb(server.pid))
                time.sleep(0.05)
            time.sleep(1)
            print(f"after round {k + 1}: {_rss_mb(server.pid):.0f} MB")
        after = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    statuses = sorted({a.split(b" ")[1].decode() if a.startswith(b"HTTP/") else "no answer" for a in answers})
    print(f"{len(answers)} uploads of {args.mb:g} MB, {args.uploads} at once; answers: {', '.join(statuses)}")
    print(f"resident memory: {rest:.0f} MB at rest, peak {peak:.0f} MB, {after:.0f} MB after ({after - rest:+.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
