"""Exports load in their own runtime and agree with Keras; ONNX serving needs no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitrec.export import ExportError, export_model, run_onnx


@pytest.fixture(scope="module")
def model_copy(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("export") / "model.keras"
    dst.write_bytes(tiny_run.model_path.read_bytes())
    return dst


def test_onnx_matches_keras_on_real_digits(model_copy: Path, mnist) -> None:
    from digitrec import load_recognizer
    from digitrec.reading.recognizer import calibrated

    path, diff = export_model(model_copy, "onnx")
    assert path == model_copy.with_suffix(".onnx") and diff <= 1e-4
    x = mnist[1][0][:500]
    keras_probs = load_recognizer(model_copy, engine="keras").predict_arrays(x)
    onnx_rec = load_recognizer(model_copy, engine="auto")
    assert onnx_rec.engine == "onnx"
    np.testing.assert_allclose(onnx_rec.predict_arrays(x), keras_probs, atol=1e-4)
    # The raw export gives the model's own outputs; the recognizer calibrates them with the model's
    # temperature (and by default averages them over turned copies: tta=0 reads each image once).
    raw = run_onnx(path, x.astype(np.float32))
    once = load_recognizer(model_copy, engine="keras", tta=0).predict_arrays(x)
    np.testing.assert_allclose(calibrated(raw, onnx_rec.temperature), once, atol=1e-4)


def test_a_stale_onnx_twin_is_not_used(model_copy: Path, tmp_path: Path) -> None:
    from digitrec import load_recognizer
    from digitrec.models import ModelError

    other = tmp_path / "model.keras"
    other.write_bytes(model_copy.read_bytes())  # the same model: the twin matches
    (tmp_path / "model.onnx").write_bytes(model_copy.with_suffix(".onnx").read_bytes())
    assert load_recognizer(other).engine == "onnx"
    from digitrec.models import load_model, save_model

    model, meta = load_model(other)  # the model is saved again after the export: a new file
    save_model(model, other, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    assert load_recognizer(other).engine == "keras"
    with pytest.raises(ModelError, match="no ONNX twin"):
        load_recognizer(other, engine="onnx")


@pytest.mark.parametrize("fmt", ["litert", "saved_model"])
def test_mobile_and_serving_exports_match_keras(fmt: str, model_copy: Path, tmp_path: Path, mnist) -> None:
    from digitrec.export import _run_litert, _run_saved_model
    from digitrec.models import load_model
    from digitrec.reading.recognizer import predict_probabilities

    path, diff = export_model(model_copy, fmt, tmp_path / f"exported-{fmt}")
    assert path.exists() and diff <= 1e-4
    # The file written, run in its own runtime on digits other than the export's own check.
    x = mnist[1][0][1000:1200]
    got = {"litert": _run_litert, "saved_model": _run_saved_model}[fmt](path, x.astype(np.float32))
    np.testing.assert_allclose(got, predict_probabilities(load_model(model_copy)[0], x), atol=1e-4)


def test_the_export_command_writes_a_verified_file(model_copy: Path, tmp_path: Path, mnist, capsys) -> None:
    from digitrec.cli import main
    from digitrec.models import load_model
    from digitrec.reading.recognizer import predict_probabilities

    out = tmp_path / "cli" / "digits.onnx"
    assert main(["export", "--model", str(model_copy), "--format", "onnx", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    x = mnist[1][0][:200]
    keras_probs = predict_probabilities(load_model(model_copy)[0], x)
    np.testing.assert_allclose(run_onnx(out, x.astype(np.float32)), keras_probs, atol=1e-4)


def test_unknown_format() -> None:
    with pytest.raises(ExportError, match="format must be one of"):
        export_model(None, "coreml")


def test_shipped_model_predicts_with_onnx_and_without_tensorflow(mnist) -> None:
    code = (
        "import sys, json, numpy as np\n"
        "from digitrec import load_recognizer\n"
        "from digitrec.data import load_mnist\n"
        "rec = load_recognizer()\n"
        "_, (x, y) = load_mnist()\n"
        "acc = float((rec.predict_arrays(x[:1000]).argmax(1) == y[:1000]).mean())\n"
        "print(json.dumps({'engine': rec.engine, 'acc': acc, 'tf': 'tensorflow' in sys.modules,"
        " 'keras': 'keras' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"engine": "onnx", "acc": result["acc"], "tf": False, "keras": False}
    assert result["acc"] > 0.98


def test_an_existing_folder_as_out_receives_the_file_and_is_not_deleted(model_copy: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text("{}")
    path, _ = export_model(model_copy, "onnx", run)
    assert path == run / "model.onnx" and path.stat().st_size > 1000
    assert (run / "history.json").read_text() == "{}"  # the folder's own files are untouched
    with pytest.raises(ExportError, match="not a SavedModel"):
        export_model(model_copy, "saved_model", run)
    assert (run / "history.json").exists() and path.exists()


def test_a_broken_onnx_twin_falls_back_to_keras(model_copy: Path, tmp_path: Path) -> None:
    from digitrec import load_recognizer
    from digitrec.models import ModelError

    other = tmp_path / "model.keras"
    other.write_bytes(model_copy.read_bytes())
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07not an onnx model")  # a truncated or corrupt export
    assert load_recognizer(other).engine == "keras"
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        load_recognizer(other, engine="onnx")


@pytest.mark.parametrize(("fmt", "runner"), [("onnx", "run_onnx"), ("litert", "_run_litert")])
def test_an_export_answering_nan_is_not_written(fmt: str, runner: str, model_copy: Path, tmp_path: Path, monkeypatch):
    from digitrec import export

    real = getattr(export, runner)
    monkeypatch.setattr(export, runner, lambda path, x: real(path, x) * np.float32("nan"))
    with pytest.raises(ExportError, match="disagrees with Keras"):
        export_model(model_copy, fmt, tmp_path / f"nan{export.SUFFIX[fmt]}")
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left
