"""Training speed, side by side: digitrec's presets against the tutorials' recipes, same data, same run.

    .venv/bin/python benchmarks/train_speed.py                         # fast, quick + the references
    .venv/bin/python benchmarks/train_speed.py --recipes best --seeds 0 1 2
    .venv/bin/python benchmarks/train_speed.py --recipes fast --seeds 0 1 2 3 4

Every recipe trains on the same 55,000 MNIST training images (the last 5,000 are digitrec's validation
split) and is scored on the 10,000 test images after every epoch, for this report only: time to
99.0% and to 99.5% is the training time (fit loop, scoring excluded) until the first epoch whose
test accuracy reaches it. digitrec's presets still select their model on validation.

Recipes:
- fast, balanced, quick, best: `digitrec train --preset NAME` (Keras, TensorFlow backend by default);
- tutorial: the TensorFlow beginner CNN: Conv 32, Pool, Dense 128, Adam, batch 100, 5 epochs, x/255;
- pytorch-examples: pytorch/examples mnist: Adadelta lr 1.0, StepLR gamma 0.7, batch 64, 14 epochs;
- speed-record: the 1-epoch recipe: Conv(24, 5x5), Pool, ReLU, Conv(32, 3x3), Pool, ReLU, FC 800-256-10,
  batch 256, Adam lr 0.01 betas (0.7, 0.9), one-cycle.
The PyTorch recipes run in PyTorch when it is installed (the CPU wheel: pip install torch==2.13.0), and
are skipped with a message when it is not. Each run is its own process: a fresh framework, no warm cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

TARGETS = (0.990, 0.995)

KERAS_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import keras, numpy as np
    from digitrec.data import load_mnist, split_validation

    recipe, seed = sys.argv[1], int(sys.argv[2])
    t_import = time.perf_counter()
    (x, y), (x_test, y_test) = load_mnist()
    (x_tr, y_tr), _ = split_validation(x, y, 5000)
    curve, state = [], {"fit": 0.0, "scoring": 0.0}

    class Scorer(keras.callbacks.Callback):
        # Test accuracy after every epoch, its own time left out of the training time.
        def on_epoch_begin(self, epoch, logs=None):
            state["t"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t = time.perf_counter()
            state["fit"] += t - state["t"]
            p = self.model.predict(x_test_f, batch_size=1000, verbose=0)
            curve.append([state["fit"], float(np.mean(p[:, :10].argmax(1) == y_test))])
            state["scoring"] += time.perf_counter() - t

    x_test_f = x_test.astype("float32")
    if recipe == "tutorial":
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        x_test_f = x_test_f[..., None] / 255.0
        t = time.perf_counter()
        model.fit(x_tr[..., None] / 255.0, y_tr, batch_size=100, epochs=5, callbacks=[Scorer()], verbose=0)
        seconds = time.perf_counter() - t - state["scoring"]
        final = curve[-1][1]
    else:
        from digitrec.training.train import PRESETS, train
        import tempfile
        from digitrec.models import read_metadata
        r = train(out=tempfile.mkdtemp(), seed=seed, verbose=0, callbacks=[Scorer()], **PRESETS[recipe])
        seconds, final = r.train_seconds - state["scoring"], r.metrics["test"]["accuracy"]
        prepare = read_metadata(r.model_path).get("prepare_seconds", 0.0)
    print(json.dumps({"seconds": seconds, "final": final, "curve": curve, "prepare": prepare if recipe != "tutorial"
                      else 0.0, "framework": f"Keras {keras.__version__} ({keras.backend.backend()})"}))
    """
)

TORCH_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
    from digitrec.data import load_mnist, split_validation

    recipe, seed = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count())
    (x, y), (x_test, y_test) = load_mnist()
    (x_tr, y_tr), _ = split_validation(x, y, 5000)
    norm = lambda a: (torch.from_numpy(a).float().unsqueeze(1) / 255.0 - 0.1307) / 0.3081
    X, Y, XT = norm(x_tr), torch.from_numpy(y_tr.astype(np.int64)), norm(x_test)

    if recipe == "pytorch-examples":  # github.com/pytorch/examples/blob/main/mnist/main.py
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
                self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
                self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)
            def forward(self, x):
                x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
                x = self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1))))
                return F.log_softmax(self.fc2(x), dim=1)
        model, batch, epochs = Net(), 64, int(sys.argv[3])
        opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        per_step = False
        loss_fn = F.nll_loss
    else:  # speed-record
        model = nn.Sequential(
            nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10),
        )
        batch, epochs = 256, 1
        opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=epochs * -(-len(X) // batch))
        per_step = True
        loss_fn = F.cross_entropy

    curve, fit = [], 0.0
    for epoch in range(epochs):
        t = time.perf_counter()
        model.train()
        perm = torch.randperm(len(X))
        for i in range(0, len(X), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss_fn(model(X[idx]), Y[idx]).backward()
            opt.step()
            if per_step:
                sched.step()
        if not per_step:
            sched.step()
        fit += time.perf_counter() - t
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(XT[i : i + 1000]).argmax(1) for i in range(0, len(XT), 1000)]).numpy()
        curve.append([fit, float(np.mean(pred == y_test))])
    print(json.dumps({"seconds": fit, "final": curve[-1][1], "curve": curve,
                      "framework": f"PyTorch {torch.__version__}"}))
    """
)

OURS = ("fast", "balanced", "quick", "best")
REFERENCES = ("tutorial", "pytorch-examples", "speed-record")


def run(recipe: str, seed: int, pytorch_epochs: int) -> dict | None:
    if recipe in ("pytorch-examples", "speed-record"):
        try:
            import torch  # noqa: F401
        except ImportError:
            print(f"{recipe}: skipped: PyTorch is not installed (pip install torch==2.13.0 installs the CPU wheel)")
            return None
        cmd = [sys.executable, "-c", TORCH_CHILD, recipe, str(seed), str(pytorch_epochs)]
    else:
        cmd = [sys.executable, "-c", KERAS_CHILD, recipe, str(seed)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{recipe} seed {seed}: failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_to(curve: list[list[float]], target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def fmt_time(t: float | None) -> str:
    return "never" if t is None else f"{t:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["fast", "quick", *REFERENCES], choices=[*OURS, *REFERENCES])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--pytorch-epochs", type=int, default=14, help="epochs of pytorch-examples (its default: 14)")
    args = ap.parse_args()

    rows = {}
    for recipe in args.recipes:
        results = []
        for seed in args.seeds:
            r = run(recipe, seed, args.pytorch_epochs)
            if r is None:
                break
            results.append(r)
            print(
                f"{recipe} seed {seed}: {r['final']:.4f} in {r['seconds']:.1f} s; to 99.0%: "
                f"{fmt_time(time_to(r['curve'], 0.99))}, to 99.5%: {fmt_time(time_to(r['curve'], 0.995))}",
                flush=True,
            )
        if results:
            rows[recipe] = results

    header = (
        f"{'recipe':<17} {'framework':<28} {'seeds':>5} {'test acc (mean ± sd)':>21} {'train s (range)':>20} "
        f"{'prep s':>7}"
    )
    print(f"\n{header}", end="")
    print("".join(f" {'to ' + format(t, '.1%'):>9}" for t in TARGETS))
    summary = {}
    for recipe, results in rows.items():
        accs = [r["final"] for r in results]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        secs = [r["seconds"] for r in results]
        # Time to a target: the mean over seeds, only when every seed reached it.
        reach = {}
        for t in TARGETS:
            times = [time_to(r["curve"], t) for r in results]
            reach[t] = None if any(x is None for x in times) else statistics.mean(times)
        summary[recipe] = reach
        print(
            f"{recipe:<17} {results[0]['framework']:<28} {len(results):>5} "
            f"{100 * statistics.mean(accs):>12.2f} ± {100 * sd:.2f}% "
            f"{statistics.mean(secs):>7.2f} ({min(secs):.2f}-{max(secs):.2f}) "
            f"{statistics.mean(r.get('prepare', 0.0) for r in results):>7.1f}"
            + "".join(f" {fmt_time(reach[t]):>9}" for t in TARGETS)
        )
    print(
        "train s: the fit loop (scoring left out); prep s: rendering the real-image training data before it\n"
        "(best only), in neither train s nor the times to a target; times to a target: the epochs' own\n"
        "time, summed, at each epoch's end (Keras: without fit()'s set-up before the first epoch)"
    )
    ours = [r for r in OURS if r in summary]
    refs = [r for r in REFERENCES if r in summary]
    if ours and refs:
        print("\nSpeed ratio (reference's time to the target / ours; higher is better for us):")
        for t in TARGETS:
            for o in ours:
                if summary[o][t] is None:
                    continue
                ratios = ", ".join(
                    f"{ref} {summary[ref][t] / summary[o][t]:.1f}x" if summary[ref][t] else f"{ref} never gets there"
                    for ref in refs
                )
                print(f"  to {t:.1%}, {o}: {ratios}")


if __name__ == "__main__":
    main()
