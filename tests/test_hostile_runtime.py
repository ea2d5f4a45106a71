"""The runtime's build cache is checked against the hash recorded at build time and rebuilt
when damaged; a cache directory of another user is one line, not a traceback."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.runtime.build import TARGETS, _sources, digest, find_compiler
from tests.conftest import BuildSample
from tests.hostile import EXE, as_nobody, cli, one_line_error


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """A directory every user can use (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="litebox-runtime-test-"))
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def bundle(world: Path, build_sample: BuildSample) -> Path:
    hello = build_sample("hello.c", "static")
    shutil.copy(hello, world / "hello")
    res = cli(world / "hello", "-o", world / "hello.tar", "-q", cwd=world)
    assert res.returncode == 0, res.stderr
    os.chmod(world / "hello.tar", 0o644)
    return world / "hello.tar"


def _binary(cache: Path) -> Path:
    final = digest(_sources(), find_compiler(), TARGETS["x86_64"])
    return cache / "litebox-pack" / "runtime" / final / TARGETS["x86_64"].binary


def _run(bundle: Path, cache: Path) -> subprocess.CompletedProcess[bytes]:
    env = {"XDG_CACHE_HOME": str(cache)}
    return cli(
        "run",
        bundle,
        "--",
        "/" + str(bundle.parent / "hello").lstrip("/"),
        cwd=bundle.parent,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bin-false"])
def test_damaged_runtime_is_rebuilt(tmp_path: Path, bundle: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    first = _run(bundle, cache)
    assert first.returncode == 0, first.stderr
    binary = _binary(cache)
    good = hashlib.sha256(binary.read_bytes()).hexdigest()
    if damage == "truncated":
        binary.write_bytes(binary.read_bytes()[:4096])
    elif damage == "garbage":
        binary.write_bytes(os.urandom(50_000))
    else:
        shutil.copy("/bin/false", binary)
    os.chmod(binary, 0o755)
    again = _run(bundle, cache)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and b"hello" in again.stdout.lower()
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == good


def test_runtime_cache_of_another_user_is_one_line(world: Path, bundle: Path) -> None:
    cache = world / "shared-cache"
    binary = _binary(cache)
    binary.parent.mkdir(parents=True)
    os.chmod(cache, 0o777)
    for d in (cache / "litebox-pack", binary.parent.parent):
        os.chmod(d, 0o777)
    os.chmod(binary.parent, 0o700)  # root's build directory, closed to others
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = as_nobody([str(EXE), "run", str(bundle), "--", str(world / "hello")])
    res = subprocess.run(cmd, capture_output=True, timeout=120, cwd=world, env=env)
    one_line_error(res, str(binary.parent), "Permission denied", "uid 0")


def test_a_build_from_before_sealing_is_kept_when_it_looks_like_the_runtime(
    tmp_path: Path, bundle: Path
) -> None:
    cache = tmp_path / "cache"
    assert _run(bundle, cache).returncode == 0
    binary = _binary(cache)
    sealed = binary.with_name(binary.name + ".sha256")
    sealed.unlink()  # as an older litebox-pack sharing the cache left it
    inode = binary.stat().st_ino
    assert _run(bundle, cache).returncode == 0
    assert binary.stat().st_ino == inode and sealed.is_file()  # kept, and sealed now
    sealed.unlink()
    binary.write_bytes(binary.read_bytes()[:4096])  # a truncated old build
    again = _run(bundle, cache)
    assert again.returncode == 0, again.stderr
    assert binary.stat().st_size > 4096 and sealed.is_file()  # rebuilt
