"""Time training steps per Keras backend, precision and XLA setting, to pick digitrec's defaults.

    .venv/bin/python benchmarks/precision.py                    # TensorFlow: float32/bf16, XLA off/on
    .venv/bin/python benchmarks/precision.py --backends tensorflow jax torch

Each configuration runs in its own process (the backend is fixed at import). It trains on N real
MNIST images for two epochs and reports the second: the first includes tracing and compilation.
Figures are milliseconds per step of 128 images and images per second, steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import keras, numpy as np
    from digitrec.data import load_mnist
    from digitrec.models import build_model

    model_name, precision, jit, n = sys.argv[1], sys.argv[2], sys.argv[3] == "on", int(sys.argv[4])
    (x, y), _ = load_mnist()
    x, y = x[:n].astype("float32"), np.eye(10, dtype="float32")[y[:n]]
    keras.utils.set_random_seed(0)
    model = build_model(model_name, precision=precision)
    model.compile("adam", "categorical_crossentropy", jit_compile=jit if keras.backend.backend() != "jax" else True)
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)  # warm-up: tracing and compilation
    t = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "ms_per_step": 1000 * dt / -(-n // 128), "images_per_s": n / dt}))
    """
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["tensorflow"], choices=["tensorflow", "jax", "torch"])
    ap.add_argument("--models", nargs="+", default=["cnn", "digitnet"])
    ap.add_argument("--images", type=int, default=12800, help="images per epoch (default 12800 = 100 steps)")
    args = ap.parse_args()

    print(f"{'backend':<11} {'model':<9} {'precision':<9} {'XLA':<4} {'ms/step':>8} {'img/s':>8}")
    for backend in args.backends:
        for model in args.models:
            for precision in ("float32", "bf16"):
                for jit in ("off", "on") if backend == "tensorflow" else ("on" if backend == "jax" else "off",):
                    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
                    proc = subprocess.run(
                        [sys.executable, "-c", CHILD, model, precision, jit, str(args.images)],
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                    if proc.returncode != 0:
                        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                        print(f"{backend:<11} {model:<9} {precision:<9} {jit:<4} failed: {tail[0][:80]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    print(
                        f"{backend:<11} {model:<9} {precision:<9} {jit:<4} {r['ms_per_step']:8.1f} "
                        f"{r['images_per_s']:8.0f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
