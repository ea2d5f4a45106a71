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
    X pid nr address [files]               a --strict stop (files: a --strict-files one)
    M pid nr site path                     LiteBox view: a lookup failed (ENOENT) for a path the
                                           host has (the bundle lacks it)
    H pid nr site kind path                --host-fs: a lookup succeeded on the host (kind: f, d,
                                           l for file, directory, symlink)
    W pid nr site errno how path           a write LiteBox refuses (how r) or where its runner
                                           panics (how p); the call failed with errno
    F pid kind -                           the guest created a process (fork, vfork, clone)

M, H and W name their site by address; the object and file offset come from the S or E line of
the same process and address (written when the process dumps its records). Paths are absolute
guest paths, normalised, and come last on their line (they may hold spaces).

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


@dataclass(frozen=True)
class PathUse:
    """One path event of a process: what was looked up or written, by which syscall where."""

    pid: int
    nr: int
    site: int
    path: str
    extra: tuple[str, ...] = ()  # H: (kind,); W: (errno, how)


# Path records: the Records list each kind goes to, and how many words it has after the site.
PATH_RECORDS = {"M": ("missing", 0), "K": ("kernel", 0), "H": ("host_used", 1), "W": ("refused", 2)}
DELETED = " (deleted)"  # how /proc/self/maps shows an object the guest removed meanwhile
LITEBOX_HOW = {"r": "refuses", "p": "panics"}
KINDS = {"f": "file", "d": "dir", "l": "symlink"}


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
    missing: list[PathUse] = field(default_factory=list)
    kernel: list[PathUse] = field(default_factory=list)  # missing, but under /proc, /sys, /dev
    host_used: list[PathUse] = field(default_factory=list)
    refused: list[PathUse] = field(default_factory=list)
    created: Counter[str] = field(default_factory=Counter)  # fork, vfork, clone
    where: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)  # (pid, addr)

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
        pid, addr, off, obj = rest.split(" ", 3)
        obj = obj.removesuffix(DELETED)
        rec.sites.add((obj, int(off, 16)))
        rec.where.setdefault((int(pid), int(addr, 16)), (obj, int(off, 16)))
    elif kind == "L":
        rec.sites_lost += int(rest.split(" ")[1])
    elif kind == "E":
        pid, nr, count, addr, off, obj = rest.split(" ", 5)
        obj = obj.removesuffix(DELETED)
        key = (obj, int(off, 16), int(nr))
        esc = rec.escapes.setdefault(key, Escape(int(nr), obj, int(off, 16)))
        esc.count += int(count)
        esc.addresses.add(int(addr, 16))
        esc.pids.add(int(pid))
        rec.where.setdefault((int(pid), int(addr, 16)), (obj, int(off, 16)))
    elif kind == "X":
        pid, nr, addr, *what = rest.split(" ")
        rec.strict_stop = {
            "pid": int(pid),
            "syscall": name(int(nr), rec.arch),
            "address": addr,
            "reason": "missing-file" if what == ["files"] else "escape",
        }
    elif kind in PATH_RECORDS:
        attr, extra = PATH_RECORDS[kind]
        *head, path = rest.split(" ", 3 + extra)
        use = PathUse(int(head[0]), int(head[1]), int(head[2], 16), path, tuple(head[3:]))
        getattr(rec, attr).append(use)
    elif kind == "F":
        created = rest.split(" ")[1]
        if created not in ("fork", "vfork", "clone"):
            raise ValueError(created)
        rec.created[created] += 1
    else:
        raise ValueError(kind)


def path_items(rec: Records, uses: list[PathUse]) -> list[dict[str, Any]]:
    """One item per (path, syscall), sorted by path: the first site seen, and how often."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for u in uses:
        syscall = name(u.nr, rec.arch)
        item = items.get((u.path, syscall))
        if item is None:
            obj, off = rec.where.get((u.pid, u.site), ("?", 0))
            item = {"path": u.path, "syscall": syscall, "object": obj, "offset": f"{off:#x}"}
            if len(u.extra) == 1:
                item["kind"] = KINDS.get(u.extra[0], "file")
            elif len(u.extra) == 2:
                item["errno"] = u.extra[0]
                item["litebox"] = LITEBOX_HOW.get(u.extra[1], "refuses")
            item["count"] = 0
            items[(u.path, syscall)] = item
        item["count"] += 1
    return [items[k] for k in sorted(items)]


def build_report(
    rec: Records,
    *,
    bundle: Path,
    program: str,
    args: list[str],
    abi: str,
    status: int,
    view: str,
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
        "view": view,
        "processes": {
            "created": sum(rec.created.values()),
            "fork": rec.created["fork"],
            "vfork": rec.created["vfork"],
            "clone": rec.created["clone"],
        },
        "files": {
            "missing": path_items(rec, rec.missing),
            "kernel": path_items(rec, rec.kernel),
            "host_used": path_items(rec, rec.host_used),
            "refused_writes": path_items(rec, rec.refused),
        },
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
