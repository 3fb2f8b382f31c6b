"""Read many images on a Ray cluster: Ray Data streams the inputs to actors that each hold the model.

May import Ray, PyArrow and the reading core (`recognizer`, `images`); never Keras or TensorFlow.

    digitrec batch scans/ --out answers.parquet                # a local cluster on this machine
    digitrec batch 'forms/*.jpg' --task read --address ray://head:10001 --out answers.jsonl

One row per input, the fields of `digitrec predict --json` (or `read --json`), an ``error`` for a
file that could not be read; a bad file never stops the run. Decoding and preprocessing run in the
actors; the driver only lists the inputs and writes the rows as they come (Ray Data's backpressure
bounds what is in flight).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BatchError", "batch", "list_inputs"]

TASKS = ("predict", "read")
FORMATS = ("parquet", "jsonl")
TABLE_SUFFIXES = (".parquet", ".csv")
BATCH_SIZE = 32  # images per call of an actor: large enough to amortise Ray's per-task cost
MAX_TABLE_ROWS = 100_000_000  # a table of inputs larger than this is refused, not half-read


class BatchError(Exception):
    """A batch could not start: bad inputs, output or cluster address."""


@dataclass(frozen=True)
class _Input:
    file: str  # the name the row carries
    path: str = ""  # read by the actor...
    data: bytes = b""  # ...or the image itself, from a table
    problem: str = ""  # why it cannot be read at all (a directory that cannot be searched)


def list_inputs(paths: Sequence[str]) -> Iterator[_Input]:
    """The inputs named by ``paths``: image files, directories (searched recursively, as `predict`
    does), glob patterns, and Parquet or CSV tables with a ``path`` column (file paths) or an ``image``
    column (the encoded images; ``file`` names them, else the row number)."""
    from ..reading.files import iter_images, shown_path

    for given in paths:
        if Path(given).suffix.lower() in TABLE_SUFFIXES and Path(given).is_file():
            yield from _table_inputs(Path(given))
            continue
        matches = sorted(glob.glob(given, recursive=True)) if glob.has_magic(given) else [given]
        if not matches:
            raise BatchError(f"{given}: no file matches this pattern")
        for path, problem in iter_images(matches):
            # A directory that cannot be searched is a row with its error, as in `predict`.
            yield _Input(shown_path(path), path=str(path), problem=problem or "")


def _table_inputs(table: Path) -> Iterator[_Input]:
    import pyarrow.csv
    import pyarrow.parquet

    try:
        t = pyarrow.parquet.read_table(table) if table.suffix.lower() == ".parquet" else pyarrow.csv.read_csv(table)
    except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError, ...)
        raise BatchError(f"{table}: cannot read it as a table ({e})") from None
    if t.num_rows > MAX_TABLE_ROWS:
        raise BatchError(f"{table}: {t.num_rows} rows, more than {MAX_TABLE_ROWS}")
    columns = set(t.column_names)
    if "path" in columns:
        names = t.column("file").to_pylist() if "file" in columns else None
        for k, p in enumerate(t.column("path").to_pylist()):
            yield _Input(str(names[k] if names else p), path=str(p))
    elif "image" in columns:
        names = t.column("file").to_pylist() if "file" in columns else None
        for k, data in enumerate(t.column("image").to_pylist()):
            yield _Input(str(names[k] if names else f"{table}#{k}"), data=bytes(data or b""))
    else:
        raise BatchError(f"{table}: no 'path' column (file paths) nor 'image' column (encoded images)")


class _Reader:
    """A Ray Data actor: loads the recognizer once, then answers batches of inputs with the rows to
    write, ready: an Arrow table in the output's schema, or the JSON lines (column ``line``). The
    driver then writes what comes without touching a row: parsing and building each row there cost
    0.23-0.38 ms of the driver's CPU an image (a one-off count of the processes' CPU time in /proc,
    2 AMD EPYC cores), a core of its own at 3,000-4,000 images a second in all."""

    def __init__(self, model: str | None, task: str, fmt: str) -> None:
        import cv2

        os.environ.setdefault("DIGITREC_THREADS", "1")  # an actor per core: one thread each
        cv2.setNumThreads(1)
        from ..reading.recognizer import load_recognizer

        self.recognizer = load_recognizer(model)
        self.task, self.fmt = task, fmt

    def __call__(self, rows: dict[str, Any]) -> Any:
        import pyarrow

        from ..reading.images import ImageError, read_image_file

        answer = self.recognizer.predict if self.task == "predict" else self.recognizer.read
        out = []
        for name, path, data, problem in zip(rows["file"], rows["path"], rows["data"], rows["problem"], strict=True):
            row: dict[str, Any] = {"file": str(name)}
            try:
                if problem:
                    raise ImageError(f"{name}: {problem}")
                image = read_image_file(path, name) if path else bytes(data)
                row.update(answer(image, name).to_dict())
            except ImageError as e:
                row["error"] = str(e)
            except Exception as e:  # a bug of ours must not cost the other rows
                row["error"] = f"internal error ({type(e).__name__}: {e}); please report it"
            out.append(row)
        if self.fmt == "jsonl":
            return {"line": [json.dumps(r) for r in out], "failed": ["error" in r for r in out]}
        return pyarrow.Table.from_pylist(out, schema=_schema(self.task))


def _cluster(address: str | None, log: Any) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise BatchError(f"cannot reach the Ray cluster at {address}: {e}") from None
    log(f"Ray cluster: {address or 'local'}, {int(ray.cluster_resources().get('CPU', 0))} CPUs")


def batch(
    paths: Sequence[str],
    out: str | os.PathLike,
    task: str = "predict",
    address: str | None = None,
    model: str | os.PathLike | None = None,
    fmt: str | None = None,
    actors: int | None = None,
    progress: bool = True,
    log: Any = print,
) -> dict[str, int]:
    """Answer every input of ``paths`` (see `list_inputs`) with ``task`` ("predict" or "read") on a
    Ray cluster (``address``, else $RAY_ADDRESS, else a local one), writing one row per input to
    ``out`` as Parquet or JSON lines (``fmt``, else from the suffix: ``.jsonl``/``.json`` are JSON
    lines, anything else Parquet). ``actors``: how many hold the model (default: one per CPU of the
    cluster). Returns {"rows": ..., "errors": ...}."""
    if task not in TASKS:
        raise BatchError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    out = Path(out)
    fmt = fmt or ("jsonl" if out.suffix.lower() in (".jsonl", ".json") else "parquet")
    if fmt not in FORMATS:
        raise BatchError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out.is_dir():
        raise BatchError(f"{out}: a directory; give the file to write")
    inputs = list(list_inputs(paths))
    if not inputs:
        raise BatchError(f"no images in {', '.join(paths)}")
    _cluster(address, log)
    import pyarrow
    import pyarrow.compute
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come out in the order of the inputs
    context.enable_progress_bars = progress
    rows = [{"file": i.file, "path": i.path, "data": i.data, "problem": i.problem} for i in inputs]
    n_actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // BATCH_SIZE, 10 * n_actors)))
    answered = ds.map_batches(
        _Reader,
        fn_constructor_kwargs={"model": None if model is None else str(model), "task": task, "fmt": fmt},
        batch_size=BATCH_SIZE,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=1,
        # No retry settings: Ray Data's actor pools (2.60) replace an actor that dies and run its batch
        # again (max_restarts and max_task_retries -1 by default; passing them is deprecated), so no row is
        # lost or written twice; tests/test_batch.py kills an actor mid-run to check it.
    )
    written = errors = 0
    tmp = out.with_name(f".{out.name}.partial")
    with _Writer(tmp, fmt, task) as writer:
        for part in answered.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.write(part)
            written += part.num_rows
            failed = part.column("failed") if fmt == "jsonl" else part.column("error").is_valid()
            errors += int(pyarrow.compute.sum(failed).as_py() or 0)
    os.replace(tmp, out)
    return {"rows": written, "errors": errors}


class _Writer:
    """The actors' rows to one file, as they come: JSON lines, or Parquet row groups of about
    ROWS_PER_GROUP (the actors' tables gathered until there are that many)."""

    ROWS_PER_GROUP = 10_000

    def __init__(self, path: Path, fmt: str, task: str) -> None:
        self.path, self.fmt, self.task = path, fmt, task
        self.pending: list[Any] = []
        self.rows = 0

    def __enter__(self) -> _Writer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "jsonl":
            self.file = self.path.open("w", encoding="utf-8")
        else:
            import pyarrow.parquet

            self.file = pyarrow.parquet.ParquetWriter(self.path, _schema(self.task))
        return self

    def write(self, table: Any) -> None:
        if self.fmt == "jsonl":
            self.file.writelines(line + "\n" for line in table.column("line").to_pylist())
            return
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= self.ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow

        if self.pending:
            self.file.write_table(pyarrow.concat_tables(self.pending))
            self.pending, self.rows = [], 0

    def __exit__(self, kind: Any, *_: Any) -> None:
        if self.fmt != "jsonl":
            self._flush()
        self.file.close()
        if kind is not None:
            self.path.unlink(missing_ok=True)


def _schema(task: str) -> Any:
    import pyarrow as pa

    if task == "predict":
        fields = [
            ("file", pa.string()),
            ("digit", pa.int8()),
            ("confidence", pa.float32()),
            ("probabilities", pa.list_(pa.float32())),
            ("reason", pa.string()),
        ]
    else:
        box = pa.struct([("digit", pa.int8()), ("confidence", pa.float32()), ("box", pa.list_(pa.int32()))])
        fields = [("file", pa.string()), ("text", pa.string()), ("confidence", pa.float32()), ("digits", pa.list_(box))]
    return pa.schema([*fields, ("error", pa.string())])
