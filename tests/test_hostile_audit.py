"""``audit --fail-on any`` flags every member LiteBox's tar_ro would reject or misread
(reference/litebox-packager-behaviour.md §4.2), and audit memory is bounded by the member."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from packager.audit import audit_tar
from tests.hostile import cli


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ok = tarfile.TarInfo("bin/ok")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        for ti, data in members:
            ti.size = len(data) if ti.isreg() else 0
            tf.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def _member(name: str, **attrs: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti


CASES: dict[str, tuple[Callable[[], tarfile.TarInfo], str]] = {
    "absolute": (lambda: _member("/etc/x"), "absolute name"),
    "dotdot": (lambda: _member("../../x"), "'..' component"),
    "chardev": (lambda: _member("dev/null", type=tarfile.CHRTYPE), "device"),
    "blockdev": (lambda: _member("dev/sda", type=tarfile.BLKTYPE), "device"),
    "fifo": (lambda: _member("run/f", type=tarfile.FIFOTYPE), "fifo"),
    "contiguous": (lambda: _member("bin/c", type=tarfile.CONTTYPE), "stops reading"),
    "big-uid": (lambda: _member("bin/u", uid=70000), "over 65535"),
    "big-gid": (lambda: _member("bin/g", gid=65536), "over 65535"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fail_on_any_flags_what_tar_ro_rejects(tmp_path: Path, case: str) -> None:
    make, needle = CASES[case]
    tar = _tar(tmp_path / "b.tar", (make(), b"data"))
    report = audit_tar(tar)
    assert any(needle in p for p in report.problems), report.problems
    res = cli("audit", tar, "--fail-on", "any", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert b"bundle problem" in res.stderr


def test_mode_with_file_type_bits(tmp_path: Path) -> None:
    # tarfile masks modes when writing: patch the header's mode field by hand
    tar = _tar(tmp_path / "b.tar", (_member("bin/m"), b"data"))
    raw = bytearray(tar.read_bytes())
    at = raw.index(b"bin/m\0")
    raw[at + 100 : at + 108] = b"0100755\0"
    raw[at + 148 : at + 156] = b" " * 8
    raw[at + 148 : at + 156] = b"%06o\0 " % sum(raw[at : at + 512])
    tar.write_bytes(bytes(raw))
    assert any("outside 0o7777" in p for p in audit_tar(tar).problems)
    assert cli("audit", tar, "--fail-on", "any", cwd=tmp_path).returncode == 3


def test_a_clean_bundle_still_passes(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "b.tar", (_member("lib"), b""))
    res = cli("audit", tar, "--fail-on", "any", cwd=tmp_path)
    assert res.returncode == 0, (res.stdout, res.stderr)


def test_huge_claimed_trampoline_is_scanned_in_bounded_memory(tmp_path: Path) -> None:
    """A 54 KB .tar.gz whose ELF claims a 56 MB trampoline of zeros once took 2.1 GB."""
    import gzip
    import struct
    import subprocess
    import sys

    from tests.elfbuild import tiny_elf

    elf = tiny_elf(bytes.fromhex("b8 27 00 00 00 0f 05 c3"))
    elf += bytes(-len(elf) % 4096)
    size = 32 << 20  # zeros: 16 million instructions; holding them all took ~1.2 GB
    data = elf + bytes(size) + b"LITEBOX0" + struct.pack("<QQQ", len(elf), 0x10_0000_0000, size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo("bin/big")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    tar = tmp_path / "big.tar.gz"
    tar.write_bytes(gzip.compress(buf.getvalue()))
    # ru_maxrss of a child that audits it (kilobytes)
    code = (
        "import resource, sys; from packager.audit import audit_tar; "
        "r = audit_tar(sys.argv[1]); assert r.members[0].cls.value == 'patched'; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tar)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    peak_mib = int(res.stdout) / 1024
    assert peak_mib < 400, f"audit peaked at {peak_mib:.0f} MiB"
