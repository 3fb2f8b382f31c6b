"""Evaluation: metrics are pure functions of labels and probabilities; `evaluate` runs a model on a split.

`classification_metrics` returns plain dicts and lists (JSON-ready): accuracy, per-class precision,
recall, F1 and support, macro and weighted averages, the confusion matrix (rows: true class,
columns: predicted class) and the most confident mistakes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "calibration",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "evaluate_split",
    "format_metrics",
]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # A class never predicted (or never present) gets 0 rather than NaN, as scikit-learn's zero_division=0.
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def calibration(y_true: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Reliability of the top-class confidence, in ``bins`` equal-width bins over [0, 1].

    ECE (expected calibration error) is the mean over images of |accuracy - confidence| of their bin:
    sum over bins of (count / n) * |accuracy - mean confidence|.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 goes to bin 0.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    mean_conf = _safe_div(conf_sum, count.astype(np.float64))
    accuracy = _safe_div(acc_sum, count.astype(np.float64))
    n = max(len(y_true), 1)
    ece = float(np.sum(count / n * np.abs(accuracy - mean_conf)))
    return {
        "ece": ece,
        "bin_edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": accuracy.tolist(),
    }


def classification_metrics(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str] | None = None,
    mistakes: int = 25,
) -> dict[str, Any]:
    """All the figures of a classification report, from true labels (n,) and probabilities (n, classes)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(y_true):
        raise ValueError(f"probabilities must be (n, classes) with n={len(y_true)}, got {probabilities.shape}")
    k = probabilities.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    y_pred = probabilities.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = support / max(support.sum(), 1)

    confidence = probabilities[np.arange(len(y_pred)), y_pred]
    wrong = np.flatnonzero(y_pred != y_true)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:mistakes]
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "count": len(y_true),
        "errors": len(wrong),
        "per_class": [
            {
                "class": names[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        ],
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted_avg": {
            "precision": float(precision @ weights),
            "recall": float(recall @ weights),
            "f1": float(f1 @ weights),
        },
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "calibration": calibration(y_true, probabilities),
        "most_confident_mistakes": [
            {
                "index": int(i),
                "true": int(y_true[i]),
                "predicted": int(y_pred[i]),
                "confidence": float(confidence[i]),
            }
            for i in worst
        ],
    }


def format_metrics(m: dict[str, Any], title: str = "") -> str:
    """A plain-text report: accuracy, per-class table, averages, confusion matrix, top mistakes."""
    names = m["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = []
    if title:
        lines += [title, "=" * len(title)]
    lines.append(f"accuracy {m['accuracy']:.4f}  ({m['count'] - m['errors']}/{m['count']}, {m['errors']} errors)")
    if "rejected" in m:
        lines.append(
            f"as predict answers: {m['read_right']:.4f} read right, {m['rejected']:.4f} answered 'not a digit' "
            "(accuracy above is the most likely digit of every image)"
        )
    lines.append("")
    lines.append(f"{'class':>{width}}  precision  recall     f1  support")
    for row in m["per_class"]:
        lines.append(
            f"{row['class']:>{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}"
            f"  {row['support']:7d}"
        )
    for label, key in (("macro avg", "macro_avg"), ("weighted", "weighted_avg")):
        a = m[key]
        lines.append(f"{label:>{width}}  {a['precision']:9.4f}  {a['recall']:6.4f}  {a['f1']:.4f}  {m['count']:7d}")
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    cm = m["confusion_matrix"]
    cell = max(4, len(str(max(max(r) for r in cm))) + 1)
    short = [n[: cell - 1] for n in names]
    lines.append(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(names, cm, strict=True):
        lines.append(f"{name:>{width}}" + "".join(f"{v:>{cell}}" for v in row))
    if m["most_confident_mistakes"]:
        lines.append("")
        lines.append("most confident mistakes (index: true -> predicted, confidence)")
        for e in m["most_confident_mistakes"][:10]:
            lines.append(f"  #{e['index']}: {names[e['true']]} -> {names[e['predicted']]}, {e['confidence']:.3f}")
    return "\n".join(lines)


def evaluate(
    model: str | os.PathLike | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    tta: float | None = None,
) -> dict[str, Any]:
    """Run a saved model (path, run directory, or None for the default) on a split and return its metrics.

    ``dataset`` defaults to the one the model was trained on. ``split`` is "test" or "validation"
    (the held-out end of the training set, as in training). ``tta``: test-time augmentation, as
    `load_recognizer` takes it (training's own figures are the network's alone: ``tta=0``).
    """
    from .reading.recognizer import load_recognizer

    rec = load_recognizer(model, tta=tta)
    metrics = evaluate_split(rec, dataset, data_dir, split)[0]
    metrics["model"] = str(rec.path)
    return metrics


def evaluate_split(
    rec: Any, dataset: str | None = None, data_dir: str | os.PathLike | None = None, split: str = "test"
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, Any]:
    """A loaded recognizer on a split: (metrics, the split's images and labels, the dataset).

    The dataset defaults to the model's own; "validation" is the held-out end of the training set,
    as in training. Shared by `evaluate` and the report, which also draws the images.
    """
    from .data import load_dataset, split_validation

    meta_data = rec.metadata.get("data", {})
    ds = load_dataset(dataset or meta_data.get("dataset", "mnist"), data_dir)
    if split == "test" or ds.whole:  # a labelled folder is one set: all of it, whichever split
        x, y = ds.x_test, ds.y_test
    elif split == "validation":
        _, (x, y) = split_validation(ds.x_train, ds.y_train, meta_data.get("validation", 5000))
    else:
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    probabilities, reject = rec.scores(x)
    metrics = classification_metrics(y, probabilities, ds.class_names)
    metrics.update(model=str(rec.path), dataset=ds.name, split=split, tta_degrees=rec.tta)
    if rec.reject_class is not None:
        # As `predict` answers: an image whose P(not a digit) reaches the threshold gets no digit.
        rejected = reject >= rec.reject_threshold
        metrics["rejected"] = float(rejected.mean()) if len(y) else 0.0
        metrics["read_right"] = float(np.mean((probabilities.argmax(axis=1) == y) & ~rejected)) if len(y) else 0.0
    return metrics, x, y, ds
