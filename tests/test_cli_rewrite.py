"""``litebox-pack rewrite`` end to end, through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rewriter import read_trailer, rewrite_elf
from tests.elfbuild import tiny_elf

EXE = Path(sys.executable).parent / "litebox-pack"


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_rewrite_libc_default_output_mode_and_summary(tmp_path: Path, libc_path: Path) -> None:
    src = tmp_path / "libc.so.6"
    shutil.copy(libc_path, src)
    os.chmod(src, 0o750)
    res = cli("rewrite", src)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "libc.so.6.hooked"
    assert out.stat().st_mode & 0o7777 == 0o750
    data = out.read_bytes()
    assert data == rewrite_elf(libc_path.read_bytes()).data
    assert read_trailer(data) is not None
    assert "patched 526 syscall site(s)" in res.stdout
    assert "fork→vfork" in res.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_rewrite_json_resume(tmp_path: Path, ldso_path: Path) -> None:
    out = tmp_path / "ld.hooked"
    res = cli("rewrite", ldso_path, "-o", out, "--abi", "resume", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["outcome"] == "patched" and doc["abi"] == "resume"
    assert doc["sites_patched"] == len(doc["sites"]) == sum(doc["strategies"].values())
    assert doc["trampoline"]["size"] == read_trailer(out.read_bytes()).size  # type: ignore[union-attr]


def test_unpatchable_site_fails_naming_the_address_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "lone"
    src.write_bytes(tiny_elf(b"\x0f\x05"))
    res = cli("rewrite", src)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "0x401000" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lone"]
    res = cli("rewrite", src, "--unpatchable", "trap")
    assert res.returncode == 0 and "1 unpatchable" in res.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing", "no such file"),
        (lambda d: d, "is a directory"),
    ],
)
def test_bad_inputs(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("rewrite", setup(tmp_path))
    assert res.returncode == 1
    assert message in res.stderr and res.stderr.count("\n") == 1


def test_corrupt_elf_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00")
    res = cli("rewrite", bad)
    assert res.returncode == 1 and res.stderr.startswith("litebox-pack: error: ")
    assert str(bad) in res.stderr and res.stderr.count("\n") == 1


def test_output_directory_missing(tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(tiny_elf(b"\x90\x90\x90\x0f\x05\xc3"))
    res = cli("rewrite", src, "-o", tmp_path / "nope" / "out")
    assert res.returncode == 1 and "does not exist" in res.stderr


def test_usage_error_exit_2() -> None:
    res = cli("rewrite", "--abi", "bogus", "x")
    assert res.returncode == 2
