"""Damaged and hostile tars given to audit, run and --oci-archive: PAX headers are bounded
before tarfile parses them (CVE-2024-6232), and corrupt compression, sparse maps, base-256
sizes, NUL paths and a full disk are one-line errors within seconds."""

from __future__ import annotations

import gzip
import lzma
import tarfile
import time
from pathlib import Path

import pytest

from packager.errors import UserError
from packager.limits import MAX_PAX
from packager.tarread import check_pax_records
from tests.hostile import cli, leftovers, limits, one_line_error, plain_tar, tmpfs


def header(name: bytes, size: int, typ: bytes = b"0", size_field: bytes | None = None) -> bytes:
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0001750\0"
    h[116:124] = b"0001750\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = typ
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(b: bytes) -> bytes:
    return b + bytes(-len(b) % 512)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n += 1
    return b"%d" % n + body


def with_pax(records: bytes, member: bytes = b"bin/x", data: bytes = b"hi") -> bytes:
    return (
        header(b"././@PaxHeader", len(records), b"x")
        + pad(records)
        + header(member, len(data))
        + pad(data)
        + bytes(10240)
    )


REDOS = with_pax(b"1" * 150_000)  # quadratic in tarfile's unpatched PAX regex
BIG_VALID = with_pax(pax_record(b"path", b"1" * 150_000))
SPARSE = with_pax(pax_record(b"GNU.sparse.map", b"1,x,3") + pax_record(b"GNU.sparse.size", b"9"))
NUL_PATH = with_pax(pax_record(b"path", b"bin/a\0b"))
BASE256 = header(b"bin/x", 0, size_field=b"\x80" + b"\xff" * 11) + bytes(10240)
PAX_BASE256_SIZE = with_pax(pax_record(b"size", b"9" * 40))


def _xz_corrupt() -> bytes:
    data = bytearray(lzma.compress(plain_tar({"bin/x": bytes(range(256)) * 400})))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _gzip_truncated() -> bytes:
    data = gzip.compress(plain_tar({"bin/x": bytes(range(256)) * 400}))
    return data[: len(data) // 2]


CASES = {
    "pax-redos": gzip.compress(REDOS),
    "pax-too-big": gzip.compress(BIG_VALID),
    "gnu-sparse": SPARSE,
    "nul-path": NUL_PATH,
    "base256-size": BASE256,
    "pax-huge-size": PAX_BASE256_SIZE,
    "xz-corrupt": _xz_corrupt(),
    "gzip-truncated": _gzip_truncated(),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("command", ["audit", "run", "--oci-archive"])
def test_hostile_tar_is_one_line_quickly(tmp_path: Path, name: str, command: str) -> None:
    bundle = tmp_path / "bad.tar"
    bundle.write_bytes(CASES[name])
    args = {
        "audit": ["audit", bundle],
        "run": ["run", bundle, "--", "/bin/x"],
        "--oci-archive": ["--oci-archive", bundle, "-o", "o.tar"],
    }[command]
    start = time.monotonic()
    res = cli(*args, cwd=tmp_path, timeout=60, preexec=limits(mem=1 << 30))
    assert time.monotonic() - start < 15
    if command == "audit" and name == "nul-path":
        # audit reads names, it does not create files: a NUL in a name is a finding there
        assert res.returncode == 0, res.stderr
        assert b"NUL" in res.stdout
        return
    one_line_error(res, str(bundle))
    assert leftovers(tmp_path) == []


def test_pax_records_are_checked_linearly() -> None:
    check_pax_records(pax_record(b"path", b"a/b") + pax_record(b"mtime", b"1.5"))
    for bad in (b"1" * 1000, b"5 a=b\n", b"99 path=x\n", b"6 =ab\n", b"x path=y\n"):
        with pytest.raises(tarfile.HeaderError):
            check_pax_records(bad)
    assert MAX_PAX >= 4096  # long paths and xattrs of real images fit


def test_pax_limit_is_configurable(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(with_pax(pax_record(b"path", b"bin/" + b"y" * 3000)))
    assert cli("audit", bundle, cwd=tmp_path).returncode == 0
    res = cli("audit", bundle, cwd=tmp_path, env={"LITEBOX_PACK_MAX_PAX": "1024"})
    one_line_error(res, "PAX header", "limit 1024")


def test_disk_full_while_run_unpacks(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(plain_tar({"bin/x": b"\0" * (2 << 20)}))
    with tmpfs(tmp_path / "small", "256k") as small:
        res = cli("run", bundle, "--", "/bin/x", cwd=tmp_path, env={"TMPDIR": str(small)})
        one_line_error(res, str(bundle), "No space left")
        assert list(small.iterdir()) == []


def test_user_error_type_is_what_callers_get() -> None:
    from packager.audit import audit_tar

    bad = Path("/proc/self/cmdline")
    with pytest.raises(UserError):
        audit_tar(bad)
