"""``litebox-pack audit`` on bundles of real files rewritten by the real rewriter."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from packager.audit import MANIFEST_PATH, Cls, audit_tar, classify
from packager.cli import app
from packager.tarball import UstarWriter
from rewriter import RewriteResult, Trailer, rewrite_elf

from .tarcheck import read_strict

LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
LIBZ = Path("/usr/lib/x86_64-linux-gnu/libz.so.1")
LS = Path("/usr/bin/ls")
OS_RELEASE = Path("/etc/os-release").resolve()
LIBC_PATHS = ["usr/lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libc.so.6"]

# A syscall that is a branch target followed by a jump: no room to patch it (reference §5.4).
UNPATCHABLE_S = """
.globl _start
_start:
    mov $60, %eax
    syscall
    jmp 1f
1:  syscall
    jmp 1b
"""
I386_S = """
.globl _start
_start:
    mov $20, %eax
    int $0x80
    mov $1, %eax
    int $0x80
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gcc(tmp: Path, name: str, source: str, *flags: str) -> bytes:
    src = tmp / f"{name}.S"
    src.write_text(source)
    out = tmp / name
    res = subprocess.run(
        ["gcc", "-nostdlib", "-static", *flags, "-o", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.fail(f"gcc {' '.join(flags)} {name} failed:\n{res.stderr}")
    return out.read_bytes()


@dataclass
class File:
    paths: list[str]
    data_in: bytes
    mode: int
    result: RewriteResult | None = None  # None: not given to the rewriter
    reason: str | None = None  # why it was not rewritten, when result is None

    @property
    def data(self) -> bytes:
        return self.result.data if self.result else self.data_in

    @property
    def rw(self) -> RewriteResult:
        assert self.result is not None, f"{self.paths[0]} was not rewritten"
        return self.result

    @property
    def trailer(self) -> Trailer:
        assert self.rw.trailer is not None
        return self.rw.trailer

    def manifest_entry(self) -> dict[str, Any]:
        r = self.result
        return {
            "paths": self.paths,
            "source": "/" + self.paths[0],
            "mode": self.mode,
            "sha256_in": sha(self.data_in),
            "sha256_out": sha(self.data),
            "outcome": r.outcome.value if r else "unchanged",
            "reason": (r.reason or None) if r else self.reason,
            "sites": r.patched_sites if r else 0,
            "strategies": r.strategy_counts if r else {},
            "trampoline_size": r.trailer.size if r and r.trailer else None,
            "unpatchable": list(r.unpatchable) if r else [],
            "fork_patch": None,
            "included_because": [{"kind": "input"}],
        }


def manifest(files: list[File], abi: str = "redzone") -> dict[str, Any]:
    return {
        "tool": "litebox-pack",
        "version": "0.1.0",
        "format": 1,
        "options": {"abi": abi, "unpatchable": "trap", "fork_patch": True},
        "files": [f.manifest_entry() for f in files],
    }


def bundle(
    path: Path, files: list[File], man: dict[str, Any] | bytes | None = None, extra=()
) -> Path:
    """Write a bundle with our writer, then check it against the strict tar_ro reader."""
    with path.open("wb") as out, UstarWriter(out) as w:
        for f in files:
            for p in f.paths:
                w.add(p, f.data, f.mode)
        for p, data in extra:
            w.add(p, data, 0o644)
        if man is not None:
            raw = man if isinstance(man, bytes) else json.dumps(man).encode()
            w.add(MANIFEST_PATH, raw, 0o644)
    read_strict(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, File]:
    tmp = tmp_path_factory.mktemp("audit-src")
    libc = LIBC.read_bytes()
    libz = LIBZ.read_bytes()
    unpatchable = gcc(tmp, "unpatchable", UNPATCHABLE_S)
    i386 = gcc(tmp, "i386", I386_S, "-m32")
    # An ELF of a machine the rewriter does not handle: the i386 program relabelled as 32-bit ARM.
    arm = bytearray(i386)
    struct.pack_into("<H", arm, 18, 40)
    return {
        "libc": File(LIBC_PATHS, libc, 0o755, rewrite_elf(libc, abi="redzone")),
        "libc-resume": File(["opt/resume/libc.so.6"], libc, 0o755, rewrite_elf(libc, abi="resume")),
        "libz": File(["usr/lib/x86_64-linux-gnu/libz.so.1"], libz, 0o644, rewrite_elf(libz)),
        "ls": File(["usr/bin/ls"], LS.read_bytes(), 0o755, reason="--no-rewrite"),
        "os-release": File(["etc/os-release"], OS_RELEASE.read_bytes(), 0o644,
                           rewrite_elf(OS_RELEASE.read_bytes())),
        "i386": File(["opt/i386/exit"], i386, 0o755, rewrite_elf(i386)),
        "arm": File(["opt/arm/exit"], bytes(arm), 0o755, rewrite_elf(bytes(arm))),
        "trapped": File(["opt/trap"], unpatchable, 0o755,
                        rewrite_elf(unpatchable, unpatchable="trap")),
        "kept": File(["opt/keep"], unpatchable, 0o755,
                     rewrite_elf(unpatchable, unpatchable="keep")),
    }  # fmt: skip


def pick(files: dict[str, File], *names: str) -> list[File]:
    return [files[n] for n in names]


def by_path(report) -> dict[str, Any]:
    return {m.path: m for m in report.members}


def run(*args: str):
    return CliRunner().invoke(app, ["audit", *args])


# --- classification from bytes ------------------------------------------------------------------


@pytest.mark.parametrize("with_manifest", [True, False])
def test_classes_sites_and_abi_match_the_rewriter(tmp_path, files, with_manifest):
    chosen = pick(files, "libc", "libz", "ls", "os-release", "arm", "trapped")
    man = manifest(chosen) if with_manifest else None
    report = audit_tar(bundle(tmp_path / "b.tar", chosen, man))
    members = by_path(report)
    libc = files["libc"].rw
    for p in LIBC_PATHS:
        m = members[p]
        assert (m.cls, m.abi, m.sites) == (Cls.PATCHED, "redzone", libc.patched_sites)
        assert m.trailer == libc.trailer
        assert m.sha256 == sha(libc.data)
    trap = files["trapped"].rw
    t = members["opt/trap"]
    assert (t.cls, t.abi, t.sites) == (Cls.PATCHED, "redzone", trap.patched_sites)
    assert members["usr/lib/x86_64-linux-gnu/libz.so.1"].cls is Cls.MARKER
    assert members["usr/lib/x86_64-linux-gnu/libz.so.1"].sites == 0
    assert members["etc/os-release"].cls is Cls.NON_ELF
    assert (members["usr/bin/ls"].cls, members["opt/arm/exit"].cls) == (Cls.UNPATCHED,) * 2
    assert members["opt/arm/exit"].bits == 32
    assert report.sites == 2 * libc.patched_sites + trap.patched_sites
    assert report.abi == "redzone"
    if with_manifest:
        assert report.manifest is not None and report.manifest.valid
        assert members["usr/bin/ls"].reason == "left unchanged: --no-rewrite"
        assert (
            members["opt/arm/exit"].reason
            == "left unchanged: other architecture (ELF32 machine 40)"
        )
        assert t.unpatchable == len(trap.unpatchable) == 1
        assert report.mismatches == 0 and report.problems == []
        assert members[MANIFEST_PATH].cls is Cls.NON_ELF
    else:
        assert report.manifest is None
        assert members["usr/bin/ls"].reason == "no trailer"
        assert t.unpatchable is None and report.unpatchable_sites == 0


def test_resume_stubs_are_recognised(files):
    r = files["libc-resume"].rw
    m = classify("libc.so.6", r.data)
    assert (m.cls, m.abi, m.sites) == (Cls.PATCHED, "resume", r.patched_sites)
    assert m.scan is not None and m.scan.kinds == {"resume": r.patched_sites}
    assert m.scan.undecodable == 0


def test_kept_sites_still_count_only_real_stubs(files):
    r = files["kept"].rw
    assert r.unpatchable
    m = classify("keep", r.data)
    assert (m.cls, m.sites) == (Cls.PATCHED, r.patched_sites)


def _corrupt(data: bytes, how: str) -> bytes:
    magic, off, vaddr, size = struct.unpack("<8sQQQ", data[-32:])
    if how == "version":
        magic = b"LITEBOX1"
    elif how == "offset":
        off += 8
    elif how == "vaddr":
        vaddr += 0x10
    elif how == "size":
        size -= 1
    return data[:-32] + struct.pack("<8sQQQ", magic, off, vaddr, size)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("version", "bad version byte 0x31"),
        ("offset", "file offset 0x[0-9a-f]+ is not page aligned"),
        ("vaddr", "vaddr 0x[0-9a-f]+ is not page aligned"),
        ("size", r"\+ size 0x[0-9a-f]+ does not end at the trailer"),
    ],
)
def test_corrupted_trailers_say_what_is_wrong(tmp_path, files, how, reason):
    libc = files["libc"].rw
    bad = File(["lib/bad.so"], _corrupt(libc.data, how), 0o755)
    report = audit_tar(bundle(tmp_path / "c.tar", [bad]))
    (m,) = report.members
    assert m.cls is Cls.INVALID
    assert m.reason is not None
    assert m.sites == 0
    assert re.search(reason, m.reason), m.reason
    res = run(str(tmp_path / "c.tar"), "--fail-on", "unpatched")
    assert res.exit_code == 3
    assert "invalid trailer" in res.stderr


def test_i386_stubs_are_counted(tmp_path, files):
    """A real i386 rewrite: its stubs are counted, and under a manifest saying "redzone" (the
    x86-64 option) they are no mismatch and do not make the bundle "mixed"."""
    i386 = files["i386"]
    m = classify("i386", i386.rw.data)
    assert (m.cls, m.bits, m.abi, m.sites) == (Cls.PATCHED, 32, "i386", i386.rw.patched_sites)
    assert m.sites == 2
    assert m.trailer is not None and m.trailer.bits == 32 and m.trailer.size == i386.rw.trailer.size
    chosen = pick(files, "libc", "i386")
    report = audit_tar(bundle(tmp_path / "i.tar", chosen, manifest(chosen)))
    assert report.abi == "redzone" and report.mismatches == 0 and report.problems == []


# --- manifest versus bytes ------------------------------------------------------------------


def test_mixed_abis_are_flagged(tmp_path, files):
    tar = bundle(tmp_path / "m.tar", pick(files, "libc", "libc-resume"))
    report = audit_tar(tar)
    assert report.abi == "mixed"
    assert any("mixed" in p and "redzone" in p and "resume" in p for p in report.problems)
    assert run(str(tar), "--fail-on", "mismatch").exit_code == 3
    assert run(str(tar), "--fail-on", "unpatched").exit_code == 0


def test_manifest_disagreements_are_reported(tmp_path, files):
    libc, resume = files["libc"], files["libc-resume"]
    man = manifest([libc, files["libz"], files["ls"]])
    man["files"].append({"paths": ["missing/file"], "outcome": "unchanged", "reason": "x"})
    swapped = File(LIBC_PATHS, resume.data_in, 0o755, resume.result)  # resume bytes, redzone entry
    unrewritten = File(["usr/lib/x86_64-linux-gnu/libz.so.1"], LIBC.read_bytes(), 0o644)
    ls_wrong_mode = File(["usr/bin/ls"], LS.read_bytes(), 0o700)
    stray = File(["etc/stray"], b"not in the manifest\n", 0o644)
    tar = bundle(tmp_path / "x.tar", [swapped, unrewritten, ls_wrong_mode, stray], man)
    report = audit_tar(tar)
    members = by_path(report)
    for p in LIBC_PATHS:
        mm = " | ".join(members[p].mismatches)
        assert "differs from manifest sha256_out" in mm
        assert "manifest ABI redzone, stubs are resume" in mm
        assert "trampoline_size" in mm
    z = members["usr/lib/x86_64-linux-gnu/libz.so.1"].mismatches
    assert "manifest says checked-nothing-to-patch, bytes say unpatched" in z
    assert members["usr/bin/ls"].mismatches == ["mode 0o700 != manifest 0o755"]
    assert members["etc/stray"].mismatches == ["not listed in the manifest"]
    assert any(p.startswith("missing/file: listed in the manifest") for p in report.problems)
    res = run(str(tar), "--fail-on", "mismatch")
    assert res.exit_code == 3 and "mismatch" in res.stderr
    assert "MISMATCH: not listed in the manifest" in run(str(tar)).stdout


def test_site_count_disagreement(tmp_path, files):
    man = manifest([files["libc"]])
    man["files"][0]["sites"] += 1
    report = audit_tar(bundle(tmp_path / "s.tar", [files["libc"]], man))
    n = files["libc"].rw.patched_sites
    assert f"manifest says {n + 1} site(s), trampoline holds {n} stub(s)" in (
        report.members[0].mismatches
    )


def test_unusable_manifest_is_a_problem_not_a_crash(tmp_path, files):
    report = audit_tar(bundle(tmp_path / "u.tar", pick(files, "libz"), b"{not json"))
    assert report.manifest is not None and not report.manifest.valid
    assert any("not valid JSON" in p for p in report.problems)
    assert report.members[0].cls is Cls.MARKER


# --- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_tar(tmp_path_factory, files) -> Path:
    chosen = pick(files, "libc", "libz", "ls", "os-release", "arm", "trapped")
    return bundle(tmp_path_factory.mktemp("full") / "full.tar", chosen, manifest(chosen))


@pytest.fixture(scope="module")
def clean_tar(tmp_path_factory, files) -> Path:
    chosen = pick(files, "libc", "libz", "os-release")
    return bundle(tmp_path_factory.mktemp("clean") / "clean.tar", chosen, manifest(chosen))


def test_json_structure(full_tar, files):
    res = run(str(full_tar), "--json", "--fail-on", "unpatchable")
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert list(doc) == [
        "format", "audit_format", "tool", "version", "bundle", "abi", "manifest", "summary",
        "members", "skipped", "problems", "packages", "fail_on", "failed",
    ]  # fmt: skip
    assert doc["packages"] is None  # no SBOM in this bundle
    assert (doc["format"], doc["audit_format"]) == (1, 1)
    assert (doc["abi"], doc["fail_on"]) == ("redzone", "unpatchable")
    assert doc["failed"] == ["1 unpatchable site(s) in 1 file(s)"]
    assert doc["manifest"]["valid"] is True and doc["manifest"]["abi"] == "redzone"
    s = doc["summary"]
    libc, trap = files["libc"].rw, files["trapped"].rw
    assert s == {
        "members": 8, "elf": 6, "patched": 3, "checked-nothing-to-patch": 1, "unpatched": 2,
        "invalid-trailer": 0, "non-elf": 2,
        "sites": 2 * libc.patched_sites + trap.patched_sites,
        "unpatchable_sites": 1, "kept_sites": 0, "data_in_code_sites": 0, "mismatches": 0,
        "problems": 0,
    }  # fmt: skip
    keys = {
        "path", "size", "mode", "sha256", "class", "elf", "abi", "sites", "stubs",
        "trampoline", "reason", "unpatchable", "kept", "data_in_code", "manifest", "mismatches",
        "notes",
    }  # fmt: skip
    members = {m["path"]: m for m in doc["members"]}
    assert all(set(m) == keys for m in doc["members"])
    first = members[LIBC_PATHS[0]]
    t = files["libc"].trailer
    assert first["trampoline"] == {"file_offset": t.file_offset, "vaddr": t.vaddr, "size": t.size}
    assert first["stubs"]["redzone"] == first["sites"] == libc.patched_sites
    assert first["elf"] == {"bits": 64, "machine": "x86-64"}
    assert first["manifest"]["outcome"] == "patched"
    assert members["etc/os-release"]["elf"] is None
    assert members["usr/bin/ls"]["reason"] == "left unchanged: --no-rewrite"
    assert members["opt/trap"]["unpatchable"] == 1


def test_table_and_summary(full_tar, files):
    res = run(str(full_tar))
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    n = files["libc"].rw.patched_sites
    size = files["libc"].trailer.size

    def row(path: str) -> list[str]:
        (line,) = [ln for ln in lines if ln.split()[:1] == [path]]
        return line.split()

    assert row(LIBC_PATHS[1])[1:5] == ["patched", "redzone", str(n), str(size)]
    assert row("usr/lib/x86_64-linux-gnu/libz.so.1")[1:4] == [
        "checked-nothing-to-patch",
        "0",
        "marker",
    ]
    assert " ".join(row("usr/bin/ls")[1:]) == "unpatched 0 left unchanged: --no-rewrite"
    assert row("etc/os-release")[1:] == ["non-elf"]
    assert "1 unpatchable" in " ".join(row("opt/trap"))
    header = next(ln.split() for ln in lines if ln.split()[:1] == ["path"])
    assert header == ["path", "class", "ABI", "sites", "trampoline", "note"]
    sites = 2 * n + files["trapped"].rw.patched_sites
    assert lines[-1] == (
        f"{full_tar}: 8 file(s), 6 ELF (3 patched, 1 checked-nothing-to-patch, 2 unpatched, "
        f"0 invalid-trailer), 2 non-ELF; {sites} site(s) (patched {sites}, data-in-code 0); "
        "ABI redzone; manifest: 0 mismatch(es), 1 unpatchable site(s)"
    )


@pytest.mark.parametrize(
    ("which", "fail_on", "code"),
    [
        ("clean", "unpatched", 0),
        ("clean", "unpatchable", 0),
        ("clean", "mismatch", 0),
        ("clean", "any", 0),
        ("full", None, 0),
        ("full", "unpatched", 3),
        ("full", "unpatchable", 3),
        ("full", "mismatch", 0),
        ("full", "any", 3),
    ],
)
def test_fail_on_exit_codes(clean_tar, full_tar, which, fail_on, code):
    tar = clean_tar if which == "clean" else full_tar
    res = run(str(tar), *(["--fail-on", fail_on] if fail_on else []))
    assert res.exit_code == code, res.stderr
    if code == 3:
        assert res.stderr.startswith(f"litebox-pack: audit: --fail-on {fail_on}: ")
    else:
        assert res.stderr == ""


def test_unpatchable_is_unknown_without_a_manifest(tmp_path, files):
    tar = bundle(tmp_path / "n.tar", pick(files, "trapped"))
    assert run(str(tar), "--fail-on", "unpatchable").exit_code == 0
    assert run(str(tar), "--fail-on", "unpatched").exit_code == 0


def test_upstream_style_gnu_tar_with_links_and_gzip(tmp_path, files):
    """What upstream's packager (GNU headers, #704-#782) or a hand-made tar may contain."""
    buf = io.BytesIO()
    libc = files["libc-resume"].data
    long_name = "usr/" + "x" * 150 + "/libc.so.6"
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in (("lib/libc.so.6", libc), (long_name, libc), ("etc/hosts", b"h\n")):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o755
            tf.addfile(ti, io.BytesIO(data))
        d = tarfile.TarInfo("lib")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        s = tarfile.TarInfo("lib64/libc.so.6")
        s.type, s.linkname = tarfile.SYMTYPE, "../lib/libc.so.6"
        tf.addfile(s)
    for name, raw in (("u.tar", buf.getvalue()), ("u.tar.gz", gzip.compress(buf.getvalue()))):
        tar = tmp_path / name
        tar.write_bytes(raw)
        report = audit_tar(tar)
        members = by_path(report)
        assert members["lib/libc.so.6"].abi == "resume"
        assert members[long_name].sites == files["libc-resume"].rw.patched_sites
        assert members["etc/hosts"].cls is Cls.NON_ELF
        assert [(s.path, s.type) for s in report.skipped] == [
            ("lib", "directory"),
            ("lib64/libc.so.6", "symlink"),
        ]
        assert any(p.startswith("lib64/libc.so.6: symlink") for p in report.problems)
        assert f"{long_name}: preceded by an extended header record" in " ".join(
            report.problems
        )  # GNU writes an 'L' record for names over 100 bytes; tar_ro stops there
        assert report.manifest is None


def test_pax_records_are_a_problem(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("plain", "ünicode-needs-pax-in-uname", "after"):
            ti = tarfile.TarInfo(name)
            ti.size, ti.uname = 1, name
            tf.addfile(ti, io.BytesIO(b"x"))
    tar = tmp_path / "p.tar"
    tar.write_bytes(buf.getvalue())
    report = audit_tar(tar)
    assert [m.path for m in report.members] == ["plain", "ünicode-needs-pax-in-uname", "after"]
    (problem,) = report.problems
    assert problem.startswith("ünicode-needs-pax-in-uname: preceded by an extended header")
    assert run(str(tar), "--fail-on", "mismatch").exit_code == 3


def test_duplicate_members_are_a_problem(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name in ("a", "./a"):
            ti = tarfile.TarInfo(name)
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    tar = tmp_path / "d.tar"
    tar.write_bytes(buf.getvalue())
    report = audit_tar(tar)
    assert any("duplicate path" in p for p in report.problems)


@pytest.mark.parametrize("kind", ["missing", "directory", "elf", "text", "empty", "truncated"])
def test_bad_input_is_one_line_exit_1(tmp_path, full_tar, kind):
    target = tmp_path / "in.tar"
    if kind == "directory":
        target.mkdir()
    elif kind == "elf":
        target.write_bytes(LS.read_bytes())
    elif kind == "text":
        target.write_bytes(OS_RELEASE.read_bytes())
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        target.write_bytes(full_tar.read_bytes()[:200_000])
    res = run(str(target))
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.startswith(f"litebox-pack: error: {target}: ")
    assert res.stderr.count("\n") == 1


def test_installed_entry_point(full_tar):
    exe = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "litebox-pack"
    res = subprocess.run(
        [str(exe), "audit", str(full_tar), "--fail-on", "any", "--json"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 3
    assert json.loads(res.stdout)["failed"] == [
        "2 unpatched ELF file(s)",
        "1 unpatchable site(s) in 1 file(s)",
    ]
