"""The dependency walker on ELF32 i386 files, compared with ldd (tests only run ldd)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.errors import UserError
from packager.resolve import resolve
from rewriter import ElfError, ElfFile
from rewriter.elf import EM_386, ET_DYN, ET_EXEC, PT_DYNAMIC
from tests.test_resolve import assert_like_ldd, ldd

I386_DIRS = ["/lib32", "/usr/lib32", "/usr/lib/i386-linux-gnu", "/lib/i386-linux-gnu"]

pytestmark = pytest.mark.skipif(
    not os.path.exists("/lib/ld-linux.so.2"), reason="no i386 loader (apt-get install gcc-multilib)"
)


def dynamic_i386(path: str) -> bool:
    try:
        elf = ElfFile(Path(path).read_bytes())
        return (
            not elf.is64
            and elf.machine == EM_386
            and elf.type in (ET_EXEC, ET_DYN)
            and any(s.type == PT_DYNAMIC for s in elf.segments)
        )
    except (OSError, ElfError):
        return False


def i386_files() -> Iterator[str]:
    seen: set[str] = set()
    for top in I386_DIRS:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                real = os.path.realpath(os.path.join(dirpath, name))
                if real not in seen and os.path.isfile(real) and dynamic_i386(real):
                    seen.add(real)
                    yield real


def test_walker_equals_ldd_on_every_i386_library() -> None:
    files = list(i386_files())
    assert len(files) >= 5, files
    mismatches = []
    for path in files:
        view = ldd(path)
        closure = resolve([path])
        ours = {lib.realpath for lib in closure.libraries}
        if ours != view.realpaths or {n for n, _ in closure.missing} != view.missing:
            mismatches.append(f"{path}: ours {sorted(ours)} vs ldd {sorted(view.realpaths)}")
    print(f"compared {len(files)} i386 files with ldd: {len(mismatches)} mismatches")
    assert mismatches == []


def cc32(out: Path, src: str, *args: str | Path) -> Path:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["gcc", "-m32", "-o", out, c, *map(str, args)], check=True)
    return out


def test_i386_program_with_rpath_and_runpath(tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    libdir.mkdir()
    cc32(
        libdir / "libone.so.1",
        "int one(void){return 1;}\n",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libone.so.1",
    )
    main = "int one(void);\nint main(void){return one();}\n"
    rp = cc32(
        tmp_path / "rp",
        main,
        f"-L{libdir}",
        "-l:libone.so.1",
        "-Wl,--disable-new-dtags,-rpath,$ORIGIN/lib",
    )
    run = cc32(
        tmp_path / "run",
        main,
        f"-L{libdir}",
        "-l:libone.so.1",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib",
    )
    for program in (rp, run):
        closure = resolve([str(program)])
        assert_like_ldd(closure, ldd(program))
        assert closure.inputs[0].path == str(program)
        assert any(lib.realpath == str(libdir / "libone.so.1") for lib in closure.libraries)
    rules = {lib.name: lib.rule for lib in resolve([str(rp)]).libraries}
    assert "RPATH" in rules["libone.so.1"] or "rpath" in rules["libone.so.1"].lower()


def test_mixed_class_inputs_are_refused(tmp_path: Path) -> None:
    prog = cc32(tmp_path / "p32", "int main(void){return 0;}\n")
    with pytest.raises(UserError, match="one ELF class"):
        resolve([str(prog), shutil.which("true") or "/bin/true"])
