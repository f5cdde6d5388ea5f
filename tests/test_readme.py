"""Every ```python block of README.md runs as written, in order, in one fresh interpreter in a
temporary folder, so that the examples cannot rot.

A block whose first line is a ``# needs: <what>`` comment runs only where that is here:
``torch`` (the optional extra; the block is skipped, with the reason, without it) or
``network``/``gpu`` (never here: skipped).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NEEDS = re.compile(r"^#\s*needs:\s*(\w+)")


def blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block, in order."""
    out, code, start = [], None, 0
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if code is None and line.strip() == "```python":
            code, start = [], number + 1
        elif code is not None and line.strip() == "```":
            out.append((start, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    assert code is None, "unclosed ```python block"
    return out


def _missing(need: str) -> str | None:
    """Why a block that needs ``need`` cannot run here, or None when it can."""
    if need == "torch":
        return None if importlib.util.find_spec("torch") else "torch is the optional `torch` extra"
    if need in ("network", "gpu"):
        return f"needs a {need}, which this machine has not"
    raise AssertionError(f"README marks a block '# needs: {need}', a need this test does not know")


RUNNER = """
import json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    except BaseException:
        print(f"README block at line {line} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def _need(code: str) -> str | None:
    match = NEEDS.match(code)
    return match.group(1) if match else None


def test_readme_has_python_blocks():
    assert len(blocks()) >= 6


def test_every_python_block_runs_in_order(tmp_path):
    """Each block that can run here runs, after the ones before it, in one interpreter."""
    runnable = [(line, code) for line, code in blocks() if not _why_not(code)]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(runnable),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _why_not(code: str) -> str | None:
    need = _need(code)
    return _missing(need) if need else None


@pytest.mark.parametrize(
    "line",
    [line for line, code in blocks() if _need(code)]
    or [pytest.param(0, marks=pytest.mark.skip(reason="no marked block"))],
)
def test_marked_blocks_run_where_they_can(line):
    """A marked block ran in the test above where its need is met; else it is skipped here,
    with the reason."""
    code = dict(blocks())[line]
    why = _why_not(code)
    if why:
        pytest.skip(f"README.md:{line}: {why}")
