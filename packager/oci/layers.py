"""Apply image layers, in order, to a private rootfs directory.

The semantics are those of the OCI image spec and of container runtimes (containerd, moby):

* a layer entry's parent directories are resolved *inside* the rootfs (an absolute symlink
  restarts at the rootfs, ``..`` stops there), so a lower layer's ``etc -> /host`` link can
  never make an upper layer write outside it; the entry's own name is never followed;
* an entry replaces whatever was at its path, except that a directory entry over a directory
  only re-declares it: the directory's contents, symlinks included, stay (upstream LiteBox
  drops lower-layer symlinks here, reference §3.2);
* ``.wh.NAME`` deletes NAME and ``.wh..wh..opq`` empties its directory, in the layers *below*
  only: whatever this layer itself adds survives, wherever the whiteout sits in the tar;
* hard links become hard links (a link to a file that comes later in the layer is made at the
  end of the layer); symlinks are kept as symlinks, materialised later by ``tree``.

Anything unsafe or that the tar file system cannot hold is dropped and recorded in Findings.
Only rwx bits are kept on disk, and directories are always 0755 (the bundle synthesises them).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from ..fsutil import DISK_ERRNOS
from ..resolve import confined_realpath
from ..tarread import open_tar
from .findings import Findings

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_COPY_CHUNK = 1 << 20


@dataclass
class _LayerState:
    root: str
    findings: Findings
    created: set[str] = field(default_factory=set)  # rootfs-relative paths this layer made
    holds_created: set[str] = field(default_factory=set)  # their ancestors
    deferred: list[tuple[str, str, str]] = field(default_factory=list)  # (name, link, host)

    def mark(self, rel: str) -> None:
        self.created.add(rel)
        parts = rel.split("/")
        for i in range(1, len(parts)):
            self.holds_created.add("/".join(parts[:i]))

    def rel(self, host: str) -> str:
        return os.path.relpath(host, self.root)


def clean_name(name: str) -> list[str] | None:
    """Path components of an archive name, or None when it is absolute or climbs with ``..``."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return parts


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _remove(host: str) -> None:
    """Delete whatever is at ``host`` without following it."""
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(host)
    else:
        os.unlink(host)


def apply_layer(root: str, stream: BinaryIO, findings: Findings) -> None:
    """Extract one uncompressed layer tar (read as a stream) into ``root`` (a real path)."""
    state = _LayerState(root, findings)
    with open_tar(stream, "r|") as tar:
        for member in tar:
            try:
                _apply_member(state, tar, member)
            except OSError as e:
                if e.errno in DISK_ERRNOS:
                    raise  # a full or broken disk: the image cannot be unpacked, stop here
                # e.g. a name longer than the file system allows, or a symlink loop in a parent
                findings.add("unextractable", f"{member.name} ({e.strerror or e})")
    for name, link, host in state.deferred:
        if not _hardlink(state, name, link, host):
            findings.add("hardlink-missing", f"/{name} -> /{link}")


def _parent(state: _LayerState, parts: list[str], name: str) -> str | None:
    """Host path of an entry's parent directory (created when missing), or None (recorded)."""
    try:
        parent = confined_realpath(state.root, "/".join(parts[:-1]))
        os.makedirs(parent, mode=0o755, exist_ok=True)
    except OSError:
        state.findings.add("conflict", f"/{name}")
        return None
    if not os.path.isdir(parent) or os.path.islink(parent):
        state.findings.add("conflict", f"/{name}")
        return None
    return parent


def _apply_member(state: _LayerState, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    findings = state.findings
    parts = clean_name(member.name)
    if parts is None:
        findings.add("unsafe-path", member.name)
        return
    if not parts:
        return  # the archive root "./": nothing to do
    name = "/".join(parts)
    if not _is_utf8(name):
        findings.add("non-utf8-name", name)
        return
    base = parts[-1]
    if base.startswith(WHITEOUT):
        _whiteout(state, parts, name)
        return
    parent = _parent(state, parts, name)
    if parent is None:
        return
    host = os.path.join(parent, base)
    rel = state.rel(host)
    if member.isdir():
        if not (os.path.isdir(host) and not os.path.islink(host)):
            _remove(host)
            os.mkdir(host, 0o755)
        state.mark(rel)
    elif member.isreg():
        if member.mode & 0o7000:
            findings.add("setuid-bits", f"/{name}")
        _remove(host)
        src = tar.extractfile(member)
        assert src is not None
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
                os.fchmod(out.fileno(), member.mode & 0o777)
        except BaseException:
            os.unlink(host)  # never leave a truncated file for the bundle
            raise
        state.mark(rel)
    elif member.issym():
        _remove(host)
        os.symlink(member.linkname, host)
        state.mark(rel)
    elif member.islnk():
        link = clean_name(member.linkname)
        if link is None or not link:
            findings.add("unsafe-path", f"{member.name} -> {member.linkname}")
            return
        if _hardlink(state, name, "/".join(link), host):
            state.mark(rel)
        else:
            state.deferred.append((name, "/".join(link), host))
    else:
        # Devices, fifos, and anything else: replace what was there, but create nothing.
        findings.add("special-file", f"/{name}")
        _remove(host)


def _hardlink(state: _LayerState, name: str, link: str, host: str) -> bool:
    """Make ``host`` a hard link to the image path ``link``; False when that does not exist."""
    parts = link.split("/")
    src = os.path.join(confined_realpath(state.root, "/".join(parts[:-1])), parts[-1])
    try:
        st = os.lstat(src)
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        state.findings.add("hardlink-missing", f"/{name} -> /{link} (a directory)")
        return True
    if os.path.abspath(src) == os.path.abspath(host):
        return True
    _remove(host)
    os.link(src, host, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o7000:
        state.findings.add("setuid-bits", f"/{name}")
    return True


def _whiteout(state: _LayerState, parts: list[str], name: str) -> None:
    base = parts[-1]
    parent = confined_realpath(state.root, "/".join(parts[:-1]))
    if base == OPAQUE:
        if os.path.isdir(parent) and not os.path.islink(parent):
            _empty_below(state, parent)
        return
    target = base[len(WHITEOUT) :]
    if target in ("", ".", ".."):
        state.findings.add("unsafe-path", name)
        return
    host = os.path.join(parent, target)
    if state.rel(host) in state.created:
        return  # whiteouts hide lower layers only; this layer's own entry stays
    _remove(host)


def _empty_below(state: _LayerState, directory: str) -> None:
    """Delete everything in ``directory`` that this layer did not add itself."""
    for entry in os.scandir(directory):
        rel = state.rel(entry.path)
        if rel not in state.created and rel not in state.holds_created:
            _remove(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            # Kept because this layer declared it or put something in it; what the layers
            # below put there is still hidden.
            _empty_below(state, entry.path)
