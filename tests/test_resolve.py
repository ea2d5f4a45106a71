"""The dependency walker against the real loader of this machine.

Every crafted case is compiled here with gcc and, where ldd can observe it, compared with ldd
(or with ld.so --list run in a chroot for --root cases). ldd appears only in tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from packager.errors import UserError
from packager.resolve import (
    DEFAULT_PATH,
    Closure,
    CpuInfo,
    Library,
    MissingLibrariesError,
    confined_realpath,
    loader_model,
    resolve,
)
from rewriter.elf import EM_X86_64, ET_DYN, ET_EXEC, ElfError, ElfFile

LDSO = "/lib64/ld-linux-x86-64.so.2"
MAIN = "int main(void) { return 0; }\n"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the test objects")


# -- building and observing ------------------------------------------------------------------


def cc(out: Path, source: str, *args: str | Path, shared: bool = False) -> Path:
    """Compile ``source`` into ``out``; every listed library becomes a DT_NEEDED entry."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / (out.name + ".c")
    src.write_text(source)
    cmd = ["gcc", *(["-shared", "-fPIC"] if shared else []), "-o", str(out), str(src)]
    cmd += ["-Wl,--no-as-needed", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return out


def lib(path: Path, *args: str | Path, soname: str | None = "") -> Path:
    """A shared library at ``path`` whose DT_SONAME is its file name (``soname=None``: none)."""
    ident = re.sub(r"\W", "_", path.name)
    name = path.name if soname == "" else soname
    flags = [f"-Wl,-soname,{name}"] if name else []
    return cc(path, f"int f_{ident}(void) {{ return 1; }}\n", *flags, *args, shared=True)


def exe(path: Path, *args: str | Path) -> Path:
    return cc(path, MAIN, *args)


def rpath(*dirs: Path | str) -> list[str]:
    return ["-Wl,--disable-new-dtags", "-Wl,-rpath," + ":".join(map(str, dirs))]


def runpath(*dirs: Path | str) -> list[str]:
    return ["-Wl,--enable-new-dtags", "-Wl,-rpath," + ":".join(map(str, dirs))]


@dataclass
class LddView:
    paths: dict[str, str]  # name -> path exactly as ld.so opened it
    realpaths: set[str]
    missing: set[str]
    returncode: int
    output: str


def ldd(path: Path | str, **env: str) -> LddView:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    res = subprocess.run(
        ["ldd", str(path)], capture_output=True, text=True, env=clean | env, timeout=60
    )
    return parse_ldd(res.stdout, res.returncode, res.stdout + res.stderr)


def parse_ldd(text: str, rc: int, output: str) -> LddView:
    view = LddView({}, set(), set(), rc, output)
    for raw in text.splitlines():
        line = raw.strip()
        name, arrow, rest = line.partition(" => ")
        if arrow:
            if rest.startswith("not found"):
                view.missing.add(name)
                continue
            path = rest.rsplit(" (0x", 1)[0]
        elif line.startswith("/"):
            name = path = line.rsplit(" (0x", 1)[0]
        else:
            continue  # linux-vdso.so.1, "statically linked"
        if path.startswith("/"):
            view.paths[name] = path
            view.realpaths.add(os.path.realpath(path))
    return view


def assert_like_ldd(closure: Closure, view: LddView) -> None:
    assert view.returncode == 0, view.output
    assert {lib.realpath for lib in closure.libraries} == view.realpaths, view.output
    assert {name for name, _ in closure.missing} == view.missing, view.output
    for lib in closure.libraries:
        if lib.name in view.paths:
            assert lib.path == view.paths[lib.name], view.output


def by_name(closure: Closure) -> dict[str, Library]:
    return {lib.name: lib for lib in closure.libraries}


def run_in_root(root: Path, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted into ``root``; ``env`` reaches only that process (the host's
    chroot(1) is itself dynamically linked and would obey LD_* variables)."""

    def enter() -> None:
        os.chroot(root)
        os.chdir("/")

    clean = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    return subprocess.run(
        argv, capture_output=True, text=True, env=clean | env, preexec_fn=enter, timeout=60
    )


def can_chroot(tmp: Path) -> bool:
    probe = tmp / "chroot-probe"
    probe.mkdir(exist_ok=True)
    try:
        run_in_root(probe, ["/nothing-here"])
    except FileNotFoundError:
        return True  # the chroot worked; only the command is absent
    except (OSError, subprocess.SubprocessError):
        return False
    return False


# -- the loader model ------------------------------------------------------------------------


def test_loader_model_matches_what_ld_so_reports_about_itself() -> None:
    """System dirs, glibc-hwcaps levels and legacy hwcap names agree with ``ld.so --help``."""
    helptext = subprocess.run([LDSO, "--help"], capture_output=True, text=True).stdout
    model = loader_model(64, EM_X86_64, CpuInfo.host())
    system = re.findall(r"^\s+(/\S+) \(system search path\)$", helptext, re.M)
    assert [d.rstrip("/") for d in model.system_dirs] == system
    hwcaps_part = helptext.split("Subdirectories of glibc-hwcaps")[1].split("Legacy HWCAP")[0]
    levels = re.findall(r"^\s+(\S+) \(supported, searched\)$", hwcaps_part, re.M)
    assert [s.rstrip("/") for s in model.subdirs if s.startswith("glibc-hwcaps/")] == [
        f"glibc-hwcaps/{lvl}" for lvl in levels
    ]
    legacy_part = helptext.split("Legacy HWCAP subdirectories")[1]
    searched = re.findall(r"^\s+(\S+) \((AT_PLATFORM; )?supported, searched\)$", legacy_part, re.M)
    platform = [n for n, plat in searched if plat]
    assert platform == [model.platform]
    legacy_names = {n for s in model.subdirs if not s.startswith("glibc-") for n in s.split("/")}
    assert legacy_names - {""} == {n for n, _ in searched}


def test_subdirectory_order_matches_a_real_search(tmp_path: Path) -> None:
    """The order ld.so tries hwcaps subdirectories, from its own debug output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    env = clean | {"LD_LIBRARY_PATH": str(tmp_path), "LD_DEBUG": "libs"}
    out = subprocess.run(["/bin/true"], capture_output=True, text=True, env=env).stderr
    line = next(x for x in out.splitlines() if "(LD_LIBRARY_PATH)" in x)
    tried = line.split("search path=")[1].split()[0].split(":")
    subdirs = [t[len(str(tmp_path)) + 1 :] for t in tried]
    want: list[str] = []
    for s in subdirs:
        if s not in want:
            want.append(s)
    model = loader_model(64, EM_X86_64, CpuInfo.host())
    assert [s.rstrip("/") for s in model.subdirs] == want


# -- the acceptance test: every dynamic ELF of the system against ldd ------------------------

SCANNED = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu", "/usr/libexec")

# Files for which ldd itself gives a wrong answer, each with the reason. None are needed on the
# Debian 12 reference machine: inputs are given to both tools by their real path (ldd computes
# the program's $ORIGIN from the path it is given, the kernel from the real path), which is the
# only systematic ldd divergence met so far.
LDD_EXCEPTIONS: dict[str, str] = {}


def _dynamic_x86_64_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
            if head[:5] != b"\x7fELF\x02":
                return False
            try:
                elf = ElfFile(head)
                _ = elf.segments
            except ElfError:
                elf = ElfFile(head + f.read())
    except (OSError, ElfError):
        return False
    try:
        segments = elf.segments
    except ElfError:
        return False
    return (
        elf.machine == EM_X86_64
        and elf.type in (ET_EXEC, ET_DYN)
        and any(s.type == 2 for s in segments)  # PT_DYNAMIC: not static
    )


def system_elves() -> Iterator[str]:
    seen: set[str] = set()
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                real = os.path.realpath(os.path.join(dirpath, name))
                if real in seen or not os.path.isfile(real):
                    continue
                seen.add(real)
                if _dynamic_x86_64_elf(real):
                    yield real


@pytest.mark.slow
def test_walker_equals_ldd_for_every_system_elf() -> None:
    if shutil.which("ldd") is None:
        pytest.skip("ldd is not installed")
    files = list(system_elves())
    assert len(files) > 100, "expected a populated system to compare against"
    start = time.monotonic()
    mismatches: list[str] = []
    compared = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for path, view in zip(files, pool.map(ldd, files), strict=True):
            closure = resolve([path])
            ours = {lib.realpath for lib in closure.libraries}
            missing = {name for name, _ in closure.missing}
            compared += 1
            if view.returncode != 0 or ours != view.realpaths or missing != view.missing:
                if path in LDD_EXCEPTIONS:
                    continue
                mismatches.append(
                    f"{path}: extra {sorted(ours - view.realpaths)}, "
                    f"lacking {sorted(view.realpaths - ours)}, missing {sorted(missing)} "
                    f"vs ldd {sorted(view.missing)} (ldd rc {view.returncode})"
                )
    elapsed = time.monotonic() - start
    print(f"compared {compared} files with ldd in {elapsed:.1f}s: {len(mismatches)} mismatches")
    assert mismatches == [], "\n".join(mismatches[:20])


# -- basics on real system programs ----------------------------------------------------------


def test_interpreter_comes_first_and_satisfies_libc_by_soname() -> None:
    closure = resolve(["/bin/true"])
    first = closure.libraries[0]
    assert (first.name, first.path, first.rule) == (LDSO, LDSO, "interpreter")
    assert first.needed_by == "/bin/true"
    # libc.so.6 needs ld-linux-x86-64.so.2: that is the interpreter (by DT_SONAME), not a
    # second object found through the cache.
    assert [lib.name for lib in closure.libraries] == [LDSO, "libc.so.6"]
    assert closure.inputs[0].rule == "input" and closure.inputs[0].path == "/bin/true"
    assert closure.inputs[0].realpath == os.path.realpath("/bin/true")
    assert_like_ldd(closure, ldd(os.path.realpath("/bin/true")))


def test_several_inputs_share_each_real_file_and_keep_every_path() -> None:
    libz = os.path.realpath("/lib/x86_64-linux-gnu/libz.so.1")
    closure = resolve(["/bin/true", libz])
    reals = [lib.realpath for lib in closure.libraries]
    assert len(reals) == len(set(reals))
    ldso = next(lib for lib in closure.libraries if lib.rule == "interpreter")
    # libz has no PT_INTERP: its libc asks for ld-linux-x86-64.so.2 through the cache.
    assert "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" in ldso.aliases
    second = closure.by_input[1]
    assert [lib.name for lib in second.libraries] == ["libc.so.6", "ld-linux-x86-64.so.2"]
    assert all(lib.rule == "ld.so.cache" for lib in second.libraries)


def test_static_program_and_data_file_have_no_dependencies(tmp_path: Path) -> None:
    static = cc(tmp_path / "static", MAIN, "-static")
    data = tmp_path / "notes.txt"
    data.write_text("just text\n")
    closure = resolve([str(static), str(data)])
    assert [i.path for i in closure.inputs] == [str(static), str(data)]
    assert closure.libraries == [] and closure.missing == []
    assert "not a dynamic executable" in ldd(static).output


# -- search order ----------------------------------------------------------------------------


def test_rpath_of_the_program_serves_a_grandchild(tmp_path: Path) -> None:
    d = tmp_path / "d"
    libb = lib(d / "libb.so")
    liba = lib(d / "liba.so", libb)
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d}", *rpath(d))
    closure = resolve([str(prog)])
    libs = by_name(closure)
    assert libs["libb.so"].rule == f"DT_RPATH of {prog}"
    assert libs["libb.so"].needed_by == str(d / "liba.so")
    assert_like_ldd(closure, ldd(prog))


def test_rpath_of_an_intermediate_loader_is_inherited(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    libc3 = lib(d2 / "libc3.so")
    libb = lib(d1 / "libb.so", libc3, f"-Wl,-rpath-link,{d2}")
    liba = lib(d1 / "liba.so", libb, f"-Wl,-rpath-link,{d2}", *rpath(d2))
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d1}:{d2}", *rpath(d1))
    closure = resolve([str(prog)])
    libs = by_name(closure)
    # libb has no RPATH: liba's (its loader's) finds libc3.
    assert libs["libc3.so"].rule == f"DT_RPATH of {liba}"
    assert_like_ldd(closure, ldd(prog))


def test_runpath_is_not_inherited(tmp_path: Path) -> None:
    d = tmp_path / "d"
    libb = lib(d / "libb.so")
    liba = lib(d / "liba.so", libb)
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d}", *runpath(d))
    closure = resolve([str(prog)])
    assert by_name(closure)["liba.so"].rule == "DT_RUNPATH"
    assert closure.missing == [("libb.so", str(d / "liba.so"))]
    assert_like_ldd(closure, ldd(prog))
    with pytest.raises(MissingLibrariesError) as err:
        closure.raise_if_missing()
    assert str(err.value) == f"1 missing library: libb.so (needed by {d / 'liba.so'})"


def test_runpath_of_the_requester_disables_every_rpath(tmp_path: Path) -> None:
    d, empty = tmp_path / "d", tmp_path / "empty"
    empty.mkdir()
    libb = lib(d / "libb.so")
    liba = lib(d / "liba.so", libb, *runpath(empty))
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d}", *rpath(d))
    closure = resolve([str(prog)])
    assert by_name(closure)["liba.so"].rule == f"DT_RPATH of {prog}"
    assert closure.missing == [("libb.so", str(liba))]
    assert_like_ldd(closure, ldd(prog))


def test_library_path_sits_between_rpath_and_runpath(tmp_path: Path) -> None:
    rdir, ldir = tmp_path / "rpath", tmp_path / "llp"
    lib(rdir / "libx.so")
    lib(ldir / "libx.so")
    with_rpath = exe(tmp_path / "with_rpath", rdir / "libx.so", *rpath(rdir))
    with_runpath = exe(tmp_path / "with_runpath", rdir / "libx.so", *runpath(rdir))
    for prog, winner in ((with_rpath, rdir), (with_runpath, ldir)):
        closure = resolve([str(prog)], library_path=[str(ldir)])
        assert by_name(closure)["libx.so"].path == str(winner / "libx.so")
        assert_like_ldd(closure, ldd(prog, LD_LIBRARY_PATH=str(ldir)))
    closure = resolve([str(with_runpath)], library_path=[str(ldir)])
    assert by_name(closure)["libx.so"].rule == "--library-path"


def test_nodeflib_skips_default_dirs_and_their_cache_entries(tmp_path: Path) -> None:
    d = tmp_path / "d"
    # GNU ld spells -z nodeflib "-z nodefaultlib"; it only marks shared objects.
    libn = lib(d / "libn.so", "-Wl,-z,nodefaultlib", "-lz")
    assert ElfFile(libn.read_bytes()).dynamic.flags_1 & 0x800  # type: ignore[union-attr]
    prog = exe(tmp_path / "prog", libn, *runpath(d))
    closure = resolve([str(prog)])
    assert closure.missing == [("libz.so.1", str(libn))]
    assert_like_ldd(closure, ldd(prog))
    # LD_LIBRARY_PATH still applies.
    multiarch = "/usr/lib/x86_64-linux-gnu"
    closure = resolve([str(prog)], library_path=[multiarch])
    assert by_name(closure)["libz.so.1"].rule == "--library-path"
    assert_like_ldd(closure, ldd(prog, LD_LIBRARY_PATH=multiarch))


def test_use_ld_cache_false_falls_back_to_default_dirs() -> None:
    closure = resolve(["/bin/true"], use_ld_cache=False)
    libc = by_name(closure)["libc.so.6"]
    assert libc.rule == "default directory"
    assert libc.path == "/lib/x86_64-linux-gnu/libc.so.6"


# -- dynamic string tokens and $ORIGIN -------------------------------------------------------


def test_dst_forms_expand_like_ld_so(tmp_path: Path) -> None:
    model = loader_model(64, EM_X86_64, CpuInfo.host())
    app = tmp_path / "app"
    lib(app / model.lib / "one" / "libone.so")
    lib(app / "plat" / model.platform / "libtwo.so")
    lib(app / "bin" / "origin" / "libthree.so")
    lib(app / "$LIBX" / "libfour.so")  # not a token: "$LIBX" stays as written
    spec = f"$ORIGIN/../${{LIB}}/one:{app}/plat/$PLATFORM:${{ORIGIN}}/origin:$ORIGIN/../$LIBX"
    prog = exe(
        app / "bin" / "prog",
        app / model.lib / "one" / "libone.so",
        app / "plat" / model.platform / "libtwo.so",
        app / "bin" / "origin" / "libthree.so",
        app / "$LIBX" / "libfour.so",
        *runpath(spec),
    )
    assert ElfFile(prog.read_bytes()).dynamic.runpath == spec  # type: ignore[union-attr]
    closure = resolve([str(prog)])
    libs = by_name(closure)
    assert libs["libone.so"].path == f"{app}/bin/../{model.lib}/one/libone.so"
    assert libs["libtwo.so"].path == f"{app}/plat/{model.platform}/libtwo.so"
    assert libs["libthree.so"].path == f"{app}/bin/origin/libthree.so"
    assert libs["libfour.so"].path == f"{app}/bin/../$LIBX/libfour.so"
    assert_like_ldd(closure, ldd(prog))


def test_program_origin_is_its_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    lib(real / "lib" / "libo.so")
    prog = exe(real / "bin" / "prog", real / "lib" / "libo.so", *runpath("$ORIGIN/../lib"))
    link = tmp_path / "elsewhere" / "prog"
    link.parent.mkdir()
    link.symlink_to(prog)
    closure = resolve([str(link)])
    assert by_name(closure)["libo.so"].path == f"{real}/bin/../lib/libo.so"
    assert closure.missing == []
    # The kernel agrees: started through the symlink, the program finds its library. (ldd
    # would not: it passes the symlink's path to ld.so, which takes $ORIGIN from it.)
    assert subprocess.run([str(link)], timeout=30).returncode == 0


def test_library_origin_is_where_it_was_opened_not_its_real_path(tmp_path: Path) -> None:
    store, front = tmp_path / "store", tmp_path / "front"
    libb = lib(front / "sub" / "libb.so")
    liba = lib(store / "liba.so", libb, *runpath("$ORIGIN/sub"))
    (front / "liba.so").symlink_to(liba)
    prog = exe(
        tmp_path / "prog", front / "liba.so", f"-Wl,-rpath-link,{front / 'sub'}", *runpath(front)
    )
    closure = resolve([str(prog)])
    libs = by_name(closure)
    assert libs["liba.so"].path == str(front / "liba.so")
    assert libs["liba.so"].realpath == str(liba)
    assert libs["libb.so"].path == f"{front}/sub/libb.so"
    assert_like_ldd(closure, ldd(prog))


def test_needed_with_a_slash_is_a_path(tmp_path: Path) -> None:
    libp = lib(tmp_path / "lib" / "libp.so", soname=None)
    prog = exe(tmp_path / "prog", libp)  # no soname: DT_NEEDED is the path given to the linker
    assert str(libp) in ElfFile(prog.read_bytes()).dynamic.needed  # type: ignore[union-attr]
    closure = resolve([str(prog)])
    assert by_name(closure)[str(libp)].rule == "path in DT_NEEDED"
    assert_like_ldd(closure, ldd(prog))


def test_same_file_under_two_names_is_loaded_once(tmp_path: Path) -> None:
    d = tmp_path / "d"
    liba = lib(d / "liba.so.1")
    # libuser asks for "libalias.so" (linked against a stand-in with that soname); at run time
    # that name is a symlink to liba.so.1, already loaded under its own name.
    stub = lib(tmp_path / "link" / "libalias.so")
    user = lib(d / "libuser.so", stub)
    alias = d / "libalias.so"
    alias.symlink_to("liba.so.1")
    prog = exe(tmp_path / "prog", liba, user, *rpath(d))
    closure = resolve([str(prog)])
    same = [lib for lib in closure.libraries if lib.realpath == str(liba)]
    assert len(same) == 1 and same[0].aliases == (str(alias),)
    assert_like_ldd(closure, ldd(prog))


# -- hwcaps subdirectories -------------------------------------------------------------------


def test_glibc_hwcaps_and_legacy_subdirectories(tmp_path: Path) -> None:
    model = loader_model(64, EM_X86_64, CpuInfo.host())
    d = tmp_path / "d"
    base = lib(d / "libh.so.1")
    legacy = d / "tls" / "libh.so.1"
    legacy.parent.mkdir()
    shutil.copy(base, legacy)
    prog = exe(tmp_path / "prog", base, *runpath(d))
    closure = resolve([str(prog)])
    assert by_name(closure)["libh.so.1"].rule == "DT_RUNPATH (tls)"
    assert_like_ldd(closure, ldd(prog))
    levels = [s for s in model.subdirs if s.startswith("glibc-hwcaps/")]
    if not levels:
        pytest.skip("this CPU supports no glibc-hwcaps level above the baseline")
    hw = d / levels[-1] / "libh.so.1"
    hw.parent.mkdir(parents=True)
    shutil.copy(base, hw)
    closure = resolve([str(prog)])
    assert by_name(closure)["libh.so.1"].path == str(hw)
    assert_like_ldd(closure, ldd(prog))


# -- candidates ld.so skips or refuses -------------------------------------------------------


def _elf32_library(tmp: Path, name: str) -> Path:
    out = tmp / name
    src = tmp / "w32.c"
    src.write_text("int f(void) { return 1; }\n")
    cmd = ["gcc", "-m32", "-shared", "-fPIC", "-nostdlib", f"-Wl,-soname,{name}"]
    res = subprocess.run([*cmd, "-o", str(out), str(src)], capture_output=True)
    if res.returncode == 0:
        return out
    for cand in sorted(Path("/usr/libexec/valgrind").glob("*x86-linux.so")):
        if cand.read_bytes()[4] == 1:
            shutil.copy(cand, out)
            return out
    pytest.skip("cannot build (gcc -m32) or find a 32-bit ELF library")


def test_other_class_and_machine_candidates_are_skipped(tmp_path: Path) -> None:
    w32, w64, arm = tmp_path / "w32", tmp_path / "w64", tmp_path / "arm"
    w32.mkdir()
    _elf32_library(w32, "libw.so")
    good = lib(w64 / "libw.so")
    arm.mkdir()
    patched = bytearray(good.read_bytes())
    patched[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    (arm / "libw.so").write_bytes(patched)
    prog = exe(tmp_path / "prog", good, *runpath(w32, arm, w64))
    closure = resolve([str(prog)])
    assert by_name(closure)["libw.so"].path == str(good)
    assert_like_ldd(closure, ldd(prog))
    only_wrong = exe(tmp_path / "only_wrong", good, *runpath(w32, arm))
    closure = resolve([str(only_wrong)])
    assert closure.missing == [("libw.so", str(only_wrong))]
    assert "another ELF class" in closure.reasons[("libw.so", str(only_wrong))]
    assert_like_ldd(closure, ldd(only_wrong))


def test_a_failed_search_records_skipped_candidates_and_nodeflib(tmp_path: Path) -> None:
    w32 = tmp_path / "w32"
    w32.mkdir()
    _elf32_library(w32, "libw.so")
    good = lib(tmp_path / "w64" / "libw.so")
    prog = exe(tmp_path / "prog", good, *runpath(w32))
    closure = resolve([str(prog)])
    tried = closure.tried[("libw.so", str(prog))]
    assert (tried[0].path, tried[0].rule) == (f"{w32}/libw.so", "DT_RUNPATH")
    assert tried[0].result.startswith("another ELF class or machine")
    assert [t.rule for t in tried[1:]] == ["ld.so.cache"] + ["default directory"] * 4
    # DF_1_NODEFLIB: the cache entry under a default directory is ignored, the directories too.
    libn = lib(tmp_path / "d" / "libn.so", "-Wl,-z,nodefaultlib", "-lz")
    prog = exe(tmp_path / "progn", libn, *runpath(tmp_path / "d"))
    tried = resolve([str(prog)]).tried[("libz.so.1", str(libn))]
    assert tried[0].rule == "ld.so.cache" and tried[0].result == "ignored (DF_1_NODEFLIB)"
    assert {t.result for t in tried[1:]} == {"skipped (DF_1_NODEFLIB)"}
    assert len(tried) == 5


def test_a_non_elf_candidate_stops_the_search(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    good = lib(d2 / "libq.so.1")
    d1.mkdir()
    (d1 / "libq.so.1").write_text("INPUT(-lc)\n")
    prog = exe(tmp_path / "prog", good, *runpath(d1, d2))
    closure = resolve([str(prog)])
    assert closure.missing == [("libq.so.1", str(prog))]
    assert closure.reasons[("libq.so.1", str(prog))] == f"{d1}/libq.so.1: file too short"
    view = ldd(prog)  # ld.so gives up on the whole program with the same complaint
    assert view.returncode != 0 and f"{d1}/libq.so.1: file too short" in view.output


# -- inputs ----------------------------------------------------------------------------------


def test_shell_script_brings_its_interpreter_closure(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh -e\necho hi\n")
    closure = resolve([str(script)])
    assert [i.path for i in closure.inputs] == [str(script)]
    sh = closure.libraries[0]
    assert (sh.name, sh.path, sh.rule, sh.needed_by) == (
        "/bin/sh",
        "/bin/sh",
        "#! interpreter",
        str(script),
    )
    rest = {lib.realpath for lib in closure.libraries[1:]}
    assert rest == ldd(os.path.realpath("/bin/sh")).realpaths


def test_env_script_resolves_the_command_through_path(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/env") or not shutil.which("python3"):
        pytest.skip("needs /usr/bin/env and python3")
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env -S python3 -u\nprint(1)\n")
    closure = resolve([str(script)])
    rules = {lib.name: lib.rule for lib in closure.libraries}
    assert rules["/usr/bin/env"] == "#! interpreter"
    assert rules["python3"] == "#! interpreter (env PATH)"
    py = next(lib for lib in closure.libraries if lib.name == "python3")
    first = next(f"{d}/python3" for d in DEFAULT_PATH if os.access(f"{d}/python3", os.X_OK))
    assert (py.path, py.realpath) == (first, os.path.realpath(first))
    want = ldd(py.realpath).realpaths | ldd(os.path.realpath("/usr/bin/env")).realpaths
    assert {lib.realpath for lib in closure.libraries} == want | {
        py.realpath,
        os.path.realpath("/usr/bin/env"),
    }


def test_script_interpreted_by_a_script(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.write_text('#!/bin/sh\nexec "$@"\n')
    inner.chmod(0o755)
    outer = tmp_path / "outer"
    outer.write_text(f"#!{inner}\n")
    closure = resolve([str(outer)])
    chain = [(lib.name, lib.rule, lib.needed_by) for lib in closure.libraries[:2]]
    assert chain == [
        (str(inner), "#! interpreter", str(outer)),
        ("/bin/sh", "#! interpreter", str(inner)),
    ]
    assert {lib.realpath for lib in closure.libraries[2:]} == ldd(
        os.path.realpath("/bin/sh")
    ).realpaths


def test_missing_script_interpreter_is_reported(tmp_path: Path) -> None:
    script = tmp_path / "odd"
    script.write_text("#!/no/such/shell\n")
    closure = resolve([str(script)])
    assert closure.missing == [("/no/such/shell", str(script))]


def test_mixed_classes_are_refused(tmp_path: Path) -> None:
    w32 = _elf32_library(tmp_path, "libw32.so")
    with pytest.raises(UserError, match=r"ELF32 i386.*ELF64 x86-64.*one ELF class"):
        resolve(["/bin/true", str(w32)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9), p)[1], "not a valid ELF"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, make: object, message: str) -> None:
    target = make(tmp_path / "input")  # type: ignore[operator]
    with pytest.raises(UserError, match=message) as err:
        resolve([str(target)])
    assert "\n" not in str(err.value) and str(target) in str(err.value)


# -- --root ----------------------------------------------------------------------------------


def test_confined_realpath_never_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "lib").symlink_to("/usr/lib")  # absolute: must restart at the root
    (root / "up").symlink_to("../../../../../../usr")  # relative: ".." stops at the root
    (root / "loop").symlink_to("loop")
    assert confined_realpath(str(root), "/lib/x") == f"{root}/usr/lib/x"
    assert confined_realpath(str(root), "/up/lib") == f"{root}/usr/lib"
    assert confined_realpath(str(root), "/../../etc/passwd") == f"{root}/etc/passwd"
    with pytest.raises(OSError):
        confined_realpath(str(root), "/loop/x")


def mini_root(base: Path) -> Path:
    """A root with the host's loader and libc reached only through absolute symlinks."""
    root = base / "root"
    multi = root / "usr" / "lib" / "x86_64-linux-gnu"
    multi.mkdir(parents=True)
    for host in (LDSO, "/lib/x86_64-linux-gnu/libc.so.6"):
        shutil.copy(os.path.realpath(host), multi / os.path.basename(host))
    (root / "lib").symlink_to("/usr/lib")
    (root / "usr" / "lib64").mkdir()
    (root / "usr" / "lib64" / "ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    (root / "lib64").symlink_to("/usr/lib64")
    (root / "usr" / "bin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    (root / "etc").mkdir()
    return root


def chroot_list(root: Path, prog: str) -> LddView:
    """What ldd does (ld.so with LD_TRACE_LOADED_OBJECTS=1), inside a chroot of ``root``."""
    res = run_in_root(root, [LDSO, prog], LD_TRACE_LOADED_OBJECTS="1")
    view = parse_ldd(res.stdout, res.returncode, res.stdout + res.stderr)
    view.realpaths = {confined_realpath(str(root), p) for p in view.paths.values()}
    return view


def test_root_resolves_everything_inside_the_root(tmp_path: Path) -> None:
    root = mini_root(tmp_path)
    opt = root / "opt" / "lib"
    libo = lib(opt / "libo.so.1", "-lz")  # libz exists on the host but not in the root
    prog = exe(root / "usr" / "bin" / "prog", libo, f"-Wl,-rpath-link,{opt}", *rpath("/opt/lib"))
    closure = resolve(["/bin/prog"], root=str(root))
    assert closure.inputs[0].path == "/bin/prog"
    assert closure.inputs[0].realpath == str(prog)
    for item in closure.libraries:
        assert item.path.startswith("/") and not item.path.startswith(str(root))
        assert item.realpath.startswith(str(root) + "/")
    libs = by_name(closure)
    assert libs["libo.so.1"].rule == "DT_RPATH of /bin/prog"
    assert libs[LDSO].realpath == f"{root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert closure.missing == [("libz.so.1", "/opt/lib/libo.so.1")]
    if not can_chroot(tmp_path):
        pytest.skip("chroot is not permitted here: cannot ask ld.so itself")
    view = chroot_list(root, "/bin/prog")
    assert_like_ldd(closure, view)


def test_root_uses_the_roots_own_ld_so_cache(tmp_path: Path) -> None:
    if not can_chroot(tmp_path):
        pytest.skip("ldconfig -r and ld.so --list need chroot, which is not permitted here")
    root = mini_root(tmp_path)
    opt = root / "opt" / "lib"
    libo = lib(opt / "libo.so.1")
    exe(root / "usr" / "bin" / "prog", libo)
    (root / "etc" / "ld.so.conf").write_text("/opt/lib\n")
    subprocess.run(["ldconfig", "-r", str(root), "-X"], check=True, timeout=60)
    closure = resolve(["/usr/bin/prog"], root=str(root))
    assert by_name(closure)["libo.so.1"].rule == "ld.so.cache"
    assert_like_ldd(closure, chroot_list(root, "/usr/bin/prog"))
    closure = resolve(["/usr/bin/prog"], root=str(root), use_ld_cache=False)
    assert closure.missing == [("libo.so.1", "/usr/bin/prog")]


def test_env_script_inside_a_root_uses_the_roots_path(tmp_path: Path) -> None:
    root = mini_root(tmp_path)
    shutil.copy(os.path.realpath("/usr/bin/env"), root / "usr" / "bin" / "env")
    tool = exe(root / "usr" / "local" / "bin" / "litebox-test-tool", "-lc")
    script = root / "usr" / "bin" / "run"
    script.write_text("#!/usr/bin/env litebox-test-tool\n")
    script.chmod(0o755)
    closure = resolve(["/usr/bin/run"], root=str(root))
    libs = by_name(closure)
    assert libs["/usr/bin/env"].realpath == str(root / "usr" / "bin" / "env")
    found = libs["litebox-test-tool"]
    assert (found.path, found.realpath) == ("/usr/local/bin/litebox-test-tool", str(tool))
    assert found.rule == "#! interpreter (env PATH)" and found.needed_by == "/usr/bin/run"
    assert closure.missing == []
    assert all(lib.realpath.startswith(str(root) + "/") for lib in closure.libraries)
    if not can_chroot(tmp_path):
        pytest.skip("chroot is not permitted here: cannot run the script in its root")
    ran = run_in_root(root, ["/usr/bin/run"], PATH=":".join(DEFAULT_PATH))
    assert ran.returncode == 0, ran.stderr


def test_root_accepts_a_host_path_inside_the_root(tmp_path: Path) -> None:
    root = mini_root(tmp_path)
    prog = exe(root / "usr" / "bin" / "prog", "-lc")
    closure = resolve([str(prog)], root=str(root))
    assert closure.inputs[0].path == "/usr/bin/prog"
    assert all(lib.realpath.startswith(str(root)) for lib in closure.libraries)


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        resolve(["/bin/true"], root=str(tmp_path / "nope"))


def test_cpu_levels_are_cumulative() -> None:
    cpu = CpuInfo("AuthenticAMD", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq"}))
    assert cpu.x86_64_levels() == 1  # v4 features without v2/v3 do not make a level
    model = loader_model(64, EM_X86_64, cpu)
    assert not any(s.startswith("glibc-hwcaps/") for s in model.subdirs)
    assert model.platform == "x86_64" and model.subdirs[-1] == ""
    intel = CpuInfo(
        "GenuineIntel",
        frozenset(
            {"cx16", "lahf_lm", "popcnt", "pni", "ssse3", "sse4_1", "sse4_2", "avx", "avx2"}
            | {"bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
        ),
    )
    assert loader_model(64, EM_X86_64, intel).platform == "haswell"
    assert loader_model(64, EM_X86_64, intel).cache.platform_bit == 1 << 50
