"""The documentation's runnable code blocks run (README.md and docs/**/*.md).

A fenced block is runnable when the line just before its opening fence is the marker
`<!-- docs-test -->`. By language:

- python: executed in a fresh namespace, in a temporary working directory;
- bash: run with `bash -euo pipefail` in a temporary working directory;
- toml: parsed and expanded as a sweep spec (`errorforcing sweep --dry-run` without the printing).

Only cheap blocks are marked (seconds each); commands that train for minutes stay unmarked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- docs-test -->"
FENCE = re.compile(r"^(`{3,})(\w+)[^\n]*\n(.*?)^\1\s*$", re.S | re.M)


def documents() -> list[Path]:
    generated = ROOT / "docs" / "tutorials"  # mkdocs-gallery output, executed by the docs build
    return [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md") if generated not in p.parents)


def runnable_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every block whose opening fence follows the marker."""
    blocks = []
    for m in FENCE.finditer(text):
        if text[:m.start()].endswith(MARKER + "\n"):
            blocks.append((text.count("\n", 0, m.start()) + 1, m.group(2), m.group(3)))
    return blocks


BLOCKS = [pytest.param(path, lang, code, id=f"{path.relative_to(ROOT)}:{line}:{lang}")
          for path in documents() for line, lang, code in runnable_blocks(path.read_text())]


def test_collector_finds_marked_blocks_and_only_those():
    text = f"x\n{MARKER}\n```python\nA = 1\n```\n\n```python\nB = 2\n```\n{MARKER}\n\n```bash\necho no\n```\n"
    assert [(lang, code) for _, lang, code in runnable_blocks(text)] == [("python", "A = 1\n")]
    assert len(BLOCKS) >= 3, "the docs should keep a few runnable blocks"


@pytest.mark.parametrize("path, lang, code", BLOCKS)
def test_block_runs(path, lang, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if lang == "python":
        exec(compile(code, f"{path.name} block", "exec"), {"__name__": "__docs__"})
    elif lang in ("bash", "sh"):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{path.name} block failed:\n{code}\n{done.stdout}\n{done.stderr}"
    elif lang == "toml":
        from errorforcing.experiments._sweep import expand, parse_spec

        plan = expand(parse_spec(code))
        assert plan.jobs
    else:
        pytest.fail(f"{path.name}: no runner for marked {lang!r} blocks")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    line = next(x for x in readme if "python -m pytest -q" in x and x.startswith("python3 -m venv"))
    command = line.split("  #")[0].strip()
    assert command in [x.strip() for x in (ROOT / ".ci" / "run").read_text().splitlines()]
