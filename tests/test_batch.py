"""`digitrec batch`: many images on a (local) Ray cluster, one row each, none lost when an actor dies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'digitrec[distributed]')")
pq = pytest.importorskip("pyarrow.parquet")

from digitrec.serving.batch import BatchError, _schema, batch, list_inputs  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "scans"
    (d / "sub").mkdir(parents=True)
    shutil.copy(IMAGES / "seven.jpg", d / "seven.jpg")
    shutil.copy(IMAGES / "number.jpg", d / "sub" / "number.jpg")
    (d / "bad.png").write_bytes(b"%PDF-1.4 not an image")
    return d


def test_inputs_come_from_files_folders_globs_and_tables(folder: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    names = sorted(Path(i.file).name for i in list_inputs([str(folder)]))
    assert names == ["bad.png", "number.jpg", "seven.jpg"]
    assert [Path(i.file).name for i in list_inputs([str(folder / "*.jpg")])] == ["seven.jpg"]
    (tmp_path / "paths.csv").write_text(f"path\n{folder / 'seven.jpg'}\n{folder / 'sub' / 'number.jpg'}\n")
    assert [i.path for i in list_inputs([str(tmp_path / "paths.csv")])] == [
        str(folder / "seven.jpg"),
        str(folder / "sub" / "number.jpg"),
    ]
    table = pa.table({"file": ["a", "b"], "image": [(IMAGES / "seven.jpg").read_bytes(), b"junk"]})
    pq.write_table(table, tmp_path / "images.parquet")
    rows = list(list_inputs([str(tmp_path / "images.parquet")]))
    assert [r.file for r in rows] == ["a", "b"] and rows[0].data[:2] == b"\xff\xd8"
    with pytest.raises(BatchError, match="no file matches"):
        list(list_inputs([str(tmp_path / "*.tif")]))
    (tmp_path / "other.csv").write_text("name\nx\n")
    with pytest.raises(BatchError, match="no 'path' column"):
        list(list_inputs([str(tmp_path / "other.csv")]))


def test_predict_writes_a_row_per_input_with_predicts_fields(cluster, folder: Path, tmp_path: Path) -> None:
    from digitrec import load_recognizer

    out = tmp_path / "answers.parquet"
    done = batch([str(folder)], out, actors=2, progress=False, log=lambda *a: None)
    assert done == {"rows": 3, "errors": 1}
    rows = {Path(r["file"]).name: r for r in pq.read_table(out).to_pylist()}
    assert rows["seven.jpg"]["digit"] == 7 and rows["seven.jpg"]["error"] is None
    expected = load_recognizer().predict(folder / "seven.jpg")
    assert rows["seven.jpg"]["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert np.allclose(rows["seven.jpg"]["probabilities"], expected.probabilities, atol=1e-6)
    assert "not an image" in rows["bad.png"]["error"] and rows["bad.png"]["digit"] is None
    assert pq.read_schema(out) == _schema("predict")  # the actors' tables are written as they are


def test_read_writes_parquet_rows_with_reads_fields_and_their_boxes(cluster, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.parquet"
    assert batch([str(folder / "sub")], out, task="read", actors=1, progress=False, log=lambda *a: None) == {
        "rows": 1,
        "errors": 0,
    }
    (row,) = pq.read_table(out).to_pylist()
    assert row["text"] == "90210" and row["error"] is None
    assert [d["digit"] for d in row["digits"]] == [9, 0, 2, 1, 0] and all(len(d["box"]) == 4 for d in row["digits"])


def test_read_writes_json_lines_with_reads_fields(cluster, folder: Path, tmp_path: Path) -> None:
    from digitrec.cli import main

    out = tmp_path / "answers.jsonl"
    assert main(["batch", str(folder / "sub"), "--task", "read", "--out", str(out), "--actors", "1"]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["text"] == "90210" and len(row["digits"]) == 5 and "error" not in row


def _actor_pids(busy: bool = False) -> list[int]:
    """The processes of Ray Data actors holding the model (``busy``: answering a batch now)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in cmdline and (not busy or b".submit" in cmdline):
                pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actors' processes through /proc")
def test_an_actor_killed_mid_run_loses_and_duplicates_no_row(cluster, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(2000):
        shutil.copy(IMAGES / ("seven.jpg" if k % 2 else "number.jpg"), folder / f"{k:04d}.jpg")
    out = tmp_path / "answers.parquet"
    result: dict = {}
    run = threading.Thread(
        target=lambda: result.update(batch([str(folder)], out, actors=2, progress=False, log=lambda *a: None))
    )
    before = set(_actor_pids())  # idle actors of earlier runs are not this run's
    run.start()
    deadline = time.monotonic() + 120
    victims: list[int] = []
    while not victims and run.is_alive() and time.monotonic() < deadline:
        victims = [p for p in _actor_pids(busy=True) if p not in before]
        time.sleep(0.1)
    assert victims, "no actor of this run was seen answering"
    os.kill(victims[0], signal.SIGKILL)
    run.join(timeout=600)
    assert not run.is_alive(), "the run did not finish after its actor was killed"
    assert result == {"rows": 2000, "errors": 0}
    files = [Path(f).name for f in pq.read_table(out).column("file").to_pylist()]
    assert files == sorted(f"{k:04d}.jpg" for k in range(2000))  # each once, in the inputs' order


def test_bad_arguments_are_refused_before_the_cluster_starts(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="task must be one of"):
        batch([str(IMAGES)], tmp_path / "x.parquet", task="guess")
    with pytest.raises(BatchError, match="a directory"):
        batch([str(IMAGES)], tmp_path)
