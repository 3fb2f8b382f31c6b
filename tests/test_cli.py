"""The `digitrec` command: help for every subcommand, and a tiny end-to-end run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.cli import build_parser, main
from digitrec.reading.lines import default_line_model_path
from tests.conftest import render_on_paper

SUBCOMMANDS = {
    "models": ["--json"],
    "data": ["--dataset", "--data-dir"],
    "train": [
        "--preset",
        "--model",
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--learning-rate",
        "--beta1",
        "--beta2",
        "--weight-decay",
        "--schedule",
        "--seed",
        "--augment",
        "--rotation",
        "--shift",
        "--zoom",
        "--elastic",
        "--shear",
        "--stroke",
        "--class-weight",
        "--label-smoothing",
        "--ema",
        "--validation",
        "--patience",
        "--precision",
        "--limit",
        "--domain",
        "--negatives",
        "--pairs",
        "--ensemble",
        "--dataset",
        "--data-dir",
        "--out",
        "--overwrite",
        "--resume",
        "--distribute",
        "--json",
    ],
    "evaluate": ["--model", "--split", "--json", "--report"],
    "predict": ["--model", "--json", "PATH"],
    "info": ["--model", "--json"],
    "show": ["--dataset", "--split", "--out"],
    "read": ["--model", "--json", "--reader", "PATH"],
    "train-reader": [
        "--out",
        "--lines",
        "--epochs",
        "--rendered",
        "--seed",
        "--precision",
        "--extra-data",
        "--validation-data",
        "--validation-numbers",
        "--workers",
        "--json",
    ],
    "preprocess": ["--out", "--scale", "IMAGE"],
    "export": ["--format", "--model", "--out"],
    "calibrate": ["--model", "--out"],
    "batch": ["--out", "--task", "--address", "--model", "--format", "--actors", "PATH"],
    "serve": [
        "--host",
        "--port",
        "--model",
        "--max-upload",
        "--max-concurrency",
        "--body-timeout",
        "--workers",
        "--no-ui",
        "--threads",
        "--cors-origin",
        "--reader",
    ],
}


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_help_of_each_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in SUBCOMMANDS[command]:
        assert flag in text, f"{command} --help does not mention {flag}"


def test_every_subcommand_is_run_by_some_test() -> None:
    """Each subcommand of the parser is run by a test (through `main`, `python -m digitrec` or the
    `digitrec` command), not only listed: found in the tests' sources."""
    import re

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)
    sources = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for command in sub.choices:
        ways = (
            rf"""main\(\[\s*["']{command}["']""",  # main(["predict", ...])
            rf'"digitrec",\s*"{command}"',  # [sys.executable, "-m", "digitrec", "predict", ...]
            rf"\bdigitrec {command}\b",  # a shell line
        )
        assert any(re.search(way, sources) for way in ways), f"no test runs `digitrec {command}`"


def test_python_dash_m_runs_a_command() -> None:
    seven = Path(__file__).parents[1] / "docs" / "images" / "seven.jpg"
    out = subprocess.run(
        [sys.executable, "-m", "digitrec", "predict", "--json", str(seven)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["digit"] == 7
    version = subprocess.run([sys.executable, "-m", "digitrec", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("digitrec ")


def test_serve_flags_reach_the_server_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `digitrec serve` flag lands in the ServerConfig (and arguments) that `serve` is called with."""
    from digitrec.serving import server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda host, port, model, config, workers: seen.update(locals()))
    flags = (
        "--host 127.0.0.2 --port 8123 --max-upload 1000 --max-concurrency 5 --body-timeout 7 --workers 2 "
        "--threads 3 --no-ui --cors-origin https://a.example --cors-origin https://b.example "
        "--max-head-bytes 2048 --max-headers 20 --head-timeout 4 --keep-alive 3 --max-connections 50"
    )
    assert main(["serve", *flags.split()]) == 0
    config = seen["config"]
    assert (seen["host"], seen["port"], seen["workers"]) == ("127.0.0.2", 8123, 2)
    assert (config.max_upload_bytes, config.max_concurrency, config.body_timeout, config.threads) == (1000, 5, 7, 3)
    assert config.ui is False and config.cors_origins == ("https://a.example", "https://b.example")
    assert (config.max_head_bytes, config.max_headers, config.head_timeout) == (2048, 20, 4)
    assert (config.keep_alive, config.max_connections) == (3, 50)


def test_damaged_files_get_an_error_line_and_no_pillow_warnings(tmp_path: Path) -> None:
    # A TIFF cut short after its header: Pillow warns "Corrupt EXIF data" (with its own source line,
    # which looks like a crash) before the decoder fails. The user sees only the error naming the file.
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 32), 200, np.uint8)).save(buf, "TIFF")
    (tmp_path / "cut.tif").write_bytes(buf.getvalue()[:100])
    cmd = [sys.executable, "-W", "default", "-m", "digitrec", "predict", "--json", str(tmp_path / "cut.tif")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 1
    row = json.loads(out.stdout)
    assert row["file"] == str(tmp_path / "cut.tif") and "cannot decode" in row["error"]
    assert "Warning" not in out.stderr and "PIL" not in out.stderr, out.stderr


def test_a_reader_that_stops_early_ends_predict_quietly(tmp_path: Path) -> None:
    # `digitrec predict --json DIR | head -1`: the pipe closes after the first line. 400 answers of
    # about 300 bytes overflow the pipe's 64 KB buffer, so the writer is still writing when it closes.
    for k in range(400):
        Image.new("L", (16, 16), 255).save(tmp_path / f"blank{k:03d}.png")
    cmd = [sys.executable, "-m", "digitrec", "predict", "--json", str(tmp_path)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141
    assert first["file"].endswith("blank000.png") and err == ""


def test_keras_commands_do_not_print_tensorflows_start_up_notices(tiny_run, mnist, tmp_path: Path) -> None:
    # TensorFlow 2.21 prints "oneDNN custom operations are on" (twice, with an absl preamble) whatever
    # TF_CPP_MIN_LOG_LEVEL says. A run without an ONNX twin is predicted with Keras, so TF loads.
    assert not (Path(tiny_run.run_dir) / "model.onnx").exists()
    seven = tmp_path / "seven.png"
    Image.fromarray(render_on_paper(mnist[1][0][0])).save(seven)
    cmd = [sys.executable, "-m", "digitrec", "predict", "--json", "--model", str(tiny_run.run_dir), str(seven)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["file"] == str(seven)
    assert "oneDNN" not in out.stderr and "absl" not in out.stderr, out.stderr


def test_models_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"mlp", "seed-cnn", "lenet", "cnn", "digitnet"}
    assert sum(r["default"] for r in rows) == 1


def test_data_reports_the_verified_source(mnist, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == [60000, 28, 28] and info["verified"] is True


def test_bad_data_dir_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "--data-dir", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err


def test_end_to_end_train_evaluate_info_predict(mnist, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "seed-cnn", "--epochs", "1", "--limit", "3000", "--validation", "500"]
    assert main([*args, "--precision", "float32", "--class-weight", "9=2", "--out", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["test_accuracy"] > 0.8 and summary["train_seconds"] > 0
    assert json.loads((run / "config.json").read_text())["class_weight"] == {"9": 2.0}

    # Training reports the network alone: evaluate without test-time augmentation gives its figure.
    assert main(["evaluate", "--model", str(run), "--tta", "0", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(summary["test_accuracy"]) and metrics["tta_degrees"] == 0
    assert main(["evaluate", "--model", str(run), "--json"]) == 0  # by default each answer is read three times
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["tta_degrees"] == 8 and abs(metrics["accuracy"] - summary["test_accuracy"]) < 0.02
    assert (run / "evaluation-test.json").is_file()
    assert len(metrics["confusion_matrix"]) == 10

    assert main(["info", "--model", str(run)]) == 0
    out = capsys.readouterr().out
    assert "seed-cnn" in out
    shipped = default_line_model_path()  # the run has no line model of its own: read uses the shipped one
    assert f"line reader: {shipped}" in out if shipped else "line reader: none" in out

    # Real images: MNIST test digits drawn dark-on-light and off-centre, plus a file that is not an image.
    (x_test, y_test) = mnist[1]
    picks = [i for i in range(200) if y_test[i] in (0, 1, 7)][:6]
    for i in picks:
        Image.fromarray(render_on_paper(x_test[i], offset=(-30, 25))).save(tmp_path / f"digit{i}_{y_test[i]}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    code = main(["predict", "--model", str(run), "--json", str(tmp_path)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # one file failed, the others were still answered
    errors = [r for r in rows if "error" in r]
    assert len(errors) == 1 and "broken.png" in errors[0]["file"] and "not an image" in errors[0]["error"]
    answers = [r for r in rows if "digit" in r]
    assert len(answers) == len(picks)
    correct = sum(r["digit"] == int(Path(r["file"]).stem.split("_")[1]) for r in answers)
    assert correct >= len(picks) - 1
    for r in answers:
        assert len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-4


def test_resume_refuses_other_training_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", "runs/x", "--epochs", "20", "--model", "cnn", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "--resume continues a run with its own settings" in err and "--epochs, --model, --overwrite" in err


@pytest.mark.parametrize("value", ["90", "-1", "eight"])
def test_a_bad_tta_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--tta", value, "x.png"])
    assert exit_.value.code == 2 and "--tta" in capsys.readouterr().err


def test_train_rejects_a_bad_class_weight(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--class-weight", "nine=2", "--out", "/nonexistent/x"]) == 1
    assert "CLASS=WEIGHT" in capsys.readouterr().err


def test_predict_array_input(tiny_run, mnist) -> None:
    from digitrec import load_recognizer

    rec = load_recognizer(tiny_run.run_dir)
    (x_test, y_test) = mnist[1]
    probs = rec.predict_arrays(x_test[:500])
    assert probs.shape == (500, 10)
    assert (probs.argmax(1) == y_test[:500]).mean() > 0.85
    with pytest.raises(ValueError, match="uint8"):
        rec.predict_arrays(x_test[:2].astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        rec.predict_arrays(np.zeros((2, 32, 32), np.uint8))


def test_the_shipped_model_works_with_no_arguments(mnist, capsys: pytest.CaptureFixture[str]) -> None:
    from digitrec import load_recognizer
    from digitrec.reading.recognizer import default_model_path

    assert default_model_path() is not None, "the package ships no default model"
    rec = load_recognizer()
    (x_test, y_test) = mnist[1]
    assert (rec.predict_arrays(x_test[:2000]).argmax(1) == y_test[:2000]).mean() > 0.98
    assert main(["info", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["architecture"] == "digitnet" and card["metrics"]["test"]["accuracy"] >= 0.99


def test_read_and_predict_json_contract(mnist, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON lines other tools rely on: one object per image, errors per file, exit code 1 at the end."""
    from digitrec.training import synth

    (x, y) = mnist[1]
    rng = np.random.default_rng(7)
    picks = [int(np.flatnonzero(y == d)[0]) for d in (4, 2)]
    strip = synth.number_strip([x[i] for i in picks], rng, touching=0.0)
    (tmp_path / "n.png").write_bytes(synth.as_photo(strip, rng, jpeg=False))
    (tmp_path / "blank.jpg").write_bytes(synth.blank_page(rng))
    (tmp_path / "bad.png").write_bytes(b"%PDF-1.4 not an image")

    assert main(["read", "--json", str(tmp_path)]) == 1
    rows = {Path(r["file"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"n.png", "blank.jpg", "bad.png"}
    assert rows["n.png"]["text"] == "42"
    assert [d["digit"] for d in rows["n.png"]["digits"]] == [4, 2]
    assert all(len(d["box"]) == 4 and 0 < d["confidence"] <= 1 for d in rows["n.png"]["digits"])
    assert rows["blank.jpg"] == {"file": str(tmp_path / "blank.jpg"), "text": "", "confidence": None, "digits": []}
    assert "PDF" in rows["bad.png"]["error"]

    assert main(["predict", "--json", str(tmp_path / "blank.jpg")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["digit"] is None and len(row["probabilities"]) == 10 and "confidence" in row


def test_preprocess_writes_what_the_model_sees(mnist, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = render_on_paper(mnist[1][0][0], size=300, offset=(50, 40))
    Image.fromarray(page).save(tmp_path / "seven.jpg")
    assert main(["preprocess", str(tmp_path / "seven.jpg"), "--out", str(tmp_path / "seen.png")]) == 0
    seen = np.asarray(Image.open(tmp_path / "seen.png"))
    assert seen.shape == (28, 28) and seen.max() == 255 and seen[0].max() == 0
    assert main(["preprocess", str(tmp_path / "seven.jpg"), "--out", str(tmp_path / "big.png"), "--scale", "8"]) == 0
    assert Image.open(tmp_path / "big.png").size == (224, 224)


def test_a_file_system_error_is_a_message_not_a_traceback(
    mnist, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(render_on_paper(mnist[1][0][0])).save(tmp_path / "seven.png")
    assert main(["preprocess", str(tmp_path / "seven.png"), "--out", str(tmp_path / "no" / "such" / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "no such file or directory" in err.lower() and "Traceback" not in err


def test_serve_refuses_an_upload_limit_over_the_file_limit(capsys: pytest.CaptureFixture[str]) -> None:
    from digitrec.reading.images import MAX_BYTES

    with pytest.raises(SystemExit) as e:
        main(["serve", "--max-upload", str(MAX_BYTES + 1)])
    assert e.value.code == 2 and f"not between 1 and {MAX_BYTES}" in capsys.readouterr().err


def test_serve_refuses_a_negative_number_of_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "-1", "--port", "1"]) == 1
    assert "--workers must be 0 (one per core) or more, got -1" in capsys.readouterr().err


def test_serve_with_workers_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--no-ui", "--workers", "2", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err


def test_every_file_of_a_walk_gets_a_row(mnist, tmp_path: Path) -> None:
    """A tree with a digit, a FIFO and a dangling link named like images, a loop of links, a name that is
    not UTF-8 and a branch 1,200 levels deep: each gets its answer or an error naming it, under a strict
    UTF-8 output, with no traceback."""
    _, (x, _) = mnist
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    Image.fromarray(render_on_paper(x[0])).save(tree / "sub" / "seven.png")
    Image.fromarray(render_on_paper(x[0])).convert("L").save(tree / "sub" / "seven.pgm")  # Netpbm, as datasets
    os.mkfifo(tree / "sub" / "fifo.png")
    (tree / "dangling.png").symlink_to(tree / "nowhere.png")
    (tree / "sub" / "loop").symlink_to(tree)
    (tree / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    deep = tree
    for _ in range(1200):  # os.makedirs recurses once per level
        deep = deep / "d"
        deep.mkdir()
    Image.fromarray(render_on_paper(x[0])).save(deep / "deep.png")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "digitrec", "predict", "--json", str(tree)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:  # deepest first: shutil.rmtree (and pytest's clean-up of old temporary folders) recurses
        for _ in range(1200):
            for entry in deep.iterdir():
                entry.unlink()
            deep.rmdir()
            deep = deep.parent
    assert "Traceback" not in out.stderr, out.stderr
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["seven.png"]["digit"] == 7 and rows["deep.png"]["digit"] == 7 and rows["seven.pgm"]["digit"] == 7
    assert "not a regular file" in rows["fifo.png"]["error"]
    assert "No such file" in rows["dangling.png"]["error"]
    assert "loop" in rows["loop"]["error"]
    assert "bad\\xff.png" in rows and "error" in rows["bad\\xff.png"]
    assert out.returncode == 1  # some files failed


def test_text_output_of_predict_and_the_warning_for_a_public_host(mnist, tmp_path: Path, capsys) -> None:
    """Without --json, one line per file: the digit and its confidence, "no digit (why, P)", or the
    error; serving on a non-loopback address says so before anything else happens."""
    import re

    _, (x, y) = mnist
    Image.fromarray(render_on_paper(x[0])).save(tmp_path / "a.png")
    Image.fromarray(np.full((60, 60), 255, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"not an image")
    assert main(["predict", str(tmp_path)]) == 1  # one file failed
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'a.png'))}: {int(y[0])}  \(0\.\d{{3}}\)", lines[0]), lines
    assert lines[1] == f"{tmp_path / 'b.png'}: no digit (no ink found: the image is blank, 1.000)"
    assert lines[2].startswith(f"{tmp_path / 'c.png'}: error: ") and "not an image" in lines[2]

    assert main(["serve", "--host", "0.0.0.0", "--workers", "2", "--port", "1", "--no-ui", "--head-timeout", "0"]) == 1
    err = capsys.readouterr().err
    assert "listening on 0.0.0.0: reachable from other machines" in err and "head-timeout" in err
