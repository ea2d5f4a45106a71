"""LiteBox's view under `litebox-pack run`: what the guest sees, what it may change, and what the
report says about it (README "Does my bundle work under LiteBox?").

The probe (samples/run_view.c, static, so no loader looks anything up on its own) writes,
deletes, looks up and reads; each test checks the program's output, the report and that the
host and the bundle are as they were.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from packager.runtime.report import build_report, parse_records
from packager.runtime.run import STRICT_STATUS

from .bundle_util import make_bundle, tar_bundle
from .test_run import TIMEOUT, Outcome, cli, under_run

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine != "x86_64" or shutil.which("ldd") is None,
    reason="the runtime runs x86-64 Linux programs",
)

# Files the bundle holds besides the probe: /etc and /usr/lib exist only in the tar.
NOTES = {"etc/litebox-note": "a note\n", "usr/lib/litebox-note": "a library note\n"}
PROBES = ["/litebox-probe", "/usr/lib/litebox-probe", "/etc/litebox-probe", "/tmp/litebox-probe"]
PROBE_DIRS = ["/etc/litebox-probe-dir", "/litebox-probe-dir"]


@pytest.fixture(scope="module")
def probe(build_sample: Callable[..., Path]) -> str:
    return str(build_sample("run_view.c", "static"))


@pytest.fixture(scope="module")
def probe32(build_sample: Callable[..., Path]) -> str:
    if not Path("/lib/ld-linux.so.2").exists():
        pytest.skip("no i386 libc (apt-get install gcc-multilib)")
    return str(build_sample("run_view.c", "static32"))


def tree_with(dest: Path, programs: list[str]) -> Path:
    tree = make_bundle(dest, programs)
    for rel, text in NOTES.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    return tree


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry of a tree: mode, mtime and content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, data)
    return out


@pytest.mark.parametrize(
    ("kind", "arch"), [("tar", "x86_64"), ("directory", "x86_64"), ("tar", "i386")]
)
def test_guest_writes_change_nothing(
    kind: str, arch: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    probe = request.getfixturevalue("probe32" if arch == "i386" else "probe")
    for path in [*PROBES, *PROBE_DIRS]:
        assert not os.path.lexists(path), f"{path} exists on the host before the test"
    tree = tree_with(tmp_path / "tree", [probe])
    bundle = tar_bundle(tree, tmp_path / "b.tar") if kind == "tar" else tree
    before = bundle.read_bytes() if kind == "tar" else snapshot(tree)

    got, rep = under_run(bundle, [probe, "writes", probe], tmp_path)
    assert got.status == 0, got
    denied = "Permission denied"
    assert got.stdout.decode().splitlines() == [
        f"create /litebox-probe: {denied}",
        f"create /usr/lib/litebox-probe: {denied}",
        f"create /etc/litebox-probe: {denied}",
        "create /tmp/litebox-probe: ok",
        "write /tmp/litebox-probe: ok",
        f"mkdir /etc/litebox-probe-dir: {denied}",
        f"mkdir /litebox-probe-dir: {denied}",
        f"open for writing /etc/litebox-note: {denied}",
        f"unlink {probe}: ok",  # LiteBox's layered file system hides it (a tombstone)
        f"{probe} after unlink: gone",
    ]
    refused = {(i["path"], i["syscall"]): i["litebox"] for i in rep["files"]["refused_writes"]}
    assert refused == {
        ("/litebox-probe", "openat"): "refuses",  # the in-memory root is not uid 1000's
        ("/usr/lib/litebox-probe", "openat"): "panics",  # directories only the tar has
        ("/etc/litebox-probe", "openat"): "panics",
        ("/etc/litebox-probe-dir", "mkdir"): "panics",
        ("/litebox-probe-dir", "mkdir"): "refuses",
        ("/etc/litebox-note", "openat"): "panics",  # a tar file opened for writing
    }
    for item in rep["files"]["refused_writes"]:
        assert item["errno"] == "EACCES" and item["object"] == probe, item
        assert re.fullmatch(r"0x[0-9a-f]+", item["offset"]) and item["count"] == 1, item
    assert any("where LiteBox's runner panics here" in ln for ln in rep["summary"]), rep
    assert any("where LiteBox refuses" in ln for ln in rep["summary"]), rep

    for path in [*PROBES, *PROBE_DIRS]:
        assert not os.path.lexists(path), f"the guest changed the host: {path}"
    assert (bundle.read_bytes() if kind == "tar" else snapshot(tree)) == before
    # A second run sees the bundle as packed, and a fresh /tmp.
    again, _ = under_run(bundle, [probe, "exists", probe], tmp_path)
    assert again.stdout.decode() == f"{probe}: yes\n"
    again, _ = under_run(bundle, [probe, "cat", "/tmp/litebox-probe"], tmp_path)
    assert again.stdout.decode() == "/tmp/litebox-probe: No such file or directory\n"


@pytest.mark.parametrize("arch", ["x86_64", "i386"])
def test_no_host_path_is_visible(arch: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A file the host has and the bundle lacks cannot be reached by any path, through any
    descriptor (the runtime's own included), /proc/self/root or a relative path."""
    probe = request.getfixturevalue("probe32" if arch == "i386" else "probe")
    host_only = tmp_path / "host-only.txt"
    host_only.write_text("the host's\n")
    tree = tree_with(tmp_path / "tree", [probe])
    for path in ("/etc/passwd", str(host_only)):
        got, rep = under_run(tree, [probe, "hidden", path], tmp_path)
        assert got.status == 0, got
        lines = got.stdout.decode().splitlines()
        assert len(lines) == 10 and all(ln.endswith(": no") for ln in lines), lines
        assert path in {i["path"] for i in rep["files"]["missing"]}
        assert rep["escapes"]["total"] == 0


def test_missing_files_are_reported(probe: str, tmp_path: Path) -> None:
    tree = tree_with(tmp_path / "tree", [probe])
    got, rep = under_run(tree, [probe, "lookups"], tmp_path)
    assert got.status == 0 and got.stdout == b"-1\n-1\n-1\n-1\n", got
    missing = rep["files"]["missing"]
    # Normalised absolute paths: through a dirfd, "." and "..", relative to the cwd. A path
    # nobody has is not the bundle's problem.
    assert sorted({i["path"] for i in missing}) == ["/etc/os-release", "/usr/share/zoneinfo/UTC"]
    assert [i["path"] for i in missing] == sorted(i["path"] for i in missing)
    assert len({(i["path"], i["syscall"]) for i in missing}) == len(missing) >= 3
    for item in missing:
        assert item["object"] == probe and re.fullmatch(r"0x[0-9a-f]+", item["offset"]), item
    assert rep["summary"] == [
        "litebox-pack: warning: 2 paths the bundle lacks, e.g. /etc/os-release (see --report)"
    ]
    assert rep["processes"] == {"created": 0, "fork": 0, "vfork": 0, "clone": 0}


def test_strict_files_stops_at_the_first_missing_path(probe: str, tmp_path: Path) -> None:
    tree = tree_with(tmp_path / "tree", [probe])
    got, rep = under_run(tree, [probe, "lookups"], tmp_path, "--strict-files")
    assert got.status == STRICT_STATUS and rep["summary"] == [], got  # the one line explains
    lines = got.stderr.decode().splitlines()
    assert len(lines) == 1 and "/etc/os-release" in lines[0] and "--strict-files" in lines[0]
    assert rep["strict_stop"]["reason"] == "missing-file"
    assert got.stdout == b""


def test_kernel_trees_are_listed_apart_from_missing_files(probe: str, tmp_path: Path) -> None:
    # /proc, /sys and /dev hold the kernel's views: the host has them, LiteBox does not (beyond
    # its few devices), and no bundle can. They are reported, but not as files the bundle
    # lacks, and --strict-files does not stop on them.
    tree = tree_with(tmp_path / "tree", [probe])
    for extra in ((), ("--strict-files",)):
        got, rep = under_run(tree, [probe, "exists", "/proc/self/status"], tmp_path, *extra)
        assert (got.status, got.stdout) == (0, b"/proc/self/status: no\n"), got
        assert rep["files"]["missing"] == []
        assert [i["path"] for i in rep["files"]["kernel"]] == ["/proc/self/status"]
        assert rep["summary"] == [
            "litebox-pack: warning: 1 path under /proc, /sys or /dev that LiteBox does not "
            "provide, e.g. /proc/self/status (see --report)"
        ]


def test_env_is_exactly_what_is_given(tmp_path: Path) -> None:
    tree = make_bundle(tmp_path / "tree", ["/usr/bin/env"])
    got, _ = under_run(tree, ["/usr/bin/env"], tmp_path, env={"A": "1", "B": "two words"})
    assert (got.stdout, got.status) == (b"A=1\nB=two words\n", 0), got
    got, _ = under_run(tree, ["/usr/bin/env"], tmp_path)
    assert (got.stdout, got.status) == (b"", 0), got
    bad = cli(["run", str(tree), "--env", "NOEQUALS", "--", "/usr/bin/env"], tmp_path)
    assert bad.status == 1 and b"--env 'NOEQUALS': expected KEY=VALUE" in bad.stderr


def test_bind_shows_one_host_directory(probe: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("given at run time\n")
    tree = tree_with(tmp_path / "tree", [probe])
    bind = f"--bind={data}:/srv/data"
    got, rep = under_run(tree, [probe, "cat", "/srv/data/in.txt"], tmp_path, bind)
    assert got.stdout == b"given at run time\n", got
    got, rep = under_run(tree, [probe, "write", "/srv/data/out.txt", "back"], tmp_path, bind)
    assert got.stdout == b"write /srv/data/out.txt: ok\n" and not rep["files"]["refused_writes"]
    assert (data / "out.txt").read_text() == "back"  # a bound directory is the host's own
    got, _ = under_run(tree, [probe, "exists", str(data)], tmp_path, bind)
    assert got.stdout.decode() == f"{data}: no\n"  # only at GUEST
    bad = cli(["run", str(tree), "--bind", "/no/such:/x", "--", probe], tmp_path)
    assert bad.status == 1 and b"/no/such is not a directory" in bad.stderr


def test_host_fs_shows_the_host_and_reports_what_it_used(probe: str, tmp_path: Path) -> None:
    host_only = tmp_path / "host-only.txt"
    host_only.write_text("the host's\n")
    tree = tree_with(tmp_path / "tree", [probe])
    got, rep = under_run(tree, [probe, "cat", str(host_only)], tmp_path, "--host-fs")
    assert got.stdout == b"the host's\n" and rep["view"] == "host-fs", got
    used = {i["path"]: i for i in rep["files"]["host_used"]}
    assert used[str(host_only)]["kind"] == "file" and used[str(host_only)]["object"] == probe
    assert not any(p.startswith(str(tree)) for p in used)  # the bundle's files are not listed
    assert rep["files"]["missing"] == []
    # Writes land in a throwaway layer.
    got, rep = under_run(tree, [probe, "writes", "/etc/litebox-note"], tmp_path, "--host-fs")
    assert got.status == 0 and b"create /etc/litebox-probe: ok" in got.stdout, got
    for path in [*PROBES, *PROBE_DIRS]:
        assert not os.path.lexists(path), f"the guest changed the host: {path}"
    assert rep["files"]["refused_writes"] == []


def test_ls_shows_what_litebox_shows(tmp_path: Path) -> None:
    """`ls -la /`: the bundle's top-level directories, LiteBox's /tmp and /dev, owned by 1000
    (no passwd in the bundle, so numbers), directories 0777, every mtime 0 (the tar's)."""
    tree = make_bundle(tmp_path / "tree", ["/usr/bin/ls"])
    tar = tar_bundle(tree, tmp_path / "ls.tar")
    got, _ = under_run(tar, ["/usr/bin/ls", "-la", "/"], tmp_path)
    assert got.status == 0, got
    lines = got.stdout.decode().splitlines()
    assert lines[0].startswith("total ")
    entries = {ln.split()[-1]: ln.split() for ln in lines[1:]}
    names = {p.name for p in tree.iterdir()} | {"tmp", "dev", ".", ".."}
    assert set(entries) == names, lines
    for name, words in entries.items():
        mode, _links, user, group, _size, month, day, year = words[:8]
        assert (user, group, month, day, year) == ("1000", "1000", "Jan", "1", "1970"), words
        assert mode == ("drwxr-xr-x" if name == "dev" else "drwxrwxrwx"), words


def test_no_user_namespaces_is_one_line(probe: str, tmp_path: Path) -> None:
    """Where user namespaces cannot be made (here: a nested unshare that forbids them), one
    line says so and names --host-fs, which still runs."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    limit = ["unshare", "--user", "--map-root-user", "sh", "-c"]
    tree = tree_with(tmp_path / "tree", [probe])
    inner = 'echo 0 > /proc/sys/user/max_user_namespaces 2>/dev/null; exec "$@"'
    probe_cmd = [*limit, "exit 0"]
    if subprocess.run(probe_cmd, capture_output=True, timeout=TIMEOUT).returncode != 0:
        pytest.skip("cannot make a user namespace to test in")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    cmd = [*limit, inner, "sh", sys.executable, "-c", "from packager.cli import main; main()"]
    res = subprocess.run(
        [*cmd, "run", str(tree), "--", probe, "exists", "/"],
        capture_output=True,
        timeout=TIMEOUT,
        env=env,
    )
    out = Outcome(res.stdout, res.stderr, res.returncode)
    if b"user namespaces are not available" not in out.stderr:
        pytest.skip("this kernel lets the nested namespace make more")
    assert out.status == 1 and len(out.stderr.splitlines()) == 1 and b"--host-fs" in out.stderr
    res = subprocess.run(
        [*cmd, "run", str(tree), "--host-fs", "--", probe, "exists", "/"],
        capture_output=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert res.returncode == 0 and res.stdout == b"/: yes\n", res


def test_path_records_parse_and_bad_lines_are_counted() -> None:
    """The record lines of path events: paths last (spaces kept), the site's object and offset
    from the S line of the same process, one item per (path, syscall) with a count."""
    text = "\n".join(
        [
            "M 7 257 0x1000 /usr/lib/my file.txt",
            "M 7 257 0x1000 /usr/lib/my file.txt",
            "M 7 4 0x1000 /usr/lib/my file.txt",
            "W 7 83 0x2000 EACCES p /etc/new dir",
            "H 8 257 0x3000 l /lib",
            "F 7 vfork -",
            "F 7 clone -",
            "S 7 0x1000 0x1f0 /usr/bin/app (deleted)",
            "S 7 0x2000 0x2f0 /usr/bin/app",
            "M 7 257",  # cut short
            "F 7 spawn -",  # no such kind
            "Q what",
        ]
    )
    rec = parse_records(text)
    assert rec.bad_lines == 3
    files = build_report(
        rec, bundle=Path("b"), program="/p", args=[], abi="redzone", status=0, view="litebox"
    )["files"]
    assert files["missing"] == [
        {"path": "/usr/lib/my file.txt", "syscall": "openat", "object": "/usr/bin/app",
         "offset": "0x1f0", "count": 2},
        {"path": "/usr/lib/my file.txt", "syscall": "stat", "object": "/usr/bin/app",
         "offset": "0x1f0", "count": 1},
    ]  # fmt: skip
    assert files["refused_writes"] == [
        {"path": "/etc/new dir", "syscall": "mkdir", "object": "/usr/bin/app", "offset": "0x2f0",
         "errno": "EACCES", "litebox": "panics", "count": 1},
    ]  # fmt: skip
    assert files["host_used"] == [
        {"path": "/lib", "syscall": "openat", "object": "?", "offset": "0x0", "kind": "symlink",
         "count": 1},
    ]  # fmt: skip
    assert dict(rec.created) == {"vfork": 1, "clone": 1}
