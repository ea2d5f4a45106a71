"""`run` and the working directory: chdir into bundle-only directories, getcwd, relative paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "litebox-pack"


@pytest.mark.parametrize("kind", ["dynamic", "dynamic32"])
def test_working_directory_inside_and_outside_the_bundle(
    tmp_path: Path, build_sample, kind
) -> None:  # type: ignore[no-untyped-def]
    if kind == "dynamic32" and not Path("/lib/ld-linux.so.2").exists():
        pytest.skip("no i386 loader (apt-get install gcc-multilib)")
    prog = build_sample("run_chdir.c", kind)
    app = tmp_path / "app"
    app.mkdir()
    (app / "greeting.txt").write_text("hello from the bundle's own directory\n")
    (tmp_path / "etc-note").write_text("a bundle file in a directory the host has too\n")
    pack = subprocess.run(
        [str(EXE), str(prog), "-o", "b.tar", "-q",
         "--include", f"{app}:/srv/litebox-app",
         "--include", f"{tmp_path / 'etc-note'}:/etc/litebox-pack-note"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pack.returncode == 0, pack.stderr
    assert not Path("/srv/litebox-app").exists() and not Path("/etc/litebox-pack-note").exists()

    def run(*args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
        report = tmp_path / "r.json"
        res = subprocess.run(
            [str(EXE), "run", "b.tar", "--report", str(report), "--", str(prog), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return res, json.loads(report.read_text())

    res, rep = run("/srv/litebox-app", "greeting.txt")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "cwd=/srv/litebox-app\nhello from the bundle's own directory\n"
    assert rep["escapes"]["total"] == 0
    res, rep = run("/etc", "litebox-pack-note")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "cwd=/etc\na bundle file in a directory the host has too\n"
    res, _ = run("/nonexistent-dir", "x")
    assert res.returncode == 1 and "chdir: No such file or directory" in res.stderr
