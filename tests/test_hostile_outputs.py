"""Output paths: devices, FIFOs, sockets, symlinks and stdout are streams or followed, never
replaced; unwritable, read-only or full destinations are one line and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.conftest import BuildSample
from tests.hostile import EXE, as_nobody, cli, leftovers, limits, one_line_error, tmpfs
from tests.tarcheck import read_strict


@pytest.fixture(scope="module")
def hello(build_sample: BuildSample) -> Path:
    return build_sample("hello.c", "static")


def _drain(fifo: Path, got: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def test_tar_to_stdout_with_dash(tmp_path: Path, hello: Path) -> None:
    res = cli(hello, "-o", "-", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = [m.path for m in read_strict(res.stdout)]
    assert "litebox/manifest.json" in names
    # the main binary goes to the current directory, not beside a "-" file
    assert (tmp_path / (hello.name + ".hooked")).is_file()
    assert not (tmp_path / "-").exists()


def test_tar_through_proc_fd_symlink_is_streamed(tmp_path: Path, hello: Path) -> None:
    out = tmp_path / "captured"
    with open(out, "wb") as f:
        res = cli(hello, "-o", "/proc/self/fd/1", "-q", "--no-main-out", cwd=tmp_path, stdout=f)
    assert res.returncode == 0, res.stderr
    assert read_strict(out.read_bytes())


def test_fifo_output_is_written_not_replaced(tmp_path: Path, hello: Path) -> None:
    fifo = tmp_path / "out.tar"
    os.mkfifo(fifo)
    got: list[bytes] = []
    t = _drain(fifo, got)
    res = cli(hello, "-o", fifo, "-q", "--no-main-out", cwd=tmp_path, timeout=60)
    t.join(10)
    assert res.returncode == 0, res.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and read_strict(got[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_character_device_output_stays_a_device(tmp_path: Path, hello: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    for args in (
        (hello, "-o", null, "-q", "--no-main-out"),
        ("rewrite", hello, "-o", null),
    ):
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert stat.S_ISCHR(os.lstat(null).st_mode), args
    assert leftovers(tmp_path) == []


def test_symlink_output_is_followed(tmp_path: Path, hello: Path) -> None:
    real = tmp_path / "real.tar"
    real.write_bytes(b"old")
    link = tmp_path / "link.tar"
    link.symlink_to("real.tar")
    res = cli(hello, "-o", link, "-q", "--no-main-out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and os.readlink(link) == "real.tar"
    assert read_strict(real.read_bytes())
    # a symlink to /dev/null-like streams stays a symlink too
    dn = tmp_path / "devnull"
    dn.symlink_to("/dev/null")
    res = cli("rewrite", hello, "-o", dn, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert dn.is_symlink()


def test_dangling_symlink_output_is_refused(tmp_path: Path, hello: Path) -> None:
    link = tmp_path / "out.tar"
    link.symlink_to("nowhere/x.tar")
    one_line_error(cli(hello, "-o", link, cwd=tmp_path), "out.tar", "dangling symlink")
    assert link.is_symlink()


@pytest.mark.parametrize("where", ["/proc/x.tar", "/proc/self/nothere/x.tar"])
def test_output_in_proc_is_one_line(tmp_path: Path, hello: Path, where: str) -> None:
    one_line_error(cli(hello, "-o", where, cwd=tmp_path), where)


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, hello: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as small:
        res = cli(hello, "-o", small / "hello.tar", cwd=tmp_path)
        one_line_error(res, "hello.tar", "No space left")
        assert list(small.iterdir()) == []


def test_file_size_limit_is_one_line_and_leaves_nothing(tmp_path: Path, hello: Path) -> None:
    res = cli(hello, "-o", "hello.tar", cwd=tmp_path, preexec=limits(fsize=200_000))
    one_line_error(res, "File too large")
    assert not (tmp_path / "hello.tar").exists()
    assert leftovers(tmp_path) == []


def test_read_only_output_directory(tmp_path: Path, hello: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        one_line_error(cli(hello, "-o", ro / "x.tar", cwd=tmp_path), "x.tar", "Read-only")
        one_line_error(cli("rewrite", hello, "-o", ro / "x", cwd=tmp_path), "Read-only")


def test_unwritable_directory_as_another_user(hello: Path) -> None:
    # pytest's tmp_path sits in a 0700 directory: use one every user can enter
    d = Path(tempfile.mkdtemp(prefix="litebox-unwritable-"))
    try:
        os.chmod(d, 0o755)
        shutil.copy(hello, d / "hello")
        locked = d / "locked"
        locked.mkdir(mode=0o755)  # root's, not writable by others
        cmd = as_nobody([str(EXE), "rewrite", str(d / "hello"), "-o", str(locked / "x")])
        res = subprocess.run(cmd, capture_output=True, timeout=60, cwd=d)
        one_line_error(res, str(locked / "x"), "Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(d)


def test_process_substitution_pipe_is_streamed(tmp_path: Path, hello: Path) -> None:
    """``-o >(wc -c)``: the shell passes /dev/fd/N, a pipe."""
    script = f'"{EXE}" {hello} -q --no-main-out -o >(wc -c > count)'
    res = subprocess.run(
        ["bash", "-c", script + "; wait"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / ".cache")},
    )
    assert res.returncode == 0, res.stderr
    for _ in range(50):  # the substituted process may finish just after bash
        if (tmp_path / "count").exists() and (tmp_path / "count").read_text().strip():
            break
        threading.Event().wait(0.1)
    assert int((tmp_path / "count").read_text()) % 10240 == 0
    assert leftovers(tmp_path) == []
