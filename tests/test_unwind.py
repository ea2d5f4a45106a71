"""rewriter/unwind.py reads the same FDE ranges as pyelftools, through .eh_frame_hdr's table or by
walking .eh_frame, and fails only with ValueError on corrupt input."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from rewriter.elf import ElfFile
from rewriter.unwind import fde_ranges

REAL = [
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib32/libc.so.6",
    "/usr/bin/ls",
]


def pyelftools_ranges(data: bytes) -> list[tuple[int, int]]:
    ef = ELFFile(io.BytesIO(data))
    out = []
    for entry in ef.get_dwarf_info().EH_CFI_entries():
        if isinstance(entry, FDE) and entry.header["address_range"]:
            lo = entry.header["initial_location"]
            out.append((lo, lo + entry.header["address_range"]))
    return sorted(out)


@pytest.mark.parametrize("path", [p for p in REAL if Path(p).exists()])
def test_ranges_equal_pyelftools(path: str) -> None:
    data = Path(path).read_bytes()
    assert fde_ranges(ElfFile(data)) == pyelftools_ranges(data)


def test_without_eh_frame_hdr_the_section_is_walked(tmp_path: Path) -> None:
    src = tmp_path / "p.c"
    src.write_text("int f(int x) { return x * 3; }\nint main(void) { return f(1) - 3; }\n")
    out = tmp_path / "p"
    subprocess.run(["gcc", "-O1", "-Wl,--no-eh-frame-hdr", "-o", str(out), str(src)], check=True)
    data = out.read_bytes()
    elf = ElfFile(data)
    assert ".eh_frame_hdr" not in {s.name for s in elf.sections}
    ranges = fde_ranges(elf)
    assert ranges and ranges == pyelftools_ranges(data)


LIBC = Path(REAL[0]).read_bytes()
FRAME = next(s for s in ElfFile(LIBC).sections if s.name == ".eh_frame")
HDR = next(s for s in ElfFile(LIBC).sections if s.name == ".eh_frame_hdr")


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from([FRAME, HDR]),
    at=st.integers(0, 4000),
    junk=st.binary(min_size=1, max_size=16),
)
def test_corrupt_unwind_tables_fail_only_with_value_error(where, at, junk) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(LIBC)
    off = where.offset + at % where.size
    data[off : off + len(junk)] = junk
    try:
        ranges = fde_ranges(ElfFile(bytes(data)))
    except ValueError:
        return
    assert ranges is not None and all(lo <= hi for lo, hi in ranges)
