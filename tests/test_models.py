"""The model registry builds and runs; saved models describe themselves and load safely."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digitrec.models import (
    MODELS,
    ModelError,
    build_model,
    content_sha256,
    load_model,
    read_metadata,
    save_model,
)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_builds_and_runs_forward(name: str) -> None:
    model = build_model(name)
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype("float32")
    p = np.asarray(model(x, training=False))
    assert p.shape == (3, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p >= 0).all()


def test_tutorial_architectures_have_their_published_sizes() -> None:
    # Parameter counts follow from the layer lists in the issue; a changed layer changes them.
    assert build_model("mlp").count_params() == 784 * 512 + 512 + 512 * 10 + 10
    assert build_model("seed-cnn").count_params() == (9 * 32 + 32) + (13 * 13 * 32 * 128 + 128) + (128 * 10 + 10)
    assert build_model("cnn").count_params() == 320 + 18496 + (5 * 5 * 64 * 128 + 128) + 1290
    # The speed record's FC 800-256-10 after Conv(24, 5x5) and Conv(32, 3x3).
    assert build_model("speednet").count_params() == (25 * 24 + 24) + (9 * 24 * 32 + 32) + (800 * 256 + 256) + 2570
    # fastnet: Conv(16, 5x5) strided on the 24x24 crop gives 10x10, Conv(32, 3x3) 8x8, pooled 4x4x32 = 512.
    assert build_model("fastnet").count_params() == (25 * 16 + 16) + (9 * 16 * 32 + 32) + (512 * 256 + 256) + 2570


def test_bf16_model_outputs_float32_probabilities() -> None:
    model = build_model("cnn", precision="bf16")
    assert model.layers[-1].dtype_policy.name == "float32"
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in model.layers)
    p = np.asarray(model(np.zeros((1, 28, 28), "float32")))
    assert p.dtype == np.float32


def test_unknown_model_and_precision() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet'"):
        build_model("resnet")
    with pytest.raises(ModelError, match="precision"):
        build_model("mlp", precision="int8")


def test_save_and_load_keep_predictions_and_metadata(tmp_path: Path) -> None:
    model = build_model("lenet")
    x = np.random.default_rng(1).integers(0, 256, (4, 28, 28)).astype("float32")
    before = np.asarray(model(x))
    path = save_model(model, tmp_path / "m.keras", {"architecture": "lenet", "class_names": list("0123456789")})
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    loaded, meta = load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), before, atol=1e-6)
    assert meta["architecture"] == "lenet" and meta["format"] == "digitrec"
    assert read_metadata(path)["class_names"][9] == "9"


def test_lambda_layers_are_refused(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((28, 28))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    with zipfile.ZipFile(path, "a") as z:  # a valid digest: only safe_mode stands in the way
        z.writestr("digitrec.json", json.dumps({"format": "digitrec", "content_sha256": content_sha256(path)}))
    with pytest.raises(ModelError, match="cannot load the model"):
        load_model(path)


def test_foreign_and_corrupt_files_are_clear_errors(tmp_path: Path) -> None:
    import keras

    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).save(plain)
    with pytest.raises(ModelError, match="without digitrec metadata"):
        load_model(plain)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ModelError, match=r"not a readable \.keras model file"):
        load_model(junk)
    with pytest.raises(ModelError, match="no model file there"):
        load_model(tmp_path / "missing")


def _rewrite(path: Path, change: dict[str, bytes | None]) -> None:
    """Rewrite a zip with some entries replaced (bytes) or removed (None)."""
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    for name, data in change.items():
        if data is None:
            entries.pop(name, None)
        else:
            entries[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    path = save_model(build_model("mlp"), tmp_path / "m.keras", {"architecture": "mlp"})
    with zipfile.ZipFile(path) as z:
        weights = bytearray(z.read("model.weights.h5"))
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    _rewrite(path, {"model.weights.h5": bytes(weights)})
    with pytest.raises(ModelError, match="corrupt or altered"):
        load_model(path)


def test_a_model_without_digest_is_refused(tmp_path: Path) -> None:
    path = save_model(build_model("mlp"), tmp_path / "m.keras", {"architecture": "mlp"})
    _rewrite(path, {"digitrec.json": json.dumps({"format": "digitrec"}).encode()})
    with pytest.raises(ModelError, match="no content digest"):
        read_metadata(path)


def test_a_metadata_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """A model file of a few hundred KB whose metadata entry inflates to 64 MB (zeros, deflated): refused
    from the zip's directory, with memory far below what inflating it would take."""
    import tracemalloc

    path = save_model(build_model("mlp"), tmp_path / "m.keras", {"architecture": "mlp"})
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist() if n != "digitrec.json"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        z.writestr("digitrec.json", b" " * (64 * 1024 * 1024))
    assert path.stat().st_size < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="inflates to 67108864 bytes"):
            read_metadata(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
