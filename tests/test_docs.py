"""The documentation: no development notes in the user's pages, and the README's tour runs as shown."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def doc_pages() -> list[Path]:
    """README.md and every Markdown page under docs/ (docs/report/ is a generated report, not a page)."""
    pages = [README, *sorted(DOCS.rglob("*.md"))]
    return [p for p in pages if (DOCS / "report") not in p.parents]


# Words that belong to a lab journal, not to a user's guide: the work sessions the project was built
# in, scripts thrown away after one measurement, and temporary paths.
SESSION = re.compile(
    r"\b(this|that|next|previous|earlier|later|each|every|\w+th|first|second|third|[0-9]+(st|nd|rd|th)?)"
    r"[- ]sessions?\b|\bsessions?[- ][0-9]+",
    re.IGNORECASE,
)
SCRATCH = re.compile(r"\bthrow-?away\b|\bscratch[- ]scripts?\b", re.IGNORECASE)
TMP_PATH = re.compile(r"(?<![\w.])/tmp/")
RUN_FOLDER = re.compile(r"(?<![\w/.])runs/([A-Za-z0-9_.-]+)")


def allowed_run_folders() -> set[str]:
    """The run folders that the docs' own commands (and the Makefile) create."""
    names = {"quick", "NAME"}  # make run's RUN_DIR; a placeholder
    sources = [p.read_text() for p in doc_pages()] + [(ROOT / "Makefile").read_text()]
    for text in sources:
        names.update(re.findall(r"--(?:out|tutorial-model)[ =]runs/([A-Za-z0-9_.-]+)", text))
        names.update(re.findall(r"""\bout=["']runs/([A-Za-z0-9_.-]+)""", text))
        names.update(re.findall(r"RUN_DIR\s*\??=\s*runs/([A-Za-z0-9_.-]+)", text))
    return names


def test_pages_hold_no_development_notes() -> None:
    allowed = allowed_run_folders()
    problems = []
    for page in doc_pages():
        for number, line in enumerate(page.read_text().splitlines(), 1):
            where = f"{page.relative_to(ROOT)}:{number}"
            for pattern, what in (
                (SESSION, "a work session"),
                (SCRATCH, "a throw-away script"),
                (TMP_PATH, "a /tmp path"),
            ):
                if match := pattern.search(line):
                    problems.append(f"{where}: {what}: {match.group(0)!r}")
            for match in RUN_FOLDER.finditer(line):
                name = match.group(1).rstrip(".")
                if name.split("/")[0] not in allowed:
                    problems.append(f"{where}: a run folder the docs do not create: runs/{name}")
    assert not problems, "\n".join(problems)


def test_the_check_catches_what_it_should() -> None:
    for text in ("the eleventh session's machine", "this session", "sessions 16-17", "the 3rd session", "session-17"):
        assert SESSION.search(text), text
    for text in ("a browser's session", "Gradio keeps a session in one process", "the session fixture"):
        assert not SESSION.search(text), text
    assert SCRATCH.search("a throw-away script") and SCRATCH.search("a scratch script")
    assert TMP_PATH.search("`/tmp/s17/forms.py`") and not TMP_PATH.search("$TMPDIR")
    assert RUN_FOLDER.search("`runs/tr0`").group(1) == "tr0"
    assert {"quick", "fast"} <= allowed_run_folders()


def tour_blocks() -> list[tuple[str, str]]:
    """The fenced code blocks of the README's tour section, as (language, code)."""
    text = README.read_text()
    start = re.search(r"^## .*tour.*$", text, re.IGNORECASE | re.MULTILINE)
    assert start, "README.md has no tour section"
    end = re.search(r"^## ", text[start.end() :], re.MULTILINE)
    section = text[start.end() : start.end() + end.start()] if end else text[start.end() :]
    return re.findall(r"^```(\w+)\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def tour_commands() -> list[str]:
    commands = []
    for language, code in tour_blocks():
        if language == "sh":
            for line in code.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith("digitrec "):
                    commands.append(line)
    return commands


def test_the_tour_is_shown_and_cheap() -> None:
    commands = tour_commands()
    assert any(c.startswith("digitrec predict") for c in commands), commands
    assert any(lang == "python" for lang, _ in tour_blocks())
    for command in commands:  # the tour must stay fast: no training beyond the `fast` preset
        words = shlex.split(command)
        if words[1] == "train":
            assert "--preset" in words and words[words.index("--preset") + 1] == "fast", command


@pytest.fixture
def tour_dir(tmp_path: Path, digitrec_home: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder holding the README's images where the README names them (docs/images)."""
    shutil.copytree(DOCS / "images", tmp_path / "docs" / "images")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_tour_commands_run(tour_dir: Path) -> None:
    """Each `digitrec ...` line of the tour, in order (a later one may use what an earlier one made)."""
    executable = Path(sys.executable).parent / "digitrec"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for command in tour_commands():
        words = shlex.split(command)
        result = subprocess.run(
            [str(executable), *words[1:]], cwd=tour_dir, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def test_tour_python_runs(tour_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = [code for language, code in tour_blocks() if language == "python"]
    for code in blocks:
        exec(compile(code, "README.md (tour)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("7 "), out  # the photographed 7 is read as 7
    assert "90210" in out
