"""Sweep every ELF of the machine and say which syscall sites the data guard leaves alone.

Run: python bench/sweep_data_in_code.py [-j N] [DIR...]   (default: the system's ELF dirs)

Per object it prints the sites classified data-in-code, with why, and the sites that no FDE or
function symbol covers but that were reached from code (with how): the evidence both ways.
Objects whose sections have no code map (every site patched) are counted. It also checks that
the rewriter's own outcome agrees with the classification it printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rewriter import RewriteError, rewrite_elf
from rewriter.codemap import judge
from rewriter.elf import EM_386, EM_X86_64, ElfFile

DIRS = ["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec", "/usr/lib32", "/lib32", "/usr/local"]
DIRS += ["/opt"]


def elf_files(dirs: list[str]) -> Iterator[str]:
    seen: set[tuple[int, int]] = set()
    for top in dirs:
        for root, _, names in os.walk(top):
            for name in sorted(names):
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                    if not os.path.isfile(path) or os.path.islink(path) or st.st_size < 64:
                        continue
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    with open(path, "rb") as fh:
                        if fh.read(4) != b"\x7fELF":
                            continue
                except OSError:
                    continue
                yield path


def examine(path: str) -> tuple[str, str, int, list[str]]:
    """(path, state, sites, lines): state is ok, no-map, skipped or error."""
    try:
        data = Path(path).read_bytes()
        elf = ElfFile(data)
        if elf.machine not in (EM_386, EM_X86_64) or not elf.little_endian:
            return path, "skipped", 0, []
        plain = rewrite_elf(data, unpatchable="keep", data_guard=False)
        guarded = rewrite_elf(data, unpatchable="keep")
    except (RewriteError, OSError) as e:
        return path, "error", 0, [f"  error: {e}"]
    if not plain.sites:
        return path, "ok", 0, []
    texts = elf.text_sections
    where = [
        (next(s for s in texts if s.addr <= a.address < s.addr + s.size), a.address)
        for a in plain.sites
    ]
    verdicts = judge(elf, data, texts, where)
    lines = [
        f"  data-in-code {a:#x} (file offset {elf.vaddr_to_offset(a):#x}): {why}"
        for a, why in sorted(verdicts.data_in_code.items())
    ]
    lines += [
        f"  code {a:#x}, outside FDEs and symbols: {how}"
        for a, how in sorted(verdicts.reached.items())
    ]
    if sorted(d.address for d in guarded.data_in_code) != sorted(verdicts.data_in_code):
        lines.append("  MISMATCH: the rewriter's outcome differs from this classification")
    state = "no-map" if verdicts.code_map == "none" or verdicts.unmapped else "ok"
    if verdicts.code_map == "none":
        lines.append("  no code map: every site patched")
    if verdicts.unmapped:
        lines.append(f"  no code map for {', '.join(verdicts.unmapped)}: every site there patched")
    return path, state, len(plain.sites), lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="*", default=DIRS)
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    files = list(elf_files(args.dirs))
    counts = {"ok": 0, "no-map": 0, "skipped": 0, "error": 0}
    sites = dic = reached = mismatches = 0
    with ProcessPoolExecutor(args.jobs) as pool:
        for path, state, n, lines in pool.map(examine, files, chunksize=8):
            counts[state] += 1
            sites += n
            dic += sum(ln.startswith("  data-in-code") for ln in lines)
            reached += sum(ln.startswith("  code ") for ln in lines)
            mismatches += sum("MISMATCH" in ln for ln in lines)
            if lines:
                print(path)
                print("\n".join(lines))
    print(
        f"{len(files)} ELF files: {counts['ok'] + counts['no-map']} x86 objects "
        f"({counts['no-map']} with sections lacking a code map), {counts['skipped']} other "
        f"architectures, {counts['error']} unreadable; {sites} sites, {dic} data-in-code, "
        f"{reached} outside FDEs/symbols but reached from code, {mismatches} mismatches"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
