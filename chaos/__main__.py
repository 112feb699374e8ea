"""``python -m chaos``: run the fault-injection suite (see ``chaos/__init__.py``).

    python -m chaos                                   # 3,000 commands, 300 processes
    python -m chaos --commands 100000 --processes 10000 --duration-limit 1800
    python -m chaos --seed 7 --workers 3 --routers 2 --kills 6 --json result.json

Run from the repository root (the StatementReport example is imported from
``examples/``). Needs PostgreSQL server binaries: Debian's ``postgresql-15`` or the
``pgserver`` package; as root, the server runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="commandbus fault injection: kill workers/routers, restart PostgreSQL, "
        "then count lost, duplicated and stuck work.",
    )
    parser.add_argument("--commands", type=int, default=3_000, help="commands to send (N)")
    parser.add_argument("--processes", type=int, default=300, help="processes to start (M)")
    parser.add_argument(
        "--event-processes",
        type=int,
        default=None,
        help="event-driven processes to start with events (default: as many as --processes)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker OS processes (K)")
    parser.add_argument("--routers", type=int, default=2, help="router OS processes (R)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--duration-limit",
        type=float,
        default=600.0,
        help="seconds after which the run stops and counts what is left (a failure if "
        "work is still in flight)",
    )
    parser.add_argument(
        "--send-seconds",
        type=float,
        default=40.0,
        help="spread the sends over this many seconds (open-loop load)",
    )
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs of a worker/router")
    parser.add_argument(
        "--outage",
        type=float,
        default=0.0,
        help="also stop PostgreSQL for this many seconds once (0: no outage)",
    )
    parser.add_argument(
        "--recovery-timeout",
        type=float,
        default=20.0,
        help="longest wait for a fault's recovery before the next fault",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the agents' logs")
    args = parser.parse_args(argv)
    for name in ("commands", "processes", "workers", "routers"):
        if getattr(args, name) < (0 if name in ("commands", "processes") else 1):
            parser.error(f"--{name} is too small")
    if args.commands + args.processes == 0:
        parser.error("nothing to do: --commands and --processes are both 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # `examples` (the StatementReport process) lives next to this package.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    os.chdir(root)
    from chaos.run import Options
    from chaos.run import main as run

    return run(
        Options(
            commands=args.commands,
            processes=args.processes,
            workers=args.workers,
            routers=args.routers,
            seed=args.seed,
            duration_limit=args.duration_limit,
            send_seconds=args.send_seconds,
            kills=args.kills,
            outage=args.outage,
            recovery_timeout=args.recovery_timeout,
            json_path=args.json.resolve() if args.json else None,
            keep_logs=args.keep_logs,
            event_processes=args.processes
            if args.event_processes is None
            else max(0, args.event_processes),
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
