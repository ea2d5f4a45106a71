"""What was dropped or changed on the way from an image to a bundle, reported, never silent.

Everything LiteBox's tar file system cannot hold (device nodes, setuid bits, dangling links, ...)
or that could escape the working directory (absolute names, ``..``) is recorded here under a
category. The CLI prints one warning line per category and ``--json`` lists every item; the
bundle itself does not carry them, so the same tree gives the same bundle whatever it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..console import warn

# category → how a warning line describes it
CATEGORIES = {
    "unsafe-path": "entries with an absolute or '..' name were not extracted",
    "special-file": "device nodes, fifos and sockets were dropped (the tar file system has none)",
    "setuid-bits": "files lost their setuid/setgid/sticky bits (LiteBox keeps only rwx)",
    "hardlink-missing": "hard links to files not in the image were dropped",
    "conflict": "entries whose parent is not a directory were dropped",
    "unextractable": "entries the file system refused were dropped",
    "dangling-symlink": "symlinks leading nowhere were dropped",
    "symlink-loop": "symlinks that loop (or reach an ancestor directory) were not followed",
    "non-utf8-name": "names that are not UTF-8 were dropped (the tar file system skips them)",
    "unfit-path": "paths too long for a ustar header were dropped",
    "reserved-path": "image files at litebox-pack's own paths were replaced",
    "expansion-cut": "directory symlinks were not expanded: the walk reached its limit of "
    "directories visited (LITEBOX_PACK_MAX_DIRS)",
    "env": "environment entries that are not NAME=VALUE with a shell name were skipped",
}
_SHOWN = 3  # examples per warning line


@dataclass
class Findings:
    items: dict[str, list[str]] = field(default_factory=dict)
    # what was added, for de-duplication in constant time (hostile input can add millions)
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, category: str, detail: str) -> None:
        assert category in CATEGORIES, category
        if (category, detail) not in self._seen:
            self._seen.add((category, detail))
            self.items.setdefault(category, []).append(detail)

    def count(self, category: str) -> int:
        return len(self.items.get(category, []))

    def warn(self, verbose: bool = False) -> None:
        for category, details in self.items.items():
            shown = details if verbose else details[:_SHOWN]
            more = "" if len(shown) == len(details) else f", ... ({len(details)} in all)"
            listed = ", ".join(_printable(d) for d in shown)
            warn(f"{category}: {len(details)} {CATEGORIES[category]}: {listed}{more}")

    def to_json(self) -> dict[str, list[str]]:
        return {k: [_printable(d) for d in v] for k, v in self.items.items()}


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
