"""The runtime's per-process records, and the JSON report made from them.

Each runtime process appends whole text lines to one record file at exit, exit_group and
execve (see callback.c). Lines start with a kind and the pid:

    P pid ppid why exe                     a dump happened (why: exit_group, exit, execve, ...)
    N pid nr count                         syscalls through trampolines, by number
    S pid address file_offset object       a distinct site (restart address of the stub)
    L pid count                            sites the in-process table had no room for
    E pid nr count address file_offset object   an escaped syscall (address of its 0F 05 or
                                                CD 80, or of an unrewritten i386
                                                `call *%gs:0x10` that entered the runtime
                                                through AT_SYSINFO)
    X pid nr address                       a --strict stop

Objects are shown at their in-bundle paths ("?" when no mapping holds the address). Numbers are
the guest ABI's (x86-64 or i386): ``arch`` picks the table that names them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..schemas import FORMAT
from .syscall_names import name


@dataclass
class Escape:
    nr: int
    obj: str
    file_offset: int
    count: int = 0
    addresses: set[int] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)

    def to_json(self, arch: str = "x86_64") -> dict[str, Any]:
        return {
            "syscall": name(self.nr, arch),
            "nr": self.nr,
            "object": self.obj,
            "file_offset": self.file_offset,
            "address": f"{min(self.addresses):#x}",
            "count": self.count,
            "pids": sorted(self.pids),
        }


@dataclass
class Records:
    pids: set[int] = field(default_factory=set)
    execs: list[str] = field(default_factory=list)
    counts: Counter[int] = field(default_factory=Counter)
    sites: set[tuple[str, int]] = field(default_factory=set)
    sites_lost: int = 0
    escapes: dict[tuple[str, int, int], Escape] = field(default_factory=dict)
    strict_stop: dict[str, Any] | None = None
    bad_lines: int = 0
    arch: str = "x86_64"

    @property
    def escape_count(self) -> int:
        return sum(e.count for e in self.escapes.values())


def parse_records(text: str, arch: str = "x86_64") -> Records:
    rec = Records(arch=arch)
    for line in text.splitlines():
        try:
            _parse_line(rec, line)
        except (ValueError, IndexError):
            rec.bad_lines += 1
    return rec


def _parse_line(rec: Records, line: str) -> None:
    kind, rest = line.split(" ", 1)
    if kind == "P":
        pid, _ppid, why, exe = rest.split(" ", 3)
        rec.pids.add(int(pid))
        if why in ("exit_group", "exit", "execve", "strict", "signal") and exe not in rec.execs:
            rec.execs.append(exe)
    elif kind == "N":
        _pid, nr, count = rest.split(" ")
        rec.counts[int(nr)] += int(count)
    elif kind == "S":
        _pid, _addr, off, obj = rest.split(" ", 3)
        rec.sites.add((obj, int(off, 16)))
    elif kind == "L":
        rec.sites_lost += int(rest.split(" ")[1])
    elif kind == "E":
        pid, nr, count, addr, off, obj = rest.split(" ", 5)
        key = (obj, int(off, 16), int(nr))
        esc = rec.escapes.setdefault(key, Escape(int(nr), obj, int(off, 16)))
        esc.count += int(count)
        esc.addresses.add(int(addr, 16))
        esc.pids.add(int(pid))
    elif kind == "X":
        pid, nr, addr = rest.split(" ")
        rec.strict_stop = {"pid": int(pid), "syscall": name(int(nr), rec.arch), "address": addr}
    else:
        raise ValueError(kind)


def build_report(
    rec: Records,
    *,
    bundle: Path,
    program: str,
    args: list[str],
    abi: str,
    status: int,
) -> dict[str, Any]:
    by_object: Counter[str] = Counter(obj for obj, _ in rec.sites)
    escapes = sorted(rec.escapes.values(), key=lambda e: (e.obj, e.file_offset))
    return {
        "format": FORMAT["run-report"],
        "bundle": str(bundle),
        "program": program,
        "args": args,
        "abi": abi,
        "arch": rec.arch,
        "exit_status": status if status >= 0 else None,
        "signal": -status if status < 0 else None,
        "processes": len(rec.pids),
        "images": rec.execs,
        "syscalls": {
            "total": sum(rec.counts.values()),
            "by_name": {name(nr, rec.arch): n for nr, n in sorted(rec.counts.items())},
        },
        "sites": {
            "distinct": len(rec.sites),
            "by_object": dict(sorted(by_object.items())),
            "not_tracked": rec.sites_lost,
        },
        "escapes": {
            "total": rec.escape_count,
            "distinct": len(escapes),
            "list": [e.to_json(rec.arch) for e in escapes],
        },
        "strict_stop": rec.strict_stop,
    }
