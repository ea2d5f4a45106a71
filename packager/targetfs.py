"""The target's file system as the loader sees it: the host's, or a tree standing in for it.

Under a root every symlink is resolved inside that directory (an absolute link target restarts
at the root, ``..`` stops there), so nothing is ever read from the host's own tree.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

MAX_SYMLINKS = 40  # the kernel's limit before ELOOP


def confined_realpath(root: str, path: str) -> str:
    """Host path of target ``path`` with every symlink resolved inside ``root``.

    Absolute link targets restart at ``root``; ``..`` never climbs above it. Components that do
    not exist are kept as written (like ``os.path.realpath(strict=False)``). Raises OSError
    (ELOOP) after too many links.
    """
    root = root.rstrip("/") or "/"
    pending = deque(p for p in path.split("/") if p)
    done: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(host).st_mode)
        except OSError:
            is_link = False
        if not is_link:
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        target = os.readlink(host)
        if target.startswith("/"):
            done = []
        pending.extendleft(reversed([p for p in target.split("/") if p]))
    return os.path.join(root, *done)


class TargetFs:
    """The target's file system: the host's, or a directory tree standing in for it."""

    def __init__(self, root: str | None) -> None:
        self.root = os.path.realpath(root) if root is not None else None
        self._dirs: dict[str, str] = {}

    def host(self, tpath: str) -> str:
        """Host path of the real file (or directory) the target path leads to."""
        if self.root is None:
            return os.path.realpath(tpath)
        head, tail = tpath.rsplit("/", 1) if "/" in tpath else ("", tpath)
        hdir = self._dirs.get(head)
        if hdir is None:
            hdir = self._dirs[head] = confined_realpath(self.root, head)
        if tail in ("", ".", ".."):
            return confined_realpath(self.root, tpath)
        candidate = os.path.join(hdir, tail)
        try:
            if not stat.S_ISLNK(os.lstat(candidate).st_mode):
                return candidate
        except OSError:
            return candidate
        return confined_realpath(self.root, self.target(hdir) + "/" + tail)

    def target(self, host: str) -> str:
        """The target's view of a host path inside the root."""
        if self.root is None or self.root == "/":
            return host
        if host == self.root:
            return "/"
        return host[len(self.root) :] if host.startswith(self.root + "/") else host

    def lookup(self, tpath: str) -> tuple[str, os.stat_result] | None:
        """(host real path, stat) of what ``tpath`` names, or None when nothing is there."""
        try:
            if self.root is None:
                st = os.stat(tpath)  # cheap rejection before the realpath walk
                return os.path.realpath(tpath), st
            host = self.host(tpath)
            return host, os.stat(host)
        except OSError:
            return None
