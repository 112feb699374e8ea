"""Every test under tests/integration needs a real PostgreSQL: mark it ``integration``.

``backend``: the same test on the in-memory backend and on PostgreSQL (both must behave
alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from commandbus.memory import InMemoryBackend

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return InMemoryBackend()
    return request.getfixturevalue("pg_backend")
