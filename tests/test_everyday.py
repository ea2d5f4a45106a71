"""Defects a new user hits in normal use (issue 12): each test runs the real command line."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.test_pack import cli

BuildSample = Callable[..., Path]


def _manifest(tar: Path) -> dict:  # type: ignore[type-arg]
    with tarfile.open(tar) as tf:
        member = tf.extractfile("litebox/manifest.json")
        assert member is not None
        return json.loads(member.read())  # type: ignore[no-any-return]


# --- the .hooked main binary ------------------------------------------------------------------


def test_hooked_is_named_after_the_bundle(build_sample: BuildSample, tmp_path: Path) -> None:
    exe = build_sample("hello.c", "static")
    (tmp_path / "h").mkdir()
    red = cli(exe, "-o", "h/red.tar", cwd=tmp_path)
    res = cli("--abi", "resume", exe, "-o", "h/res.tar", cwd=tmp_path)
    assert red.returncode == 0 and res.returncode == 0, red.stderr + res.stderr
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [
        "red.hooked",
        "red.tar",
        "res.hooked",
        "res.tar",
    ]
    # The printed runner command names the bundle's own .hooked.
    assert "--initial-files h/red.tar h/red.hooked" in red.stderr
    assert "--initial-files h/res.tar h/res.hooked" in res.stderr
    for name in ("red", "res"):
        doc = _manifest(tmp_path / "h" / f"{name}.tar")
        main = next(f for f in doc["files"] if {"kind": "input"} in f["included_because"])
        hooked = (tmp_path / "h" / f"{name}.hooked").read_bytes()
        assert doc["main"] == {"path": str(exe).lstrip("/"), "sha256": main["sha256_out"]}
        assert hashlib.sha256(hooked).hexdigest() == main["sha256_out"]


def test_a_name_without_tar_gets_hooked_appended(tmp_path: Path) -> None:
    res = cli("/bin/true", "-o", "b.img", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "b.img.hooked").is_file()


def test_replacing_another_bundles_hooked_is_said(
    build_sample: BuildSample, tmp_path: Path
) -> None:
    exe = build_sample("hello.c", "static")
    assert cli(exe, "-o", "a.tar", cwd=tmp_path).returncode == 0
    # Packing a.tar again replaces its own .hooked: nothing to say.
    again = cli(exe, "-o", "a.tar", cwd=tmp_path)
    assert again.returncode == 0 and "replacing" not in again.stderr
    # Another bundle written over a.hooked says so.
    other = cli("--abi", "resume", exe, "-o", "b.tar", "--main-out", "a.hooked", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert "warning: a.hooked: replacing a file that is not b.tar's main binary" in other.stderr


def test_run_hooked_refuses_another_bundles_binary(
    build_sample: BuildSample, tmp_path: Path
) -> None:
    exe = build_sample("hello.c", "static")
    assert cli(exe, "-o", "red.tar", cwd=tmp_path).returncode == 0
    assert cli("--abi", "resume", exe, "-o", "res.tar", cwd=tmp_path).returncode == 0
    wrong = cli("run", "--hooked", "red.hooked", "res.tar", "--", "x", cwd=tmp_path)
    assert wrong.returncode == 1
    lines = wrong.stderr.splitlines()
    assert len(lines) == 1 and "red.hooked: not the main binary of res.tar" in lines[0]
    right = cli("run", "--hooked", "res.hooked", "res.tar", "--", "x", cwd=tmp_path)
    assert "hello from litebox-pack (argc=2)" in right.stdout, right.stderr
