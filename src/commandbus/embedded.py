"""A database URL with zero setup: the configured server, or an embedded PostgreSQL.

``database_url()`` returns ``COMMANDBUS_DATABASE_URL`` or ``DATABASE_URL`` when set.
Otherwise it boots a real PostgreSQL server from the ``pgserver`` package (install
``commandbus[embedded]``) with its data in a local directory (``.commandbus/pgdata``
under the current directory by default), listening on a Unix socket inside that
directory only, and returns its URL. The server is stopped when the last process using
it exits; its data stays for the next run.

PostgreSQL refuses to run as root. When the current user is root, ``pgserver`` runs the
server as a system user named ``pgserver`` (created with ``useradd`` if missing), makes
the data directory its own and makes the directories above it traversable by others.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from commandbus.errors import CommandBusError

#: Environment variables read, in this order.
URL_VARIABLES = ("COMMANDBUS_DATABASE_URL", "DATABASE_URL")

DEFAULT_DATA_DIR = Path(".commandbus") / "pgdata"


class EmbeddedPostgresError(CommandBusError):
    """The embedded PostgreSQL server could not be started."""


class EmbeddedPostgres:
    """A running embedded server: its ``uri`` and ``stop()``."""

    def __init__(self, server: Any, data_dir: Path) -> None:
        self._server = server
        self.data_dir = data_dir

    @property
    def uri(self) -> str:
        """libpq URL of the ``postgres`` database (Unix socket inside ``data_dir``)."""
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server unless another process still uses it (data is kept)."""
        _servers.pop(self.data_dir, None)
        self._server.cleanup()


_servers: dict[Path, EmbeddedPostgres] = {}


def configured_url() -> str | None:
    """The URL from the environment, if one is set."""
    for name in URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def start_embedded(data_dir: str | Path | None = None) -> EmbeddedPostgres:
    """Boot (or attach to) the embedded server whose data lives in ``data_dir``."""
    directory = (
        Path(data_dir) if data_dir is not None else Path.cwd() / DEFAULT_DATA_DIR
    ).resolve()
    if directory in _servers:
        return _servers[directory]
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI);
            # pgserver then keeps its lock file under /tmp, which is fine.
            warnings.simplefilter("ignore")
            from pgserver import postgres_server
    except ImportError as exc:
        raise EmbeddedPostgresError(
            "no database configured and the embedded PostgreSQL is not installed: set "
            "DATABASE_URL (or COMMANDBUS_DATABASE_URL) to a PostgreSQL server, or install "
            "the extra with `pip install 'commandbus[embedded]'`"
        ) from exc
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = postgres_server.get_server(directory, cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {directory}: {exc}; see "
            f"{directory / 'log'} for the server log, or set DATABASE_URL to use another "
            "server"
        ) from exc
    embedded = EmbeddedPostgres(server, directory)
    _servers[directory] = embedded
    return embedded


def database_url(data_dir: str | Path | None = None) -> str:
    """``COMMANDBUS_DATABASE_URL`` / ``DATABASE_URL`` if set, else the URL of an embedded
    PostgreSQL booted in ``data_dir`` (default ``.commandbus/pgdata`` under the current
    directory). Raises ``EmbeddedPostgresError`` with what to do when neither works."""
    url = configured_url()
    if url is not None:
        return url
    return start_embedded(data_dir).uri
