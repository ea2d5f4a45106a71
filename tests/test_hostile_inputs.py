"""Inputs must be regular, readable files: devices, FIFOs and unreadable files are refused with
one line and exit 1 by every command, before any work (nothing hangs, nothing grows)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import BuildSample
from tests.hostile import EXE, as_nobody, cli, leftovers, limits, one_line_error

MEM = limits(mem=1 << 30)  # a command reading /dev/zero to the end would hit this


@pytest.fixture(scope="module")
def hello(build_sample: BuildSample) -> Path:
    return build_sample("hello.c", "static")


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    f = tmp_path / "fifo"
    os.mkfifo(f)
    return f


@pytest.mark.parametrize("dev", ["/dev/zero", "/dev/urandom"])
def test_rewrite_of_a_device(tmp_path: Path, dev: str) -> None:
    res = cli("rewrite", dev, "-o", tmp_path / "x", cwd=tmp_path, preexec=MEM, timeout=30)
    one_line_error(res, dev, "a device")


@pytest.mark.parametrize("command", ["rewrite", "audit", "run"])
def test_fifo_input_is_refused_without_hanging(tmp_path: Path, fifo: Path, command: str) -> None:
    extra = ["--", "/bin/true"] if command == "run" else []
    res = cli(command, fifo, *extra, cwd=tmp_path, timeout=30)
    one_line_error(res, str(fifo), "a FIFO")


def test_run_of_dev_zero(tmp_path: Path) -> None:
    res = cli("run", "/dev/zero", "--", "/x", cwd=tmp_path, preexec=MEM, timeout=30)
    one_line_error(res, "/dev/zero", "a device")


def test_run_hooked_fifo(tmp_path: Path, fifo: Path, hello: Path) -> None:
    bundle = tmp_path / "b.tar"
    assert cli(hello, "-o", bundle, "-q", cwd=tmp_path).returncode == 0
    res = cli("run", "--hooked", fifo, bundle, cwd=tmp_path, timeout=30)
    one_line_error(res, "--hooked", "a FIFO")


def test_include_of_a_device(tmp_path: Path, hello: Path) -> None:
    res = cli(hello, "--include", "/dev/zero:/z", "-o", "o.tar", cwd=tmp_path, timeout=30)
    one_line_error(res, "/dev/zero", "a device")
    assert not (tmp_path / "o.tar").exists() and leftovers(tmp_path) == []


def test_image_config_fifo(tmp_path: Path, fifo: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    res = cli("--rootfs", root, "--image-config", fifo, "-o", "o.tar", cwd=tmp_path, timeout=30)
    one_line_error(res, "--image-config", "a FIFO")


def test_oci_archive_device(tmp_path: Path) -> None:
    res = cli("--oci-archive", "/dev/zero", "-o", "o.tar", cwd=tmp_path, timeout=30)
    one_line_error(res, "/dev/zero", "a device")


@pytest.mark.parametrize(
    "args",
    [
        ["rewrite", "{f}"],
        ["audit", "{f}"],
        ["deps", "{f}"],
        ["pack", "{f}", "-o", "{d}/x.tar"],
        ["{f}", "-o", "{d}/x.tar"],
        ["run", "{f}", "--", "/x"],
    ],
)
def test_unreadable_input_is_one_line_exit_1(args: list[str]) -> None:
    # pytest's tmp_path sits in a 0700 directory another user cannot enter
    d = Path(tempfile.mkdtemp(prefix="litebox-unreadable-"))
    try:
        os.chmod(d, 0o777)
        f = d / "prog"
        shutil.copy("/bin/true", f)
        os.chmod(f, 0)
        words = [a.format(f=f, d=d) for a in args]
        env = {**os.environ, "XDG_CACHE_HOME": str(d / ".cache")}
        cmd = as_nobody([str(EXE), *words])
        res = subprocess.run(cmd, capture_output=True, timeout=60, cwd=d, env=env)
        one_line_error(res, str(f), "Permission denied")
    finally:
        shutil.rmtree(d)
