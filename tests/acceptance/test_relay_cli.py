"""``commandbus --topology FILE relay run|lag`` and commands routed to a domain's cluster,
as a user runs them: two databases of the test server play two clusters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
import pytest_asyncio
from psycopg.conninfo import conninfo_to_dict
from tests.acceptance.test_cli import assert_user_error, cli

from commandbus.postgres.clusters import connect_clusters
from commandbus.testing.contracts.clusters import topology_of
from commandbus.testing.pg import TemplateDatabase

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def clusters(
    pg_template: TemplateDatabase, tmp_path: Path
) -> AsyncIterator[tuple[Path, list[UUID]]]:
    """Two clusters in a topology file; three commands for billing in reporting's outbox."""
    async with pg_template.database() as a, pg_template.database() as b:
        topology_file = tmp_path / "clusters.toml"
        topology_file.write_text(f'[domains]\nreporting = "{a}"\nbilling = "{b}"\n')
        async with await connect_clusters(topology_of(a, b), max_size=2) as backends:
            bus = backends.bus_for("reporting")
            sent = [await bus.send("billing", "Charge", data={"n": n}) for n in range(3)]
        yield topology_file, [s.command_id for s in sent]


def lag(topology_file: Path) -> dict[str, int]:
    result = cli("--topology", str(topology_file), "relay", "lag", "--json")
    assert result.returncode == 0, result.stderr
    return {row["cluster"]: row["pending"] for row in json.loads(result.stdout)}


def test_relay_run_moves_the_outbox_and_commands_find_their_cluster(
    clusters: tuple[Path, list[UUID]],
) -> None:
    topology_file, sent = clusters
    assert lag(topology_file) == {"reporting": 3, "billing": 0}
    human = cli("--topology", str(topology_file), "relay", "lag")
    assert human.returncode == 0 and "reporting" in human.stdout, human.stderr

    command = [sys.executable, "-m", "commandbus", "--topology", str(topology_file)]
    relay = subprocess.Popen(
        [*command, "relay", "run", "--poll-interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while lag(topology_file)["reporting"]:
            assert time.monotonic() < deadline, "the relay did not drain the outbox"
            assert relay.poll() is None, relay.communicate()
            time.sleep(0.1)
    finally:
        relay.send_signal(signal.SIGINT)
        _, err = relay.communicate(timeout=30)
    assert relay.returncode == 0, err
    assert "relayed 3" in err
    assert lag(topology_file) == {"reporting": 0, "billing": 0}

    # No --database-url: `command show --domain billing` reads billing's cluster.
    shown = cli(
        "--topology",
        str(topology_file),
        "command",
        "show",
        "--domain",
        "billing",
        str(sent[0]),
        "--json",
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["command"]["status"] == "PENDING"


def test_relay_needs_a_topology_and_a_valid_one(tmp_path: Path) -> None:
    assert_user_error(cli("relay", "lag"), 2, "--topology")
    broken = tmp_path / "clusters.toml"
    broken.write_text("[domains]\nBad-Name = 'postgresql://x/y'\n")
    assert_user_error(cli("--topology", str(broken), "relay", "lag"), 2, "Bad-Name")
    missing = cli("--topology", str(tmp_path / "none.toml"), "relay", "lag")
    assert_user_error(missing, 2, "cannot read")
    assert_user_error(
        cli("--topology", str(broken.with_name("none.json")), "relay", "run"), 2, "cannot read"
    )


def test_a_router_runs_on_the_cluster_of_its_managers_domain(
    clusters: tuple[Path, list[UUID]],
) -> None:
    topology_file, _ = clusters
    domains = dict(line.split(" = ") for line in topology_file.read_text().splitlines()[1:])
    reporting, billing = domains["reporting"].strip('"'), domains["billing"].strip('"')
    app = "tests.acceptance.test_process_cli:MANAGERS"  # StatementReport, domain reporting
    # Pointed at billing's cluster, it refuses: its replies and commands are not there.
    wrong = cli(
        "--topology", str(topology_file), "--database-url", billing, "router", "run", "--app", app
    )
    assert_user_error(wrong, 2, "reporting live(s) on another cluster")
    assert "--domain reporting" in wrong.stderr
    # --domain picks the cluster from the topology.
    command = [sys.executable, "-m", "commandbus", "--topology", str(topology_file)]
    router = subprocess.Popen(
        [*command, "router", "run", "--app", app, "--domain", "reporting", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert router.stderr is not None
    banner = ""
    while "commandbus router" not in banner:  # after any warning about the server
        line = router.stderr.readline()
        assert line, "the router ended before its banner"
        banner = line
    # Running once it listens for its reply queue on reporting's database.
    deadline = time.monotonic() + 60
    with psycopg.connect(reporting, autocommit=True) as conn:
        while not conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline and router.poll() is None, banner
            time.sleep(0.05)
    router.send_signal(signal.SIGINT)
    _, rest = router.communicate(timeout=30)
    assert router.returncode == 0, banner + rest
    assert "commandbus router" in banner
    assert conninfo_to_dict(reporting)["dbname"] in banner
