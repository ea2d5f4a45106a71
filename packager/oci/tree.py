"""A rootfs tree → every regular file, with every path at which the guest can reach it.

LiteBox's tar file system holds regular files only, so each symlink becomes another path of the
file it leads to, and a symlink to a directory repeats that directory's files under its own
name (``lib64 -> usr/lib64`` gives ``lib64/ld-linux-x86-64.so.2``), as upstream does (§3.4).
Links are resolved the way the guest would see them, inside the rootfs: an absolute target
restarts at the rootfs, ``..`` stops there, chains are followed (40 links at most, like the
kernel); dangling links and loops are reported. Hard links share one entry, so each real file
is read and rewritten once, however many names it has.

The walk is depth-first in name order, so the same tree always gives the same plan, whichever
directory it was unpacked in.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..limits import MAX_DIRS, MAX_PATHS
from ..resolve import confined_realpath
from ..tarball import TarPathError, check_fits
from .findings import Findings

Reason = dict[str, Any]
FILE_REASON: Reason = {"kind": "rootfs"}


@dataclass
class TreeFile:
    source: str  # rootfs-relative path of the real file: no symlink on the way
    mode: int
    paths: list[str] = field(default_factory=list)  # tar paths (no leading "/")
    reasons: list[Reason] = field(default_factory=list)
    # for de-duplication in constant time: symlinks can give one file 10^5 paths and reasons
    _seen: set[object] = field(default_factory=set, repr=False)

    def add(self, path: str, reason: Reason) -> None:
        if path not in self._seen:
            self._seen.add(path)
            self.paths.append(path)
        key = tuple(sorted(reason.items()))
        if key not in self._seen:
            self._seen.add(key)
            self.reasons.append(reason)


@dataclass
class Tree:
    root: str
    reserved: frozenset[str] = frozenset()  # tar paths litebox-pack writes itself
    files: list[TreeFile] = field(default_factory=list)
    by_path: dict[str, TreeFile] = field(default_factory=dict)
    visited: int = 0  # directories listed, each time one is reached (symlinks repeat them)
    _by_inode: dict[tuple[int, int], TreeFile] = field(default_factory=dict, repr=False)

    def file_at(self, path: str) -> TreeFile | None:
        return self.by_path.get(path.strip("/"))


@dataclass(frozen=True)
class _Item:
    logical: str  # the path the guest uses ("" for the root)
    real: str  # where it is in the rootfs, symlinks resolved ("" for the root)
    chain: tuple[str, ...]  # real directories walked to get here (loop detection)
    via: Reason  # why files found here are in the bundle


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_tree(root: str, findings: Findings, reserved: frozenset[str] = frozenset()) -> Tree:
    """Walk ``root`` (a real directory). Files at ``reserved`` tar paths (or in the way of one)
    are left out and reported."""
    root = os.path.realpath(root)
    tree = Tree(root, reserved)
    stack = [_Item("", "", ("",), FILE_REASON)]
    while stack:
        item = stack.pop()
        host = os.path.join(root, item.real) if item.real else root
        st = os.lstat(host)
        if stat.S_ISDIR(st.st_mode):
            tree.visited += 1
            stack.extend(
                _children(
                    item.logical, item.real, (*item.chain, item.real), item.via, host, findings
                )
            )
            continue
        if stat.S_ISLNK(st.st_mode):
            stack.extend(_follow(tree, item, findings))
            continue
        if stat.S_ISREG(st.st_mode):
            _add_file(tree, item.logical, item.real, st, item.via, findings)
            continue
        findings.add("special-file", "/" + item.logical)
    return tree


def _add_file(
    tree: Tree, logical: str, real: str, st: os.stat_result, reason: Reason, findings: Findings
) -> None:
    if logical in tree.reserved or any(
        r.startswith(logical + "/") or logical.startswith(r + "/") for r in tree.reserved
    ):
        findings.add("reserved-path", "/" + logical)
        return
    try:
        check_fits(logical)
    except TarPathError:
        findings.add("unfit-path", "/" + logical)
        return
    if len(tree.by_path) >= MAX_PATHS:
        raise UserError(
            f"{tree.root}: more than {MAX_PATHS} paths once directory symlinks are expanded"
        )
    key = (st.st_dev, st.st_ino)
    f = tree._by_inode.get(key)
    if f is None:
        if st.st_mode & 0o7000:
            findings.add("setuid-bits", "/" + real)
        f = tree._by_inode[key] = TreeFile(real, st.st_mode & 0o777)
        tree.files.append(f)
    f.add(logical, reason)
    tree.by_path[logical] = f


def _follow(tree: Tree, item: _Item, findings: Findings) -> list[_Item]:
    """A symlink: what it stands for (nothing, a file, or a directory to walk again)."""
    host = os.path.join(tree.root, item.real)
    text = os.readlink(host)
    shown = f"/{item.logical} -> {text}"
    try:
        target = confined_realpath(tree.root, item.real)
    except OSError:
        findings.add("symlink-loop", shown)
        return []
    real = os.path.relpath(target, tree.root)
    real = "" if real == "." else real
    try:
        st = os.lstat(target)
    except OSError:
        findings.add("dangling-symlink", shown)
        return []
    link_reason: Reason = {"kind": "symlink", "link": "/" + item.real, "target": text}
    if stat.S_ISREG(st.st_mode):
        _add_file(tree, item.logical, real, st, link_reason, findings)
        return []
    if not stat.S_ISDIR(st.st_mode):
        findings.add("special-file", shown)
        return []
    # Expanding a directory that contains (or is) one we are already inside never ends.
    if any(real == "" or d == real or d.startswith(real + "/") for d in item.chain):
        findings.add("symlink-loop", shown)
        return []
    # Symlinks may nest expansions exponentially (81 links in 8 levels: 10^8 directories from a
    # tree of 81): past the budget, directory symlinks are cut, and reported, not walked.
    if tree.visited >= MAX_DIRS:
        findings.add("expansion-cut", shown)
        return []
    tree.visited += 1
    return _children(item.logical, real, (*item.chain, real), link_reason, target, findings)


def _children(
    logical: str, real: str, chain: tuple[str, ...], via: Reason, host: str, findings: Findings
) -> list[_Item]:
    """A directory's entries, to be pushed on the walk's stack (so in reverse name order)."""
    out = []
    for name in sorted(os.listdir(host), reverse=True):
        path = _join(logical, name)
        if not _utf8(name):
            findings.add("non-utf8-name", "/" + path)
            continue
        out.append(_Item(path, _join(real, name), chain, via))
    return out
