"""The evaluation report: it builds from a tiny model, its figures are real PNGs, its numbers are right."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.cli import main
from digitrec.evaluate import calibration
from digitrec.report import plot_mistakes

FIGURES = ("samples.png", "history.png", "confusion_matrix.png", "mistakes.png", "reliability.png")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from digitrec.report import build_report

    return build_report(tiny_run.run_dir, tmp_path_factory.mktemp("report"))


def test_every_figure_is_a_valid_png(report: Path) -> None:
    for name in FIGURES:
        path = report.parent / name
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) >= 300, (name, im.size)
            pixels = np.asarray(im.convert("L"))
        assert pixels.std() > 10, f"{name} looks blank"


def test_report_is_self_contained_html(report: Path) -> None:
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(FIGURES)
    assert 'src="http' not in page and "<script" not in page
    for text in ("Model card", "Per-class precision", "macro avg", "weighted avg", "Expected calibration error"):
        assert text in page
    assert "seed-cnn" in page and "data sha256" in page


def test_metrics_json_matches_an_independent_computation(report: Path, tiny_run, mnist) -> None:
    from digitrec import load_recognizer

    metrics = json.loads((report.parent / "metrics.json").read_text())
    (x_test, y_test) = mnist[1]
    pred = load_recognizer(tiny_run.run_dir).predict_arrays(x_test).argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(pred == y_test)))
    for c, row in enumerate(metrics["per_class"]):
        tp = int(np.sum((pred == c) & (y_test == c)))
        fp = int(np.sum((pred == c) & (y_test != c)))
        fn = int(np.sum((pred != c) & (y_test == c)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        assert row["support"] == tp + fn
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert row["f1"] == pytest.approx(f1)
    assert sum(map(sum, metrics["confusion_matrix"])) == 10000


def test_ece_by_hand() -> None:
    # Two bins of interest: four images at confidence 0.9 (3 right), two at 0.6 (both wrong).
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    cal = calibration(y, probs, bins=10)
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(0.0 - 0.6)
    assert cal["ece"] == pytest.approx(expected)
    assert sum(cal["count"]) == 6 and cal["count"][8] == 4 and cal["count"][5] == 2


def test_no_mistakes_still_draws(tmp_path: Path) -> None:
    path = plot_mistakes(np.zeros((1, 28, 28), np.uint8), [], list("0123456789"), tmp_path / "m.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= 100
        gray = np.asarray(im.convert("L"))
    assert gray.std() > 5 and (gray < 128).mean() < 0.2  # dark text on a white page, not a blank image


def test_cli_report_and_show(tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", str(tiny_run.run_dir), "--report", str(tmp_path / "r")]) == 0
    assert "Report:" in capsys.readouterr().out
    assert (tmp_path / "r" / "report.html").is_file()
    assert main(["show", "--split", "validation", "-n", "12", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as im:
        assert im.format == "PNG"


def test_a_fine_tuned_models_card_lists_the_sets_of_the_models_it_started_from() -> None:
    """A set only the starting model learnt from is listed once, saying whose it was; a set both list
    appears once, as the tuned model's own; and the lineage names each model back to the first."""
    from digitrec.report import model_card

    def entry(name: str, role: str, sha: str) -> dict:
        return {"path": f"data/{name}", "role": role, "images": 10, "sha256": sha, "source": "s", "licence": "l"}

    first = {"architecture": "digitnet", "content_sha256": "a" * 64, "config": {"epochs": 36}}
    first["data"] = {"dataset": "mnist", "extra": [entry("old", "training", "1"), entry("both", "training", "2")]}
    second = {"architecture": "digitnet", "content_sha256": "b" * 64, "config": {"epochs": 6}, "init": first}
    second["data"] = {"dataset": "mnist", "extra": [entry("mine", "training", "3")]}
    second["path"], first["path"] = "runs/second", "runs/first"
    meta = {"data": {"dataset": "mnist", "extra": [entry("both", "training", "2")]}, "init": second}
    card = model_card(meta, None)
    listed = card["other data (role: folder, images, writers; source; licence as stated)"].split("; source")
    assert len(listed) == 4  # both (own), mine and old (of the starting models): three sets
    text = "; source".join(listed)
    assert text.count("data/both") == 1 and text.startswith("training: data/both")
    assert "training (of the model it started from): data/mine" in text
    assert "training (of the model it started from): data/old" in text
    lineage = card["fine-tuned from"]
    assert lineage.index("runs/second (content sha256 bbbbbbbbbbbb") < lineage.index("which started from runs/first")
    assert "36 epochs on mnist + old + both" in lineage
