"""Helpers for the hostile-input and fault tests: run the CLI under limits, check errors.

Every failure the product reports must be exactly one line on stderr, ``litebox-pack: error:``
and the reason, with exit status 1 and no traceback; nothing half-written may stay behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "litebox-pack"
PARTIALS = (".partial", ".litebox-pack-", ".build-", "litebox-run-", ".part")


def limits(
    *, fsize: int | None = None, mem: int | None = None, cpu: int | None = None
) -> Callable[[], None]:
    """A preexec_fn applying resource limits in the child (SIGXFSZ is ignored by CPython, so
    RLIMIT_FSIZE makes writes fail with EFBIG, as a full disk fails them with ENOSPC)."""

    def apply() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if mem is not None:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return apply


def cli(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    preexec: Callable[[], None] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, "XDG_CACHE_HOME": str(cwd / ".cache"), **(env or {})}
    return subprocess.run(
        [str(EXE), *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=stdin,
        cwd=cwd,
        env=full,
        timeout=timeout,
        preexec_fn=preexec,
    )


def one_line_error(res: subprocess.CompletedProcess[bytes], *needles: str, code: int = 1) -> str:
    """The single error line of a failed run; asserts the status and that it names ``needles``."""
    err = res.stderr.decode(errors="replace")
    assert res.returncode == code, f"exit {res.returncode}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "warning:" not in ln]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("litebox-pack: error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def leftovers(d: Path) -> list[str]:
    """Temporary or partial files litebox-pack may have left in ``d`` (recursively)."""
    return sorted(
        str(p.relative_to(d))
        for p in d.rglob("*")
        if ".cache" not in p.parts and any(m in p.name for m in PARTIALS)
    )


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small real file system (a full disk gives ENOSPC there); root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def as_nobody(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run as uid/gid 65534 (root only)."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


def plain_tar(members: dict[str, bytes]) -> bytes:
    """A ustar archive of regular files, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()
