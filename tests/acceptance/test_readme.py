"""Every ``python`` block of the README is a complete program that runs as pasted.

Each block starts with a ``# name.py`` comment: the file a reader saves it as. All of
them are saved into one fresh directory (``test_orders.py`` imports ``orders.py``, as a
reader's would), then each is run on its own, in a fresh interpreter against a fresh
database, and must print what the README says it prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```python\n# (?P<name>[a-z_]+\.py)\b[^\n]*\n(?P<code>.*?)^```", re.S | re.M)

#: What each program prints (fragments of its output, in any order).
EXPECTED = {
    "send_and_work.py": [
        "COMPLETED after 2 attempts",
        "SUCCESS {'debited': 100}",
        "RETRY_SCHEDULED",
    ],
    "in_your_transaction.py": [
        "sent with the order: PENDING",
        "rolled back with the order: None",
    ],
    "sync_send.py": [
        "committed: PENDING",
        "rolled back: None",
    ],
    "troubleshooting.py": [
        "Refund NO_ACCOUNT {'amount': 5}",
        "COMPLETED\nCANCELED\nCOMPLETED",
    ],
    "batches.py": [
        "COMPLETED_WITH_FAILURES 3 2 1",
        "notice: march COMPLETED_WITH_FAILURES",
    ],
    "orders.py": [
        "COMPLETED OrderState(order_id='42', amount=990, reservation='R-42', payment='P-1')",
        "charge_card ChargeCard SUCCESS",
    ],
    "events.py": [
        "refused: 1 event(s) already there",
        "handled: 1",
        "handled again: 0",
        "[('Thanks for order order-42: 30 EUR',)]",
    ],
    "test_orders.py": [],
}


def programs() -> dict[str, str]:
    text = README.read_text()
    found = {m["name"]: m["code"] for m in BLOCK.finditer(text)}
    assert text.count("```python\n") == len(found), "every python block names its file"
    assert text.count("```py\n") == 0, "no fragments: every example is a program"
    return found


def test_every_python_block_is_a_named_program_with_expectations() -> None:
    assert list(programs()) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_readme_program_runs_as_pasted(name: str, pg_dsn: str, tmp_path: Path) -> None:
    for file_name, code in programs().items():
        (tmp_path / file_name).write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMANDBUS_")}
    env["DATABASE_URL"] = pg_dsn
    env.pop("PYTHONPATH", None)  # only what a user's environment has: commandbus installed
    result = subprocess.run(
        [sys.executable, name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for fragment in EXPECTED[name]:
        assert fragment in result.stdout, (fragment, result.stdout)
