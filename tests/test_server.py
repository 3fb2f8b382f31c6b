"""The REST API with real images, every error status, the overload answer, and the UI's mount."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from digitrec.reading import recognizer
from digitrec.reading.images import ImageError
from digitrec.serving.server import ServerConfig, create_app
from digitrec.training import synth
from tests.conftest import render_on_paper
from tests.test_images import _png_header_only, _truncated


@pytest.fixture(scope="module")
def rec():
    from digitrec import load_recognizer

    return load_recognizer()


@pytest.fixture(scope="module")
def client(rec) -> TestClient:
    return TestClient(create_app(rec, ServerConfig(max_upload_bytes=2_000_000)))


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_health_ready_model_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    info = client.get("/v1/model").json()
    assert info["name"] == "digitnet" and info["classes"] == [str(d) for d in range(10)]
    assert len(info["sha256"]) == 64 and info["test_metrics"]["accuracy"] >= 0.99
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/read", "/healthz", "/readyz", "/v1/model"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_predict_a_photo(client: TestClient, mnist) -> None:
    (x, y) = mnist[1]
    data = synth.as_photo(x[0], np.random.default_rng(0))
    r = client.post("/v1/predict", files={"file": ("seven.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    body = r.json()
    assert body["file"] == "seven.jpg" and body["digit"] == int(y[0])
    assert set(body) == {"file", "digit", "confidence", "probabilities"} and len(body["probabilities"]) == 10


def test_predict_says_no_digit_for_a_blank_page(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"file": ("blank.jpg", synth.blank_page(np.random.default_rng(2)))})
    assert r.status_code == 200 and r.json()["digit"] is None


def test_read_a_number_same_as_the_cli(client: TestClient, rec, mnist) -> None:
    (x, y) = mnist[1]
    rng = np.random.default_rng(7)
    picks = [int(np.flatnonzero(y == d)[0]) for d in (4, 2)]
    data = synth.as_photo(synth.number_strip([x[i] for i in picks], rng, touching=0.0), rng, jpeg=False)
    r = client.post("/v1/read", files={"file": ("n.png", data, "image/png")})
    assert r.status_code == 200
    assert r.json() == {"file": "n.png", **rec.read(data).to_dict()}
    assert r.json()["text"] == "42"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"just some text", 415),
        (b"%PDF-1.4 not an image", 415),
        (_truncated("PNG"), 422),
        (b"", 422),
        (_png_header_only(30000, 30000), 413),
    ],
    ids=["text", "pdf", "truncated", "empty", "pixel-bomb"],
)
def test_bad_images_get_the_right_status(client: TestClient, data: bytes, status: int) -> None:
    for path in ("/v1/predict", "/v1/read"):
        r = client.post(path, files={"file": ("x.png", data, "image/png")})
        assert r.status_code == status, path
        assert "x.png" in r.json()["error"]
    assert client.get("/healthz").status_code == 200  # and the server is still up


def test_a_body_over_the_cap_gets_413_and_the_connection_closed(rec) -> None:
    client = TestClient(create_app(rec, ServerConfig(ui=False, max_upload_bytes=1000)))
    r = client.post("/v1/read", files={"file": ("big.png", b"x" * 200_000, "image/png")})
    assert r.status_code == 413 and r.headers["connection"] == "close"


def test_request_errors(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"image": ("x.png", b"123")})
    assert r.status_code == 422 and "file" in r.json()["error"]
    r = client.post("/v1/predict", json={"file": "x"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = client.post("/v1/predict", files={"file": ("big.png", b"\0" * 2_500_000)})
    assert r.status_code == 413 and "error" in r.json()


def test_the_content_type_is_case_insensitive(client: TestClient) -> None:
    body = b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n123\r\n--xyz--\r\n"
    r = client.post("/v1/predict", content=body, headers={"Content-Type": "Multipart/Form-Data; boundary=xyz"})
    assert r.status_code == 415 and r.json()["error"].startswith("a.png: not an image")  # refused as an image


def test_overload_gets_a_fast_503(rec) -> None:
    """Past the concurrency limit a request is refused at once, not queued (the first request is held on
    a request thread, as a large image is; a small one would hold the event loop for its few ms)."""
    from digitrec.reading.recognizer import Recognizer

    release = threading.Event()
    entered = threading.Event()

    def slow_run(x: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(10)
        return rec.run(x)

    slow = Recognizer(slow_run, rec.metadata, rec.path, "test")
    client = TestClient(create_app(slow, ServerConfig(max_concurrency=1, ui=False)))
    image = _png(render_on_paper(np.eye(28, dtype=np.uint8) * 255, 100))
    first: dict = {}
    t = threading.Thread(target=lambda: first.update(r=client.post("/v1/predict", files={"file": ("a.png", image)})))
    t.start()
    assert entered.wait(10)
    start = time.monotonic()
    second = client.post("/v1/predict", files={"file": ("b.png", image)})
    assert second.status_code == 503 and "overloaded" in second.json()["error"]
    assert second.headers["retry-after"] == "1"
    assert time.monotonic() - start < 2
    release.set()
    t.join(10)
    assert first["r"].status_code == 200


def test_an_internal_error_is_a_json_500_and_the_server_goes_on(rec) -> None:
    from digitrec.reading.recognizer import Recognizer

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("a bug")

    client = TestClient(
        create_app(Recognizer(broken, rec.metadata, rec.path, "test"), ServerConfig(ui=False)),
        raise_server_exceptions=False,
    )
    image = _png(render_on_paper(np.eye(28, dtype=np.uint8) * 255, 100))
    r = client.post("/v1/predict", files={"file": ("a.png", image)})
    assert r.status_code == 500 and "internal error" in r.json()["error"] and "Traceback" not in r.text
    assert client.get("/healthz").status_code == 200


def test_broken_model_fails_at_start(tmp_path) -> None:
    """`digitrec serve` with a broken model exits with the error naming the file, before it binds."""
    import socket
    import subprocess
    import sys

    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 not a model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-m", "digitrec", "serve", "--no-ui", "--port", str(port), "--model", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and str(bad) in out.stderr and "Traceback" not in out.stderr
    assert "Uvicorn running" not in out.stdout + out.stderr  # it never listened


def test_ui_is_mounted_at_the_root(client: TestClient) -> None:
    """The page at / is Gradio's, and its config holds digitrec's two tabs with their inputs."""
    assert client.get("/").status_code == 200
    components = client.get("/config").json()["components"]
    labels = {c["type"]: [] for c in components}
    for c in components:
        labels[c["type"]].append(c["props"].get("label"))
    assert labels["tabitem"] == ["Digit", "Number"]
    assert "Draw a digit" in labels["imageeditor"]  # the sketchpad
    assert "A line of digits: a zip code, an amount" in labels["image"]


def _cors(client: TestClient, origin: str) -> dict[str, tuple[int, str | None]]:
    """What a browser on a page of ``origin`` is told by each kind of route: the allowed origin, if any."""
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    answers = {
        "api GET": client.get("/v1/model", headers={"Origin": origin}),
        "api preflight": client.options("/v1/predict", headers=preflight),
        "ui GET": client.get("/", headers={"Origin": origin}),
        "ui preflight": client.options("/gradio_api/upload", headers=preflight),
    }
    return {k: (r.status_code, r.headers.get("access-control-allow-origin")) for k, r in answers.items()}


def test_no_cors_by_default(client: TestClient, rec) -> None:
    # Gradio's own CORS middleware answered every preflight, the API's included, and allowed any origin
    # whenever the Host is not localhost (here "testserver"; on a LAN, the machine's name): a page on
    # any site could drive the server from a visitor's browser.
    for origin in ("https://evil.example", "http://localhost:3000"):
        answers = _cors(client, origin)
        assert all(allowed is None for _, allowed in answers.values()), answers
        assert answers["api preflight"][0] == 400 and answers["ui preflight"][0] == 400
    assert client.get("/healthz").status_code == 200
    api_only = TestClient(create_app(rec, ServerConfig(ui=False)))
    r = api_only.options(
        "/v1/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_only_the_origins_configured(rec) -> None:
    client = TestClient(create_app(rec, ServerConfig(cors_origins=("https://forms.example",))))
    assert set(_cors(client, "https://forms.example").values()) == {(200, "https://forms.example")}
    assert all(allowed is None for _, allowed in _cors(client, "https://evil.example").values())


def test_ui_handlers_answer_like_the_api(rec, mnist) -> None:
    """The UI's functions, without a browser: a drawing, a line of digits, nothing, and a bad image."""
    from digitrec.serving.ui import _digit, _number

    (x, y) = mnist[1]
    rng = np.random.default_rng(8)
    drawing = np.asarray(Image.open(io.BytesIO(synth.as_canvas(x[0], rng))))  # RGBA, transparent background
    labels, verdict, seen = _digit(rec, {"background": None, "layers": [], "composite": drawing})
    assert verdict.startswith(f"**{int(y[0])}**") and max(labels, key=labels.get) == str(int(y[0]))
    assert seen.shape == (224, 224)
    picks = [int(np.flatnonzero(y == d)[0]) for d in (3, 1, 4)]
    line = np.asarray(Image.open(io.BytesIO(synth.as_photo(synth.number_strip([x[i] for i in picks], rng), rng))))
    (image, boxes), text = _number(rec, line)
    assert text == "**314**" and len(boxes) == 3 and image.shape[2] == 3
    assert _digit(rec, None)[1].startswith("Draw a digit")
    assert _digit(rec, np.full((3, 3, 3), np.nan))[1].startswith("Cannot read this image")


def test_ui_errors_name_the_upload_not_the_servers_temporary_folder(rec, tmp_path) -> None:
    from digitrec.serving.ui import _digit, _number

    upload = tmp_path / "gradio-cache" / "0f3a9c" / "scan.png"  # where Gradio keeps an upload
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for message in (_digit(rec, str(upload))[1], _number(rec, str(upload))[1]):
        assert message.startswith("Cannot read this image: scan.png:") and str(tmp_path) not in message


@pytest.mark.parametrize("ui", [False, True])
def test_requests_run_on_as_many_threads_as_configured(rec, ui: bool) -> None:
    # More request threads than cores only contend (measured); the pool is sized at startup, also
    # when the Gradio UI is mounted on the same app.
    import anyio.to_thread

    def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    for threads, expected in ((3, 3), (0, os.cpu_count() or 1)):
        with TestClient(create_app(rec, ServerConfig(threads=threads, ui=ui))) as c:
            assert c.portal.call(tokens) == expected
            assert c.get("/readyz").status_code == 200


def test_health_answers_while_every_request_thread_is_busy(rec, mnist, monkeypatch) -> None:
    # One request thread, held by a slow upload's inference: the probes must not queue behind it (every
    # upload is read on the threads).
    release, started, done = threading.Event(), threading.Event(), threading.Event()
    real_predict = rec.predict

    def slow_predict(image, name=None):
        started.set()
        release.wait(10)  # a safety net: the test fails (below), it does not hang
        done.set()
        return real_predict(image, name)

    monkeypatch.setattr(rec, "predict", slow_predict)
    (x, y) = mnist[1]
    photo = _png(render_on_paper(x[0]))
    with TestClient(create_app(rec, ServerConfig(threads=1, ui=False))) as c:
        answers = {}

        def upload() -> None:
            answers["p"] = c.post("/v1/predict", files={"file": ("a.png", photo)})

        busy = threading.Thread(target=upload)
        busy.start()
        assert started.wait(10)
        health = c.get("/healthz")
        was_still_busy = not done.is_set()
        release.set()
        busy.join(20)
    assert health.status_code == 200 and was_still_busy
    assert answers["p"].status_code == 200 and answers["p"].json()["digit"] == int(y[0])


def test_uvicorn_runs_on_uvloop_and_httptools() -> None:
    # With uvicorn's pure-Python fallbacks (asyncio, h11), `serve --workers 2` answered every request
    # about 44 ms late, and one worker served fewer requests: the project depends on the fast ones.
    import uvicorn
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from digitrec.serving.server import GuardedHttpTools, use_limits

    async def app(scope: dict, receive: object, send: object) -> None:
        return None

    settings = use_limits(ServerConfig(keep_alive=7.0))  # what `serve` hands uvicorn, with its app
    config = uvicorn.Config(app, **settings)
    config.load()
    assert config.http_protocol_class is GuardedHttpTools and issubclass(GuardedHttpTools, HttpToolsProtocol)
    assert config.timeout_keep_alive == 7.0
    loop = config.get_loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


# --- the upload endpoints' own multipart parser ------------------------------------------------------


def _encoded(files: list[tuple[str, str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body as a client library (httpx) encodes it, and its content type."""
    import httpx

    request = httpx.Request("POST", "http://test/", files=[(n, (f, d)) for n, f, d in files], data=fields or {})
    return request.read(), request.headers["content-type"]


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    filename=st.from_regex(r"[A-Za-z0-9 ._-]{1,24}", fullmatch=True),
    before=st.dictionaries(st.sampled_from(["a", "name", "x-y"]), st.text(max_size=20), max_size=3),
    after=st.lists(st.binary(max_size=50), max_size=3),
)
def test_the_upload_parser_finds_the_file_as_clients_encode_it(data, filename, before, after) -> None:
    from digitrec.serving.server import parse_upload

    others = [(f"other{i}", f"o{i}.bin", b) for i, b in enumerate(after)]
    body, ctype = _encoded([("file", filename, data), *others], before)
    assert parse_upload(body, ctype) == (filename, data)


def test_the_upload_parser_refuses_what_is_malformed() -> None:
    from digitrec.serving.server import _Refused, parse_upload

    content = b"\x89PNG\r\n--not-the-boundary\r\n"
    body, ctype = _encoded([("file", "a.png", content)])
    boundary = ctype.split("boundary=")[1].encode()
    # A preamble before the first boundary and an epilogue after the last are ignored (RFC 2046).
    assert parse_upload(b"preamble\r\n" + body + b"epilogue", ctype) == ("a.png", content)
    # A header with an empty value before the part's Content-Disposition.
    empty = b'--b\r\nX-Empty:\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nPNG\r\n--b--\r\n'
    assert parse_upload(empty, "multipart/form-data; boundary=b") == ("a.png", b"PNG")
    cases = {
        "no boundary": ((body, "multipart/form-data"), 400),
        "cut short": ((body[: len(body) // 2], ctype), 400),
        "a garbled boundary line": ((body.replace(boundary + b"\r\n", boundary + b"junk\r\n", 1), ctype), 400),
        "not multipart": ((body, "application/octet-stream"), 415),
        "no parts": ((b"", ctype), 422),
        "a text field named file": (_encoded([("other", "o.bin", b"1")], {"file": "x"}), 422),
        "two files": (_encoded([("file", "a.png", b"1"), ("file", "b.png", b"2")]), 400),
        "too many parts": (_encoded([(f"f{i}", "x", b"x") for i in range(20)]), 400),
    }
    for what, ((b, t), status) in cases.items():
        with pytest.raises(_Refused) as e:
            parse_upload(b, t)
        assert e.value.status == status, what
        assert e.value.error, what


def test_the_api_answers_malformed_uploads_with_json_errors(client: TestClient) -> None:
    body, ctype = _encoded([("file", "a.png", b"x")])
    r = client.post("/v1/predict", content=body[: len(body) // 2], headers={"content-type": ctype})
    assert r.status_code == 400 and "multipart" in r.json()["error"]
    r = client.post("/v1/read", content=body, headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "boundary" in r.json()["error"]
    body, ctype = _encoded([("file", "a.png", b"1"), ("file", "b.png", b"2")])
    r = client.post("/v1/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == 400 and "more than one file" in r.json()["error"]
    # An empty file name (some clients send filename=""): answered as "upload".
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename=""\r\n\r\n'
    body += _png(np.zeros((30, 30), np.uint8)) + b"\r\n--b--\r\n"
    r = client.post("/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 200 and r.json()["file"] == "upload" and r.json()["digit"] is None


def test_every_upload_is_read_on_a_thread_never_in_the_event_loop(rec, mnist, monkeypatch) -> None:
    """Small or large, a prediction or a reading: the image's header and pixels are read on a worker
    thread, so that a file that decodes slowly cannot hold the event loop (and every other client)."""
    import asyncio

    seen: list[tuple[str, bool]] = []

    def in_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    real_predict, real_read = rec.predict, rec.read
    monkeypatch.setattr(
        rec, "predict", lambda image, name=None: seen.append(("predict", in_loop())) or real_predict(image, name)
    )
    monkeypatch.setattr(
        rec, "read", lambda image, name=None: seen.append(("read", in_loop())) or real_read(image, name)
    )
    (x, y) = mnist[1]
    small, large = _png(render_on_paper(x[0], 60)), _png(render_on_paper(x[0], 600))
    with TestClient(create_app(rec, ServerConfig(ui=False))) as c:
        for image in (small, large):
            r = c.post("/v1/predict", files={"file": ("a.png", image)})
            assert r.status_code == 200 and r.json()["digit"] == int(y[0])
        assert c.post("/v1/read", files={"file": ("a.png", small)}).json()["text"] == str(y[0])
    assert seen == [("predict", False), ("predict", False), ("read", False)]


def _jpeg(progressive: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(buf, "JPEG", progressive=progressive)
    return buf.getvalue()


def _slow_files() -> dict[str, bytes]:
    """Files whose structure alone makes a decoder slow, each small: a JPEG of many scans (its last scan
    repeated), one of many empty comment markers, a GIF whose comment extension is 300 KB."""
    progressive = _jpeg(progressive=True)
    last_scan = progressive[progressive.rindex(b"\xff\xda") : -2]
    gif = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).convert("P").save(gif, "GIF")
    g = gif.getvalue()
    table = 13 + (3 << ((g[10] & 7) + 1)) if g[10] & 0x80 else 13
    comment = b"\x21\xfe" + (b"\xff" + b"c" * 255) * 1200 + b"\x00"
    return {
        "scans.jpg": progressive[:-2] + last_scan * 150 + b"\xff\xd9",
        "markers.jpg": b"\xff\xd8" + b"\xff\xfe\x00\x02" * 6000 + _jpeg()[2:],
        "comment.gif": g[:table] + comment + g[table:],
    }


@pytest.mark.parametrize("name", sorted(_slow_files()))
def test_files_built_to_decode_slowly_are_refused_before_decoding(client: TestClient, name: str) -> None:
    data = _slow_files()[name]
    r = client.post("/v1/predict", files={"file": (name, data)})
    assert r.status_code == 413 and name in r.json()["error"] and "limit" in r.json()["error"]
    with pytest.raises(ImageError, match="the limit"):
        recognizer.load_recognizer().predict(data, name)


def test_ordinary_jpegs_and_gifs_pass_the_structural_limits(client: TestClient, mnist) -> None:
    """A progressive JPEG (about ten scans), one with EXIF, and a GIF with a short comment are read."""
    x, y = mnist[1]
    page = Image.fromarray(render_on_paper(x[0], 200))
    files = {}
    for name, kwargs in {"p.jpg": {"progressive": True}, "e.jpg": {"exif": Image.Exif()}}.items():
        buf = io.BytesIO()
        page.save(buf, "JPEG", quality=95, **kwargs)
        files[name] = buf.getvalue()
    buf = io.BytesIO()
    page.convert("L").save(buf, "GIF", comment=b"scanned on the office copier")
    files["c.gif"] = buf.getvalue()
    for name, data in files.items():
        r = client.post("/v1/predict", files={"file": (name, data)})
        assert r.status_code == 200 and r.json()["digit"] == int(y[0]), (name, r.json())


@pytest.mark.parametrize("suffix", [".png", ".jpg"])  # a JPEG is decoded at a reduced size first
def test_the_ui_decodes_uploads_with_digitrecs_own_checks(suffix: str, rec, mnist, tmp_path) -> None:
    """Uploads reach the UI's handlers as file paths: the pixel cap applies before any decoding, and a
    big photo is shown back scaled down, its boxes with it."""
    from digitrec.serving import ui

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    labels, text, seen = ui._digit(rec, str(bomb))
    assert labels == {} and seen is None and "than the limit of" in text and "bomb.png" in text
    (x, y) = mnist[1]
    strip = synth.number_strip([x[i] for i in range(4)], np.random.default_rng(0))
    page = (255 - 255 * np.kron(strip, np.ones((60, 60)))).clip(0, 255).astype(np.uint8)  # 2,160 px high
    path = tmp_path / f"number{suffix}"
    Image.fromarray(page).save(path, quality=95)
    (shown, boxes), answer = ui._number(rec, str(path))
    assert answer == "**" + "".join(str(int(v)) for v in y[:4]) + "**"
    assert max(shown.shape[:2]) == ui.SHOW_SIDE and shown.shape[2] == 3
    scale = ui.SHOW_SIDE / max(page.shape)
    for (x0, y0, x1, y1), digit in zip((b for b, _ in boxes), rec.read(str(path)).digits, strict=True):
        bx, by, bw, bh = digit.box
        assert (x0, y0, x1, y1) == tuple(round(v * scale) for v in (bx, by, bx + bw, by + bh))


def test_the_ui_routes_refuse_a_declared_body_over_the_limit(client: TestClient) -> None:
    r = client.post("/gradio_api/upload", files={"files": ("big.png", b"\0" * 2_500_000)})
    assert r.status_code == 413 and "over" in r.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_uploads_are_decoded_as_the_librarys_own_files(client: TestClient, mnist, monkeypatch) -> None:
    """A large JPEG upload is decoded at reduced size, as a file given to the library is (a PIL image
    from a caller is decoded at full size)."""
    from digitrec.reading import images

    seen = []
    real = images._decode
    monkeypatch.setattr(images, "_decode", lambda pil, name, own=True: seen.append(own) or real(pil, name, own))
    photo = Image.fromarray(render_on_paper(mnist[1][0][0], size=1600))
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    for path in ("/v1/predict", "/v1/read"):
        r = client.post(path, files={"file": ("big.jpg", buf.getvalue(), "image/jpeg")})
        assert r.status_code == 200 and str(r.json().get("digit", r.json().get("text"))) == "7"
    assert seen == [True, True]


def test_the_drawing_pad_refuses_an_oversized_picture_before_decoding_it(rec, tmp_path) -> None:
    """A 7000x7000 transparent PNG of a few hundred KB sent as the drawing is refused from its header;
    a drawing the size of the canvas is read, and only its composite (not the background and layers,
    which digitrec never uses)."""
    import tracemalloc

    import gradio as gr
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    from digitrec.serving.ui import CANVAS, _sketchpad

    pad = _sketchpad(gr, type="numpy", image_mode="RGBA", canvas_size=(CANVAS, CANVAS), render=False)
    huge = tmp_path / "huge.png"
    Image.new("RGBA", (7000, 7000), (0, 0, 0, 0)).save(huge)
    assert huge.stat().st_size < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(gr.Error, match="7000x7000"):
            pad.preprocess(EditorData(composite=FileData(path=str(huge)), layers=[FileData(path=str(huge))]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024  # decoded, the picture alone is 196 MB
    drawing = tmp_path / "drawing.png"
    Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0)).save(drawing)
    value = pad.preprocess(EditorData(composite=FileData(path=str(drawing)), layers=[FileData(path=str(huge))]))
    assert value["composite"].shape == (CANVAS, CANVAS, 4) and value["layers"] == []
