"""What the tests that run the ``commandbus`` CLI in a subprocess share."""

from __future__ import annotations

import os


def cli_environment() -> dict[str, str]:
    """This process's environment without its database URL and without any commandbus
    or OpenTelemetry setting: a CLI subprocess sees only what its test then adds."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMMANDBUS_", "OTEL_")) and k != "DATABASE_URL"
    }
