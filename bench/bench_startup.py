"""Start-up cost of the command line: CPU time (user + system) of one invocation, median of N.

Run: python bench/bench_startup.py [--runs N]

Each row runs the installed ``litebox-pack`` entry point (the script pip made, as users run it)
with output to /dev/null, next to ``python -c pass`` in the same run (the interpreter's own
floor on this machine). CPU time is read per child from wait4's rusage, so a busy machine
(other processes on the same cores) blurs it less than wall time.
Targets (issue 12): ``--version`` ≤ 0.120 s, ``--help`` ≤ 0.200 s of CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXE = Path(sys.executable).parent / "litebox-pack"
TARGETS = {"--version": 0.120, "--help": 0.200}


def cpu_seconds(cmd: list[str]) -> float:
    """User + system CPU time of one run of ``cmd``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit status {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def median_cpu(cmd: list[str], runs: int) -> float:
    cpu_seconds(cmd)  # warm the page cache and the .pyc files
    return statistics.median(cpu_seconds(cmd) for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="runs per row (median)")
    args = ap.parse_args()
    rows: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--version": [str(EXE), "--version"],
        "--help": [str(EXE), "--help"],
        **{f"{verb} --help": [str(EXE), verb, "--help"] for verb in ("pack", "audit", "run")},
    }
    table = Table(title=f"litebox-pack start-up, CPU s (median of {args.runs})")
    for col in ("command", "CPU s", "vs python -c pass", "target"):
        table.add_column(col, justify="left" if col == "command" else "right")
    floor = None
    for name, cmd in rows.items():
        t = median_cpu(cmd, args.runs)
        floor = floor if floor is not None else t
        target = TARGETS.get(name)
        verdict = "" if target is None else f"≤ {target:.3f} " + ("✓" if t <= target else "✗")
        table.add_row(name, f"{t:.3f}", f"{t / floor:.1f}×", verdict)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
