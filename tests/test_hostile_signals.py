"""SIGTERM or SIGKILL of the packager during ``pack -j 2``: the workers die with it, and
SIGTERM cleans up like SIGINT (no .partial files, no .litebox-pack-*/ directories).

The workers are stopped (SIGSTOP) as soon as they appear, so the pack cannot finish before the
signal arrives however fast the machine is, and the packager must get rid of stopped workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from packager.fsutil import HeldSignals, atomic_output
from tests.hostile import EXE, leftovers

BIG = "/usr/bin/python3.11"  # libc, libm, libz, libexpat: seconds of rewriting without a cache


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / ".cache")}
    proc = subprocess.Popen(
        [str(EXE), BIG, "-j", "2", "--no-cache", "-q", "-o", "big.tar"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.05)
    if len(workers) < 2:
        proc.kill()
        pytest.fail(f"no worker processes appeared: {proc.communicate()[1]!r}")
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)  # each has libc or python3.11 to rewrite: far from done
    return proc, workers


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not Path(BIG).exists(), reason=f"needs {BIG}")
def test_sigterm_during_parallel_pack_cleans_up(tmp_path: Path) -> None:
    proc, workers = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert b"Traceback" not in err
    assert _wait_gone(workers) == []
    assert not (tmp_path / "big.tar").exists()
    assert [p for p in leftovers(tmp_path)] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".cache"]


@pytest.mark.skipif(not Path(BIG).exists(), reason=f"needs {BIG}")
def test_sigkill_of_the_parent_kills_the_workers(tmp_path: Path) -> None:
    proc, workers = _start(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert _wait_gone(workers) == [], "workers outlived their parent"


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


@pytest.mark.parametrize("hold", [True, False])
def test_a_signal_at_the_commit_waits_for_every_rename(tmp_path: Path, hold: bool) -> None:
    """write_bundle's commit: the tar and the .hooked appear together or not at all."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with pytest.raises(_Stop), contextlib.ExitStack() as stack:
            held = stack.enter_context(HeldSignals())
            for name in ("app.hooked", "app.tar"):
                stack.enter_context(atomic_output(tmp_path / name)).write(name.encode())
            if hold:
                held.hold()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here unless the signal is held
    finally:
        signal.signal(signal.SIGTERM, previous)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["app.hooked", "app.tar"] if hold else [])
    if hold:
        assert (tmp_path / "app.tar").read_bytes() == b"app.tar"
