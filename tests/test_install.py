"""The lean install: the wheel without extras reads digits with NumPy, Pillow, OpenCV and ONNX Runtime
alone, and a command that needs an extra says which, in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_without_extras_reads_digits_without_tensorflow(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # An sdist, and the wheel built from it (what `python -m build` does): the sdist holds all the wheel needs.
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
    )
    (sdist,) = (tmp_path / "dist").glob("digitrec-*.tar.gz")
    import tarfile

    with tarfile.open(sdist) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"default.onnx", "pyproject.toml", "LICENSE"} <= names
    (wheel,) = (tmp_path / "dist").glob("digitrec-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], check=True, env=env, timeout=600)
    digitrec = str(venv / "bin" / "digitrec")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([digitrec, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)

    seven = run("predict", "--json", str(ROOT / "docs" / "images" / "seven.jpg"))
    assert seven.returncode == 0, seven.stderr
    assert json.loads(seven.stdout)["digit"] == 7
    number = run("read", "--json", str(ROOT / "docs" / "images" / "number.jpg"))
    assert number.returncode == 0 and json.loads(number.stdout)["text"] == "90210", number.stderr
    assert run("info").returncode == 0
    # Nothing of the other jobs was installed, or imported on the way.
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print([m for m in "
            "('tensorflow', 'keras', 'gradio', 'fastapi', 'matplotlib') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]"
    for command, extra in (("train", "train"), ("serve", "serve")):
        answer = run(command) if command == "train" else run(command, "--no-ui", "--port", "1")
        assert answer.returncode == 1 and f"pip install 'digitrec[{extra}]'" in answer.stderr, answer.stderr
        assert "Traceback" not in answer.stderr
