"""Cost and effect of ``pack --learn`` on python3, and of shipping unchecked-hash bytecode.

Run: python bench/bench_learn.py [--runs N]

  * learn + pack: `litebox-pack /usr/bin/python3 --learn -- -c WORKLOAD` (json, hashlib, ssl,
    sqlite3, subprocess, compressors), with an empty rewrite cache and again with a warm one;
  * size: the learned bundle next to the whole-stdlib bundle (`--include /usr/lib/python3.11`);
  * start-up: `python3 -X importtime -c pass` in run's LiteBox view from the learned bundle
    (as a directory), with the host's timestamp .pyc files as they are (tar_ro's mtime 0 makes
    them all stale, so Python recompiles what it imports and fails to write __pycache__) and
    with the PEP 552 unchecked-hash headers pack writes: wall time of `run` and Python's own
    import time inside the guest; best of N, same invocation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from packager.bundle import write_bundle  # noqa: E402
from packager.plan import build_plan  # noqa: E402
from packager.pyc import source_of  # noqa: E402
from packager.resolve import resolve  # noqa: E402
from packager.rewrite_job import RewriteOptions  # noqa: E402
from packager.selfcheck import check_self_contained  # noqa: E402

CLI = [sys.executable, "-c", "from packager.cli import main; main()"]
STDLIB = "/usr/lib/python3.11"
WORKLOAD = (
    "import json, hashlib, ssl, sqlite3, subprocess, zlib, bz2, lzma\n"
    "print(json.dumps([1]), hashlib.sha256(b'x').hexdigest()[:8], ssl.OPENSSL_VERSION)\n"
    "db = sqlite3.connect(':memory:'); print(db.execute('select 6*7').fetchone())\n"
    "print(subprocess.run(['/bin/echo', 'child'], capture_output=True).stdout)\n"
)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])}...: exit {res.returncode}\n{res.stderr}")
    return time.monotonic() - start


def python_bundle(out: Path, includes: list[str], unchecked: bool) -> None:
    """python3 with ``includes``; ``unchecked=False`` leaves every .pyc as the host has it (the
    state before pack rewrote bytecode headers)."""
    plan = build_plan(
        resolve(["/usr/bin/python3"]),
        host_root=None,
        includes=includes,
        no_rewrite=[],
        include_closures=True,
        real_paths=True,
    )
    if not unchecked:
        for f in plan.files:
            if source_of(f.source) is not None:
                f.rewrite, f.skip_reason = False, "benchmark: host bytecode as is"
    extra = check_self_contained(plan, plan.closure)
    write_bundle(
        plan,
        out,
        options=RewriteOptions(),
        hooked=None,
        jobs=os.cpu_count() or 1,
        use_cache=True,
        extra=extra,
    )


def import_seconds(stderr: str) -> float:
    """Python's own import time from ``-X importtime`` (the top-level lines' cumulative us)."""
    total = 0
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and not parts[2].startswith("  "):
            cumulative = parts[1].strip()
            total += int(cumulative) if cumulative.isdigit() else 0
    return total / 1e6


def startup(bundle: Path, runs: int) -> tuple[float, float]:
    """Best wall time of ``run BUNDLE -- python3 -c pass`` and best in-guest import time."""
    cmd = [*CLI, "run", str(bundle), "--", "/usr/bin/python3", "-X", "importtime", "-c", "pass"]
    walls, imports = [], []
    for _ in range(runs):
        begin = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True)
        walls.append(time.monotonic() - begin)
        if res.returncode != 0:
            sys.exit(f"{bundle}: python3 -c pass failed:\n{res.stderr}")
        imports.append(import_seconds(res.stderr))
    return min(walls), min(imports)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        work = Path(tmp)
        cold = {**os.environ, "XDG_CACHE_HOME": str(work / "cold")}
        learn_cmd = [*CLI, "/usr/bin/python3", "-o", str(work / "py.tar"), "-q", "--learn"]
        learn_cmd += ["--", "-c", WORKLOAD]
        t_cold = timed(learn_cmd, cold)
        t_warm = timed(learn_cmd, cold)
        learned = [
            line for line in (work / "py.learned").read_text().splitlines() if line[:1] != "#"
        ]
        python_bundle(work / "stdlib.tar", [STDLIB], unchecked=True)
        sizes = {"learned": (work / "py.tar").stat().st_size, "whole": 0}
        sizes["whole"] = (work / "stdlib.tar").stat().st_size
        # Start-up from the learned bundle laid out as a directory (a tar would be extracted
        # on every run), with the host's timestamp bytecode and with unchecked-hash headers.
        start = {}
        for label, unchecked in (("timestamp", False), ("unchecked-hash", True)):
            tar = work / f"start-{label}.tar"
            python_bundle(tar, learned, unchecked=unchecked)
            tree = work / f"start-{label}"
            with tarfile.open(tar) as t:
                t.extractall(tree, filter="data")
            start[label] = startup(tree, args.runs)
    table = Table(title="pack --learn on python3, and shipped bytecode", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("learn + pack, empty rewrite cache", f"{t_cold:.1f} s")
    table.add_row("learn + pack, warm rewrite cache", f"{t_warm:.1f} s")
    table.add_row("files learned (X.learned lines)", str(len(learned)))
    table.add_row("learned bundle size", f"{sizes['learned'] / 1048576:.1f} MiB")
    table.add_row("whole-stdlib bundle size", f"{sizes['whole'] / 1048576:.1f} MiB")
    for label, (wall, imports) in start.items():
        what = f"python3 -c pass, LiteBox view, {label} .pyc"
        table.add_row(f"{what}: wall", f"{wall * 1000:.0f} ms")
        table.add_row(f"{what}: imports in the guest", f"{imports * 1000:.1f} ms")
    (w0, i0), (w1, i1) = start["timestamp"], start["unchecked-hash"]
    table.add_row("ratio timestamp / unchecked-hash: wall", f"{w0 / w1:.2f}x")
    table.add_row("ratio timestamp / unchecked-hash: imports", f"{i0 / i1:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
