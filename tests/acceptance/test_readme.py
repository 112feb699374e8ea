"""The README's ``python`` blocks run as written (``py`` blocks are fragments).

The blocks are concatenated in order — later ones use names defined earlier, as a reader
would — and run in a fresh interpreter against a fresh database, like a user pasting them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_program() -> str:
    blocks = BLOCK.findall(README.read_text())
    assert len(blocks) >= 3, "the README lost its runnable examples"
    return "\n\n".join(blocks)


def test_readme_examples_run_and_print_what_they_claim(pg_dsn: str, tmp_path: Path) -> None:
    script = tmp_path / "readme_examples.py"
    script.write_text(readme_program())
    env = {**os.environ, "DATABASE_URL": pg_dsn}
    env.pop("COMMANDBUS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=README.parent,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "COMPLETED after 2 attempts" in out
    assert "SUCCESS {'debited': 100}" in out
    assert "RETRY_SCHEDULED" in out
    assert (
        "COMPLETED OrderState(order_id='42', amount=990, reservation='R-42', payment='P-1')" in out
    )
    assert "charge_card ChargeCard SUCCESS" in out
