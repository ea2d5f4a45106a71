"""Image platforms (``os/arch[/variant]``) the way registries and Docker name them."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

# uname -m → the GOARCH names image indexes use.
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i386": "386",
    "i686": "386",
}
# An index entry may or may not spell a default variant; both mean the same image.
_DEFAULT_VARIANT = {"arm64": "v8"}


@dataclass(frozen=True)
class Platform:
    os: str
    arch: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)

    def matches(self, doc: dict[str, Any]) -> bool:
        """Does an index entry's ``platform`` object describe this platform?"""
        if doc.get("os") != self.os or _norm_arch(str(doc.get("architecture", ""))) != self.arch:
            return False
        if self.variant is None:
            return True
        theirs = doc.get("variant") or _DEFAULT_VARIANT.get(self.arch)
        return theirs == (self.variant or _DEFAULT_VARIANT.get(self.arch))


def _norm_arch(arch: str) -> str:
    return _ARCH_ALIASES.get(arch, arch)


def host_platform() -> Platform:
    return Platform("linux", _norm_arch(_host.machine()))


def parse_platform(text: str | None) -> Platform:
    if not text:
        return host_platform()
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"--platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
    return Platform(parts[0], _norm_arch(parts[1]), parts[2] if len(parts) == 3 else None)


def describe(doc: dict[str, Any] | None) -> str:
    """``os/arch[/variant]`` of an index entry or image config (for messages)."""
    if not doc:
        return "unknown"
    parts = [doc.get("os"), doc.get("architecture"), doc.get("variant")]
    return "/".join(str(p) for p in parts if p) or "unknown"
