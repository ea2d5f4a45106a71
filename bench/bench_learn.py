"""Cost and effect of ``pack --learn`` on python3, and of shipping unchecked-hash bytecode.

Run: python bench/bench_learn.py [--runs N]

  * learn + pack: `litebox-pack /usr/bin/python3 --learn -- -c WORKLOAD` (json, hashlib, ssl,
    sqlite3, subprocess, compressors), with an empty rewrite cache and again with a warm one;
  * size: the learned bundle next to the whole-stdlib bundle (`--include /usr/lib/python3.11`);
  * start-up: `python3 -c pass` in run's LiteBox view from the whole-stdlib bundle, with the
    host's timestamp .pyc files as they are (tar_ro's mtime 0 makes them all stale, so Python
    recompiles what it imports) and with the PEP 552 unchecked-hash headers pack writes;
    best of N, same invocation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def stdlib_bundle(out: Path, unchecked: bool) -> None:
    """python3 with the whole stdlib; ``unchecked=False`` leaves every .pyc as the host has it
    (the state before pack rewrote bytecode headers)."""
    closure = resolve(["/usr/bin/python3"])
    plan = build_plan(
        closure,
        host_root=None,
        includes=[STDLIB],
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
        learned_files = sum(
            1 for line in (work / "py.learned").read_text().splitlines() if line[:1] != "#"
        )
        whole = {"before": work / "stdlib-timestamp.tar", "after": work / "stdlib.tar"}
        for label, path in whole.items():
            stdlib_bundle(path, unchecked=label == "after")
        sizes = {
            "learned": (work / "py.tar").stat().st_size,
            "whole": whole["after"].stat().st_size,
        }
        env = {**os.environ}
        start: dict[str, float] = {}
        for label, path in whole.items():
            cmd = [*CLI, "run", str(path), "--", "/usr/bin/python3", "-c", "pass"]
            start[label] = min(timed(cmd, env) for _ in range(args.runs))
    table = Table(title="pack --learn on python3, and shipped bytecode", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("learn + pack, empty rewrite cache", f"{t_cold:.1f} s")
    table.add_row("learn + pack, warm rewrite cache", f"{t_warm:.1f} s")
    table.add_row("files learned (X.learned lines)", str(learned_files))
    table.add_row("learned bundle size", f"{sizes['learned'] / 1048576:.1f} MiB")
    table.add_row("whole-stdlib bundle size", f"{sizes['whole'] / 1048576:.1f} MiB")
    table.add_row(
        "python3 -c pass, LiteBox view, timestamp .pyc", f"{start['before'] * 1000:.0f} ms"
    )
    table.add_row(
        "python3 -c pass, LiteBox view, unchecked-hash .pyc", f"{start['after'] * 1000:.0f} ms"
    )
    table.add_row("start-up ratio (before / after)", f"{start['before'] / start['after']:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
