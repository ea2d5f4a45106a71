"""Every rewritten output still parses the same with pyelftools and with lief (issue 10).

The rewriter only patches bytes inside executable sections and appends a blob and a trailer, so
to either library the segments, sections, dynamic table and symbols must be exactly those of
the input; and the two libraries must agree with each other on the layout the proof tests read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rewriter import Outcome, rewrite_elf
from tests.independent_elf import facts, lief_elf, read_elf

LIB = "/usr/lib/x86_64-linux-gnu"
FILES = [
    f"{LIB}/libc.so.6",
    f"{LIB}/ld-linux-x86-64.so.2",
    f"{LIB}/libcrypto.so.3",  # data-in-code: a header-only marker
    f"{LIB}/libz.so.1",  # no syscall: a header-only marker
    "/usr/bin/ls",
    "/usr/lib32/libc.so.6",
    "/usr/lib32/ld-linux.so.2",
]


@pytest.mark.parametrize("path", [p for p in FILES if Path(p).exists()])
@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_rewritten_output_parses_unchanged(path: str, abi: str) -> None:
    data = Path(path).read_bytes()
    res = rewrite_elf(data, abi=abi, unpatchable="keep")
    assert res.outcome in (Outcome.PATCHED, Outcome.MARKER)
    assert len(res.data) > len(data)
    for library in ("pyelftools", "lief"):
        assert facts(res.data, library) == facts(data, library), library
    assert read_elf(res.data) == lief_elf(res.data)


def test_static_sample_parses_unchanged(build_sample) -> None:  # type: ignore[no-untyped-def]
    data = build_sample("hello.c", "static").read_bytes()
    res = rewrite_elf(data)
    assert res.outcome is Outcome.PATCHED
    for library in ("pyelftools", "lief"):
        assert facts(res.data, library) == facts(data, library), library
