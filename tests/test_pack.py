"""Host-mode packaging end to end: real programs, strict tar checks, manifest, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.audit import audit_tar
from rewriter import ElfFile, read_trailer, rewrite_elf
from tests.tarcheck import read_strict
from tests.tty import run_on_terminal

EXE = Path(sys.executable).parent / "litebox-pack"


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(Path(cwd or ".").resolve() / ".cache")}
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def ldd_realpaths(program: str) -> set[str]:
    """What the real loader would load (tests only: the product never runs ldd)."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True).stdout
    paths = set()
    for line in out.splitlines():
        m = re.search(r"(/\S+)", line.split("=>")[-1])
        if m:
            paths.add(os.path.realpath(m.group(1)))
    return paths


def manifest_of(members: dict[str, bytes]) -> dict:  # type: ignore[type-arg]
    return json.loads(members["litebox/manifest.json"])


def pack(tmp_path: Path, *args: str | Path) -> tuple[dict[str, bytes], dict[str, int]]:
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = next(Path(a) for i, a in enumerate(args) if i and args[i - 1] == "-o")
    members = read_strict(tmp_path / out)
    return {m.path: m.data for m in members}, {m.path: m.mode for m in members}


def test_pack_ls_matches_ldd_and_the_tar_contract(tmp_path: Path) -> None:
    members, modes = pack(tmp_path, "/bin/ls", "-o", "ls.tar")
    doc = manifest_of(members)
    sources = {os.path.realpath(f["source"]) for f in doc["files"]}
    assert sources == ldd_realpaths("/bin/ls") | {os.path.realpath("/bin/ls")}
    # Every library at the path the loader asks for, the interpreter at its PT_INTERP path,
    # the input at its absolute path.
    assert "bin/ls" in members
    interp = ElfFile(Path("/bin/ls").read_bytes()).interpreter
    assert interp is not None and interp.lstrip("/") in members
    for f in doc["files"]:
        for p in f["paths"]:
            assert hashlib.sha256(members[p]).hexdigest() == f["sha256_out"]
            assert modes[p] == f["mode"]
        src = Path(f["source"]).read_bytes()
        assert hashlib.sha256(src).hexdigest() == f["sha256_in"]
        expected = rewrite_elf(src).data
        assert hashlib.sha256(expected).hexdigest() == f["sha256_out"]
    libc = next(f for f in doc["files"] if f["source"].endswith("/libc.so.6"))
    assert libc["outcome"] == "patched" and libc["sites"] == 526 and libc["fork_patch"]
    assert doc["options"] == {
        "abi": "redzone",
        "unpatchable": "fail",
        "fork_patch": True,
        "data_guard": True,
    }
    hooked = tmp_path / "ls.hooked"
    assert hooked.stat().st_mode & 0o777 == 0o755
    assert hooked.read_bytes() == members["bin/ls"]
    report = audit_tar(tmp_path / "ls.tar")
    assert report.failures("any") == []


def test_pack_is_deterministic_with_and_without_cache(tmp_path: Path) -> None:
    a, _ = pack(tmp_path, "/usr/bin/python3", "-o", "a.tar", "--no-cache")
    pack(tmp_path, "/usr/bin/python3", "-o", "b.tar")
    pack(tmp_path, "/usr/bin/python3", "-o", "c.tar", "-j", "1")
    digest = {n: hashlib.sha256((tmp_path / f"{n}.tar").read_bytes()).hexdigest() for n in "abc"}
    assert len(set(digest.values())) == 1, digest
    doc = manifest_of(a)
    outcomes = {Path(f["source"]).name: f["outcome"] for f in doc["files"]}
    assert outcomes["python3.11"] == "checked-nothing-to-patch"
    assert outcomes["libc.so.6"] == "patched"


def test_pack_static_and_dynamic_samples(tmp_path: Path, build_sample) -> None:  # type: ignore[no-untyped-def]
    for kind in ("static", "static-pie", "dynamic"):
        exe = build_sample("hello.c", kind)
        members, _ = pack(tmp_path, exe, "-o", f"{kind}.tar")
        doc = manifest_of(members)
        main = doc["files"][0]
        assert main["included_because"] == [{"kind": "input"}]
        assert main["outcome"] == "patched"
        assert read_trailer(members[str(exe).lstrip("/")]) is not None
        if kind != "dynamic":
            assert len(doc["files"]) == 1


def test_pack_json_and_default_output_name(tmp_path: Path) -> None:
    shutil.copy("/usr/bin/true", tmp_path / "true")
    res = cli("true", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["output"] == "true.tar" and doc["hooked"] == "true.hooked"
    assert (tmp_path / "true.tar").exists() and (tmp_path / "true.hooked").exists()
    assert doc["files"] == len(
        manifest_of({m.path: m.data for m in read_strict(tmp_path / "true.tar")})["files"]
    )
    assert "--initial-files true.tar" in doc["runner"]


def test_include_and_no_rewrite(tmp_path: Path, libc_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "a.txt").write_text("a")
    (data_dir / "sub" / "b.txt").write_text("b")
    members, _ = pack(
        tmp_path,
        "/bin/true",
        "-o",
        "t.tar",
        "--include",
        f"{data_dir}:/srv/data",
        "--include",
        "/usr/lib/x86_64-linux-gnu/libz.so.1:opt/libz.so.1",
        "--no-rewrite",
        str(libc_path),
    )
    assert members["srv/data/a.txt"] == b"a" and members["srv/data/sub/b.txt"] == b"b"
    assert read_trailer(members["opt/libz.so.1"]) is not None  # ELF includes are rewritten
    doc = manifest_of(members)
    libc = next(f for f in doc["files"] if f["source"] == str(libc_path))
    assert libc["outcome"] == "unchanged" and libc["reason"] == "--no-rewrite"
    assert libc["sha256_in"] == libc["sha256_out"]
    inc = next(f for f in doc["files"] if "srv/data/a.txt" in f["paths"])
    assert inc["included_because"] == [{"kind": "include", "spec": f"{data_dir}:/srv/data"}]


def test_shell_script_input_brings_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    members, _ = pack(tmp_path, script, "-o", "s.tar")
    assert members[str(script).lstrip("/")] == script.read_bytes()
    assert "bin/sh" in members or "usr/bin/sh" in members
    sources = {f["source"] for f in manifest_of(members)["files"]}
    assert os.path.realpath("/bin/sh") in sources


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if ".cache" not in p.parts)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["missing-file", "-o", "x.tar"], "missing-file", 1),
        ([".", "-o", "x.tar"], "directory", 1),
        (["bad.elf", "-o", "x.tar"], "bad.elf", 1),
        (["needs-missing", "-o", "x.tar"], "libdoesnotexist.so.7", 1),
        (["/bin/true", "-o", "x.tar", "--include", ":bin/x"], "HOST_PATH:TAR_PATH", 2),
        (["/bin/true", "-o", "x.tar", "--include", "nocolon"], "nocolon: no such file", 1),
        (["/bin/true", "-o", "x.tar", "--include", "bad.elf:bin/true"], "duplicate tar path", 1),
        (["/bin/true", "-o", "nodir/x.tar"], "does not exist", 1),
        (["/bin/true", "-o", "outdir"], "directory", 1),
        (["/bin/true", "-o", "x.tar", "--include", "nowhere:/a"], "nowhere", 1),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    (tmp_path / "bad.elf").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00")
    (tmp_path / "outdir").mkdir()
    src = tmp_path / "needs.c"
    src.write_text("int main(void){return 0;}\n")
    lib = tmp_path / "libdoesnotexist.so.7"
    subprocess.run(
        ["gcc", "-shared", "-o", lib, "-x", "c", "/dev/null", "-Wl,-soname,libdoesnotexist.so.7"],
        check=True,
    )
    subprocess.run(
        ["gcc", "-o", tmp_path / "needs-missing", src, "-Wl,--no-as-needed", str(lib)], check=True
    )
    lib.unlink()
    before = listing(tmp_path)
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert listing(tmp_path) == before


def test_root_reads_only_inside_the_root(tmp_path: Path) -> None:
    """A rootfs with an absolute directory symlink and a library that differs from the host's:
    the bundle must hold the rootfs's bytes, found through links resolved inside the root."""
    root = tmp_path / "rootfs"
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    for lib in ldd_realpaths("/bin/ls") - {os.path.realpath("/bin/ls")}:
        shutil.copy2(lib, libdir / os.path.basename(lib))
    for soname, real in (("libpcre2-8.so.0", "libpcre2-8.so.0.*"),):
        target = next(libdir.glob(real))
        os.symlink(target.name, libdir / soname)  # relative link, as packages ship them
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/ls", root / "usr/bin/ls")
    os.symlink("/usr/bin", root / "bin")  # absolute: must mean <root>/usr/bin, not the host's
    os.symlink("/usr/lib", root / "lib")
    (root / "lib64").mkdir()
    os.symlink(
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root / "lib64/ld-linux-x86-64.so.2"
    )
    # Make the rootfs's libselinux different from the host's (a trailing zero byte is harmless).
    selinux = next(root.rglob("libselinux.so.1"))
    selinux.write_bytes(selinux.read_bytes() + b"\0")
    members, _ = pack(tmp_path, "/bin/ls", "--root", root, "-o", "root.tar")
    doc = manifest_of(members)
    for f in doc["files"]:
        assert f["source"].startswith(str(root) + "/"), f["source"]
    entry = next(f for f in doc["files"] if f["source"].endswith("libselinux.so.1"))
    assert entry["sha256_in"] == hashlib.sha256(selinux.read_bytes()).hexdigest()
    assert "bin/ls" in members and "lib64/ld-linux-x86-64.so.2" in members


def test_library_found_only_through_library_path_gets_a_bundle_cache(
    tmp_path: Path,
) -> None:
    """A library outside every default directory is found with --library-path; the bundle then
    carries an ld.so.cache of its own, and the program runs from the bundle alone."""
    libdir = tmp_path / "opt" / "mylibs"
    libdir.mkdir(parents=True)
    (tmp_path / "greet.c").write_text('#include <stdio.h>\nvoid greet(void){puts("greetings");}\n')
    (tmp_path / "main.c").write_text("void greet(void);\nint main(void){greet();return 0;}\n")
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            libdir / "libgreet.so.1",
            tmp_path / "greet.c",
            "-Wl,-soname,libgreet.so.1",
        ],
        check=True,
    )
    subprocess.run(
        ["gcc", "-o", tmp_path / "greeter", tmp_path / "main.c", "-L", libdir, "-l:libgreet.so.1"],
        check=True,
    )
    res = cli(tmp_path / "greeter", "-o", "g.tar", cwd=tmp_path)
    assert res.returncode == 1 and "libgreet.so.1" in res.stderr  # not findable without help
    members, _ = pack(tmp_path, tmp_path / "greeter", "-o", "g.tar", "--library-path", libdir)
    assert "etc/ld.so.cache" in members
    lib_member = str(libdir / "libgreet.so.1").lstrip("/")
    assert lib_member in members
    from packager.ldcache import parse_ldcache

    cache = parse_ldcache(members["etc/ld.so.cache"])
    assert any(e.key == "libgreet.so.1" and e.value == "/" + lib_member for e in cache.entries)
    run = subprocess.run(
        [str(EXE), "run", str(tmp_path / "g.tar"), "--", str(tmp_path / "greeter")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "greetings\n"


def test_fifo_input_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    res = cli("pipe", "-o", "x.tar", cwd=tmp_path)
    assert res.returncode == 1 and "not a regular file" in res.stderr
    assert not (tmp_path / "x.tar").exists()


def test_i386_program_with_a_library_path_library(tmp_path: Path) -> None:
    """ELF32: the i386 loader's rules, an ld.so.cache flagged for i386, stubs audited as i386."""
    if not Path("/lib/ld-linux.so.2").exists():
        pytest.skip("no i386 loader (apt-get install gcc-multilib)")
    libdir = tmp_path / "opt32"
    libdir.mkdir()
    (tmp_path / "v.c").write_text("int value(void){return 7;}\n")
    (tmp_path / "m.c").write_text("int value(void);\nint main(void){return value();}\n")
    subprocess.run(
        [
            "gcc",
            "-m32",
            "-shared",
            "-fPIC",
            "-o",
            libdir / "libv.so.1",
            tmp_path / "v.c",
            "-Wl,-soname,libv.so.1",
        ],
        check=True,
    )
    subprocess.run(
        ["gcc", "-m32", "-o", tmp_path / "m32", tmp_path / "m.c", "-L", libdir, "-l:libv.so.1"],
        check=True,
    )
    members, _ = pack(tmp_path, tmp_path / "m32", "-o", "m.tar", "--library-path", libdir)
    from packager.ldcache import FLAG_ELF_LIBC6, parse_ldcache

    entries = parse_ldcache(members["etc/ld.so.cache"]).entries
    assert {e.flags for e in entries} == {FLAG_ELF_LIBC6}
    assert "lib/ld-linux.so.2" in members
    report = audit_tar(tmp_path / "m.tar")
    assert report.abi == "i386" and report.failures("any") == []


def test_two_packagers_share_one_cache_safely(tmp_path: Path) -> None:
    """Two packagers filling the same empty cache at once: both succeed with identical tars, and
    a third run, served from the cache, produces the same bytes."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "shared-cache")}
    cmds = [
        [str(EXE), "/usr/bin/python3", "-o", f"{name}.tar", "-q", "-j", "2"]
        for name in ("one", "two")
    ]
    procs = [
        subprocess.Popen(c, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    third = subprocess.run(
        [str(EXE), "/usr/bin/python3", "-o", "three.tar", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["cached"] >= 2  # libc and ld.so came from the cache
    tars = {(tmp_path / f"{n}.tar").read_bytes() for n in ("one", "two", "three")}
    assert len(tars) == 1


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    """On a terminal, a progress bar and the summary table go to stderr; with pipes (CI, scripts)
    only the summary is printed."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "c"), "COLUMNS": "100"}
    argv = [str(EXE), "/usr/bin/python3", "-o", str(tmp_path / "t.tar"), "--no-cache"]
    status, text = run_on_terminal(argv, env)
    assert status == 0
    assert "rewriting" in text and "checked-nothing-to-patch" in text
    piped = cli("/usr/bin/python3", "-o", "p.tar", "--no-cache", cwd=tmp_path)
    assert piped.returncode == 0 and "rewriting" not in piped.stderr and "files" in piped.stderr


def test_a_path_that_does_not_fit_ustar_is_refused_before_writing(tmp_path: Path) -> None:
    long_name = "/".join(["d" * 60] * 5) + "/file"  # no split fits name (100) + prefix (155)
    (tmp_path / "data").write_text("x")
    res = cli("/bin/true", "-o", "x.tar", "--include", f"data:{long_name}", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.count("\n") == 1 and "d" * 60 in res.stderr
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "x.hooked").exists()
