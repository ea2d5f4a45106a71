"""``pack --learn``: find the files a program uses beyond its library closure by running it.

Each workload runs against a draft bundle twice over. First in ``run``'s host-fs view (bundle
first, then the host; writes land in a throwaway layer): every host file it used is a candidate
(``files.host_used`` of the run report). Then, until nothing is left to add, in the LiteBox view
(the bundle alone): every path it looked up that the bundle lacks and the host has
(``files.missing``). Candidates are added as ``--include`` specs, so an ELF brings its own
closure and a program its interpreter (plan.py). The loop is bounded; a run that still needs
something after ``MAX_LITEBOX_RUNS`` rounds is an error naming the paths.

The result is written as ``X.learned``: one ``HOST:TAR`` per line under a ``# workload N: ...``
header naming the first workload that needed it, sorted. ``--include-from`` reads it back with the
same reasons (``learned from workload N``), so a repack from it gives the same bytes without
running anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .console import warn
from .errors import UsageError, UserError
from .fsutil import read_input
from .plan import Plan, parse_include
from .tarball import TarPathError, check_fits, tar_path

MAX_LITEBOX_RUNS = 6  # rounds in the LiteBox view before giving up
WORKLOAD_TIMEOUT = 600.0  # seconds one workload run may take before it is stopped
SHOWN_OUTPUT = 1 << 20  # bytes of each output stream kept for showing
MAX_LIST_FILE = 16 << 20  # a --workload or --include-from file larger than this is refused
# Never bundled: LiteBox provides its own devices; the kernel's views have no place in a tar.
HOST_ONLY = ("/proc", "/sys", "/dev")
WORKLOAD_HEADER = "# workload "

Reason = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    number: int  # 1-based, as the manifest and X.learned name it
    argv: list[str]  # PROGRAM (absolute path in the bundle) and its arguments

    def describe(self) -> str:
        """The command on one line (shell-quoted; a line break shown as \\n): it heads the
        workload's block in X.learned and names it in messages."""
        text = " ".join(shlex.quote(a) for a in self.argv)
        return text.replace("\r", "\\r").replace("\n", "\\n")


@dataclass
class Outcome:
    """One workload run: its status, its report, and what it printed (captured)."""

    status: int
    report: dict[str, Any]
    stdout: bytes = b""
    stderr: bytes = b""


# (bundle, workload, view, env) -> outcome; run_workload below, or a stand-in in tests.
Execute = Callable[[Path, Workload, str, list[str]], Outcome]
# (include specs with their reasons, output tar or None for the plan only) -> plan
PackWith = Callable[[list[tuple[str, Reason]], Path | None], Plan]


def learned_reason(number: int) -> Reason:
    return {"kind": "learned", "workload": number}


# -- workloads --------------------------------------------------------------------------------


def program_for(word: str, programs: list[str]) -> str:
    """The bundle path a workload's first word names: an absolute path as it is, or the name of
    one of the inputs (``python3`` for ``/usr/bin/python3``)."""
    if word.startswith("/"):
        return word
    hits = [p for p in programs if os.path.basename(p) == word]
    if not hits:
        raise UsageError(
            f"workload program {word!r} is not an input's name; give its absolute bundle path"
        )
    return hits[0]


def parse_workload_file(path: Path, programs: list[str], first: int) -> list[Workload]:
    """One command per line, split into words like a POSIX shell would (shlex: quotes,
    backslashes, ``#`` comments; no variables, globs, pipes or redirections). Blank and comment
    lines are skipped. Numbering starts at ``first``."""
    text = _read_text(path, "--workload")
    out: list[Workload] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise UserError(f"--workload {path}:{lineno}: {e}") from None
        if words:
            argv = [program_for(words[0], programs), *words[1:]]
            out.append(Workload(first + len(out), argv))
    if not out:
        raise UserError(f"--workload {path}: no command in it")
    return out


def _read_text(path: Path, option: str) -> str:
    data = read_input(path, option, limit=MAX_LIST_FILE)  # a FIFO or device is refused
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{option} {path}: not UTF-8 text") from None


# -- X.learned ----------------------------------------------------------------------------------


@dataclass
class Learned:
    """Learned files by tar path: (host path, number of the first workload that needed it)."""

    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    # What the last LiteBox-view runs looked up that no bundle can provide (/proc, /sys, a
    # directory holding only directories, a name an include line cannot hold).
    left_out: list[str] = field(default_factory=list)
    runs: int = 0
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # the last run of each

    def specs(self) -> list[tuple[str, Reason]]:
        """The learned files as include specs, in X.learned's order."""
        return [(f"{host}:/{tar}", learned_reason(n)) for tar, (host, n) in self.items()]

    def items(self) -> list[tuple[str, tuple[str, int]]]:
        """By workload, then by tar path."""
        return sorted(self.files.items(), key=lambda kv: (kv[1][1], kv[0]))


def learned_text(learned: Learned, workloads: list[Workload]) -> str:
    """The ``X.learned`` file: a header per workload, then its files sorted by tar path."""
    lines = [
        "# Files litebox-pack --learn found the workloads use beyond the programs' closures.",
        "# Repack without running anything: the same pack command with --include-from FILE.",
    ]
    by_workload: dict[int, list[str]] = {}
    for spec, reason in learned.specs():
        by_workload.setdefault(reason["workload"], []).append(spec)
    for w in workloads:
        lines.append(f"{WORKLOAD_HEADER}{w.number}: {w.describe()}")
        lines.extend(by_workload.get(w.number, []))
    return "\n".join(lines) + "\n"


def parse_include_from(path: Path) -> list[tuple[str, Reason | None]]:
    """Specs of an ``--include-from`` file with their reasons (see parse_include_text)."""
    return parse_include_text(_read_text(path, "--include-from"), str(path))


def parse_include_text(text: str, source: str) -> list[tuple[str, Reason | None]]:
    """Lines under a ``# workload N:`` header were learned from workload N; other lines are
    plain includes (reason None). Blank lines and other ``#`` lines are comments."""
    out: list[tuple[str, Reason | None]] = []
    reason: Reason | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith(WORKLOAD_HEADER):
            number = line[len(WORKLOAD_HEADER) :].split(":", 1)[0]
            if not number.isdigit() or int(number) < 1:
                raise UserError(f"--include-from {source}:{lineno}: bad workload header")
            reason = learned_reason(int(number))
        elif line.strip() and not line.lstrip().startswith("#"):
            try:
                parse_include(line)
            except UserError as e:
                raise UserError(f"--include-from {source}:{lineno}: {e}") from None
            out.append((line, reason))
    return out


def learned_path(tar: Path) -> Path:
    """``X.learned`` beside ``X.tar``."""
    return tar.with_suffix(".learned") if tar.suffix == ".tar" else Path(f"{tar}.learned")


@dataclass
class LearnResult:
    """What ``pack --learn`` writes and says."""

    path: Path  # X.learned
    text: str
    learned: Learned
    workloads: list[Workload]
    specs: list[tuple[str, Reason | None]]  # parsed back from ``text``

    @classmethod
    def of(
        cls, path: Path, learned: Learned, workloads: list[Workload], *, verbose: bool
    ) -> LearnResult:
        text = learned_text(learned, workloads)
        result = cls(path, text, learned, workloads, parse_include_text(text, str(path)))
        result.report(verbose)
        return result

    def report(self, verbose: bool) -> None:
        """Warn about what no bundle can provide, and about workloads that exited non-zero in
        their last (LiteBox-view) run, with what they printed; with ``verbose`` show every
        workload's output."""
        if self.learned.left_out:
            shown = ", ".join(self.learned.left_out[:3])
            more = (
                f" and {len(self.learned.left_out) - 3} more"
                if len(self.learned.left_out) > 3
                else ""
            )
            warn(
                f"the workloads looked up {len(self.learned.left_out)} path(s) no bundle can "
                f"hold, which LiteBox will not have: {shown}{more}"
            )
        for w in self.workloads:
            out = self.learned.outcomes[w.number]
            failed = out.status != 0
            if failed:
                how = f"status {out.status}" if out.status >= 0 else f"signal {-out.status}"
                warn(f"workload {w.number} ({w.describe()}) exited with {how} under LiteBox's view")
            if failed or verbose:
                for name, data in (("stdout", out.stdout), ("stderr", out.stderr)):
                    for line in data.decode(errors="replace").splitlines():
                        print(f"  workload {w.number} {name}| {line}", file=sys.stderr)

    def summary(self) -> str:
        n = len(self.learned.files)
        return (
            f"learned {n} file(s) from {len(self.workloads)} workload(s) in "
            f"{self.learned.runs} run(s): {self.path}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "files": len(self.learned.files),
            "runs": self.learned.runs,
            "workloads": [
                {
                    "number": w.number,
                    "argv": w.argv,
                    "exit_status": self.learned.outcomes[w.number].status,
                }
                for w in self.workloads
            ],
        }


# -- the loop ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    files: dict[str, str]  # tar path -> host path
    gaps: dict[str, str]  # tar path -> host path of directories holding no file at all
    stuck: list[str]  # guest paths that cannot be added (a directory of directories, ...)


def candidates(
    items: Iterable[dict[str, Any]], bundled: set[str], *, expand_dirs: bool
) -> Candidates:
    """What to add for the paths of a report's ``files.host_used`` or ``files.missing`` list.

    A directory the bundle lacks entirely is added through its own regular files with
    ``expand_dirs`` (for LiteBox-view misses: the guest looked it up and found nothing); in the
    host-fs view, where every directory is the host's, only an empty one is noted (a gap)."""
    files: dict[str, str] = {}
    gaps: dict[str, str] = {}
    stuck: list[str] = []
    dirs = {d for p in bundled for d in _parents(p)}
    for item in items:
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        path = os.path.normpath(path)
        if path == "/" or any(path == h or path.startswith(h + "/") for h in HOST_ONLY):
            if expand_dirs:
                stuck.append(path)  # LiteBox has none of it: worth saying, not bundling
            continue
        if ":" in path or "\n" in path:
            stuck.append(path)  # an --include spec line cannot say it
            continue
        try:
            tar = check_fits(path)
        except TarPathError:
            stuck.append(path)
            continue
        if tar in bundled or tar in dirs:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue  # gone from the host, or never there: nothing to learn
        if stat.S_ISREG(st.st_mode):
            files[tar] = path
        elif stat.S_ISDIR(st.st_mode):
            inside = _direct_files(path) if expand_dirs else []
            if inside:
                # The guest looked at the directory, not at a file in it: tar_ro shows a
                # directory only through the files below it, so its own files come along.
                files.update((tar_path(p), p) for p in inside if _fits(p))
            elif _holds_no_file(path):
                gaps[tar] = path
            elif expand_dirs:
                stuck.append(path)
    return Candidates(files, gaps, sorted(set(stuck)))


def learn(
    workloads: list[Workload],
    env: list[str],
    pack_with: PackWith,
    execute: Execute,
    workdir: Path,
    log: Callable[[str], None] = lambda _line: None,
) -> Learned:
    """Run the workloads until a LiteBox-view run needs nothing more; return what was added."""
    learned = Learned()
    draft = workdir / "draft.tar"

    def rebuild() -> set[str]:
        plan = pack_with(learned.specs(), draft)
        return set(plan.tar_paths())

    def absorb(found: Candidates, number: int) -> int:
        before = len(learned.files)
        for tar, host in found.files.items():
            learned.files.setdefault(tar, (host, number))
        # An empty directory is learned as an include of it: the include machinery reports
        # it (warning and manifest), from X.learned too. It adds nothing to wait for.
        gaps = {tar: host for tar, host in found.gaps.items() if tar not in learned.files}
        for tar, host in gaps.items():
            learned.files[tar] = (host, number)
        return len(learned.files) - before - len(gaps)

    bundled = rebuild()
    for w in workloads:
        out = _run(execute, draft, w, "host-fs", env, learned)
        found = candidates(_items(out, "host_used", w), bundled, expand_dirs=False)
        added = absorb(found, w.number)
        log(f"workload {w.number} (host-fs view): {added} host file(s) used")
    for round_no in range(1, MAX_LITEBOX_RUNS + 1):
        _prune(learned, pack_with)
        bundled = rebuild()
        wanted = 0
        stuck: list[str] = []
        for w in workloads:
            out = _run(execute, draft, w, "litebox", env, learned)
            found = candidates(_items(out, "missing", w), bundled, expand_dirs=True)
            stuck += found.stuck + [i["path"] for i in _items(out, "kernel", w)]
            added = absorb(found, w.number)
            wanted += added
            log(f"workload {w.number} (LiteBox view, round {round_no}): {added} path(s) missing")
        if not wanted:
            learned.left_out = sorted(set(stuck))
            return learned
    last = list(learned.files)[-3:]  # in the order they were added
    raise UserError(
        f"--learn did not converge: the workloads still needed new files after "
        f"{MAX_LITEBOX_RUNS} runs in the LiteBox view (last added: {', '.join(last)})"
    )


def _run(
    execute: Execute, draft: Path, w: Workload, view: str, env: list[str], learned: Learned
) -> Outcome:
    try:
        out = execute(draft, w, view, env)
    except UserError as e:
        raise UserError(f"workload {w.number} ({w.describe()}): {e}") from None
    learned.runs += 1
    learned.outcomes[w.number] = out
    return out


def _items(out: Outcome, key: str, w: Workload) -> list[dict[str, Any]]:
    files = out.report.get("files")
    items = files.get(key) if isinstance(files, dict) else None
    if not isinstance(items, list):
        raise UserError(f"workload {w.number}: the run report has no files.{key} list")
    return items


def _prune(learned: Learned, pack_with: PackWith) -> None:
    """Drop learned files that the closure of another learned (or given) file already brings:
    X.learned keeps only what a repack cannot find by itself."""
    plan = pack_with(learned.specs(), None)
    reasons = {p: f.reasons for f in plan.files for p in f.paths}
    spare = [t for t in learned.files if any(r["kind"] != "learned" for r in reasons.get(t, []))]
    if not spare:
        return
    kept = {t: learned.files.pop(t) for t in spare}
    without = set(pack_with(learned.specs(), None).tar_paths())
    for tar, value in kept.items():
        if tar not in without:  # only its own learned entry brought it: keep it
            learned.files[tar] = value


def _parents(tar: str) -> Iterable[str]:
    parts = tar.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _fits(path: str) -> bool:
    try:
        check_fits(path)
    except TarPathError:
        return False
    return True


def _direct_files(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [p for n in names if os.path.isfile(p := os.path.join(directory, n))]


def _holds_no_file(directory: str) -> bool:
    for dirpath, _dirs, names in os.walk(directory, followlinks=True):
        if any(os.path.isfile(os.path.join(dirpath, n)) for n in names):
            return False
    return True


# -- running a workload -------------------------------------------------------------------------


def run_workload(
    bundle: Path, w: Workload, view: str, env: list[str], timeout: float = WORKLOAD_TIMEOUT
) -> Outcome:
    """Run one workload with ``litebox-pack run``'s machinery; capture its output (the first
    ``SHOWN_OUTPUT`` bytes of each stream are kept for showing). A workload still running
    after ``timeout`` seconds is killed, with every process it started, and is an error."""
    from .runtime.run import RunRequest, run

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="litebox-learn-")))
        report = tmp / "report.json"
        out = stack.enter_context(open(tmp / "stdout", "w+b"))
        err = stack.enter_context(open(tmp / "stderr", "w+b"))
        req = RunRequest(
            bundle=bundle,
            program=w.argv[0],
            args=w.argv[1:],
            report=report,
            view=view,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out.fileno(),
            stderr=err.fileno(),
        )
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            _kill_descendants(os.getpid())

        watchdog = threading.Timer(timeout, stop)
        watchdog.start()
        try:
            # run() warns about escapes and missing paths on our stderr: the learn loop
            # reports what matters itself, so pack's own output stays readable.
            with contextlib.redirect_stderr(io.StringIO()):
                status = run(req)
        finally:
            watchdog.cancel()
        if expired.is_set():
            raise UserError(f"workload {w.number}: still running after {timeout:g} s, stopped")
        try:
            doc = json.loads(report.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"workload {w.number}: the run wrote no report: {e}") from None
        out.seek(0)
        err.seek(0)
        return Outcome(status, doc, out.read(SHOWN_OUTPUT), err.read(SHOWN_OUTPUT))


def _kill_descendants(pid: int) -> None:
    """SIGKILL every process below ``pid`` (found through /proc: the guest's processes are
    the runtime's children, in no pid namespace of their own)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
    below = {pid}
    grew = True
    while grew:
        more = {p for p, parent in parents.items() if parent in below} - below
        below |= more
        grew = bool(more)
    for p in below - {pid}:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
