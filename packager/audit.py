"""Audit a LiteBox bundle: what the bytes of every ELF in a tar say about its rewriting.

Works on any tar, also one written by upstream's packager (GNU or ustar headers, no manifest):
members are streamed with ``tarfile`` one at a time. Each regular member is classified from its
bytes alone; when the tar carries ``litebox/manifest.json`` the manifest is then checked against
those bytes and every disagreement is reported (the bytes are what LiteBox will run).

Classes: ``patched`` (valid trailer with stubs), ``checked-nothing-to-patch`` (header-only
marker), ``unpatched`` (ELF without a trailer), ``invalid-trailer`` (LITEBOX trailer LiteBox's
loader rejects), ``non-elf``.

JSON (``AuditReport.to_json``; schema packager/schemas/audit.schema.json; ``format``, also
named ``audit_format``, changes only with incompatible changes)::

    {"format": 1, "audit_format": 1, "tool": "litebox-pack", "version": str, "bundle": str,
     "abi": "redzone"|"resume"|"i386"|"other"|"mixed"|null,     # over all patched members
     "manifest": null | {"path": str, "valid": bool, "problem": str|null,
                         "tool": str|null, "version": str|null, "abi": str|null},
     "summary": {"members": int, "elf": int, "patched": int, "checked-nothing-to-patch": int,
                 "unpatched": int, "invalid-trailer": int, "non-elf": int, "sites": int,
                 "unpatchable_sites": int, "kept_sites": int, "data_in_code_sites": int,
                 "mismatches": int, "problems": int},
     "members": [{"path": str, "size": int, "mode": int, "sha256": str, "class": str,
                  "elf": null | {"bits": 32|64, "machine": str},
                  "abi": str|null, "sites": int,
                  "stubs": {"redzone": int, "resume": int, "i386": int, "other": int},
                  "trampoline": null | {"file_offset": int, "vaddr": int, "size": int},
                  "reason": str|null,        # why unpatched / what is wrong with the trailer
                  "unpatchable": int|null,   # from the manifest
                  "kept": int|null,          # of those, left as syscalls (--unpatchable keep)
                  "data_in_code": [{"address": int, "why": str}],  # from the manifest
                  "manifest": null | {"outcome": str|null, "reason": str|null,
                                      "sites": int|null, "trampoline_size": int|null},
                  "mismatches": [str], "notes": [str]}],
     "skipped": [{"path": str, "type": str, "target": str|null}],   # non-regular members
     "problems": [str],                                  # bundle-level: duplicates, mixed ABIs…
     "fail_on": str|null, "failed": [str]}               # why --fail-on matched (empty: passed)
"""

from __future__ import annotations

import hashlib
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from iced_x86 import Code, Decoder, Instruction, Register

from rewriter import ElfError, ElfFile, TrailerState, check_trailer
from rewriter.trailer import Trailer

from . import __version__
from .errors import UserError
from .fsutil import open_input
from .jsonload import loads
from .sbom import SBOM_PATH, packages_of
from .schemas import FORMAT
from .tarread import open_tar, tar_errors

MANIFEST_PATH = "litebox/manifest.json"
AUDIT_FORMAT = FORMAT["audit"]
_CHUNK = 1 << 20

# Stub signatures of spec/stub-abi.md, spelled out here rather than imported from the rewriter so
# that the audit checks the rewriter instead of agreeing with it by construction.
_LEA_RSP_REDZONE = bytes.fromhex("488d642480")  # lea rsp, [rsp-0x80]
_LEA_R11 = bytes.fromhex("4c8d1d")  # lea r11, [rip+d32]
_LEA_RCX = bytes.fromhex("488d0d")  # lea rcx, [rip+d32]
_LEA_RCX_6 = bytes.fromhex("488d0d06000000")  # lea rcx, [rip+6]: RCX = just after jmp [slot]


class Cls(StrEnum):
    PATCHED = "patched"
    MARKER = "checked-nothing-to-patch"
    UNPATCHED = "unpatched"
    INVALID = "invalid-trailer"
    NON_ELF = "non-elf"


class FailOn(StrEnum):
    UNPATCHED = "unpatched"
    UNPATCHABLE = "unpatchable"
    MISMATCH = "mismatch"
    DATA_IN_CODE = "data-in-code"
    ANY = "any"  # every class above but data-in-code, which is handled, not a defect


STUB_KINDS = ("redzone", "resume", "i386", "other")


def bundle_abi(abis: Iterable[str | None]) -> str | None:
    """One ABI for a bundle: the x86-64 stub ABI (i386 objects share one stub shape under either
    option, so they never make a bundle "mixed"), "i386" for a 32-bit-only bundle, or "mixed"."""
    present = {a for a in abis if a}
    x86 = present - {"i386"}
    if len(x86) > 1:
        return "mixed"
    return x86.pop() if x86 else ("i386" if present else None)


@dataclass(frozen=True)
class StubScan:
    """What decoding a trampoline blob found: one entry per jump/call through the slot."""

    kinds: dict[str, int]
    undecodable: int  # instructions iced could not decode (corruption, or data in the blob)

    @property
    def sites(self) -> int:
        return sum(self.kinds.values())

    @property
    def abi(self) -> str | None:
        present = [k for k in STUB_KINDS if self.kinds.get(k)]
        if not present:
            return None
        return present[0] if len(present) == 1 else "mixed"


def scan_stubs(data: bytes, trailer: Trailer) -> StubScan:
    """Decode the stubs after the callback slot and recognise each one's ABI.

    A stub is an instruction that enters the runtime through the slot: ``jmp qword ptr [slot]``
    (x86-64) or ``pop eax; call dword ptr [eax+d]`` with eax+d = slot (i386). The instructions
    just before (and the jump back after) tell the ABI.
    """
    bits = trailer.bits
    slot = trailer.vaddr
    slot_size = bits // 8
    base = slot + slot_size
    blob = data[trailer.file_offset + slot_size : trailer.file_offset + trailer.size]
    kinds: Counter[str] = Counter()
    undecodable = 0
    # Streamed: only the last three instructions are kept, so memory does not grow with the
    # trampoline (a trailer may claim 56 MB of zeros: 28 million instructions). The loop does
    # as little as it can per instruction; bytes are sliced only at stub entries.
    p3: Instruction | None = None
    p2: Instruction | None = None
    p1: Instruction | None = None
    pending: bool | None = None  # the last entry looked like resume; waiting for its jmp back
    back = False
    invalid, jmp_back = Code.INVALID, Code.JMP_REL32_64

    def raw(i: Instruction | None) -> bytes:
        return b"" if i is None else blob[i.ip - base : i.ip - base + i.len]

    def settle() -> None:
        if pending is not None:
            kinds["resume" if pending and back else "other"] += 1

    for insn in Decoder(bits, blob, ip=base):
        code = insn.code
        if code in _ENTRY_CODES and _enters_slot(insn, p1, slot):
            settle()
            pending, back = None, False
            if bits == 32:
                kinds["i386"] += 1
            else:
                before = raw(p1)
                if (
                    before[:3] == _LEA_RCX
                    and len(before) == 7
                    and raw(p2)[:3] == _LEA_R11
                    and raw(p3) == _LEA_RSP_REDZONE
                ):
                    kinds["redzone"] += 1
                else:
                    # resume: RCX = the byte after the slot jump, and a jmp rel32 back before
                    # the next stub
                    pending = before == _LEA_RCX_6
        elif code == invalid:
            undecodable += 1
        elif code == jmp_back and pending is not None:
            back = True
        p3, p2, p1 = p2, p1, insn
    settle()
    return StubScan(dict(kinds), undecodable)


_ENTRY_CODES = frozenset((Code.JMP_RM64, Code.CALL_RM64, Code.CALL_RM32))


def _enters_slot(insn: Instruction, prev: Instruction | None, slot: int) -> bool:
    if insn.code in (Code.JMP_RM64, Code.CALL_RM64):
        return insn.is_ip_rel_memory_operand and insn.ip_rel_memory_address == slot
    if insn.code == Code.CALL_RM32 and insn.memory_base == Register.EAX:
        return (
            prev is not None
            and prev.code == Code.POP_R32
            and prev.op0_register == Register.EAX
            and insn.memory_index == Register.NONE
            and (prev.ip + insn.memory_displacement) & 0xFFFFFFFF == slot
        )
    return False


@dataclass
class MemberReport:
    path: str
    size: int
    mode: int
    sha256: str
    cls: Cls
    bits: int | None = None
    machine: str | None = None
    scan: StubScan | None = None
    trailer: Trailer | None = None
    reason: str | None = None
    unpatchable: int | None = None
    kept: int | None = None  # of ``unpatchable``: left as syscalls (--unpatchable keep)
    data_in_code: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sites(self) -> int:
        return self.scan.sites if self.scan else 0

    @property
    def abi(self) -> str | None:
        return self.scan.abi if self.scan else None

    def to_json(self) -> dict[str, Any]:
        t = self.trailer
        m = self.manifest
        return {
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "sha256": self.sha256,
            "class": self.cls.value,
            "elf": None if self.bits is None else {"bits": self.bits, "machine": self.machine},
            "abi": self.abi,
            "sites": self.sites,
            "stubs": {k: (self.scan.kinds.get(k, 0) if self.scan else 0) for k in STUB_KINDS},
            "trampoline": (
                {"file_offset": t.file_offset, "vaddr": t.vaddr, "size": t.size} if t else None
            ),
            "reason": self.reason,
            "unpatchable": self.unpatchable,
            "kept": self.kept,
            "data_in_code": list(self.data_in_code),
            "manifest": (
                {k: m.get(k) for k in ("outcome", "reason", "sites", "trampoline_size")}
                if m is not None
                else None
            ),
            "mismatches": list(self.mismatches),
            "notes": list(self.notes),
        }


def classify(path: str, data: bytes, mode: int = 0o644) -> MemberReport:
    """Classify one file from its bytes alone (no manifest)."""
    rep = MemberReport(path, len(data), mode, hashlib.sha256(data).hexdigest(), Cls.NON_ELF)
    if data[:4] != b"\x7fELF":
        return rep
    _classify_elf(rep, data)
    return rep


def _classify_elf(rep: MemberReport, data: bytes) -> None:
    # The trailer form follows EI_CLASS alone, as LiteBox's loader does; a header that does not
    # parse further is noted but does not hide the trailer.
    rep.bits = 32 if len(data) > 4 and data[4] == 1 else 64
    try:
        elf = ElfFile(data)
        rep.machine = elf.machine_name
    except ElfError as e:
        rep.notes.append(f"ELF headers do not parse: {e}")
    check = check_trailer(data, rep.bits)
    rep.trailer = check.trailer
    slot = rep.bits // 8
    if check.state is TrailerState.ABSENT:
        rep.cls, rep.reason = Cls.UNPATCHED, "no trailer"
    elif check.state is TrailerState.BAD_VERSION:
        rep.cls, rep.reason = Cls.INVALID, f"bad {check.problem}"
    elif check.state is TrailerState.INVALID:
        rep.cls, rep.reason = Cls.INVALID, check.problem
    elif check.trailer is None or check.trailer.size == 0:
        rep.cls = Cls.MARKER
    elif check.trailer.size < slot:
        rep.cls = Cls.INVALID
        rep.reason = (
            f"trampoline of {check.trailer.size} bytes is smaller than its {slot}-byte slot"
        )
    elif check.trailer.size == slot:
        rep.cls = Cls.MARKER
        rep.notes.append("slot-only trampoline (PR #739-era marker)")
    else:
        rep.cls = Cls.PATCHED
        rep.scan = scan_stubs(data, check.trailer)
        if rep.scan.sites == 0:
            rep.notes.append("trampoline holds no recognisable stub")
        if rep.scan.undecodable:
            rep.notes.append(f"{rep.scan.undecodable} undecodable instruction(s) in the trampoline")
        if rep.scan.abi == "mixed":
            counts = ", ".join(f"{n} {k}" for k, n in rep.scan.kinds.items())
            rep.notes.append(f"stubs of several ABIs in one file: {counts}")


@dataclass
class Skipped:
    path: str
    type: str
    target: str | None = None


@dataclass
class ManifestInfo:
    valid: bool
    problem: str | None = None
    tool: str | None = None
    version: str | None = None
    abi: str | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # tar path -> entry


@dataclass
class AuditReport:
    bundle: str
    members: list[MemberReport] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    manifest: ManifestInfo | None = None
    packages: list[dict[str, Any]] | None = None  # from the SBOM (sbom.packages_of), if any

    def count(self, cls: Cls) -> int:
        return sum(1 for m in self.members if m.cls is cls)

    @property
    def sites(self) -> int:
        return sum(m.sites for m in self.members)

    @property
    def abi(self) -> str | None:
        return bundle_abi(m.abi for m in self.members)

    @property
    def unpatchable_sites(self) -> int:
        return sum(m.unpatchable or 0 for m in self.members)

    @property
    def kept_sites(self) -> int:
        return sum(m.kept or 0 for m in self.members)

    @property
    def data_in_code_sites(self) -> int:
        return sum(len(m.data_in_code) for m in self.members)

    @property
    def mismatches(self) -> int:
        return sum(len(m.mismatches) for m in self.members)

    def failures(self, fail_on: FailOn | None) -> list[str]:
        """Why ``--fail-on`` matches (empty when it does not)."""
        if fail_on is None:
            return []
        out: list[str] = []
        if fail_on in (FailOn.UNPATCHED, FailOn.ANY):
            n = self.count(Cls.UNPATCHED)
            bad = self.count(Cls.INVALID)
            if n:
                out.append(f"{n} unpatched ELF file(s)")
            if bad:
                out.append(f"{bad} ELF file(s) with an invalid trailer")
        if fail_on in (FailOn.UNPATCHABLE, FailOn.ANY) and self.unpatchable_sites:
            files = sum(1 for m in self.members if m.unpatchable)
            out.append(f"{self.unpatchable_sites} unpatchable site(s) in {files} file(s)")
        if fail_on is FailOn.DATA_IN_CODE and self.data_in_code_sites:
            files = sum(1 for m in self.members if m.data_in_code)
            out.append(f"{self.data_in_code_sites} data-in-code site(s) in {files} file(s)")
        if fail_on in (FailOn.MISMATCH, FailOn.ANY):
            if self.mismatches:
                out.append(f"{self.mismatches} manifest/bytes mismatch(es)")
            if self.problems:
                out.append(f"{len(self.problems)} bundle problem(s)")
        return out

    def summary_line(self) -> str:
        elf = [c for c in Cls if c is not Cls.NON_ELF]
        n_elf = sum(self.count(c) for c in elf)
        parts = ", ".join(f"{self.count(c)} {c.value}" for c in elf)
        text = (
            f"{self.bundle}: {len(self.members)} file(s), {n_elf} ELF ({parts}), "
            f"{self.count(Cls.NON_ELF)} non-ELF; {self.sites} site(s)"
        )
        if self.manifest is not None and self.manifest.valid:
            text += f" (patched {self.sites}, data-in-code {self.data_in_code_sites})"
        if self.abi:
            text += f"; ABI {self.abi}"
        if self.manifest is None:
            text += "; no manifest"
        elif self.manifest.valid:
            text += f"; manifest: {self.mismatches} mismatch(es)"
            if self.unpatchable_sites:
                text += f", {self.unpatchable_sites} unpatchable site(s)"
                if self.kept_sites:
                    text += f" ({self.kept_sites} kept as syscalls)"
        else:
            text += "; manifest unusable"
        if self.problems:
            text += f"; {len(self.problems)} problem(s)"
        return text

    def to_json(self, fail_on: FailOn | None = None) -> dict[str, Any]:
        mf = self.manifest
        summary: dict[str, int] = {"members": len(self.members)}
        summary["elf"] = sum(self.count(c) for c in Cls if c is not Cls.NON_ELF)
        summary.update({c.value: self.count(c) for c in Cls})
        summary.update(
            sites=self.sites,
            unpatchable_sites=self.unpatchable_sites,
            kept_sites=self.kept_sites,
            data_in_code_sites=self.data_in_code_sites,
            mismatches=self.mismatches,
            problems=len(self.problems),
        )
        return {
            "format": AUDIT_FORMAT,
            "audit_format": AUDIT_FORMAT,  # the same number, under its first name
            "tool": "litebox-pack",
            "version": __version__,
            "bundle": self.bundle,
            "abi": self.abi,
            "manifest": (
                {
                    "path": MANIFEST_PATH,
                    "valid": mf.valid,
                    "problem": mf.problem,
                    "tool": mf.tool,
                    "version": mf.version,
                    "abi": mf.abi,
                }
                if mf
                else None
            ),
            "summary": summary,
            "members": [m.to_json() for m in self.members],
            "skipped": [{"path": s.path, "type": s.type, "target": s.target} for s in self.skipped],
            "problems": list(self.problems),
            "packages": self.packages,
            "fail_on": fail_on.value if fail_on else None,
            "failed": self.failures(fail_on),
        }


# --- reading the tar -----------------------------------------------------------------------


def member_key(name: str) -> str:
    """The path tar_ro sees for a member name: empty and "." components dropped."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _kind(ti: tarfile.TarInfo) -> str:
    if ti.isdir():
        return "directory"
    if ti.issym():
        return "symlink"
    if ti.islnk():
        return "hardlink"
    if ti.ischr() or ti.isblk():
        return "device"
    if ti.isfifo():
        return "fifo"
    return "other"


_TAR_RO_FILE = (tarfile.REGTYPE, tarfile.AREGTYPE)  # the only typeflags tar_ro indexes
_TAR_RO_SKIPS = (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)  # skipped without harm
MAX_ID = 65535  # tar_ro parses uid/gid into u16


def _check_tar_ro(ti: tarfile.TarInfo, problems: list[str]) -> None:
    """Note what LiteBox's tar_ro would read differently from tarfile (reference §4.2)."""
    if ti.offset_data - ti.offset > 512:
        # PAX 'x' and GNU 'L'/'K' records (header + payload) precede the member's own header;
        # tar_ro stops reading at them.
        problems.append(
            f"{ti.name}: preceded by an extended header record (PAX or GNU long name); "
            "tar_ro stops reading there and loses this and every later member"
        )
    try:
        ti.name.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"{ti.name!r}: name is not UTF-8; tar_ro skips it")
    if "\0" in ti.name:
        problems.append(f"{ti.name!r}: name contains a NUL byte; tar_ro reads it cut short")
    if not member_key(ti.name):
        problems.append(f"{ti.name!r}: empty name; tar_ro panics")
    if ti.name.startswith("/"):
        problems.append(
            f"{ti.name}: absolute name; tar_ro reads it as {member_key(ti.name)!r} and "
            "`litebox-pack run` refuses it"
        )
    if ".." in ti.name.split("/"):
        problems.append(f"{ti.name}: has a '..' component; tar_ro keeps it as a name")
    if ti.type not in _TAR_RO_FILE and ti.type not in _TAR_RO_SKIPS:
        what = _kind(ti) if _kind(ti) != "other" else f"typeflag {ti.type!r}"
        if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            problems.append(f"{ti.name}: {what}; tar_ro skips it, so the path will not exist")
        else:
            problems.append(
                f"{ti.name}: {what}; tar_ro stops reading there and loses every later member"
            )
    if ti.mode & ~0o7777:
        problems.append(f"{ti.name}: mode {ti.mode:#o} has bits outside 0o7777; tar_ro panics")
    if ti.uid > MAX_ID or ti.gid > MAX_ID:
        problems.append(f"{ti.name}: uid/gid {ti.uid}/{ti.gid} over {MAX_ID}; tar_ro panics")


def _read_member(
    path: str, mode: int, f: IO[bytes], keep: bool
) -> tuple[MemberReport, bytes | None]:
    """Classify one member. Non-ELF data is hashed in chunks and returned only when ``keep``."""
    head = f.read(4)
    if head == b"\x7fELF":
        data = head + f.read()
        return classify(path, data, mode), None
    h = hashlib.sha256(head)
    size = len(head)
    chunks = [head]
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
        if keep:
            chunks.append(chunk)
    return MemberReport(path, size, mode, h.hexdigest(), Cls.NON_ELF), (
        b"".join(chunks) if keep else None
    )


def audit_tar(path: str | Path) -> AuditReport:
    """Read ``path`` as a tar (any format, optionally compressed) and audit every member."""
    p = Path(path)
    report = AuditReport(str(p))
    manifest_bytes: bytes | None = None
    sbom_bytes: bytes | None = None
    seen: dict[str, str] = {}
    with tar_errors(str(p)), open_input(p) as raw, open_tar(raw, "r|*") as tf:
        for ti in tf:
            key = member_key(ti.name)
            _check_tar_ro(ti, report.problems)
            if not ti.isreg():
                report.skipped.append(Skipped(ti.name, _kind(ti), ti.linkname or None))
                continue
            if key in seen:
                report.problems.append(
                    f"{ti.name}: duplicate path (also {seen[key]!r}); tar_ro refuses the tar"
                )
            seen.setdefault(key, ti.name)
            f = tf.extractfile(ti)
            assert f is not None  # regular members always have data
            want = key == MANIFEST_PATH and manifest_bytes is None
            want_sbom = key == SBOM_PATH and sbom_bytes is None
            rep, kept = _read_member(ti.name, ti.mode & 0o7777, f, want or want_sbom)
            if want:
                manifest_bytes = kept
                rep.notes.append("litebox-pack manifest")
            elif want_sbom:
                sbom_bytes = kept
                rep.notes.append("SBOM (CycloneDX)")
            report.members.append(rep)
    for s in report.skipped:
        if s.type in ("symlink", "hardlink"):
            report.problems.append(
                f"{s.path}: {s.type} to {s.target!r}; tar_ro has no links, so this path will "
                "not exist in LiteBox"
            )
    if manifest_bytes is not None:
        report.manifest = parse_manifest(manifest_bytes)
        if report.manifest.valid:
            cross_check(report, report.manifest)
        else:
            report.problems.append(f"{MANIFEST_PATH}: {report.manifest.problem}")
    if sbom_bytes is not None:
        try:
            report.packages = packages_of(sbom_bytes)
        except ValueError as e:
            report.problems.append(f"{SBOM_PATH}: unreadable: {e}")
    abis = Counter(m.abi for m in report.members if m.abi and m.abi != "i386")
    if len(abis) > 1:
        counts = ", ".join(f"{k} ({n} file(s))" for k, n in sorted(abis.items()))
        report.problems.append(f"stub ABIs are mixed in one bundle: {counts}")
    return report


# --- manifest --------------------------------------------------------------------------------


def parse_manifest(data: bytes) -> ManifestInfo:
    """Read the manifest tolerantly: a broken manifest is reported, never fatal."""
    try:
        doc = loads(data, "manifest")
    except UserError as e:
        return ManifestInfo(False, str(e).removeprefix("manifest: "))
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        return ManifestInfo(False, "no 'files' list")
    opts = doc.get("options") if isinstance(doc.get("options"), dict) else {}
    info = ManifestInfo(
        True,
        tool=_str(doc.get("tool")),
        version=_str(doc.get("version")),
        abi=_str(opts.get("abi")) if opts else None,
    )
    for n, entry in enumerate(doc["files"]):
        paths = entry.get("paths") if isinstance(entry, dict) else None
        if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
            return ManifestInfo(False, f"files[{n}] has no 'paths' list of strings")
        for tp in paths:
            info.files.setdefault(member_key(tp), entry)
    return info


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# Which byte classes each manifest outcome allows.
_EXPECTED = {
    "patched": {Cls.PATCHED},
    "checked-nothing-to-patch": {Cls.MARKER},
    "already-hooked": {Cls.PATCHED, Cls.MARKER},
    "unchanged": {Cls.UNPATCHED, Cls.NON_ELF, Cls.INVALID, Cls.PATCHED, Cls.MARKER},
    "bytecode-unchecked": {Cls.NON_ELF},  # a .pyc with a PEP 552 header (packager/pyc.py)
}


def _strategy_count(entry: dict[str, Any], name: str) -> int:
    strategies = entry.get("strategies")
    return (_int(strategies.get(name)) or 0) if isinstance(strategies, dict) else 0


def _unpatchable_count(entry: dict[str, Any]) -> int:
    listed = entry.get("unpatchable")
    if isinstance(listed, list):
        return len(listed)
    strategies = entry.get("strategies")
    if isinstance(strategies, dict):
        return sum(_int(strategies.get(k)) or 0 for k in ("trapped", "kept"))
    return 0


def cross_check(report: AuditReport, info: ManifestInfo) -> None:
    """Compare each member with its manifest entry; record every disagreement on the member."""
    in_tar: set[str] = set()
    for m in report.members:
        key = member_key(m.path)
        in_tar.add(key)
        if key in (MANIFEST_PATH, SBOM_PATH):  # they describe the files, they are not listed
            continue
        entry = info.files.get(key)
        if entry is None:
            m.mismatches.append("not listed in the manifest")
            continue
        m.manifest = entry
        outcome = _str(entry.get("outcome"))
        reason = _str(entry.get("reason"))
        m.unpatchable = _unpatchable_count(entry)
        m.kept = _strategy_count(entry, "kept")
        listed = entry.get("data_in_code")
        if isinstance(listed, list):
            m.data_in_code = [
                {"address": d["address"], "why": _str(d.get("why")) or ""}
                for d in listed
                if isinstance(d, dict) and _int(d.get("address")) is not None
            ]
        sha_out, sha_in = _str(entry.get("sha256_out")), _str(entry.get("sha256_in"))
        if sha_out != m.sha256:
            m.mismatches.append(f"sha256 {m.sha256[:12]}… differs from manifest sha256_out")
        if outcome in ("unchanged", "already-hooked") and sha_in and sha_out and sha_in != sha_out:
            m.mismatches.append(f"manifest says {outcome} but sha256_in != sha256_out")
        mode = _int(entry.get("mode"))
        if mode is not None and mode & 0o777 != m.mode & 0o777:
            m.mismatches.append(f"mode {m.mode & 0o777:#o} != manifest {mode & 0o777:#o}")
        if outcome not in _EXPECTED:
            m.mismatches.append(f"manifest outcome {outcome!r} is unknown")
        elif _all_sites_left(m, entry):
            # Every site was kept or trapped: the rewriter writes a trampoline holding only the
            # callback slot, which the bytes alone cannot tell from an old-style marker.
            m.notes = [n for n in m.notes if not n.startswith("slot-only trampoline")]
            m.notes.append("no site patched: every syscall site was kept or trapped")
        elif m.cls not in _EXPECTED[outcome]:
            m.mismatches.append(f"manifest says {outcome}, bytes say {m.cls.value}")
        elif outcome == "unchanged" and m.cls in (Cls.PATCHED, Cls.MARKER):
            m.notes.append("left unchanged, but the input already carried a trailer")
        if m.cls is Cls.UNPATCHED and outcome == "unchanged":
            m.reason = f"left unchanged: {reason}" if reason else "left unchanged"
        if m.cls is Cls.PATCHED and outcome == "patched":
            _compare_patched(m, entry, info.abi)
    for key in info.files:
        if key not in in_tar:
            report.problems.append(f"{key}: listed in the manifest but missing from the tar")


def _all_sites_left(m: MemberReport, entry: dict[str, Any]) -> bool:
    """A ``patched`` entry with no stub, only unpatchable sites, and a slot-only trampoline."""
    t = m.trailer
    return (
        m.cls is Cls.MARKER
        and entry.get("outcome") == "patched"
        and _int(entry.get("sites")) == 0
        and bool(m.unpatchable)
        and t is not None
        and t.size == t.bits // 8
        and _int(entry.get("trampoline_size")) == t.size
    )


def _compare_patched(m: MemberReport, entry: dict[str, Any], abi: str | None) -> None:
    sites = _int(entry.get("sites"))
    if sites is not None and sites != m.sites:
        m.mismatches.append(f"manifest says {sites} site(s), trampoline holds {m.sites} stub(s)")
    size = _int(entry.get("trampoline_size"))
    if size is not None and m.trailer is not None and size != m.trailer.size:
        m.mismatches.append(f"manifest trampoline_size {size} != trailer size {m.trailer.size}")
    # i386 objects have one stub shape whatever the ABI option says (stub-abi.md).
    if abi and m.abi and m.abi not in (abi, "i386"):
        m.mismatches.append(f"manifest ABI {abi}, stubs are {m.abi}")
