"""Metrics against an independent, by-hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.evaluate import classification_metrics, confusion_matrix, format_metrics


def _one_hot_probs(pred: list[int], k: int, conf: list[float]) -> np.ndarray:
    p = np.full((len(pred), k), 0.0)
    for i, (c, q) in enumerate(zip(pred, conf, strict=True)):
        p[i] = (1 - q) / (k - 1)
        p[i, c] = q
    return p


def test_metrics_match_a_hand_computation() -> None:
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0, 2]
    conf = [0.9, 0.8, 0.95, 0.7, 0.6, 0.9, 0.9, 0.9, 0.99, 0.5]
    m = classification_metrics(np.array(y_true), _one_hot_probs(y_pred, 3, conf), ["a", "b", "c"])
    # By hand: class a: TP 2, predicted 3 (idx 0,1,8), support 3 -> P 2/3, R 2/3
    #          class b: TP 1, predicted 2 (idx 2,3), support 2 -> P 1/2, R 1/2
    #          class c: TP 4, predicted 5 (idx 4,5,6,7,9), support 5 -> P 4/5, R 4/5
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["errors"] == 3
    p = [row["precision"] for row in m["per_class"]]
    r = [row["recall"] for row in m["per_class"]]
    assert p == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert r == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert m["per_class"][2]["f1"] == pytest.approx(0.8)
    assert [row["support"] for row in m["per_class"]] == [3, 2, 5]
    assert m["macro_avg"]["f1"] == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    assert m["weighted_avg"]["recall"] == pytest.approx(0.7)  # weighted recall equals accuracy
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]
    # Mistakes, most confident first: idx 8 (0.99), idx 2 (0.95), idx 4 (0.6).
    assert [e["index"] for e in m["most_confident_mistakes"]] == [8, 2, 4]
    assert m["most_confident_mistakes"][0] == {"index": 8, "true": 2, "predicted": 0, "confidence": 0.99}


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    m = classification_metrics(np.array([0, 1]), _one_hot_probs([0, 0], 2, [0.9, 0.9]))
    assert m["per_class"][1] == {"class": "1", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix(np.array([1, 1, 2]), np.array([1, 2, 2]), 3)
    assert cm.tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_report_text_names_every_class() -> None:
    m = classification_metrics(np.arange(10), np.eye(10))
    text = format_metrics(m, "demo")
    assert "accuracy 1.0000" in text
    assert all(f"\n{d:>8}  " in text for d in "0123456789")
