"""The ``commandbus`` command line (``commandbus --help``, or ``python -m commandbus``)."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    from commandbus.cli.main import main as _main

    _main()
