"""The code is backend-agnostic: models build, train and load under JAX and torch too.

JAX is a test dependency, so its test always runs; torch is not (its CPU wheel is large), so its
test runs where torch is installed (`pip install torch==2.13.0`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    from digitrec.models import MODELS, build_model, load_model
    from digitrec.reading.recognizer import predict_probabilities
    from digitrec.training.train import train

    assert keras.backend.backend() == sys.argv[4], keras.backend.backend()
    shapes = {name: list(build_model(name)(np.zeros((2, 28, 28), "float32")).shape) for name in MODELS}
    result = train(model="seed-cnn", epochs=1, limit=3000, validation=500, out=sys.argv[1], verbose=0)
    # A model saved by the TensorFlow backend loads and predicts the same under JAX.
    tf_model, _ = load_model(sys.argv[2])
    x = np.load(sys.argv[3])
    print(json.dumps({
        "shapes": shapes,
        "test_accuracy": result.metrics["test"]["accuracy"],
        "precision": result.extra["precision"],
        "probs": predict_probabilities(tf_model, x).tolist(),
    }))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_trains_and_reads_tensorflow_models(
    backend: str, tiny_run, mnist, tmp_path: Path, digitrec_home: str
) -> None:
    import numpy as np

    from digitrec.reading.recognizer import calibrated, load_recognizer

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    x = mnist[1][0][:64]
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": backend, "DIGITREC_HOME": digitrec_home, "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, "-c", SCRIPT, str(tmp_path / "run"), str(tiny_run.model_path), str(tmp_path / "x.npy")]
    args.append(backend)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(shape == [2, 10] for shape in out["shapes"].values())
    assert out["test_accuracy"] > 0.8
    assert out["precision"] == "float32"  # auto picks float32 for JAX and torch on CPU
    rec = load_recognizer(tiny_run.model_path, tta=0)  # the model's outputs, calibrated with its temperature
    np.testing.assert_allclose(
        calibrated(np.array(out["probs"], np.float32), rec.temperature), rec.predict_arrays(x), atol=1e-4
    )


DISTRIBUTED = textwrap.dedent(
    """
    import json, sys
    import keras
    from digitrec.training.train import train

    assert len(keras.distribution.list_devices()) == 2, keras.distribution.list_devices()
    common = dict(model="seed-cnn", epochs=1, limit=3000, validation=500, batch_size=100, verbose=0)
    alone = train(out=sys.argv[1] + "/one", **common)
    spread = train(out=sys.argv[1] + "/two", distribute=True, **common)
    print(json.dumps({"one": alone.metrics["test"]["accuracy"], "two": spread.metrics["test"]["accuracy"],
                      "path": str(spread.run_dir)}))
    """
)


def test_data_parallel_training_over_two_devices_matches_one(mnist, tmp_path: Path, digitrec_home: str) -> None:
    """`train --distribute` over two virtual CPU devices (JAX): the accuracy band of one device, and a
    model that loads and predicts like any other (here under TensorFlow)."""
    import numpy as np

    from digitrec.reading.recognizer import load_recognizer

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "DIGITREC_HOME": digitrec_home,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED, str(tmp_path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["two"] > 0.8 and abs(out["two"] - out["one"]) < 0.03, out
    rec = load_recognizer(out["path"])
    (x, y) = mnist[1]
    assert np.mean(rec.predict_arrays(x[:500]).argmax(1) == y[:500]) > 0.8


def test_distribute_needs_the_jax_backend() -> None:
    from digitrec.training.train import TrainConfig, TrainError

    with pytest.raises(TrainError, match="needs the JAX backend"):
        TrainConfig(model="seed-cnn", distribute=True).resolved()
