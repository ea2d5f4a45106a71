"""``litebox-pack run`` on i386 programs: the 32-bit build of the runtime.

Samples built with ``gcc -m32`` run natively and from a rewritten bundle; stdout, stderr and the
exit status must be the same, the report must show syscalls going through trampolines and none
escaping, and with libc left unrewritten the escapes must be reported at libc's own sites (and
``--strict`` must stop at the first one).

Bundles are laid out by tests/bundle_util.py (ldd closure, every file rewritten: the rewriter
dispatches ELF32 i386 files to its i386 scheme). Every subprocess has a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from packager.errors import UserError
from packager.runtime import build
from packager.runtime.run import STRICT_STATUS

from .bundle_util import make_bundle, tar_bundle
from .test_run import ROOT, TIMEOUT, cli, native, split_summary, under_run

LOADER32 = Path("/lib/ld-linux.so.2")
LIBGCC32 = "/usr/lib32/libgcc_s.so.1"  # backtrace() loads it
CALL_GS10 = bytes.fromhex("65ff1510000000")  # call dword ptr gs:[0x10]
INT80 = bytes.fromhex("cd80")

pytestmark = pytest.mark.skipif(
    sys.platform != "linux"
    or os.uname().machine != "x86_64"
    or shutil.which("ldd") is None
    or not LOADER32.exists(),
    reason="needs an x86-64 Linux host with the i386 libc (apt-get install gcc-multilib)",
)


@dataclass
class Case:
    argv: list[str]  # argv[0]: the program's absolute path (in the bundle and on the host)
    checks: Callable[[dict[str, Any]], None] | None = None
    extra: list[str] = field(default_factory=list)  # further files the bundle needs
    opts: tuple[str, ...] = ()  # further options of `run` (--host-fs, with the reason why)


def real_libc32(program: Path) -> str:
    """The i386 libc.so.6 the program loads (its real path), from ldd."""
    res = subprocess.run(["ldd", str(program)], capture_output=True, text=True, timeout=60)
    m = re.search(r"libc\.so\.6 => (\S+)", res.stdout)
    assert m, res.stdout
    return os.path.realpath(m.group(1))


# --- programs and bundles ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run32")


@pytest.fixture(scope="session")
def cxx32(work: Path) -> Path | None:
    """run_cxx.cpp built with g++ -m32, or None when this machine cannot (no g++-multilib)."""
    out = work / "run_cxx32"
    if shutil.which("g++") is None:
        return None
    res = subprocess.run(
        ["g++", "-m32", "-O2", "-o", str(out), str(ROOT / "samples" / "run_cxx.cpp")],
        capture_output=True,
        timeout=TIMEOUT,
    )
    return out if res.returncode == 0 else None


@pytest.fixture(scope="session")
def cases(build_sample: Callable[..., Path], cxx32: Path | None) -> dict[str, Case]:
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
            assert any(f"the guest created {created} process" in ln for ln in rep["summary"])

        return check

    def both(
        *checks: Callable[[dict[str, Any]], None],
    ) -> Callable[[dict[str, Any]], None]:
        def check(rep: dict[str, Any]) -> None:
            for c in checks:
                c(rep)

        return check

    def sites_in(*suffixes: str) -> Callable[[dict[str, Any]], None]:
        def check(rep: dict[str, Any]) -> None:
            objs = rep["sites"]["by_object"]
            assert all(any(o.endswith(s) for o in objs) for s in suffixes), objs

        return check

    plugin = build_sample("run32_plugin.c", "dynamic32", extra=("-shared", "-fPIC"))
    threads = ("-pthread",)
    more: dict[str, Case] = {}
    if cxx32 is not None:
        more["cxx-exceptions"] = Case([str(cxx32)], checks=sites_in("libc.so.6"))
    return more | {
        "hello-static": Case([str(build_sample("hello32.c", "static32")), "a", "b"]),
        "hello-static-pie": Case(
            [str(build_sample("hello32.c", "dynamic32", extra=("-static-pie",))), "x"]
        ),
        "hello-dynamic": Case(
            [str(build_sample("hello32.c", "dynamic32")), "1", "2", "3"],
            checks=sites_in("ld-linux.so.2", "libc.so.6", "hello32-dynamic32"),
        ),
        "sites-asm": Case([str(build_sample("sites32.S", "nostdlib32"))]),
        "threads": Case(
            [str(build_sample("run_threads.c", "dynamic32", extra=threads))],
            checks=names("futex", "mmap2"),
        ),
        "threads-static": Case(
            [str(build_sample("run_threads.c", "static32", extra=threads))],
            checks=names("futex"),
        ),
        "fork-exec-wait": Case(
            [str(build_sample("run_forkexec.c", "dynamic32"))],
            checks=both(processes(2), names("execve", "vfork")),
        ),
        "sa-restart": Case(
            [str(build_sample("run_sarestart.c", "dynamic32"))], checks=names("setitimer")
        ),
        "signal-frames": Case(
            [str(build_sample("run32_sigframe.c", "dynamic32"))],
            checks=names("rt_sigaction", "signal"),
            extra=[LIBGCC32],
        ),
        "clone-family": Case(
            [str(build_sample("run32_clone.c", "dynamic32"))],
            checks=names("clone", "vfork", "mmap", "wait4"),
        ),
        "syscall-function": Case([str(build_sample("run_syscall.c", "dynamic32"))]),
        "dlopen": Case(
            [str(build_sample("run_dlopen.c", "dynamic32", extra=("-ldl",))), str(plugin)],
            checks=sites_in(plugin.name),
            extra=[str(plugin)],
        ),
        # --host-fs: it reads /proc/self/{exe,comm,cmdline}, and LiteBox gives the guest no /proc.
        "proc-self": Case(
            [str(build_sample("run32_proc.c", "dynamic32")), "x y", "z"], opts=("--host-fs",)
        ),
    }


@pytest.fixture(scope="session")
def bundle(cases: dict[str, Case], work: Path) -> Path:
    programs = [c.argv[0] for c in cases.values()]
    extra = [p for c in cases.values() for p in c.extra]
    return make_bundle(work / "bundle32", programs, extra=extra)


CASES = [
    "hello-static",
    "hello-static-pie",
    "hello-dynamic",
    "sites-asm",
    "threads",
    "threads-static",
    "fork-exec-wait",
    "sa-restart",
    "signal-frames",
    "clone-family",
    "syscall-function",
    "dlopen",
    "proc-self",
    "cxx-exceptions",
]


@pytest.mark.parametrize("name", CASES)
def test_matches_native(name: str, cases: dict[str, Case], bundle: Path, tmp_path: Path) -> None:
    if name not in cases:
        pytest.skip(f"{name}: this machine cannot build it for i386 (g++ -m32: g++-multilib)")
    case = cases[name]
    want = native(case.argv, Path("/"))  # the guest's working directory is /
    got, rep = under_run(bundle, case.argv, tmp_path, *case.opts)
    assert got == want, f"under run:\n{got}\nnative:\n{want}"
    assert rep["view"] == ("host-fs" if case.opts else "litebox")
    assert rep["abi"] == "i386" and rep["arch"] == "i386", rep
    assert rep["syscalls"]["total"] > 0 and rep["sites"]["distinct"] > 0, rep
    assert rep["escapes"]["total"] == 0, rep["escapes"]["list"]
    assert rep["exit_status"] == want.status
    if case.checks:
        case.checks(rep)


def test_paths_resolve_into_the_bundle(
    build_sample: Callable[..., Path], cases: dict[str, Case], tmp_path: Path
) -> None:
    """Every i386 path syscall (open, openat, stat64, lstat64, fstatat64, statx, the old stat,
    access) sees the bundle's copy of a file the bundle holds: the rewritten program, bigger
    than the host's."""
    paths = str(build_sample("run32_paths.c", "dynamic32"))
    target = cases["hello-dynamic"].argv[0]
    tree = make_bundle(tmp_path / "tree", [paths, target])
    copy = (tree / target.lstrip("/")).stat().st_size
    host = Path(target).stat().st_size
    assert copy != host

    def sizes(out: bytes) -> dict[str, int]:
        return {k: int(v) for k, v in (ln.split() for ln in out.decode().splitlines())}

    want = native([paths, target], tmp_path)
    got, rep = under_run(tree, [paths, target], tmp_path)
    assert want.status == got.status == 0, got
    assert sizes(want.stdout) == {**dict.fromkeys(sizes(want.stdout), host), "access": 0}
    assert sizes(got.stdout) == {**dict.fromkeys(sizes(want.stdout), copy), "access": 0}
    assert rep["escapes"]["total"] == 0
    assert {"stat64", "lstat64", "fstatat64", "stat", "open"} <= set(rep["syscalls"]["by_name"])


def test_exec_of_the_other_abi_fails_cleanly(
    build_sample: Callable[..., Path], cases: dict[str, Case], tmp_path: Path
) -> None:
    """An i386 program execs i386 programs through the runtime; an x86-64 one it cannot (that
    would take the x86-64 runtime): execve fails with ENOEXEC and one line says why, instead of
    the process dying after the point of no return."""
    execv = str(build_sample("run32_execv.c", "dynamic32"))
    hello = cases["hello-dynamic"].argv[0]
    tree = make_bundle(tmp_path / "tree", [execv, hello, "/usr/bin/true"])
    argv = [execv, hello, "x"]
    got, rep = under_run(tree, argv, tmp_path)
    assert got == native(argv, tmp_path) and len(rep["images"]) >= 2
    assert "execve" in rep["syscalls"]["by_name"]
    got, _ = under_run(tree, [execv, "/usr/bin/true"], tmp_path)
    assert got.status == 3 and b"Exec format error" in got.stdout, got
    assert got.stderr.decode().splitlines() == [
        "litebox-pack run: /usr/bin/true: a program of the other x86 ABI; "
        "the i386 runtime cannot exec it"
    ], got


# --- escapes -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def raw_libc_bundle(cases: dict[str, Case], work: Path) -> tuple[Path, str]:
    """Every case's programs with the i386 libc.so.6 copied as is (not rewritten)."""
    programs = [c.argv[0] for c in cases.values()]
    extra = [p for c in cases.values() for p in c.extra]
    libc = real_libc32(Path(cases["hello-dynamic"].argv[0]))
    return make_bundle(work / "bundle32-raw-libc", programs, extra=extra, no_rewrite=[libc]), libc


def test_unrewritten_libc_escapes_are_reported(
    cases: dict[str, Case], raw_libc_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    """Raw libc: its syscalls escape, both its `int $0x80`s (caught by seccomp) and its
    `call *%gs:0x10`s (which enter the runtime through AT_SYSINFO); each escape names libc
    and the file offset of the unrewritten instruction."""
    bundle, libc = raw_libc_bundle
    argv = [cases["hello-dynamic"].argv[0], "q"]
    got, rep = under_run(bundle, argv, tmp_path)
    want = native(argv, tmp_path)
    assert (got.stdout, got.status) == (want.stdout, want.status), got
    assert got.stderr.startswith(want.stderr) and b"escaped the trampolines" in got.stderr
    esc = rep["escapes"]
    assert esc["total"] > 0 and esc["distinct"] == len(esc["list"]) > 0
    data = Path(libc).read_bytes()
    for e in esc["list"]:
        assert e["object"].endswith("/libc.so.6"), e
        at = data[e["file_offset"] : e["file_offset"] + 7]
        assert at == CALL_GS10 or at[:2] == INT80, (e, at.hex())
    assert {"write", "exit_group"} <= {e["syscall"] for e in esc["list"]}
    # ld.so and the program are rewritten: their syscalls still go through trampolines.
    objs = rep["sites"]["by_object"]
    assert any(o.endswith("ld-linux.so.2") for o in objs), objs
    assert any(o.endswith("hello32-dynamic32") for o in objs), objs


def test_strict_stops_at_the_first_escape(
    cases: dict[str, Case], raw_libc_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    bundle, _ = raw_libc_bundle
    got, rep = under_run(bundle, [cases["hello-dynamic"].argv[0]], tmp_path, "--strict")
    assert got.status == STRICT_STATUS, got
    lines = got.stderr.decode().splitlines()
    assert len(lines) == 1, got
    assert "escaped syscall" in lines[0] and "libc.so.6+0x" in lines[0], lines
    assert rep["strict_stop"] is not None
    assert got.stdout == b""  # stopped before the program printed


@pytest.mark.parametrize(
    "name", ["threads", "fork-exec-wait", "sa-restart", "signal-frames", "clone-family", "dlopen"]
)
def test_escaped_syscalls_are_performed_faithfully(
    name: str, cases: dict[str, Case], raw_libc_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    """With libc left as is nearly every syscall escapes: the SIGSYS handler and the AT_SYSINFO
    entry must perform clone with new stacks, fork, execve, signals and restarts just as well."""
    bundle, _ = raw_libc_bundle
    argv = cases[name].argv
    want = native(argv, tmp_path)
    got, rep = under_run(bundle, argv, tmp_path)
    assert (got.stdout, got.status) == (want.stdout, want.status), got
    assert got.stderr.startswith(want.stderr) and b"escaped the trampolines" in got.stderr
    assert rep["escapes"]["total"] > 0
    assert {Path(e["object"]).name for e in rep["escapes"]["list"]} == {"libc.so.6"}


# --- ABI detection, tar bundles, trace ---------------------------------------------------------


@pytest.mark.parametrize("abi", ["auto", "redzone", "resume"])
def test_tar_without_manifest_runs_as_i386(
    abi: str, cases: dict[str, Case], tmp_path: Path
) -> None:
    """The program's ELF class picks the runtime; both stub ABIs wrote the same i386 stubs, so
    --abi does not matter and the report says i386."""
    hello = cases["hello-dynamic"].argv[0]
    src = make_bundle(tmp_path / "tree", [hello], abi="redzone", manifest=False)
    tar = tar_bundle(src, tmp_path / "hello32.tar")
    shutil.rmtree(src)
    argv = [hello, "one", "two"]
    got, rep = under_run(tar, argv, tmp_path, "--abi", abi)
    assert got == native(argv, tmp_path)
    assert rep["abi"] == "i386" and rep["escapes"]["total"] == 0
    assert not list(tmp_path.glob("litebox-run-*")), "the extracted bundle was not removed"


def test_trace_names_i386_syscalls(cases: dict[str, Case], bundle: Path, tmp_path: Path) -> None:
    argv = cases["hello-static"].argv
    got, rep = under_run(bundle, argv, tmp_path, "--trace")
    want = native(argv, tmp_path)
    assert (got.stdout, got.status) == (want.stdout, want.status)
    lines = got.stderr.decode().splitlines()
    pattern = re.compile(r"^\[litebox \d+\] (\w+) \((\d+)\) (= -?\d+|\.\.\.)  site 0x[0-9a-f]+$")
    assert lines and all(pattern.match(ln) for ln in lines), lines
    # i386 numbers: write is 4, exit_group 252 (x86-64: 1 and 231).
    written = [int(ln.split(" = ")[1].split()[0]) for ln in lines if " write (4) = " in ln]
    assert sum(written) == len(want.stdout), lines
    assert any(" exit_group (252) ..." in ln for ln in lines), lines
    assert len([ln for ln in lines if " = " in ln]) == rep["syscalls"]["total"] - 1


def test_bundle_made_by_litebox_pack(cases: dict[str, Case], tmp_path: Path) -> None:
    """The real packager's tar (loader paths only, manifest, .hooked beside it) runs as is; with
    libc left unrewritten its escapes are caught and --strict stops the program."""
    hello = cases["hello-dynamic"].argv[0]
    tar = tmp_path / "hello32.tar"
    made = cli(["pack", hello, "-o", str(tar)], tmp_path)
    assert made.status == 0, made
    hooked = tmp_path / "hello32.hooked"  # named after the bundle
    assert hooked.is_file()
    want = native([hello, "a", "b"], tmp_path)
    got, rep = under_run(tar, [hello, "a", "b"], tmp_path)
    assert got == want
    assert rep["abi"] == "i386" and rep["escapes"]["total"] == 0 and rep["syscalls"]["total"] > 0
    hooked_run = cli(["run", "--hooked", str(hooked), str(tar), "--", "a", "b"], tmp_path)
    assert split_summary(hooked_run)[0] == want
    raw = tmp_path / "raw.tar"
    libc = real_libc32(Path(hello))
    made = cli(["pack", hello, "--no-rewrite", libc, "-o", str(raw)], tmp_path)
    assert made.status == 0, made
    got, rep = under_run(raw, [hello], tmp_path)
    assert got.stdout == native([hello], tmp_path).stdout and rep["escapes"]["total"] > 0
    assert all(e["object"].endswith("/libc.so.6") for e in rep["escapes"]["list"])
    got, _ = under_run(raw, [hello], tmp_path, "--strict")
    assert got.status == STRICT_STATUS and len(got.stderr.splitlines()) == 1


# --- building the i386 runtime ------------------------------------------------------------------


def test_i386_runtime_is_cached_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rt32 = build.runtime_binary("i386")
    rt64 = build.runtime_binary()
    assert rt32.parent != rt64.parent
    assert rt32.read_bytes()[:5] == b"\x7fELF\x01" and rt64.read_bytes()[:5] == b"\x7fELF\x02"
    stamp = rt32.stat().st_mtime_ns
    assert build.runtime_binary("i386") == rt32 and rt32.stat().st_mtime_ns == stamp


def test_i386_runtime_source_builds_without_warnings(tmp_path: Path) -> None:
    target = build.TARGETS["i386"]
    for name, data in build._sources("i386").items():
        (tmp_path / name).write_bytes(data)
    res = subprocess.run(
        [*build.find_compiler(), *target.cflags, *target.ldflags, "-o", "rt", *target.c_files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_missing_32bit_toolchain_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiler that cannot target i386 (here: one that rejects -m32 as gcc without multilib
    support does) gives one line that names the package to install."""
    fake = tmp_path / "bin" / "cc"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = -m32 ] && '
        "{ echo \"cc: error: unrecognized command-line option '-m32'\" >&2; exit 1; }; done\n"
        f'exec {shutil.which("gcc")} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(UserError, match=r"apt-get install gcc-multilib") as e:
        build.runtime_binary("i386")
    assert "\n" not in str(e.value) and "-m32" in str(e.value)
    assert build.runtime_binary().is_file()  # the x86-64 runtime still builds with it
