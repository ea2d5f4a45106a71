"""Cost of running under ``litebox-pack run``: per-syscall overhead and start-up time.

Run: python bench/bench_run.py [--quick]

Both ABIs, native and under the runtime in the same invocation, best of N:
  * getppid: 10^6 calls of a syscall that does nothing (pure passthrough cost);
  * pipe: 10^5 round trips of one byte through a pipe (write + read, 2 syscalls each);
  * start-up: `litebox-pack run BUNDLE -- /usr/bin/python3 -c pass` (warm runtime cache, bundle
    as a directory and as a tar) against native `python3 -c pass`; the runtime alone (without
    the Python CLI) is shown too;
  * start-up in LiteBox's view against --host-fs and against today's `run` (the commit before
    the view, checked out with `git archive` into a temporary directory): `/usr/bin/true` and
    `python3 -c pass` (its bundle holds the stdlib modules that start-up loads), tar bundles.
Targets (issue 4): ≤ 3× native per passthrough syscall, start-up ≤ 0.3 s; (issue 9) start-up in
LiteBox's view ≤ 1.2× today's.
The loops time themselves (clock_gettime around the loop), so start-up does not blur them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from packager.runtime.build import runtime_binary  # noqa: E402
from packager.runtime.bundle import Bundle, tar_ro_tree  # noqa: E402
from tests.bundle_util import make_bundle, tar_bundle  # noqa: E402

BEFORE_VIEW = "70d11e6"  # the last commit whose `run` looked files up in the bundle, then the host

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long n = atol(argv[2]);
    double t0, t1;
    if (strcmp(argv[1], "getppid") == 0) {
        t0 = now();
        for (long i = 0; i < n; i++)
            getppid();
        t1 = now();
        printf("%.2f\n", (t1 - t0) / n);
    } else {
        int p[2];
        char c = 'x';
        if (pipe(p))
            return 1;
        t0 = now();
        for (long i = 0; i < n; i++)
            if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
                return 1;
        t1 = now();
        printf("%.2f\n", (t1 - t0) / (2.0 * n));
    }
    return 0;
}
"""

CLI = [sys.executable, "-c", "from packager.cli import main; main()"]


def best(cmd: list[str], runs: int) -> float:
    return min(
        float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    )


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return min(times)


def runtime_cmd(rt: Path, tree: Path, scratch: Path, abi: str) -> list[str]:
    """The runtime alone in LiteBox's view of ``tree`` (laid out once, as run.py does)."""
    lower = scratch / "lower"
    if not lower.exists():
        scratch.mkdir()
        tar_ro_tree(Bundle(tree, tree, None), lower)
        (scratch / "stage").mkdir()
    return [str(rt), "--lower", str(lower), "--stage", str(scratch / "stage"), "--abi", abi]


def python_start_files(python: str) -> list[str]:
    """The stdlib modules `python3 -c pass` loads: what its bundle needs in LiteBox's view."""
    code = (
        "import sys; print('\\n'.join(m.__file__ for m in sys.modules.values() "
        "if getattr(m, '__file__', None)))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env={}, check=True)
    return [ln for ln in out.stdout.splitlines() if ln.endswith((".py", ".so"))]


def view_startup(tmp: Path, python: str, runs: int) -> Table:
    """LiteBox's view against --host-fs and against today's run, same bundles, same run."""
    old = tmp / "before-view"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BEFORE_VIEW], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    old_cli = [
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {str(old)!r}); from packager.cli import main; main()",
    ]
    table = Table(title=f"start-up in LiteBox's view vs today's run (s, best of {runs})")
    for col in ("program", "today", "--host-fs", "LiteBox view", "view / today", "target"):
        table.add_column(col, justify="left" if col == "program" else "right")
    programs = {
        "/usr/bin/true": ([], []),
        f"{python} -c pass": (python_start_files(python), ["-c", "pass"]),
    }
    for label, (extra, args) in programs.items():
        prog = label.split()[0]
        tree = make_bundle(tmp / f"start-{len(args)}", [prog], extra=extra)
        tar = tar_bundle(tree, tmp / f"start-{len(args)}.tar")
        env = ["--env", "PYTHONDONTWRITEBYTECODE=1"]
        cmds = [
            [*old_cli, "run", str(tar), "--", prog, *args],
            [*CLI, "run", str(tar), "--host-fs", *env, "--", prog, *args],
            [*CLI, "run", str(tar), *env, "--", prog, *args],
        ]
        # Interleaved, so that load from other work on the machine falls on all three alike.
        times: list[list[float]] = [[], [], []]
        for _ in range(runs):
            for i, cmd in enumerate(cmds):
                times[i].append(wall(cmd, 1))
        today, host, view = (min(t) for t in times)
        ratio = view / today
        table.add_row(
            label,
            f"{today:.3f}",
            f"{host:.3f}",
            f"{view:.3f}",
            f"{ratio:.2f}×",
            "≤ 1.2×" + (" ✓" if ratio <= 1.2 else " ✗"),
        )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    opts = ap.parse_args()
    runs = 3 if opts.quick else 7
    console = Console()
    rt = runtime_binary()  # warm the build cache before timing anything
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "loop.c").write_text(LOOP_C)
        loop = tmp / "loop"
        subprocess.run(["gcc", "-O2", "-o", str(loop), str(tmp / "loop.c")], check=True)
        python = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"

        table = Table(title=f"litebox-pack run: per-syscall cost (ns, best of {runs})")
        for col in ("workload", "ABI", "native", "under run", "ratio", "target"):
            table.add_column(col, justify="right" if col not in ("workload", "ABI") else "left")
        startup = Table(title=f"start-up: python3 -c pass (s, best of {runs})")
        for col in ("how", "ABI", "native", "under run", "target"):
            startup.add_column(col, justify="right" if col not in ("how", "ABI") else "left")

        for abi in ("redzone", "resume"):
            bundle = make_bundle(tmp / f"b-{abi}", [str(loop), python], abi=abi)
            tar = tar_bundle(bundle, tmp / f"b-{abi}.tar")
            for work, n in (("getppid", 1_000_000), ("pipe", 100_000)):
                native = best([str(loop), work, str(n)], runs)
                alone = runtime_cmd(rt, bundle, tmp / f"rt-{abi}", abi)
                under = best([*alone, "--", str(loop), str(loop), work, str(n)], runs)
                ratio = under / native
                table.add_row(
                    f"{work} ×{n:,}",
                    abi,
                    f"{native:.1f}",
                    f"{under:.1f}",
                    f"{ratio:.2f}×",
                    "≤ 3×" + (" ✓" if ratio <= 3 else " ✗"),
                )
            native = wall([python, "-c", "pass"], runs)
            stage = tmp / f"rt-{abi}" / "stage"
            alone = [str(rt), "--host-fs", "--bundle", str(bundle), "--stage", str(stage)]
            alone += ["--abi", abi, "--", python, python]
            api = (
                "import sys; from pathlib import Path; "
                "from packager.runtime.run import RunRequest, run; "
                f"sys.exit(run(RunRequest(Path({str(bundle)!r}), {python!r}, ['-c', 'pass'], "
                "view='host-fs')))"
            )
            # --host-fs: this bundle lacks the stdlib (the table below has one that holds it).
            rows = {
                "run DIR": [*CLI, "run", str(bundle), "--host-fs", "--", python, "-c", "pass"],
                "run TAR": [*CLI, "run", str(tar), "--host-fs", "--", python, "-c", "pass"],
                "run DIR, no CLI": [sys.executable, "-c", api],
                "runtime alone": [*alone, "-c", "pass"],
                "CLI import only": [sys.executable, "-c", "import packager.cli"],
            }
            for how, cmd in rows.items():
                t = wall(cmd, runs)
                target = "" if how == "CLI import only" else "≤ 0.3" + (" ✓" if t <= 0.3 else " ✗")
                startup.add_row(how, abi, f"{native:.3f}", f"{t:.3f}", target)
        console.print(table)
        console.print(startup)
        console.print(view_startup(tmp, python, runs))


if __name__ == "__main__":
    main()
