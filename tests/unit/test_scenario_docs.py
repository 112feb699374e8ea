"""docs/testing.md: every ``python`` block runs as written and prints what the text after it
says it prints (a ```text block or an inline ``prints `…` ``). ``py`` blocks are fragments."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
BLOCK = re.compile(
    r"^```python\n(?P<code>.*?)^```\n"
    r"(?:\nprints\n\n```text\n(?P<block>.*?)^```|\nprints `(?P<inline>[^`]*)`)?",
    re.S | re.M,
)


def examples() -> list[tuple[str, str | None]]:
    found = [
        (m["code"], m["block"] if m["block"] is not None else m["inline"])
        for m in BLOCK.finditer(DOC.read_text())
    ]
    assert len(found) >= 4, "docs/testing.md lost its runnable examples"
    return found


@pytest.mark.parametrize("index", range(len(examples())))
def test_doc_example_runs_and_prints_what_it_says(index: int, tmp_path: Path) -> None:
    code, expected = examples()[index]
    script = tmp_path / f"example_{index}.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if expected is not None:
        assert result.stdout.strip() == expected.strip()
