"""Issue 9's acceptance: real programs of this machine packed with --learn over a real workload,
then run in the LiteBox view (the bundle alone). Each must print what it prints natively (same
stdout, stderr and exit status, with the same environment and identity: the guest is uid/gid
1000, so the native side runs under ``unshare --user --map-user=1000 --map-group=1000`` and
``env -i``), with 0 escapes and 0 missing paths; and a repack from its X.learned, without running
anything, must give the same tar byte for byte.

Bundles are learned once per module and shared between the assertions; the rewrite cache is
shared too (XDG_CACHE_HOME of the module), so libc and friends are rewritten once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, BuildSample
from tests.test_json_schemas import check

EXE = Path(sys.executable).parent / "litebox-pack"
TIMEOUT = 300
SCRATCH = f"/tmp/litebox-learn-{os.getpid()}"  # what workloads create (a private /tmp inside)


@dataclass(frozen=True)
class Program:
    """A program to learn: its inputs, its workload (argv; the first word is an absolute
    path), the environment, and files the workload reads (made by the test)."""

    inputs: Callable[[BuildSample, Path], list[str]]
    argv: list[str]
    env: list[str] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)  # name -> content, under DATA


def host(*paths: str) -> Callable[[BuildSample, Path], list[str]]:
    return lambda _build, _work: list(paths)


def sample(source: str, kind: str) -> Callable[[BuildSample, Path], list[str]]:
    return lambda build, _work: [str(build(source, kind))]


def cxx(_build: BuildSample, work: Path) -> list[str]:
    if shutil.which("g++") is None:
        pytest.fail("g++ is needed for the C++ sample")
    out = work / "run_cxx"
    if not out.exists():
        cmd = ["g++", "-O2", "-pthread", "-o", str(out), str(ROOT / "samples" / "run_cxx.cpp")]
        subprocess.run(cmd, check=True, capture_output=True, timeout=TIMEOUT)
    return [str(out)]


PY_WORKLOAD = (
    "import json, hashlib, ssl, sqlite3, subprocess, zlib, bz2, lzma, datetime\n"
    "print(json.dumps({'a': [1, 2]}, sort_keys=True))\n"
    "print(hashlib.sha256(b'litebox').hexdigest(), ssl.OPENSSL_VERSION.split()[0])\n"
    "db = sqlite3.connect(':memory:'); db.execute('create table t (x)')\n"
    "db.execute('insert into t values (42)'); print(db.execute('select x from t').fetchone())\n"
    "print(subprocess.run(['/bin/echo', 'from a child'], capture_output=True).stdout)\n"
    "print(len(zlib.compress(b'x' * 100)), len(bz2.compress(b'y')), len(lzma.compress(b'z')))\n"
)
GIT_WORKLOAD = (
    f"git init -q {SCRATCH}/repo && cd {SCRATCH}/repo && echo hello > f.txt && git add f.txt"
    " && git -c user.name=L -c user.email=l@example.com commit -q -m first"
    " && git log --format=%s && git ls-files"
)
TAR_WORKLOAD = (
    f"mkdir -p {SCRATCH}/t && echo one > {SCRATCH}/t/a && tar czf {SCRATCH}/t.tgz -C {SCRATCH} t"
    f" && tar tzf {SCRATCH}/t.tgz && gzip -dc {SCRATCH}/t.tgz | wc -c"
)
OPENSSL_WORKLOAD = (
    "printf litebox | openssl dgst -sha256 -r"
    " && printf litebox | openssl enc -aes-128-cbc -K 000102030405060708090a0b0c0d0e0f"
    " -iv 0f0e0d0c0b0a09080706050403020100 | openssl base64"
)
PIPES = b"#!/bin/sh\necho 'c b a' | tr ' ' '\\n' | sort | head -n 2 | tr '\\n' ,\necho\n"
TEXT = b"LiteBox runs Linux programs.\n" * 40

PROGRAMS: dict[str, Program] = {
    "python3": Program(host("/usr/bin/python3"), ["/usr/bin/python3", "-c", PY_WORKLOAD]),
    "git": Program(host("/bin/sh", "/usr/bin/git"), ["/bin/sh", "-c", GIT_WORKLOAD]),
    "openssl": Program(host("/bin/sh", "/usr/bin/openssl"), ["/bin/sh", "-c", OPENSSL_WORKLOAD]),
    "gzip": Program(host("/usr/bin/gzip"), ["/usr/bin/gzip", "-9nc", "DATA/text"]),
    "bzip2": Program(host("/usr/bin/bzip2"), ["/usr/bin/bzip2", "-c", "DATA/text"]),
    "xz": Program(host("/usr/bin/xz"), ["/usr/bin/xz", "-c", "DATA/text"]),
    "zstd": Program(host("/usr/bin/zstd"), ["/usr/bin/zstd", "-q", "-c", "DATA/text"]),
    "tar": Program(host("/bin/sh", "/usr/bin/tar"), ["/bin/sh", "-c", TAR_WORKLOAD]),
    "id": Program(host("/usr/bin/id"), ["/usr/bin/id"]),
    "getent": Program(host("/usr/bin/getent"), ["/usr/bin/getent", "passwd", "root", "1000"]),
    "date-tz": Program(
        host("/usr/bin/date"), ["/usr/bin/date", "-d", "@0"], env=["TZ=America/New_York"]
    ),
    "wc-locale": Program(
        host("/usr/bin/wc"), ["/usr/bin/wc", "-m", "DATA/utf8"], env=["LC_ALL=C.UTF-8"]
    ),
    "file": Program(host("/usr/bin/file"), ["/usr/bin/file", "DATA/text", "DATA/pipes.sh"]),
    "sh-pipes": Program(lambda _b, work: [str(work / "data" / "pipes.sh")], ["DATA/pipes.sh"]),
    "static": Program(sample("hello.c", "static"), ["PROG"]),
    "static-pie": Program(sample("hello.c", "static-pie"), ["PROG", "x"]),
    "cxx": Program(cxx, ["PROG"]),
    "threads": Program(sample("run_threads.c", "dynamic"), ["PROG"]),
    "i386": Program(sample("hello32.c", "dynamic32"), ["PROG", "a", "b"]),
}
DATA = {"text": TEXT, "utf8": "déjà vu ✓\n".encode(), "pipes.sh": PIPES}


@dataclass
class Learned:
    tar: Path
    learned: Path
    inputs: list[str]
    argv: list[str]
    env: list[str]
    stderr: str


def cli(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, env=env, timeout=TIMEOUT, cwd="/"
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("learn-programs")
    data = root / "data"
    data.mkdir()
    for name, content in DATA.items():
        (data / name).write_bytes(content)
    (data / "pipes.sh").chmod(0o755)
    yield root
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="module")
def tool_env(work: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}


@pytest.fixture(scope="module")
def learned(
    work: Path, tool_env: dict[str, str], build_sample: BuildSample
) -> Iterator[Callable[[str], Learned]]:
    done: dict[str, Learned] = {}

    def get(name: str) -> Learned:
        if name not in done:
            prog = PROGRAMS[name]
            inputs = prog.inputs(build_sample, work)
            argv = [_fill(a, inputs, work) for a in prog.argv]
            tar = work / f"{name}.tar"
            shutil.rmtree(SCRATCH, ignore_errors=True)  # learn before any native run
            envs = [x for e in prog.env for x in ("--env", e)]
            res = cli(*inputs, "-o", tar, "--learn", *envs, "--", *argv[1:], env=tool_env)
            assert res.returncode == 0, res.stderr.decode()
            assert argv[0] in (inputs[0], f"/{inputs[0].lstrip('/')}")
            done[name] = Learned(
                tar, work / f"{name}.learned", inputs, argv, prog.env, res.stderr.decode()
            )
        return done[name]

    yield get


def _fill(word: str, inputs: list[str], work: Path) -> str:
    if word == "PROG":
        return inputs[0]
    return word.replace("DATA/", f"{work}/data/")


def native(argv: list[str], env: list[str]) -> subprocess.CompletedProcess[bytes]:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    cmd = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "env", "-i", *env, *argv]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, cwd="/")
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_learned_bundle_runs_like_the_native_program(
    name: str, learned: Callable[[str], Learned], tool_env: dict[str, str], work: Path
) -> None:
    b = learned(name)
    report = work / f"{name}.report.json"
    envs = [x for e in b.env for x in ("--env", e)]
    got = cli("run", b.tar, *envs, "--report", report, "--", *b.argv, env=tool_env)
    want = native(b.argv, b.env)
    doc = json.loads(report.read_text())
    assert doc["view"] == "litebox"
    assert doc["escapes"]["total"] == 0, doc["escapes"]
    # Everything the guest looked up must be in the bundle. What it probed in /proc and /sys
    # (libselinux reads /proc/filesystems) is listed apart: no bundle can hold it.
    assert doc["files"]["missing"] == []
    kernel = [i["path"] for i in doc["files"]["kernel"]]
    assert all(p.startswith(("/proc/", "/sys/", "/dev/")) for p in kernel), kernel
    # run's own lines (litebox-pack: ...) are not the program's: compare the program's.
    guest_err = b"".join(
        line
        for line in got.stderr.splitlines(keepends=True)
        if not line.startswith(b"litebox-pack: ")
    )
    assert (got.returncode, got.stdout, guest_err) == (
        want.returncode,
        want.stdout,
        want.stderr,
    ), f"litebox view stderr: {got.stderr!r}"
    assert want.stdout or want.returncode != 0  # a real workload prints something


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_a_repack_from_x_learned_is_byte_identical(
    name: str, learned: Callable[[str], Learned], tool_env: dict[str, str], work: Path
) -> None:
    b = learned(name)
    again = work / f"{name}-again.tar"
    res = cli(*b.inputs, "-o", again, "--include-from", b.learned, "--no-main-out", env=tool_env)
    assert res.returncode == 0, res.stderr.decode()
    assert again.read_bytes() == b.tar.read_bytes()


def test_learned_files_carry_their_workload_in_the_manifest(
    learned: Callable[[str], Learned],
) -> None:
    import tarfile

    b = learned("python3")
    with tarfile.open(b.tar) as t:
        doc = json.load(t.extractfile("litebox/manifest.json"))  # type: ignore[arg-type]
    check("manifest", doc)
    reasons = [r for f in doc["files"] for r in f["included_because"]]
    assert {"kind": "learned", "workload": 1} in reasons
    assert any(f["outcome"] == "bytecode-unchecked" for f in doc["files"])
    lines = b.learned.read_text().splitlines()
    specs = [line for line in lines if not line.startswith("#")]
    assert specs == sorted(specs) and len(specs) == len(set(specs))
    assert any(s.endswith("/json/__init__.py") for s in specs)
    assert any("lib-dynload/_ssl" in s for s in specs)
    # Its libssl comes with _ssl's closure: not learned, needed.
    assert not any("libssl" in s for s in specs)


def test_an_empty_template_directory_git_needs_is_reported(
    learned: Callable[[str], Learned],
) -> None:
    """git init copies templates/branches, an empty directory tar_ro cannot hold: the learn
    loop finds it and pack says so (the repository in the guest has no .git/branches)."""
    b = learned("git")
    assert "/usr/share/git-core/templates/branches: empty directory" in b.stderr


def test_a_workload_file_numbers_its_commands(work: Path, tool_env: dict[str, str]) -> None:
    wl = work / "cat.workload"
    wl.write_text(
        "# one command a line\ncat /etc/hostname\n\nsh -c 'cat /etc/debian_version | cat'\n"
    )
    tar = work / "cat.tar"
    res = cli("/bin/sh", "/bin/cat", "-o", tar, "--workload", wl, "--json", env=tool_env)
    assert res.returncode == 0, res.stderr.decode()
    doc = json.loads(res.stdout)
    check("pack", doc)
    assert doc["learned"]["workloads"] == [
        {"number": 1, "argv": ["/bin/cat", "/etc/hostname"], "exit_status": 0},
        {"number": 2, "argv": ["/bin/sh", "-c", "cat /etc/debian_version | cat"], "exit_status": 0},
    ]
    lines = (work / "cat.learned").read_text().splitlines()
    assert lines[2:] == [
        "# workload 1: /bin/cat /etc/hostname",
        "/etc/hostname:/etc/hostname",
        "/etc/ld.so.cache:/etc/ld.so.cache",  # listed under the first workload that needed it
        "# workload 2: /bin/sh -c 'cat /etc/debian_version | cat'",
        "/etc/debian_version:/etc/debian_version",
    ]
    for argv, path in (
        (["/bin/cat", "/etc/hostname"], "/etc/hostname"),
        (["/bin/sh", "-c", "cat /etc/debian_version | cat"], "/etc/debian_version"),
    ):
        got = cli("run", tar, "--", *argv, env=tool_env)
        assert (got.returncode, got.stdout) == (0, Path(path).read_bytes())


def test_python_starts_from_its_shipped_bytecode_without_writing(
    learned: Callable[[str], Learned], tool_env: dict[str, str], work: Path
) -> None:
    """Under tar_ro's mtime 0 the host's timestamp .pyc files would all be stale: Python would
    recompile and try to write __pycache__ (which LiteBox refuses). With the unchecked-hash
    headers it writes nothing."""
    b = learned("python3")
    report = work / "python3-pyc.json"
    got = cli("run", b.tar, "--report", report, "--", *b.argv, env=tool_env)
    assert got.returncode == 0, got.stderr
    doc = json.loads(report.read_text())
    assert doc["files"]["refused_writes"] == []
    assert sum(1 for line in b.learned.read_text().splitlines() if line.endswith(".pyc")) > 20
