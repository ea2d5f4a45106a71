"""``litebox-pack run`` end to end: real programs run natively and from a rewritten bundle with
their trampolines live must print the same bytes and exit the same way, and the report must
show syscalls going through trampolines and none escaping.

Bundles are laid out by tests/bundle_util.py (ldd closure, every file rewritten). Every
subprocess has a timeout, so a hang fails instead of blocking the suite.

`run` shows the guest LiteBox's view: the bundle alone, cwd /, uid/gid 1000 and only the
environment given with --env. So each case's bundle holds every file the program reads, the
native run gets the same (empty) environment and working directory, and `run`'s own summary
lines (paths the bundle lacks, processes created) are checked apart from the program's stderr.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from packager.errors import UserError
from packager.runtime import build
from packager.runtime.run import STRICT_STATUS

from .bundle_util import make_bundle, tar_bundle

ABIS = ("redzone", "resume")
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from packager.cli import main; main()"]
TIMEOUT = 120
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
PYTHON = "/usr/bin/python3"

PY_CODE = (
    "import json, hashlib, subprocess, sys\n"
    "print(json.dumps({'b': [1, 2], 'a': 'x'}, sort_keys=True))\n"
    "print(hashlib.sha256(b'litebox').hexdigest(), hashlib.md5(b'x').hexdigest())\n"
    "r = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True)\n"
    "print('child said', r.stdout.strip(), 'status', r.returncode)\n"
    "print('to stderr', file=sys.stderr)\n"
    "sys.exit(4)\n"
)
BASH_CODE = (
    "echo hello world | tr a-z A-Z | cat; "
    "(cd / && ls -d usr bin; exit 5); echo subshell $?; "
    'x=$(cat /etc/os-release | sha256sum); echo "${x%% *}"; '
    "echo to stderr >&2; exit 3"
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine != "x86_64" or shutil.which("ldd") is None,
    reason="the runtime runs x86-64 Linux programs",
)


@dataclass(frozen=True)
class Outcome:
    stdout: bytes
    stderr: bytes
    status: int

    def __str__(self) -> str:
        return (
            f"status {self.status}\nstdout {self.stdout[-2000:]!r}\nstderr {self.stderr[-2000:]!r}"
        )


@dataclass
class Case:
    argv: list[str]  # argv[0]: the program's absolute path (in the bundle and on the host)
    bundle: list[str] = field(default_factory=list)  # further programs the case execs
    extra: list[str] = field(default_factory=list)  # further files (plugins, modules)
    checks: Callable[[dict[str, Any]], None] | None = None
    opts: tuple[str, ...] = ()  # further options of `run` (--host-fs, with the reason why)


def native(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    """The program run directly, with the environment the guest gets (empty unless given)."""
    res = subprocess.run(argv, capture_output=True, cwd=cwd, timeout=TIMEOUT, env=env or {})
    return Outcome(res.stdout, res.stderr, res.returncode)


SUMMARY = re.compile(
    rb"^litebox-pack: warning: (\d+ paths? the bundle lacks|\d+ paths? under /proc"
    rb"|the guest created|\d+ writes? where)"
)


def split_summary(out: Outcome) -> tuple[Outcome, list[str]]:
    """The program's own outcome, and `run`'s summary lines (which follow it on stderr)."""
    lines = out.stderr.splitlines(keepends=True)
    summary = [ln.decode().rstrip("\n") for ln in lines if SUMMARY.match(ln)]
    kept = b"".join(ln for ln in lines if not SUMMARY.match(ln))
    return Outcome(out.stdout, kept, out.status), summary


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    res = subprocess.run(
        [*CLI, *args], capture_output=True, cwd=cwd, timeout=TIMEOUT, env=env or _cli_env(cwd)
    )
    return Outcome(res.stdout, res.stderr, res.returncode)


def _cli_env(tmp: Path) -> dict[str, str]:
    # The runtime's temporary files go to a private directory, so a native `ls -la /` and one
    # under the runtime see the same /tmp.
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp)
    env["PYTHONPATH"] = str(ROOT)
    return env


def under_run(
    bundle: Path, argv: list[str], cwd: Path, *opts: str, env: dict[str, str] | None = None
) -> tuple[Outcome, dict]:
    """`run` with the report, the guest environment `env` (--env) and the summary lines kept
    apart: the outcome is the program's own."""
    report = cwd / "report.json"
    report.unlink(missing_ok=True)
    envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
    out = cli(["run", str(bundle), "--report", str(report), *envs, *opts, "--", *argv], cwd)
    doc = json.loads(report.read_text()) if report.exists() else {}
    got, summary = split_summary(out)
    doc["summary"] = summary
    return got, doc


def one_error_line(out: Outcome) -> str:
    lines = out.stderr.decode().splitlines()
    assert out.status == 1, out
    assert len(lines) == 1, out
    assert lines[0].startswith("litebox-pack: error: "), out
    return lines[0]


# --- programs --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def cxx_binary(work: Path) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed for the C++ sample")
    out = work / "run_cxx"
    res = subprocess.run(
        ["g++", "-O2", "-o", str(out), str(ROOT / "samples" / "run_cxx.cpp")],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        pytest.fail(f"building run_cxx.cpp failed:\n{res.stderr}")
    return out


def _python_files() -> list[str]:
    """Every module file PY_CODE loads (its stdlib sources and extension modules), so the
    bundle holds what Python reads in LiteBox's view (the extension modules rewritten)."""
    code = PY_CODE.replace("sys.exit(4)", "") + (
        "print('\\n'.join(sorted(m.__file__ for m in list(sys.modules.values())\n"
        "    if getattr(m, '__file__', None))), file=sys.stderr)\n"
    )
    res = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, env={}
    )
    return [ln for ln in res.stderr.splitlines() if ln.endswith((".so", ".py"))]


@pytest.fixture(scope="session")
def cases(build_sample: Callable[..., Path], cxx_binary: Path, work: Path) -> dict[str, Case]:
    plugin = build_sample("run_plugin.c", "shared")
    text = work / "input.txt"
    text.write_bytes(bytes(range(256)) * 64 + b"\nlast line\n")

    def sites_in(obj_suffix: str) -> Callable[[dict[str, Any]], None]:
        def check(rep: dict[str, Any]) -> None:
            objs = rep["sites"]["by_object"]
            assert any(o.endswith(obj_suffix) for o in objs), objs

        return check

    def names(*wanted: str) -> Callable[[dict[str, Any]], None]:
        def check(rep: dict[str, Any]) -> None:
            seen = rep["syscalls"]["by_name"]
            assert all(w in seen for w in wanted), (wanted, seen)

        return check

    def processes(n: int) -> Callable[[dict[str, Any]], None]:
        """The guest created at least n processes, and the summary line says so."""

        def check(rep: dict[str, Any]) -> None:
            created = rep["processes"]["created"]
            assert created >= n, rep["processes"]
            assert created == sum(rep["processes"][k] for k in ("fork", "vfork", "clone"))
            assert any(f"the guest created {created} process" in ln for ln in rep["summary"])

        return check

    fe = str(build_sample("run_forkexec.c"))
    script = work / "script.sh"
    script.write_text('#!/usr/bin/bash -e\necho "script $# $1"\nexec /usr/bin/cat "$0"\n')
    script.chmod(0o755)
    return {
        "hello-static": Case([str(build_sample("hello.c", "static")), "a", "b"]),
        "hello-static-pie": Case([str(build_sample("hello.c", "static-pie")), "x"]),
        "hello-dynamic": Case([str(build_sample("hello.c")), "1", "2", "3"]),
        "sites-asm": Case([str(build_sample("sites.S", "nostdlib"))]),
        "threads": Case(
            [str(build_sample("run_threads.c", extra=("-pthread",)))],
            checks=names("clone3", "futex"),
        ),
        "fork-exec-wait": Case([fe], checks=processes(2)),
        "sa-restart": Case(
            [str(build_sample("run_sarestart.c"))], checks=names("rt_sigreturn", "setitimer")
        ),
        "dlopen": Case(
            [str(build_sample("run_dlopen.c")), str(plugin)],
            extra=[str(plugin)],
            checks=sites_in(plugin.name),
        ),
        "cxx-exceptions": Case([str(cxx_binary)], checks=sites_in("libc.so.6")),
        # --host-fs: it maps its own file through /proc/self/exe, and LiteBox has no /proc.
        "syscall-function": Case([str(build_sample("run_syscall.c"))], opts=("--host-fs",)),
        "cat": Case(["/usr/bin/cat", str(text)], extra=[str(text)]),
        # Data files of the bundle, not ELFs: those are rewritten copies with other hashes.
        "sha256sum": Case(
            ["/usr/bin/sha256sum", str(text), "/usr/lib/python3.11/typing.py"],
            extra=[str(text), "/usr/lib/python3.11/typing.py"],
        ),
        "bash": Case(
            ["/usr/bin/bash", "-c", BASH_CODE],
            bundle=["/usr/bin/tr", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/sha256sum"],
            # What the script reads, and a file under /bin so that `ls -d usr bin` finds it.
            extra=["/etc/os-release", "/bin/sh"],
            checks=processes(4),
        ),
        "python3": Case(
            [PYTHON, "-c", PY_CODE], extra=_python_files(), checks=names("vfork", "execve")
        ),
        # What ps shows: the program's own name, command line and auxv, not the runtime's.
        # --host-fs: LiteBox gives the guest no /proc, so this needs the host's.
        "proc-self": Case(
            [
                "/usr/bin/bash",
                "-c",
                "cat /proc/$$/comm; tr '\\0' ' ' < /proc/$$/cmdline; echo; "
                "exec /usr/bin/cat /proc/self/cmdline",
            ],
            opts=("--host-fs",),
        ),
        # A "#!" script as PROGRAM: the runtime loads its interpreter (from the bundle).
        "script": Case([str(script), "arg"], extra=[str(script)], checks=names("execve")),
    }


@pytest.fixture(scope="session")
def bundles(cases: dict[str, Case], work: Path) -> Callable[[str], Path]:
    """One bundle per ABI with every case's programs (laid out on first use)."""
    made: dict[str, Path] = {}

    def get(abi: str) -> Path:
        if abi not in made:
            programs = [c.argv[0] for c in cases.values()]
            programs += [p for c in cases.values() for p in c.bundle]
            extra = [p for c in cases.values() for p in c.extra]
            made[abi] = make_bundle(work / f"bundle-{abi}", programs, abi=abi, extra=extra)
        return made[abi]

    return get


CASES = [
    "hello-static",
    "hello-static-pie",
    "hello-dynamic",
    "sites-asm",
    "threads",
    "fork-exec-wait",
    "sa-restart",
    "dlopen",
    "cxx-exceptions",
    "syscall-function",
    "cat",
    "sha256sum",
    "bash",
    "python3",
    "script",
    "proc-self",
]


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("name", CASES)
def test_matches_native(
    name: str, abi: str, cases: dict[str, Case], bundles: Callable[[str], Path], tmp_path: Path
) -> None:
    case = cases[name]
    bundle = bundles(abi)
    want = native(case.argv, Path("/"))  # the guest's working directory is /
    got, rep = under_run(bundle, case.argv, tmp_path, *case.opts)
    assert got == want, f"under run:\n{got}\nnative:\n{want}"
    assert rep["view"] == ("host-fs" if "--host-fs" in case.opts else "litebox")
    assert rep["abi"] == abi
    assert rep["syscalls"]["total"] > 0 and rep["sites"]["distinct"] > 0, rep
    assert rep["escapes"]["total"] == 0, rep["escapes"]["list"]
    assert rep["exit_status"] == want.status
    if case.checks:
        case.checks(rep)


# --- escapes -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def escape_bundle(build_sample: Callable[..., Path], work: Path) -> tuple[Path, Path]:
    hello = build_sample("hello.c")
    return make_bundle(work / "bundle-raw-libc", [str(hello)], no_rewrite=[LIBC]), hello


def test_unrewritten_libc_escapes_are_reported(
    escape_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, hello = escape_bundle
    argv = [str(hello), "q"]
    got, rep = under_run(bundle, argv, tmp_path)
    want = native(argv, tmp_path)
    assert (got.stdout, got.status) == (want.stdout, want.status)
    assert b"escaped the trampolines" in got.stderr  # a warning, beside the program's output
    esc = rep["escapes"]
    assert esc["total"] > 0 and esc["distinct"] == len(esc["list"]) > 0
    libc = Path(LIBC).read_bytes()
    for e in esc["list"]:
        assert e["object"].endswith("libc.so.6"), e
        # The file offset is the syscall instruction in the real libc.
        assert libc[e["file_offset"] : e["file_offset"] + 2] == b"\x0f\x05", e
    assert "write" in {e["syscall"] for e in esc["list"]}
    # ld.so and the program were rewritten: their syscalls still use trampolines.
    assert any(o.endswith("ld-linux-x86-64.so.2") for o in rep["sites"]["by_object"])


def test_strict_stops_at_the_first_escape(escape_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, hello = escape_bundle
    got, rep = under_run(bundle, [str(hello)], tmp_path, "--strict")
    assert got.status == STRICT_STATUS, got
    lines = got.stderr.decode().splitlines()
    assert len(lines) == 1, got
    assert "escaped syscall" in lines[0] and "libc.so.6+0x" in lines[0], lines
    assert rep["strict_stop"] is not None
    assert got.stdout == b""  # stopped before the program printed


@pytest.fixture(scope="session")
def raw_libc_bundle(cases: dict[str, Case], work: Path) -> Path:
    names = ("threads", "fork-exec-wait", "sa-restart", "bash", "python3")
    programs = [cases[n].argv[0] for n in names] + [p for n in names for p in cases[n].bundle]
    extra = [p for n in names for p in cases[n].extra]
    return make_bundle(work / "bundle-all-raw-libc", programs, extra=extra, no_rewrite=[LIBC])


@pytest.mark.parametrize("name", ["threads", "fork-exec-wait", "sa-restart", "bash", "python3"])
def test_escaped_syscalls_are_performed_faithfully(
    name: str, cases: dict[str, Case], raw_libc_bundle: Path, tmp_path: Path
) -> None:
    """With libc left as is nearly every syscall escapes: the SIGSYS handler must perform
    clone with new stacks, fork, execve, signal masks and restarts just as well."""
    argv = cases[name].argv
    want = native(argv, tmp_path)
    got, rep = under_run(raw_libc_bundle, argv, tmp_path)
    assert (got.stdout, got.status) == (want.stdout, want.status), got
    assert got.stderr.startswith(want.stderr) and b"escaped the trampolines" in got.stderr
    assert rep["escapes"]["total"] > 0
    assert {e["object"] for e in rep["escapes"]["list"]} == {"/lib/x86_64-linux-gnu/libc.so.6"}


# --- tar bundles, --hooked, auto ABI, exit statuses, trace --------------------------------------


@pytest.mark.parametrize("abi", ABIS)
def test_tar_without_manifest_detects_the_abi(
    abi: str, build_sample: Callable[..., Path], tmp_path: Path
) -> None:
    hello = build_sample("hello.c")
    src = make_bundle(tmp_path / "tree", [str(hello)], abi=abi, manifest=False)
    tar = tar_bundle(src, tmp_path / "hello.tar")
    shutil.rmtree(src)
    argv = [str(hello), "one", "two"]
    got, rep = under_run(tar, argv, tmp_path)
    assert got == native(argv, tmp_path)
    assert rep["abi"] == abi and rep["escapes"]["total"] == 0
    assert not list(tmp_path.glob("litebox-run-*")), "the extracted bundle was not removed"


def test_hooked_main_binary_beside_the_tar(
    build_sample: Callable[..., Path], tmp_path: Path
) -> None:
    hello = build_sample("hello.c", "static")
    src = make_bundle(tmp_path / "tree", [str(hello)], abi="resume")
    tar = tar_bundle(src, tmp_path / "hello.tar")
    hooked = tmp_path / (hello.name + ".hooked")
    shutil.copy(src / str(hello).lstrip("/"), hooked)
    # The copy in the tar is broken on purpose: --hooked must load the file beside the tar.
    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w", format=tarfile.USTAR_FORMAT) as out, tarfile.open(tar) as inp:
        for m in inp:
            f = inp.extractfile(m)
            data = f.read() if f else b""
            if m.name == str(hello).lstrip("/"):
                data = data[:100] + bytes(len(data) - 100)
            out.addfile(m, io.BytesIO(data))
    got = cli(["run", "--hooked", str(hooked), str(broken), "--", "x", "y"], tmp_path)
    assert got == native([str(hello), "x", "y"], tmp_path)


def _has_pack_command() -> bool:
    from packager.cli import _command_names

    return "pack" in _command_names()


@pytest.mark.skipif(not _has_pack_command(), reason="litebox-pack pack is not there yet")
@pytest.mark.parametrize("abi", ABIS)
def test_bundle_made_by_litebox_pack(
    abi: str, build_sample: Callable[..., Path], tmp_path: Path
) -> None:
    """The real packager's tar (loader paths only, manifest, .hooked beside it) runs as is."""
    hello = build_sample("hello.c")
    tar = tmp_path / "hello.tar"
    made = cli(["pack", str(hello), "--abi", abi, "-o", str(tar)], tmp_path)
    assert made.status == 0, made
    hooked = tmp_path / "hello.hooked"  # named after the bundle
    assert hooked.is_file()
    want = native([str(hello), "a", "b"], tmp_path)
    got, rep = under_run(tar, [str(hello), "a", "b"], tmp_path)
    assert got == want and rep["abi"] == abi and rep["escapes"]["total"] == 0
    hooked_run = cli(["run", "--hooked", str(hooked), str(tar), "--", "a", "b"], tmp_path)
    assert split_summary(hooked_run)[0] == want
    # --no-rewrite on libc: the escapes are caught and --strict stops the program.
    raw = tmp_path / "raw.tar"
    made = cli(["pack", str(hello), "--abi", abi, "--no-rewrite", LIBC, "-o", str(raw)], tmp_path)
    assert made.status == 0, made
    got, rep = under_run(raw, [str(hello)], tmp_path)
    assert got.stdout == native([str(hello)], tmp_path).stdout and rep["escapes"]["total"] > 0
    assert all(e["object"].endswith("/libc.so.6") for e in rep["escapes"]["list"])
    got, _ = under_run(raw, [str(hello)], tmp_path, "--strict")
    assert got.status == STRICT_STATUS and len(got.stderr.splitlines()) == 1


def test_signal_death_passes_through(bundles: Callable[[str], Path], tmp_path: Path) -> None:
    argv = ["/usr/bin/bash", "-c", "echo before; kill -TERM $$; echo after"]
    want = native(argv, tmp_path)
    got, _ = under_run(bundles("redzone"), argv, tmp_path)
    assert want.status == -15
    assert got == want


def test_trace_prints_each_trampolined_syscall(
    cases: dict[str, Case], bundles: Callable[[str], Path], tmp_path: Path
) -> None:
    argv = cases["hello-static"].argv
    got, rep = under_run(bundles("redzone"), argv, tmp_path, "--trace")
    want = native(argv, tmp_path)
    assert (got.stdout, got.status) == (want.stdout, want.status)
    lines = got.stderr.decode().splitlines()
    pattern = re.compile(r"^\[litebox \d+\] (\w+) \((\d+)\) (= -?\d+|\.\.\.)  site 0x[0-9a-f]+$")
    assert lines and all(pattern.match(ln) for ln in lines), lines
    written = [int(ln.split(" = ")[1].split()[0]) for ln in lines if " write (1) = " in ln]
    assert sum(written) == len(want.stdout), lines
    finished = [ln for ln in lines if " = " in ln]
    assert len(finished) == rep["syscalls"]["total"] - 1  # exit_group never returns


# --- bad input -------------------------------------------------------------------------------


def test_not_a_tar(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(3000))
    assert "not a tar archive" in one_error_line(cli(["run", str(junk), "--", "/x"], tmp_path))


def test_tar_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just text\n")
    tar = tmp_path / "plain.tar"
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as t:
        t.add(tmp_path / "notes.txt", arcname="notes.txt")
    line = one_error_line(cli(["run", str(tar), "--", "/notes.txt"], tmp_path))
    assert "not a litebox bundle" in line


def test_program_missing_from_the_bundle(bundles: Callable[[str], Path], tmp_path: Path) -> None:
    line = one_error_line(cli(["run", str(bundles("redzone")), "--", "/usr/bin/nope"], tmp_path))
    assert "/usr/bin/nope: not in the bundle" in line


def test_relative_program_is_refused(bundles: Callable[[str], Path], tmp_path: Path) -> None:
    line = one_error_line(cli(["run", str(bundles("redzone")), "--", "usr/bin/ls"], tmp_path))
    assert "absolute path" in line


def test_corrupt_trailer(build_sample: Callable[..., Path], tmp_path: Path) -> None:
    hello = build_sample("hello.c")
    src = make_bundle(tmp_path / "tree", [str(hello)])
    libc = src / "lib/x86_64-linux-gnu/libc.so.6"
    data = bytearray(libc.read_bytes())
    data[-8:] = (int.from_bytes(data[-8:], "little") + 16).to_bytes(8, "little")  # size
    libc.write_bytes(bytes(data))
    tar = tar_bundle(src, tmp_path / "corrupt.tar")
    line = one_error_line(cli(["run", str(tar), "--", str(hello)], tmp_path))
    assert "libc.so.6: invalid LITEBOX0 trailer" in line


def test_member_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    tar = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as t:
        t.add(payload, arcname="../../escaped")
    line = one_error_line(cli(["run", str(tar), "--", "/escaped"], tmp_path))
    assert "outside the bundle" in line
    assert not (tmp_path.parent / "escaped").exists()


def test_unrewritten_program_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    shutil.copy("/usr/bin/true", tree / "bin" / "true")
    (tree / "litebox").mkdir()
    (tree / "litebox" / "manifest.json").write_text('{"options": {"abi": "redzone"}}')
    line = one_error_line(cli(["run", str(tree), "--", "/bin/true"], tmp_path))
    assert "not rewritten" in line


# --- building the runtime --------------------------------------------------------------------


def test_runtime_build_is_cached_by_source_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = build.runtime_binary()
    assert first.parent.parent == tmp_path / "cache" / "litebox-pack" / "runtime"
    stamp = first.stat().st_mtime_ns
    assert build.runtime_binary() == first and first.stat().st_mtime_ns == stamp
    assert not list(first.parent.parent.glob(".build-*"))


def test_two_builds_at_once(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    code = "from packager.runtime.build import runtime_binary; print(runtime_binary())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and Path(outs[0].decode().strip()).is_file()
    assert not list((tmp_path / "cache" / "litebox-pack" / "runtime").glob(".build-*"))


def test_missing_compiler_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(UserError, match=r"apt-get install gcc") as e:
        build.runtime_binary()
    assert "\n" not in str(e.value)


def test_runtime_source_builds_without_warnings(tmp_path: Path) -> None:
    compiler = build.find_compiler()
    sources = build._sources()
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
    res = subprocess.run(
        [*compiler, *build.CFLAGS, *build.LDFLAGS, "-o", "rt", *build.C_FILES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr
