"""``litebox/sbom.cdx.json``: which package provides each bundled file, as CycloneDX 1.6.

The host's own dpkg (``dpkg-query``, ``dpkg -S``) is the oracle for host bundles; for trees,
the tests write the package databases (dpkg, apk, rpm's SQLite) themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from packager.packagedb import Package
from tests.tarcheck import read_strict
from tests.test_pack import cli

SBOM = "litebox/sbom.cdx.json"


def bundle(tmp_path: Path, *args: str | Path, out: str = "b.tar") -> dict[str, bytes]:
    res = cli(*args, "-o", out, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return {m.path: m.data for m in read_strict(tmp_path / out)}


def valid_sbom(data: bytes) -> dict[str, Any]:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
    assert error is None, error
    doc: dict[str, Any] = json.loads(data)
    return doc


def owners(doc: dict[str, Any]) -> dict[str, str | None]:
    """File name -> purl of the package component holding it (None: top level, no package)."""
    out: dict[str, str | None] = {}
    for c in doc["components"]:
        for f, purl in (
            [(c, None)] if c["type"] == "file" else [(m, c["purl"]) for m in c["components"]]
        ):
            out[f["name"]] = purl
    return out


def every_path(doc: dict[str, Any]) -> dict[str, str | None]:
    """Like owners(), keyed by every tar path of each file (name and litebox-pack:path)."""
    out = owners(doc)
    for c in doc["components"]:
        for f in [c] if c["type"] == "file" else c["components"]:
            for p in f["properties"]:
                if p["name"] == "litebox-pack:path":
                    out[p["value"]] = out[f["name"]]
    return out


def dpkg_purl(package: str) -> str:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version} ${Architecture}", package],
        capture_output=True,
        text=True,
        check=True,
    )
    version, arch = res.stdout.split()
    return f"pkg:deb/debian/{package}@{version}?arch={arch}"


def dpkg_owner(*paths: str) -> str:
    """The package dpkg says installed the first of ``paths`` it knows (it knows the path the
    package listed, which on a merged-/usr system may be /bin/... rather than /usr/bin/...)."""
    for path in paths:
        res = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if res.returncode == 0:
            return res.stdout.split(":")[0]
    raise AssertionError(f"dpkg owns none of {paths}")


def test_host_bundle_names_the_dpkg_package_of_every_file(tmp_path: Path) -> None:
    members = bundle(tmp_path, "/bin/ls")
    doc = valid_sbom(members[SBOM])
    found = owners(doc)
    manifest = json.loads(members["litebox/manifest.json"])
    listed = ["/" + f["paths"][0] for f in manifest["files"] if f["paths"][0] != SBOM]
    assert sorted(found) == sorted(listed)  # every bundled file, once
    for f in manifest["files"]:
        if f["source"] is None:
            continue
        names = [f["source"], *("/" + p for p in f["paths"])]
        assert found["/" + f["paths"][0]] == dpkg_purl(dpkg_owner(*names)), f["source"]
    assert found["/lib/x86_64-linux-gnu/libc.so.6"] == dpkg_purl("libc6")
    assert doc["metadata"]["properties"] == [
        {"name": "litebox-pack:package-databases", "value": "dpkg"}
    ]


def test_sbom_is_deterministic_and_unowned_files_are_listed(
    tmp_path: Path, build_sample: Any
) -> None:
    hello = build_sample("hello.c", "dynamic")
    a = bundle(tmp_path, hello, out="a.tar")[SBOM]
    b = bundle(tmp_path, hello, "--no-cache", out="b.tar")[SBOM]
    assert a == b
    doc = valid_sbom(a)
    assert doc["serialNumber"].startswith("urn:uuid:")
    [mine] = [c for c in doc["components"] if c["name"] == str(hello)]
    assert mine["type"] == "file"
    assert {"name": "litebox-pack:package", "value": "none"} in mine["properties"]
    # The hash is of the bundled (rewritten) bytes; the source's is a property.
    manifest = json.loads(bundle(tmp_path, hello, out="c.tar")["litebox/manifest.json"])
    [entry] = [f for f in manifest["files"] if f["source"] == str(hello)]
    assert mine["hashes"] == [{"alg": "SHA-256", "content": entry["sha256_out"]}]


def static_program(tmp_path: Path) -> Path:
    src = tmp_path / "p.c"
    src.write_text("int main(void) { return 0; }\n")
    out = tmp_path / "prog"
    subprocess.run(["gcc", "-static", "-O2", "-o", out, src], check=True)
    return out


def tree(tmp_path: Path, distro: str) -> Path:
    """A root with usr/bin/prog, bin -> usr/bin (merged /usr) and an os-release."""
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copy(static_program(tmp_path), root / "usr" / "bin" / "prog")
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text(f'NAME="Test"\nID={distro}\n')
    return root


def test_root_tree_dpkg_database_through_a_merged_usr_symlink(tmp_path: Path) -> None:
    root = tree(tmp_path, "ubuntu")
    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text(
        "Package: other\nStatus: deinstall ok config-files\nVersion: 9\nArchitecture: amd64\n\n"
        "Package: myprog\nStatus: install ok installed\nVersion: 1:2.0-1ubuntu3\n"
        "Architecture: amd64\nDescription: a test\n more text\n"
    )
    (info / "myprog.list").write_text("/.\n/bin\n/bin/prog\n")  # dpkg lists it under /bin
    (info / "other.list").write_text("/usr/bin/prog\n")  # not installed: never the owner
    for flag in ("--root", "--rootfs"):
        args = [flag, root, "/usr/bin/prog"] if flag == "--root" else [flag, root]
        doc = valid_sbom(bundle(tmp_path, *args, out=f"{flag[2:]}.tar")[SBOM])
        purl = "pkg:deb/ubuntu/myprog@1:2.0-1ubuntu3?arch=amd64"
        assert every_path(doc)["/usr/bin/prog"] == purl, flag


def test_root_tree_apk_database(tmp_path: Path) -> None:
    root = tree(tmp_path, "alpine")
    db = root / "lib" / "apk" / "db"
    db.mkdir(parents=True)
    (db / "installed").write_text(
        "C:Q1abc=\nP:busybox\nV:1.36.1-r5\nA:x86_64\nF:bin\nR:busybox\n\n"
        "C:Q1def=\nP:prog\nV:3.1-r0\nA:x86_64\nF:usr\nF:usr/bin\nR:prog\n"
    )
    doc = valid_sbom(bundle(tmp_path, "--root", root, "/usr/bin/prog")[SBOM])
    assert owners(doc)["/usr/bin/prog"] == "pkg:apk/alpine/prog@3.1-r0?arch=x86_64"


def rpm_header(tags: list[tuple[int, int, list[str] | list[int]]]) -> bytes:
    """An rpm header as rpmdb.sqlite stores it: counts, 16-byte index entries, data store."""
    index, store = b"", b""
    for tag, kind, values in tags:
        if kind == 4:  # INT32, 4-aligned
            store += b"\0" * (-len(store) % 4)
            data = struct.pack(f">{len(values)}i", *values)
        else:
            data = b"".join(str(v).encode() + b"\0" for v in values)
        index += struct.pack(">IIII", tag, kind, len(store), len(values))
        store += data
    return struct.pack(">II", len(tags), len(store)) + index + store


def test_root_tree_rpm_sqlite_database(tmp_path: Path) -> None:
    root = tree(tmp_path, "fedora")
    rpmdir = root / "var" / "lib" / "rpm"
    rpmdir.mkdir(parents=True)
    header = rpm_header(
        [
            (1000, 6, ["prog"]),
            (1001, 6, ["4.2"]),
            (1002, 6, ["3.fc40"]),
            (1003, 4, [2]),
            (1022, 6, ["x86_64"]),
            (1116, 4, [0, 1]),
            (1117, 8, ["README", "prog"]),
            (1118, 8, ["/usr/share/doc/prog/", "/usr/bin/"]),
        ]
    )
    with sqlite3.connect(rpmdir / "rpmdb.sqlite") as db:
        db.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
        db.execute("INSERT INTO Packages (blob) VALUES (?)", (b"\0\0",))  # corrupt: skipped
        db.execute("INSERT INTO Packages (blob) VALUES (?)", (header,))
    before = (rpmdir / "rpmdb.sqlite").read_bytes()
    doc = valid_sbom(bundle(tmp_path, "--root", root, "/usr/bin/prog")[SBOM])
    assert owners(doc)["/usr/bin/prog"] == "pkg:rpm/fedora/prog@4.2-3.fc40?arch=x86_64&epoch=2"
    assert (rpmdir / "rpmdb.sqlite").read_bytes() == before  # read only
    assert sorted(p.name for p in rpmdir.iterdir()) == ["rpmdb.sqlite"]


def test_no_database_means_every_file_is_unowned(tmp_path: Path) -> None:
    root = tree(tmp_path, "debian")
    doc = valid_sbom(bundle(tmp_path, "--root", root, "/usr/bin/prog")[SBOM])
    assert set(owners(doc).values()) == {None}
    assert doc["metadata"]["properties"] == [
        {"name": "litebox-pack:package-databases", "value": "none"}
    ]


def test_audit_shows_the_packages(tmp_path: Path) -> None:
    bundle(tmp_path, "/bin/ls", out="ls.tar")
    res = cli("audit", "ls.tar", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    libc = dpkg_purl("libc6")
    assert any(
        line.startswith("package libc6 ") and libc in line for line in res.stdout.splitlines()
    )
    doc = json.loads(cli("audit", "--json", "ls.tar", cwd=tmp_path).stdout)
    by_purl = {p["purl"]: p for p in doc["packages"]}
    assert "/lib/x86_64-linux-gnu/libc.so.6" in by_purl[libc]["files"]
    assert dpkg_purl("coreutils") in by_purl


def test_purl_encoding() -> None:
    pkg = Package("deb", "debian", "libstdc++6", "12.2.0-14", "amd64")
    assert pkg.purl == "pkg:deb/debian/libstdc++6@12.2.0-14?arch=amd64"
    assert Package("apk", "alpine", "a b", "1 2", "").purl == "pkg:apk/alpine/a%20b@1%202"


@pytest.mark.parametrize("bad", [b"not json", b'{"bomFormat": "SPDX"}'])
def test_audit_reports_an_unreadable_sbom(tmp_path: Path, bad: bytes) -> None:
    from packager.tarball import UstarWriter

    with (tmp_path / "x.tar").open("wb") as fh, UstarWriter(fh) as tar:
        tar.add(SBOM, bad, 0o644)
    res = cli("audit", "--json", "x.tar", cwd=tmp_path)
    doc = json.loads(res.stdout)
    assert doc["packages"] is None
    assert any(p.startswith(f"{SBOM}: unreadable") for p in doc["problems"])


def test_a_tree_database_never_reaches_outside_the_tree(tmp_path: Path) -> None:
    root = tree(tmp_path, "debian")
    outside = tmp_path / "outside"
    (outside / "info").mkdir(parents=True)
    (outside / "status").write_text(
        "Package: evil\nStatus: install ok installed\nVersion: 6.6.6\nArchitecture: amd64\n"
    )
    (outside / "info" / "evil.list").write_text("/usr/bin/prog\n")
    dpkg = root / "var" / "lib" / "dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status").symlink_to(outside / "status")  # absolute: means the tree's own /tmp/...
    (dpkg / "info").symlink_to(outside / "info")
    doc = valid_sbom(bundle(tmp_path, "--root", root, "/usr/bin/prog", out="a.tar")[SBOM])
    assert set(owners(doc).values()) == {None}
    # A FIFO where the status file should be is skipped, not read (it would block forever).
    (dpkg / "status").unlink()
    os.mkfifo(dpkg / "status")
    doc = valid_sbom(bundle(tmp_path, "--root", root, "/usr/bin/prog", out="b.tar")[SBOM])
    assert set(owners(doc).values()) == {None}
