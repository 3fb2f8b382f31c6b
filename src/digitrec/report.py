"""Figures and the HTML evaluation report: the side-effect edge of evaluation.

`build_report` runs a model on a split and writes, into one directory:
``report.html`` (self-contained: figures embedded), the figures as PNG, and ``metrics.json``.
Every plot function takes plain arrays and a path, renders headless (Matplotlib's Agg) and
returns the path it wrote.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import atomic_write

__all__ = [
    "build_report",
    "plot_confusion",
    "plot_history",
    "plot_mistakes",
    "plot_reliability",
    "plot_samples",
]

DPI = 110


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed, same pixels everywhere
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    _plt().close(fig)
    return path


def _digit_grid(
    images: np.ndarray,
    titles: Sequence[str],
    cols: int,
    title: str,
    colors: Sequence[str] | None = None,
    cell: float = 1.15,  # inches per digit: wider cells for longer titles
) -> Any:
    plt = _plt()
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * (cell + 0.35) + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(titles[i], fontsize=10, color=colors[i] if colors else "black")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def plot_samples(
    x: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    n: int = 40,
    cols: int = 10,
    title: str = "Sample digits with their labels",
    seed: int = 0,
) -> Path:
    """A grid of ``n`` images drawn at random (fixed seed), each titled with its label."""
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False))
    titles = [f"#{i}: {class_names[int(y[i])]}" for i in idx]
    return _save(_digit_grid(x[idx], titles, cols, title), path)


def plot_history(history: dict[str, list[float]], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, training and validation, side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, label in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        if key in history:
            ax.plot(epochs, history[key], "o-", label="training")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label.lower())
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if len(epochs):
        for ax in axes:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """Two heatmaps: counts, and each row normalized to the fraction of that true class."""
    plt = _plt()
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    k = len(class_names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(6, 0.75 * k) + 1, max(5, 0.7 * k)))
    panels = ((axes[0], cm, "Confusion matrix (counts)", "d"), (axes[1], norm, "Row-normalized (recall)", ".2f"))
    for ax, data, title, fmt in panels:
        # Log-like colour for counts so that the few off-diagonal errors are visible next to the diagonal.
        shown = np.log1p(data) if fmt == "d" else data
        ax.imshow(shown, cmap="Blues")
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
        ax.set_yticks(range(k), class_names)
        top = shown.max() if shown.size else 1
        for i in range(k):
            for j in range(k):
                value = data[i, j]
                if fmt == "d" and value == 0:
                    continue
                text = format(value, fmt) if fmt == "d" else (f"{value:.2f}" if value >= 0.005 else "")
                color = "white" if shown[i, j] > 0.6 * top else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    fig.tight_layout()
    return _save(fig, path)


def plot_mistakes(
    x: np.ndarray,
    mistakes: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    cols: int = 8,
    split: str = "test",
) -> Path:
    """The most confident mistakes, each titled "true -> predicted" with the predicted probability and
    the image's index in ``split``."""
    if not mistakes:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on this split", ha="center", va="center", fontsize=13)
        return _save(fig, path)
    images = np.stack([x[m["index"]] for m in mistakes])
    titles = [
        f"{class_names[m['true']]} → {class_names[m['predicted']]}  p={m['confidence']:.2f}\n#{m['index']}"
        for m in mistakes
    ]
    fig = _digit_grid(
        images,
        titles,
        cols,
        f"Most confident mistakes (true → predicted, probability, {split} index)",
        ["firebrick"] * len(images),
        cell=1.5,
    )
    return _save(fig, path)


def plot_reliability(cal: dict[str, Any], path: str | os.PathLike) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal and the ECE."""
    plt = _plt()
    edges = np.asarray(cal["bin_edges"])
    count = np.asarray(cal["count"])
    acc, conf = np.asarray(cal["accuracy"]), np.asarray(cal["confidence"])
    width = np.diff(edges)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    used = count > 0
    ax.bar(edges[:-1][used], acc[used], width=width[used], align="edge", edgecolor="black", label="accuracy")
    ax.bar(
        edges[:-1][used],
        (conf - acc)[used],
        bottom=acc[used],
        width=width[used],
        align="edge",
        fill=False,
        edgecolor="firebrick",
        hatch="//",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram  (ECE = {cal['ece'] * 100:.2f}%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax2.bar(edges[:-1], count, width=width, align="edge", edgecolor="black", color="gray")
    ax2.set_yscale("log")
    ax2.set_xlabel("confidence of the predicted class")
    ax2.set_ylabel("images")
    fig.tight_layout()
    return _save(fig, path)


# --- the report ------------------------------------------------------------------------------------


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers or ())
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table class='{css}'>{thead}<tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _shown_path(path: Path) -> str:
    """The model's path as a reader should see it: relative to the package or the working directory."""
    package = Path(__file__).parent
    for base, label in ((package, "digitrec/"), (Path.cwd(), "")):
        try:
            return label + str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _started_from(metadata: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The cards of the models a fine-tuned model started from (`train --init`), newest first."""
    init = metadata.get("init")
    while init:
        yield init
        init = init.get("init")


def _extra_data(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The labelled sets a model learnt from or was validated on, with those of the models it was
    fine-tuned from (`train --init`) that it does not list itself (their role says so)."""
    entries = list(metadata.get("data", {}).get("extra", []))
    seen = {e.get("sha256") for e in entries}
    for init in _started_from(metadata):
        for e in init.get("data", {}).get("extra", []):
            if e.get("sha256") not in seen:
                entries.append({**e, "role": f"{e['role']} (of the model it started from)"})
                seen.add(e.get("sha256"))
    return entries


def _lineage(metadata: dict[str, Any]) -> str | None:
    """The models a fine-tuned model started from, newest first: each one's digest and recipe."""
    steps = []
    for init in _started_from(metadata):
        cfg, data = init.get("config", {}), init.get("data", {})
        steps.append(
            f"{init.get('path')} (content sha256 {str(init.get('content_sha256', '?'))[:12]}..., "
            f"{init.get('architecture')}, {cfg.get('epochs')} epochs on {data.get('dataset')}"
            + "".join(f" + {Path(e['path']).name}" for e in data.get("extra", []) if e.get("role") == "training")
            + ")"
        )
    return ", which started from ".join(steps) or None


def model_card(metadata: dict[str, Any], parameters: int | None) -> dict[str, Any]:
    """The facts a reader needs about a model, from its stored metadata."""
    data = metadata.get("data", {})
    training = metadata.get("training", {})
    return {
        "architecture": metadata.get("architecture"),
        "parameters": parameters,
        "classes": ", ".join(metadata.get("class_names", [])),
        "dataset": data.get("dataset"),
        "data sha256": data.get("sha256"),
        "validation images": data.get("validation"),
        "other data (role: folder, images, writers; source; licence as stated)": "; ".join(
            f"{e['role']}: {e['path']}, {e['images']} images"
            + (f", {e['writers']} writers" if e.get("writers") else "")
            + f"; source: {e.get('source', 'not stated')}; licence: {e.get('licence', 'not stated')}"
            for e in _extra_data(metadata)
        )
        or None,
        "fine-tuned from": _lineage(metadata),
        "best epoch": metadata.get("epoch"),
        "ensemble members (seed: test accuracy)": ", ".join(
            f"{m['seed']}: {m['test_accuracy']:.4f}" for m in metadata.get("members", [])
        )
        or None,
        "training time (fit loop, s)": round(metadata["train_seconds"], 1) if "train_seconds" in metadata else None,
        "data preparation (s)": round(metadata["prepare_seconds"], 1) if "prepare_seconds" in metadata else None,
        "temperature (calibration)": round(metadata["temperature"], 4) if "temperature" in metadata else None,
        "preprocessing version": metadata.get("preprocessing_version"),
        "rejection threshold": round(metadata["reject"]["threshold"], 4) if "reject" in metadata else None,
        # the percentile of the rendered validation digits' scores it is (models saved since 2026-11-19)
        "rejection percentile": metadata.get("reject", {}).get("percentile"),
        "device": training.get("device"),
        "training precision": training.get("precision"),  # the saved model computes in float32
        "machine": training.get("machine"),
        "Keras": training.get("keras"),
    }


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 10px; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child { text-align: left; }
img { max-width: 100%; } .big { font-size: 1.4em; } table.card td { text-align: left; }
"""


def build_report(
    model: str | os.PathLike | None = None,
    out: str | os.PathLike = "report",
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    tta: float | None = None,
) -> Path:
    """Evaluate ``model`` (None: the shipped default) on ``split`` and write the report into ``out``.
    ``tta``: test-time augmentation, as `load_recognizer` takes it.

    Returns the path of ``report.html``. Beside it: samples.png, history.png (when the run's
    history.json is found), confusion_matrix.png, mistakes.png, reliability.png and metrics.json.
    """
    from .evaluate import evaluate_split
    from .reading.recognizer import load_recognizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec = load_recognizer(model, tta=tta)
    metrics, x, y, ds = evaluate_split(rec, dataset, data_dir, split)
    metrics["model"] = _shown_path(rec.path)
    names = ds.class_names
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2).encode())

    figures: list[tuple[str, Path, str]] = [
        ("Sample digits", plot_samples(x, y, names, out / "samples.png", title=f"{ds.name} {split}: samples"), ""),
    ]
    history_path = rec.path.parent / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else rec.metadata.get("history")
    if history:
        figures.append(("Training curves", plot_history(history, out / "history.png"), ""))
    figures.append(
        ("Confusion matrix", plot_confusion(metrics["confusion_matrix"], names, out / "confusion_matrix.png"), "")
    )
    mistakes = metrics["most_confident_mistakes"][:24]
    figures.append(
        ("Most confident mistakes", plot_mistakes(x, mistakes, names, out / "mistakes.png", split=split), "")
    )
    figures.append(
        (
            "Calibration",
            plot_reliability(metrics["calibration"], out / "reliability.png"),
            f"Expected calibration error: {metrics['calibration']['ece'] * 100:.2f}% (15 equal-width bins).",
        )
    )

    card = model_card(rec.metadata, rec.metadata.get("parameters"))
    per_class = [
        (r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"])
        for r in metrics["per_class"]
    ]
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        a = metrics[key]
        per_class.append((label, f"{a['precision']:.4f}", f"{a['recall']:.4f}", f"{a['f1']:.4f}", metrics["count"]))
    sections = [
        f"<h1>digitrec evaluation: {html.escape(str(card['architecture']))}</h1>",
        f"<p>{html.escape(_shown_path(rec.path))} on {html.escape(ds.name)} {split} ({metrics['count']} images)</p>",
        f"<p class='big'>Accuracy <b>{metrics['accuracy'] * 100:.2f}%</b> "
        f"({metrics['errors']} errors), macro F1 {metrics['macro_avg']['f1']:.4f}</p>",
        "<h2>Model card</h2>",
        _table(None, [(k, v) for k, v in card.items() if v is not None], css="card"),
        "<h2>Per-class precision, recall and F1</h2>",
        _table(["class", "precision", "recall", "F1", "support"], per_class),
    ]
    for title, path, note in figures:
        sections.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            sections.append(f"<p>{html.escape(note)}</p>")
        sections.append(_img(path, title))
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>digitrec report: {html.escape(str(card['architecture']))}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>"
    )
    report = out / "report.html"
    atomic_write(report, page.encode("utf-8"))  # an interrupted report never leaves half a file
    return report
