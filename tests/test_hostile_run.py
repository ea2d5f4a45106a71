"""``run`` of programs the runtime cannot start is the documented one-line error with exit 1
(checked before the runtime starts), and a program killed by SIGKILL kills ``run`` the same way."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BuildSample
from tests.hostile import cli, one_line_error

KILLER = (
    "#include <signal.h>\n#include <unistd.h>\nint main(void){kill(getpid(),SIGKILL);return 3;}\n"
)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory, build_sample: BuildSample) -> Path:
    d = tmp_path_factory.mktemp("progs")
    (d / "killer.c").write_text(KILLER)
    subprocess.run(["gcc", "-O2", "-static", "-o", d / "killer", d / "killer.c"], check=True)
    hello = build_sample("hello.c", "static")
    (d / "text").write_text("just some words\n")
    (d / "empty").write_bytes(b"")
    arm = bytearray(hello.read_bytes())
    arm[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    (d / "arm").write_bytes(bytes(arm))
    (d / "loop-a").write_text("#!/bin/loop-b\n")
    (d / "loop-b").write_text("#!/bin/loop-a\n")
    for p in d.iterdir():
        p.chmod(0o755)
    includes = [f"--include={d / n}:/bin/{n}" for n in ("text", "empty", "arm", "loop-a", "loop-b")]
    res = cli(d / "killer", "-o", d / "b.tar", "-q", *includes, cwd=d, timeout=300)
    assert res.returncode == 0, res.stderr
    return d


def test_program_killed_by_sigkill_kills_run_by_sigkill(programs: Path) -> None:
    killer = str(programs / "killer")
    res = cli("run", programs / "b.tar", "--", killer, cwd=programs, timeout=300)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("text", "neither an ELF program nor a #! script"),
        ("empty", "an empty file"),
        ("arm", "an ELF for aarch64"),
        ("loop-a", "nested more than"),
    ],
)
def test_unrunnable_program_is_one_line(programs: Path, name: str, reason: str) -> None:
    res = cli("run", programs / "b.tar", "--", f"/bin/{name}", cwd=programs, timeout=300)
    one_line_error(res, f"/bin/{name}", reason)


def test_non_elf_hooked_is_one_line(programs: Path) -> None:
    fake = programs / "killer.hooked"
    fake.write_text("#!/bin/sh\necho not an ELF\n")
    res = cli("run", "--hooked", fake, programs / "b.tar", cwd=programs, timeout=300)
    # refused as not this bundle's main binary (its sha256), or as not an ELF: one line either way
    one_line_error(res, str(fake))
