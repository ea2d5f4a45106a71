"""A runtime built ahead of time (the Docker image's) is used without any compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from packager.runtime.build import BINARY, prebuild

EXE = Path(sys.executable).parent / "litebox-pack"


def run_without_compiler(
    tmp_path: Path, runtime_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    # No compiler can be found: PATH holds nothing, CC names nothing.
    env = {
        "PATH": str(tmp_path / "empty"),
        "CC": "/nonexistent/cc",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "LITEBOX_PACK_RUNTIME_DIR": str(runtime_dir),
    }
    return subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


def test_prebuilt_runtime_runs_a_bundle_with_no_compiler(
    tmp_path: Path,
    build_sample,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "build-cache"))
    hello = build_sample("hello.c", "static")
    packed = subprocess.run(
        [str(EXE), str(hello), "-o", str(tmp_path / "h.tar"), "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "pack-cache")},
    )
    assert packed.returncode == 0, packed.stderr
    shipped = tmp_path / "shipped"
    prebuild(shipped, ("x86_64",))
    assert (shipped / BINARY).is_file() and (shipped / f"{BINARY}.sources").is_file()
    res = run_without_compiler(tmp_path, shipped, "run", "h.tar", "--", str(hello))
    assert res.returncode == 0, res.stderr
    assert res.stdout == subprocess.run([hello], capture_output=True, text=True).stdout
    assert not (tmp_path / "cache" / "litebox-pack" / "runtime").exists()  # nothing was built
    # A runtime stamped for other sources is not used: without a compiler that is an error.
    (shipped / f"{BINARY}.sources").write_text("0" * 24 + "\n")
    res = run_without_compiler(tmp_path, shipped, "run", "h.tar", "--", str(hello))
    assert res.returncode == 1
    assert "no C compiler found" in res.stderr
