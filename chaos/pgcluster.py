"""A throw-away PostgreSQL cluster of the chaos run's own.

The chaos run restarts PostgreSQL (``pg_ctl restart -m fast`` and ``-m immediate``), so it
must never touch a server somebody else uses: not the user's ``DATABASE_URL``, not the
shared server on port 5432, not the embedded ``.commandbus/pgdata`` one. ``PgCluster``
runs ``initdb`` into a fresh temporary directory, listens on a free TCP port of 127.0.0.1
only (trust authentication) and on a Unix socket inside that directory, and removes
everything in ``teardown``.

Binaries: the Debian PostgreSQL 15 ones (``/usr/lib/postgresql/15/bin``), else those the
``pgserver`` package bundles. PostgreSQL refuses to run as root, so when we are root every
server-side command runs as the existing ``postgres`` OS user (``runuser -u postgres --``)
and the directory is chowned to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
SERVER_USER = "postgres"

# The faults are process crashes, never an OS crash: fsync (and full-page writes) can be off,
# because what a committed transaction wrote is in the kernel's page cache, which survives
# an immediate-mode restart. synchronous_commit must stay on: with it off, a commit is
# acknowledged before its WAL is written, and an immediate restart loses it — a loss the
# suite would (rightly) report, caused by the test setup and not by commandbus.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",
    "shared_buffers": "256MB",
    "fsync": "off",
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "10min",
    # The queue tables churn: vacuum them often (see the README's performance notes).
    "autovacuum_naptime": "2s",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "timezone": "'UTC'",
}


def find_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres are: Debian's PostgreSQL 15, else pgserver's."""
    if (DEBIAN_BIN / "pg_ctl").exists():
        return DEBIAN_BIN
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"no PostgreSQL binaries: neither {DEBIAN_BIN} nor the pgserver package")
    bundled = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bundled / "pg_ctl").exists():
        raise RuntimeError(f"pgserver has no binaries in {bundled}")
    return bundled


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One temporary cluster: ``start()``, ``restart(mode)``, ``teardown()``."""

    def __init__(self, bin_dir: Path | None = None, port: int | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="commandbus-chaos-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            return ["runuser", "-u", SERVER_USER, "--", *command]
        return command

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        # A session of its own: a Ctrl-C in the terminal reaches only the chaos driver,
        # which then tears the cluster down in order.
        result = subprocess.run(
            self._cmd(tool, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.log_tail()}"
            )

    def start(self) -> None:
        if self._as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            # mkdtemp makes the directory 0700: the server user owns it now, root still
            # gets in (and deletes it in teardown).
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        conf = self.data_dir / "postgresql.conf"
        lines = [f"{key} = {value}" for key, value in SETTINGS.items()]
        lines += [f"port = {self.port}", f"unix_socket_directories = '{self.root}'"]
        # Appended to postgresql.conf (not passed with -o) so that `pg_ctl restart` starts
        # the server with the same settings.
        with conf.open("a", encoding="utf-8") as handle:
            handle.write("\n# commandbus chaos run\n" + "\n".join(lines) + "\n")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "start")
        self._started = True

    async def restart(self, mode: str) -> float:
        """``pg_ctl restart -m mode`` without blocking the event loop; returns how long
        pg_ctl took (server down and up again)."""
        started = time.monotonic()
        await self._pg_ctl("-m", mode, "restart")
        return time.monotonic() - started

    async def outage(self, seconds: float) -> float:
        """Stop the server (fast), keep it down for ``seconds``, start it again; returns
        how long it was down."""
        started = time.monotonic()
        await self._pg_ctl("-m", "fast", "stop")
        await asyncio.sleep(seconds)
        await self._pg_ctl("start")
        return time.monotonic() - started

    async def _pg_ctl(self, *args: str) -> None:
        command = ["-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "120", *args]
        process = await asyncio.create_subprocess_exec(
            *self._cmd("pg_ctl", *command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed: {output.decode(errors='replace')}\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def teardown(self) -> None:
        """Stop the server (immediate: its data is deleted next) and remove the directory.
        Safe to call more than once, and after a failed start."""
        if self._started and (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
