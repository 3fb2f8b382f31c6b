"""Microseconds to parse one multipart upload, as the server's upload endpoints do.

    .venv/bin/python benchmarks/upload_parse.py [--kb 12] [--n 2000]

Times `digitrec.serving.server.parse_upload` on a body holding one file of ``--kb`` random kilobytes
(the size of a photographed digit), ``--n`` times, and prints the mean. Run it in a checkout of an
earlier commit to compare parsers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kb", type=int, default=12, help="size of the uploaded file in KB (default 12)")
    ap.add_argument("--n", type=int, default=2000, help="parses to time (default 2000)")
    args = ap.parse_args()
    from digitrec.serving.server import parse_upload

    data = os.urandom(args.kb * 1000)
    body = (
        b'--digitrecbench\r\nContent-Disposition: form-data; name="file"; filename="d.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--digitrecbench--\r\n"
    )
    content_type = "multipart/form-data; boundary=digitrecbench"
    assert parse_upload(body, content_type) == ("d.jpg", data)
    t = time.perf_counter()
    for _ in range(args.n):
        parse_upload(body, content_type)
    print(f"parse_upload, {args.kb} KB file: {(time.perf_counter() - t) / args.n * 1e6:.1f} us a body")
    return 0


if __name__ == "__main__":
    sys.exit(main())
