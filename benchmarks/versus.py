"""This checkout against another revision, in the same run: figures and their ratio.

Run from the repository root::

    python -m benchmarks.versus --baseline e42964a            # 3 rounds
    python -m benchmarks.versus --baseline HEAD~5 --rounds 5 --processes 3000

The baseline revision is checked out into a temporary git worktree. Each round runs the
throughput benchmark (``send_batch`` and end to end with 2 worker processes) and the
process benchmark, once for the baseline and once for this checkout, in alternating order,
against the same server (``DATABASE_URL`` or the embedded one). The machine is noisy:
what counts is the median ratio ``this / baseline`` of interleaved runs, not the absolute
figures. Each benchmark runs in a subprocess with ``PYTHONPATH`` set to its tree's ``src``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: figure name -> (benchmark module, regular expression whose group 1 is the number)
FIGURES = {
    "send_batch (commands/s)": ("throughput", r"sent [\d,]+ commands in [\d.]+ s \(([\d,]+)/s\)"),
    "end to end, 2 workers (commands/s)": ("throughput", r"\(([\d,]+) commands/s end to end\)"),
    "one send() at a time (commands/s)": (
        "throughput",
        r"sent [\d,]+ commands one at a time in [\d.]+ s \(([\d,]+)/s\)",
    ),
    "processes (processes/s)": ("processes", r"processes/s\s+([\d.]+)"),
}


def run_benchmark(tree: Path, module: str, args: argparse.Namespace) -> str:
    if module == "throughput":
        argv = ["--commands", str(args.commands), "--workers", "2", "--no-latency"]
        argv += ["--single-sends", str(args.single_sends)]
    else:
        argv = ["--processes", str(args.processes)]
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *argv],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{module} failed in {tree}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def figures_of(output: str, module: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for name, (source, pattern) in FIGURES.items():
        if source != module:
            continue
        match = re.search(pattern, output)
        if match is None:
            raise SystemExit(f"no {name!r} in the output of {module}:\n{output}")
        found[name] = float(match.group(1).replace(",", ""))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus")
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=3_000)
    parser.add_argument("--single-sends", type=int, default=3_000)
    parser.add_argument(
        "--only",
        choices=["throughput", "processes"],
        help="run one of the two benchmarks (default: both)",
    )
    args = parser.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory(prefix="commandbus-baseline-") as tmp:
        baseline = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(baseline), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        # The benchmark drivers of this checkout run against both trees' libraries, so a
        # changed driver cannot skew the comparison.
        subprocess.run(["rm", "-rf", str(baseline / "benchmarks")], check=True)
        subprocess.run(["cp", "-r", str(ROOT / "benchmarks"), str(baseline)], check=True)
        try:
            trees = {"baseline": baseline, "this": ROOT}
            for number in range(args.rounds):
                order = ["baseline", "this"] if number % 2 == 0 else ["this", "baseline"]
                for module in [args.only] if args.only else ["throughput", "processes"]:
                    for label in order:
                        output = run_benchmark(trees[label], module, args)
                        for name, value in figures_of(output, module).items():
                            results[name][label].append(value)
                            print(f"round {number + 1} {label:8} {name}: {value:,.0f}")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False
            )
    print(f"\nmedians of {args.rounds} interleaved rounds (baseline {args.baseline}):")
    for name, by_label in results.items():
        base = statistics.median(by_label["baseline"])
        this = statistics.median(by_label["this"])
        print(f"  {name:38} baseline {base:9,.0f}   this {this:9,.0f}   ratio {this / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
