"""Shipped bytecode stays valid under tar_ro's mtime 0: PEP 552 unchecked-hash headers."""

from __future__ import annotations

import json
import os
import py_compile
import struct
import subprocess
from pathlib import Path

import pytest

from packager.audit import audit_tar
from packager.pyc import make_unchecked, source_of
from tests.tarcheck import read_strict
from tests.test_pack import cli


def compiled(tmp_path: Path, text: str, mode: py_compile.PycInvalidationMode) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    src = pkg / "mod.py"
    src.write_text(text)
    out = py_compile.compile(str(src), doraise=True, invalidation_mode=mode)
    return Path(out)


def test_timestamp_pyc_becomes_what_py_compile_writes_unchecked(tmp_path: Path) -> None:
    text = "X = 42\nprint('hello from mod')\n"
    ts = compiled(tmp_path, text, py_compile.PycInvalidationMode.TIMESTAMP)
    stamped = ts.read_bytes()
    src = source_of(str(ts))
    assert src == str(tmp_path / "pkg" / "mod.py")
    done = make_unchecked(stamped, src)
    assert done.data is not None
    unchecked = compiled(tmp_path, text, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    # Byte for byte what CPython itself writes: flags 1, its own source hash, same code.
    assert done.data == unchecked.read_bytes()
    assert struct.unpack_from("<I", done.data, 4) == (1,)
    assert done.data[16:] == stamped[16:]


def test_checked_hash_pyc_is_converted_too(tmp_path: Path) -> None:
    text = "Y = 'checked'\n"
    checked = compiled(tmp_path, text, py_compile.PycInvalidationMode.CHECKED_HASH).read_bytes()
    done = make_unchecked(checked, str(tmp_path / "pkg" / "mod.py"))
    unchecked = compiled(tmp_path, text, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert done.data == unchecked.read_bytes()


def test_stale_or_unexpected_bytecode_is_left_alone_with_a_reason(tmp_path: Path) -> None:
    ts = compiled(tmp_path, "Z = 1\n", py_compile.PycInvalidationMode.TIMESTAMP)
    stamped = ts.read_bytes()
    src = str(tmp_path / "pkg" / "mod.py")
    Path(src).write_text("Z = 2  # edited after compiling\n")
    stale = make_unchecked(stamped, src)
    assert stale.data is None and "stale" in stale.reason
    assert make_unchecked(stamped[:10], src).data is None
    assert "magic" in make_unchecked(b"\x00\x00\x00\x00" + stamped[4:], src).reason
    odd = stamped[:4] + struct.pack("<I", 6) + stamped[8:]
    assert "flags" in make_unchecked(odd, src).reason
    missing = make_unchecked(stamped, str(tmp_path / "nothing.py"))
    assert missing.data is None and "nothing.py" in missing.reason
    already = compiled(tmp_path, "W = 0\n", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert "already" in make_unchecked(already.read_bytes(), src).reason


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("/l/p/__pycache__/os.cpython-311.pyc", "/l/p/os.py"),
        ("/l/p/__pycache__/os.cpython-311.opt-1.pyc", "/l/p/os.py"),
        ("/l/p/os.pyc", None),  # legacy sourceless: loaded without a freshness check
        ("/l/p/__pycache__/os.pyc", None),
        ("/l/p/__pycache__/os.cpython-311.x.pyc", None),
        ("/l/p/__pycache__/os.cpython-311.py", None),
    ],
)
def test_where_a_pyc_source_lives(path: str, source: str | None) -> None:
    assert source_of(path) == source


def test_packed_stdlib_bytecode_is_used_as_is_with_mtime_zero(tmp_path: Path) -> None:
    """Python imports the bundled modules from a tree whose mtimes are all 0 (as tar_ro shows
    them) without recompiling: the .pyc files are still the bundled bytes afterwards."""
    pkg = "/usr/lib/python3.11/json"
    args = ["/usr/bin/python3", "--include", f"{pkg}:{pkg}", "-o", "py.tar", "--json"]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    members = {m.path: m.data for m in read_strict(tmp_path / "py.tar")}
    doc = json.loads(members["litebox/manifest.json"])
    pycs = [f for f in doc["files"] if f["paths"][0].endswith(".pyc")]
    assert pycs and all(f["outcome"] == "bytecode-unchecked" for f in pycs)
    report = audit_tar(tmp_path / "py.tar")
    assert report.failures("any") == []
    # pack counts the converted bytecode as audit classes it: non-ELF files.
    by_member = {m.path: m.cls.value for m in report.members}
    counted: dict[str, int] = {}
    for f in doc["files"]:
        cls = by_member[f["paths"][0]]
        counted[cls] = counted.get(cls, 0) + 1
    assert json.loads(res.stdout)["classes"] == dict(sorted(counted.items()))
    assert counted["non-elf"] >= len(pycs)
    tree = tmp_path / "tree"
    for path, data in members.items():
        if path.startswith("usr/lib/python3.11/json/"):
            dest = tree / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            os.utime(os.path.join(dirpath, name), (0, 0))
    lib = tree / "usr/lib/python3.11"
    code = "import json.decoder, sys; print(json.decoder.__cached__, json.dumps([1]))"
    env = {"PATH": "/usr/bin", "PYTHONPATH": str(lib)}
    out = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(lib / "json/__pycache__/decoder.cpython-311.pyc"))
    for path, data in members.items():
        if path.startswith("usr/lib/python3.11/json/") and path.endswith(".pyc"):
            assert (tree / path).read_bytes() == data, f"{path} was recompiled"
    # The same tree with the host's timestamp bytecode is recompiled: the test can tell.
    host_pyc = Path(pkg) / "__pycache__/decoder.cpython-311.pyc"
    target = lib / "json/__pycache__/decoder.cpython-311.pyc"
    target.write_bytes(host_pyc.read_bytes())
    os.utime(target, (0, 0))
    subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, env=env, check=True)
    assert target.read_bytes() != host_pyc.read_bytes()
