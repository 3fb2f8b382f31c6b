"""The package's layout by job: `reading/` (the core a lean install runs), `training/`, `serving/`, and
the modules beside them. No import cycles; reading and serving never import training, nor Keras or
TensorFlow when the model runs in ONNX Runtime."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "digitrec"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each digitrec module -> the digitrec modules it imports anywhere in its code (lazy imports too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            graph[name] |= {c for c in candidates if c in modules and c != name and not c.endswith("digitrec")}
    return graph


def test_no_import_cycles() -> None:
    graph = _imports()
    assert graph.get("digitrec.reading.recognizer"), "the graph is empty"
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(other) :], other]))
            if other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_reading_and_serving_never_import_training() -> None:
    for module, imported in _imports().items():
        if module.startswith(("digitrec.reading", "digitrec.serving")):
            assert not {m for m in imported if m.startswith("digitrec.training")}, module


def test_reading_and_serving_run_without_keras_or_tensorflow(tmp_path: Path, mnist) -> None:
    """In a fresh interpreter: predict a photographed digit, read a photographed number and build the
    API; neither Keras nor TensorFlow is imported."""
    from PIL import Image

    from digitrec.training import synth

    (_, _), (x, y) = mnist
    digit = tmp_path / "digit.jpg"
    digit.write_bytes(synth.as_photo(x[0], np.random.default_rng(0)))
    number = tmp_path / "number.png"
    strip = 255 - np.concatenate([x[i] for i in range(1, 4)], axis=1)
    Image.fromarray(strip).resize((252, 84)).save(number)
    code = (
        "import json, sys\n"
        "from digitrec.reading.recognizer import load_recognizer\n"
        "from digitrec.serving.server import ServerConfig, create_app\n"
        "rec = load_recognizer()\n"
        f"p = rec.predict({str(digit)!r})\n"
        f"r = rec.read({str(number)!r})\n"
        "create_app(rec, ServerConfig(ui=False))\n"
        "print(json.dumps({'engine': rec.engine, 'digit': p.digit, 'text': r.text,"
        " 'loaded': sorted(m for m in ('keras', 'tensorflow') if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["engine"] == "onnx" and answer["loaded"] == []
    assert answer["digit"] == int(y[0])
    assert answer["text"] == "".join(str(int(v)) for v in y[1:4])
