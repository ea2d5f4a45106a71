"""The streaming ustar writer against the strict tar_ro checker, Python's tarfile and GNU tar."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.errors import UserError
from packager.tarball import (
    TarPathError,
    UstarWriter,
    check_fits,
    split_ustar,
    tar_path,
    validate_paths,
)

from .tarcheck import read_strict

LS = Path("/usr/bin/ls")
OS_RELEASE = Path("/etc/os-release").resolve()

# A path longer than 100 bytes that only fits by putting its directories in the prefix field.
LONG_OK = "usr/" + "d" * 90 + "/" + "e" * 40 + "/" + "f" * 60
# prefix exactly 155 bytes, name exactly 100 bytes: the largest path ustar can hold.
MAX_OK = "p" * 74 + "/" + "q" * 80 + "/" + "n" * 100
NAME_100 = "x" * 100


def write_tar(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with UstarWriter(buf) as w:
        for path, data, mode in entries:
            w.add(path, data, mode)
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_entries() -> list[tuple[str, bytes, int]]:
    return [
        (str(LS), LS.read_bytes(), LS.stat().st_mode),
        ("/etc/os-release", OS_RELEASE.read_bytes(), OS_RELEASE.stat().st_mode),
        ("empty", b"", 0o100600),
        ("setuid/bin", b"#!/bin/sh\n", 0o104755),  # setuid must be dropped
        ("exact/512", b"\xaa" * 512, 0o644),
        (LONG_OK, b"long", 0o640),
        (MAX_OK, b"max", 0o444),
        (NAME_100, b"hundred", 0o700),
        ("ünïcode/パス", "utf-8 ✓".encode(), 0o755),
    ]


@pytest.fixture(scope="module")
def real_tar(real_entries: list[tuple[str, bytes, int]]) -> bytes:
    return write_tar(real_entries)


def expected(entries: list[tuple[str, bytes, int]]) -> list[tuple[str, int, bytes]]:
    return [(p.lstrip("/"), m & 0o777, d) for p, d, m in entries]


def test_strict_checker_accepts_writer_output(real_tar, real_entries):
    members = read_strict(real_tar)
    assert [tuple(m) for m in members] == expected(real_entries)
    assert len(real_tar) % 10240 == 0


def test_python_tarfile_reads_it_as_plain_ustar(real_tar, real_entries):
    with tarfile.open(fileobj=io.BytesIO(real_tar), mode="r:") as tf:
        infos = tf.getmembers()
        got = [(ti.name, ti.mode, tf.extractfile(ti).read()) for ti in infos]  # type: ignore[union-attr]
    assert got == expected(real_entries)
    for ti in infos:
        assert (ti.type, ti.uid, ti.gid, ti.mtime, ti.uname, ti.gname) == (
            tarfile.REGTYPE,
            1000,
            1000,
            0,
            "",
            "",
        )
        assert ti.pax_headers == {}


def test_gnu_tar_lists_and_extracts_exactly(tmp_path, real_tar, real_entries):
    if shutil.which("tar") is None:
        pytest.fail("GNU tar is required for this test")
    archive = tmp_path / "t.tar"
    archive.write_bytes(real_tar)
    res = subprocess.run(
        ["tar", "-tvf", str(archive), "--numeric-owner", "--full-time"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stderr == ""  # e.g. "A lone zero block" or header warnings
    lines = res.stdout.splitlines()
    assert len(lines) == len(real_entries)
    for line, (path, mode, data) in zip(lines, expected(real_entries), strict=True):
        perms, owner, size, day, time, name = line.split(None, 5)
        assert perms == stat.filemode(stat.S_IFREG | mode)
        assert owner == "1000/1000"
        assert int(size) == len(data)
        assert (day, time) == ("1970-01-01", "00:00:00")
        assert name == path
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)
    umask = os.umask(0)
    os.umask(umask)
    keep = 0o777 if os.geteuid() == 0 else 0o777 & ~umask  # root's tar keeps modes as stored
    for path, mode, data in expected(real_entries):
        assert (out / path).read_bytes() == data
        assert (out / path).stat().st_mode & 0o777 == mode & keep


def test_long_paths_use_the_prefix_field(real_tar):
    headers = {m.path: real_tar[m.offset : m.offset + 512] for m in read_strict(real_tar)}
    long_hdr = headers[LONG_OK]
    prefix = long_hdr[345:500].rstrip(b"\0").decode()
    name = long_hdr[0:100].rstrip(b"\0").decode()
    assert prefix and f"{prefix}/{name}" == LONG_OK
    max_hdr = headers[MAX_OK]
    assert max_hdr[345:500] == MAX_OK[:155].encode()  # full width, no NUL
    assert max_hdr[0:100] == b"n" * 100
    assert headers[NAME_100][0:100] == NAME_100.encode()
    assert not any(headers[NAME_100][345:500])


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("a/" + "b" * 101, "cannot be split"),  # last component alone is too long
        ("c" * 160 + "/x", "cannot be split"),  # no "/" within the first 156 bytes
        ("p" * 75 + "/" + "q" * 80 + "/" + "n" * 100, "cannot be split"),  # 257 bytes
        ("", "empty path"),
        ("/", "empty path"),
        (".", "'.' component"),
        ("..", "'..' component"),
        ("a/../b", "'..' component"),
        ("./a", "'.' component"),
        ("a//b", "'empty' component"),
        ("//a", "'empty' component"),
        ("a/", "ends with '/'"),
        ("a\0b", "NUL"),
        ("bad\udcffname", "not valid UTF-8"),
    ],
)
def test_paths_that_tar_ro_cannot_hold_are_refused_by_name(path, why):
    with pytest.raises(TarPathError, match=why) as exc:
        check_fits(path)
    assert isinstance(exc.value, UserError)
    shown = path.encode("utf-8", "backslashreplace").decode()
    assert str(exc.value).startswith(shown + ":")
    buf = io.BytesIO()
    w = UstarWriter(buf)
    with pytest.raises(TarPathError, match=why):
        w.add(path, b"data", 0o644)
    assert buf.getvalue() == b""  # refused before anything was written


def test_tar_path_strips_exactly_one_leading_slash():
    assert tar_path("/usr/bin/ls") == "usr/bin/ls"
    assert tar_path("usr/bin/ls") == "usr/bin/ls"
    assert split_ustar("usr/bin/ls") == (b"", b"usr/bin/ls")


def test_duplicates_are_refused_and_the_archive_stays_valid():
    buf = io.BytesIO()
    w = UstarWriter(buf)
    w.add("/lib/libc.so.6", b"first", 0o755)
    size = len(buf.getvalue())
    with pytest.raises(TarPathError, match=r"lib/libc\.so\.6: duplicate tar path"):
        w.add("lib/libc.so.6", b"second", 0o755)
    assert len(buf.getvalue()) == size
    w.close()
    assert [tuple(m) for m in read_strict(buf.getvalue())] == [("lib/libc.so.6", 0o755, b"first")]


@pytest.mark.parametrize("order", [("a/b", "a"), ("a", "a/b/c")])
def test_file_and_directory_conflict_is_refused(order):
    w = UstarWriter(io.BytesIO())
    w.add(order[0], b"x", 0o644)
    with pytest.raises(TarPathError, match="director"):
        w.add(order[1], b"y", 0o644)


def test_validate_paths_checks_everything_up_front():
    assert validate_paths(["/usr/bin/ls", "lib/x", LONG_OK]) == ["usr/bin/ls", "lib/x", LONG_OK]
    with pytest.raises(TarPathError, match=r"^usr/lib: is a file and also the directory"):
        validate_paths(["/usr/lib/libc.so.6", "/usr/lib"])
    with pytest.raises(TarPathError, match="duplicate tar path") as exc:
        validate_paths(["/bin/ls", "bin/ls"])
    assert exc.value.path == "bin/ls"
    with pytest.raises(TarPathError, match=r"cannot be split.*\(and 2 more bad path\(s\)\)"):
        validate_paths(["ok", "z/" + "y" * 120, "ok", "a//b"])


def test_same_input_gives_identical_bytes(real_entries, real_tar):
    assert write_tar(real_entries) == real_tar
    assert write_tar(list(reversed(real_entries))) != real_tar  # order is the caller's


def test_empty_archive_is_one_record_of_zeros():
    data = write_tar([])
    assert data == bytes(10240)
    assert read_strict(data) == []


def test_entries_are_written_as_they_are_added(tmp_path):
    """Streaming: after add() returns, the whole entry is on disk; nothing waits for close()."""
    target = tmp_path / "s.tar"
    with target.open("wb") as f:
        w = UstarWriter(f)
        w.add("a", b"x" * 1000, 0o644)
        f.flush()
        assert target.stat().st_size == w.offset == 512 + 1024
        w.add("b", b"", 0o644)
        f.flush()
        assert target.stat().st_size == 512 + 1024 + 512
        w.close()
    assert [m.path for m in read_strict(target)] == ["a", "b"]


def test_add_stream_matches_add_and_detects_short_sources():
    data = LS.read_bytes()
    streamed = io.BytesIO()
    with UstarWriter(streamed) as w, LS.open("rb") as src:
        w.add_stream(str(LS), src, len(data), 0o755)
    assert streamed.getvalue() == write_tar([(str(LS), data, 0o755)])
    w2 = UstarWriter(io.BytesIO())
    with pytest.raises(UserError, match="ended 10 bytes early"):
        w2.add_stream("x", io.BytesIO(b"12345"), 15, 0o644)


component = st.text(alphabet=st.sampled_from("abcxyz._-é/"), min_size=1, max_size=120).filter(
    lambda s: True
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="ab/é.", min_size=1, max_size=300), min_size=1, max_size=4))
def test_writer_either_refuses_or_round_trips(paths):
    buf = io.BytesIO()
    w = UstarWriter(buf)
    kept: list[str] = []
    for n, p in enumerate(paths):
        try:
            name = w.add(p, str(n).encode(), 0o600 + n)
        except TarPathError:
            continue
        assert name == tar_path(p)
        kept.append(name)
    w.close()
    members = read_strict(buf.getvalue())
    assert [m.path for m in members] == kept
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        assert tf.getnames() == kept


# --- the checker rejects what tar_ro would not read as meant -------------------------------


def tarfile_bytes(fmt: int, *specs: dict[str, object]) -> bytes:
    """A tar written by Python's tarfile; each spec overrides TarInfo fields (owner 1000 etc.)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for spec in specs:
            data = bytes(spec.pop("data", b"payload"))  # type: ignore[call-overload]
            ti = tarfile.TarInfo(str(spec.pop("name", "file")))
            ti.size, ti.mode, ti.uid, ti.gid, ti.mtime, ti.uname, ti.gname = (
                len(data),
                0o644,
                1000,
                1000,
                0,
                "",
                "",
            )
            for k, v in spec.items():
                setattr(ti, k, v)
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def test_checker_accepts_a_well_formed_tarfile_ustar():
    members = read_strict(tarfile_bytes(tarfile.USTAR_FORMAT, {"name": "a/b"}, {"name": "c"}))
    assert [tuple(m) for m in members] == [("a/b", 0o644, b"payload"), ("c", 0o644, b"payload")]


@pytest.mark.parametrize(
    ("fmt", "spec", "message"),
    [
        (tarfile.PAX_FORMAT, {"name": "long/" + "n" * 120}, r"typeflag b'x' \(PAX\)"),
        (tarfile.PAX_FORMAT, {"name": "ü", "uname": "ü"}, r"typeflag b'x' \(PAX\)"),
        (tarfile.GNU_FORMAT, {"name": "a"}, "not ustar"),
        (tarfile.GNU_FORMAT, {"name": "g/" + "n" * 120}, "not ustar"),
        (tarfile.USTAR_FORMAT, {"name": "l", "type": tarfile.SYMTYPE, "linkname": "x"}, "symlink"),
        (tarfile.USTAR_FORMAT, {"name": "d", "type": tarfile.DIRTYPE}, "directory"),
        (tarfile.USTAR_FORMAT, {"name": "h", "type": tarfile.LNKTYPE, "linkname": "x"}, "hard"),
        (tarfile.USTAR_FORMAT, {"mode": 0o4755}, "mode 0o4755 has bits outside 0o777"),
        (tarfile.USTAR_FORMAT, {"uid": 0}, "uid 0 != 1000"),
        (tarfile.USTAR_FORMAT, {"gid": 65534}, "gid 65534 != 1000"),
        (tarfile.USTAR_FORMAT, {"mtime": 1}, "mtime 1 != 0"),
        (tarfile.USTAR_FORMAT, {"uname": "root"}, "uname/gname not empty"),
        (tarfile.USTAR_FORMAT, {"name": "./x"}, r"'\.' component"),
        (tarfile.USTAR_FORMAT, {"name": "/abs"}, "absolute"),
    ],
)
def test_checker_rejects_tarfile_archives_tar_ro_misreads(fmt, spec, message):
    with pytest.raises(AssertionError, match=message):
        read_strict(tarfile_bytes(fmt, dict(spec)))


def test_checker_rejects_duplicates_and_conflicts_from_tarfile():
    with pytest.raises(AssertionError, match="duplicate path"):
        read_strict(tarfile_bytes(tarfile.USTAR_FORMAT, {"name": "x"}, {"name": "x"}))
    with pytest.raises(AssertionError, match="its directory 'a' is a file"):
        read_strict(tarfile_bytes(tarfile.USTAR_FORMAT, {"name": "a"}, {"name": "a/b"}))
    with pytest.raises(AssertionError, match="also the directory of 'a/b'"):
        read_strict(tarfile_bytes(tarfile.USTAR_FORMAT, {"name": "a/b"}, {"name": "a"}))


def test_checker_rejects_damaged_archives():
    good = bytearray(write_tar([("a", b"x" * 700, 0o644)]))
    bad_sum = bytearray(good)
    bad_sum[0] ^= 1
    with pytest.raises(AssertionError, match="checksum"):
        read_strict(bytes(bad_sum))
    with pytest.raises(AssertionError, match="not a multiple of 512"):
        read_strict(bytes(good[:-1]))
    # header + payload + exactly one zero block: no room for the two-block end marker
    with pytest.raises(AssertionError, match="two zero blocks"):
        read_strict(bytes(good[: 512 + 1024 + 512]))
    junk = bytearray(good)
    junk[-1] = 1
    with pytest.raises(AssertionError, match="after the end-of-archive marker"):
        read_strict(bytes(junk))
    with pytest.raises(AssertionError, match="less than 3 blocks"):
        read_strict(bytes(1024))
    pad = bytearray(good)
    pad[512 + 700] = 1
    with pytest.raises(AssertionError, match="padding is not zero"):
        read_strict(bytes(pad))
