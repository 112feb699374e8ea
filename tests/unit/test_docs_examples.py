"""docs/*.md: every ``python`` block is a complete program that runs as written and prints
what the text after it says it prints (a ```text block or an inline ``prints `…` ``). A
block whose first line names a ``test_*.py`` file is a pytest file: it runs under pytest,
and must pass. (The README's programs: tests/acceptance/test_readme.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Each document with its least number of runnable examples (so none silently vanish).
DOCS = {
    "testing.md": 6,
    "process-manager.md": 2,
    "events.md": 4,
    "observability.md": 1,
    "dsl.md": 5,
    "batches.md": 2,
    "scaling.md": 1,
}
BLOCK = re.compile(
    r"^```python\n(?P<code>.*?)^```\n"
    r"(?:\nprints\n\n```text\n(?P<block>.*?)^```|\nprints `(?P<inline>[^`]*)`)?",
    re.S | re.M,
)


def examples(doc: str) -> list[tuple[str, str | None]]:
    text = (ROOT / "docs" / doc).read_text()
    found = [
        (m["code"], m["block"] if m["block"] is not None else m["inline"])
        for m in BLOCK.finditer(text)
    ]
    assert len(found) >= DOCS[doc], f"docs/{doc} lost its runnable examples"
    assert text.count("```py\n") == 0, f"docs/{doc} has a fragment: make it a program"
    return found


def test_every_doc_with_code_is_checked() -> None:
    with_code = {p.name for p in (ROOT / "docs").glob("*.md") if "```python" in p.read_text()}
    assert with_code == set(DOCS)


@pytest.mark.parametrize(
    ("doc", "index"), [(doc, i) for doc in DOCS for i in range(len(examples(doc)))]
)
def test_doc_example_runs_and_prints_what_it_says(doc: str, index: int, tmp_path: Path) -> None:
    code, expected = examples(doc)[index]
    named = re.match(r"# (test_[a-z_]+\.py)", code)
    script = tmp_path / (named.group(1) if named else f"example_{index}.py")
    script.write_text(code)
    # A block that is a pytest file runs under pytest, as its first line says.
    command = (
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "asyncio_mode=auto", "--rootdir", str(tmp_path), str(script)]
        if named
        else [sys.executable, str(script)]
    )  # fmt: skip
    result = subprocess.run(
        command,
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
