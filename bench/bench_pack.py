"""Packaging speed and memory: litebox-pack against exodus-bundler, and a large input set.

Run: python bench/bench_pack.py [--large N]
(needs `pip install exodus-bundler`, the `bench` extra). Every number is the best of several
runs taken interleaved in this one invocation, so ratios are robust to the machine's noise.
Targets (issue 3): cold ≤ 1.0× exodus, warm ≤ 0.25× exodus, peak RSS ≤ 200 MB, and memory that
stays flat as the bundle grows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from packager.resolve import resolve

BIN = Path(sys.executable).parent
PROGRAM = "/usr/bin/python3"
ROUNDS = 5


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB of the command and its children)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss // 1024


def env_with_cache(cache: str) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": cache}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--large",
        type=int,
        default=0,
        metavar="N",
        help="also package N shared libraries of /usr/lib/x86_64-linux-gnu "
        "(0: all of them; -1: skip)",
    )
    args = ap.parse_args()
    exodus = shutil.which("exodus", path=str(BIN)) or shutil.which("exodus")
    if exodus is None:
        raise SystemExit("exodus-bundler is not installed: pip install exodus-bundler")
    pack = str(BIN / "litebox-pack")
    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    try:
        results: dict[str, list[tuple[float, int]]] = {"exodus": [], "cold": [], "warm": []}
        warm_cache = str(work / "warm")
        timed([pack, PROGRAM, "-o", str(work / "w.tar"), "-q"], env_with_cache(warm_cache))
        for i in range(ROUNDS):
            results["exodus"].append(
                timed([exodus, "--tarball", PROGRAM, "-o", str(work / "e.tgz")])
            )
            cold = env_with_cache(str(work / f"cold{i}"))
            results["cold"].append(timed([pack, PROGRAM, "-o", str(work / "c.tar"), "-q"], cold))
            results["warm"].append(
                timed([pack, PROGRAM, "-o", str(work / "w.tar"), "-q"], env_with_cache(warm_cache))
            )
        best = {k: min(t for t, _ in v) for k, v in results.items()}
        rss = {k: max(m for _, m in v) for k, v in results.items()}
        table = Table(title=f"packaging {PROGRAM} (best of {ROUNDS})")
        for col in ("tool", "seconds", "× exodus", "target", "peak RSS MB"):
            table.add_column(col, justify="right")
        targets = {"cold": 1.0, "warm": 0.25}
        for k in ("exodus", "cold", "warm"):
            ratio = best[k] / best["exodus"]
            target = targets.get(k)
            ok = "" if target is None else (" ok" if ratio <= target else " MISSED")
            table.add_row(
                "exodus --tarball" if k == "exodus" else f"litebox-pack ({k} cache)",
                f"{best[k]:.3f}",
                f"{ratio:.2f}",
                f"≤ {target}{ok}" if target else "",
                str(rss[k]),
            )
        Console().print(table)
        if args.large >= 0:
            large(pack, work, args.large)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def large(pack: str, work: Path, limit: int) -> None:
    """Package many libraries as inputs: time, peak RSS, and RSS at 1/4, 1/2 and all of them."""
    libdir = Path("/usr/lib/x86_64-linux-gnu")
    candidates = sorted(
        str(p)
        for p in libdir.iterdir()
        if p.is_file() and not p.is_symlink() and ".so" in p.name and _is_elf64(p)
    )
    if limit:
        candidates = candidates[:limit]
    usable = [p for p in candidates if not resolve([p]).missing]
    table = Table(title=f"large input set: shared libraries of {libdir}")
    for col in ("inputs", "files in bundle", "tar MB", "seconds (cold)", "peak RSS MB"):
        table.add_column(col, justify="right")
    for part in (len(usable) // 4, len(usable) // 2, len(usable)):
        out = work / f"large{part}.tar"
        cache = env_with_cache(str(work / f"large-cache{part}"))
        cmd = [pack, *usable[:part], "-o", str(out), "-q", "--no-main-out", "--json"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cache)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        assert proc.stdout is not None and proc.stderr is not None
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(proc.stderr.read().decode())
        doc = json.loads(proc.stdout.read())
        table.add_row(
            str(part),
            str(doc["files"]),
            f"{out.stat().st_size / 1e6:.0f}",
            f"{wall:.1f}",
            str(usage.ru_maxrss // 1024),
        )
        out.unlink()
    Console().print(table)


def _is_elf64(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            head = f.read(5)
    except OSError:
        return False
    return head == b"\x7fELF\x02"


if __name__ == "__main__":
    sys.exit(main())
