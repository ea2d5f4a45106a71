"""ld.so.cache reading and writing, checked against glibc's own ldconfig and ld.so."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packager.ldcache import (
    FLAG_ELF_LIBC6,
    FLAGS_X86_64,
    HWCAP_EXTENSION,
    NEW_HEADER,
    OLD_MAGIC,
    CacheEntry,
    CacheSelector,
    LdCacheError,
    _libcmp_key,
    build_ldcache,
    libcmp,
    load_ldcache,
    parse_ldcache,
)
from packager.resolve import CpuInfo, loader_model, resolve
from rewriter.elf import EM_386, EM_X86_64
from tests.test_resolve import LDSO, by_name, can_chroot, chroot_list, exe, lib, mini_root

SYSTEM_CACHE = Path("/etc/ld.so.cache")
X86_64 = loader_model(64, EM_X86_64, CpuInfo.host()).cache

needs_cache = pytest.mark.skipif(not SYSTEM_CACHE.is_file(), reason="no /etc/ld.so.cache here")
needs_ldconfig = pytest.mark.skipif(shutil.which("ldconfig") is None, reason="needs ldconfig")


def ldconfig_print(cache: Path) -> list[str]:
    """The entry lines of ``ldconfig -p -C cache`` (no count line, no generator line)."""
    res = subprocess.run(
        ["ldconfig", "-p", "-C", str(cache)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return [line.strip() for line in res.stdout.splitlines() if "=>" in line]


def describe(entry: CacheEntry) -> str:
    """How ldconfig prints an entry, for the flag combinations used here."""
    # gcc-multilib adds x32 (0x0803) entries and the i386 loader flagged plain ELF (1).
    kinds = {FLAGS_X86_64: "libc6,x86-64", FLAG_ELF_LIBC6: "libc6", 0x0803: "libc6,x32", 1: "ELF"}
    kind = kinds[entry.flags]
    if entry.hwcaps_subdir:
        kind += f', hwcap: "{entry.hwcaps_subdir}"'
    return f"{entry.key} ({kind}) => {entry.value}"


# -- the system cache ------------------------------------------------------------------------


@needs_cache
@needs_ldconfig
def test_system_cache_reads_like_ldconfig_prints_it() -> None:
    cache = parse_ldcache(SYSTEM_CACHE.read_bytes())
    assert len(cache.entries) > 0
    assert [describe(e) for e in cache.entries] == ldconfig_print(SYSTEM_CACHE)
    assert cache.generator is None or cache.generator.startswith("ldconfig")


@needs_cache
def test_lookup_agrees_with_the_loader_for_every_system_name() -> None:
    """For every name in the cache, the walker (which asks the cache) finds what ldd finds."""
    cache = load_ldcache(str(SYSTEM_CACHE))
    assert cache is not None
    mapping = cache.mapping(X86_64)
    assert mapping["libc.so.6"].endswith("/libc.so.6")
    # Every name maps to its first usable entry, as ld.so's search stops at the first one.
    for name, path in mapping.items():
        first = next(e for e in cache.entries if e.key == name and e.flags == FLAGS_X86_64)
        assert path == first.value
    # And ld.so really uses that path for a real program.
    view = subprocess.run(["ldd", "/bin/true"], capture_output=True, text=True).stdout
    assert f"libc.so.6 => {mapping['libc.so.6']} " in view


@needs_cache
@needs_ldconfig
def test_built_cache_round_trips_and_ldconfig_reads_it(tmp_path: Path) -> None:
    cache = parse_ldcache(SYSTEM_CACHE.read_bytes())
    shuffled = list(cache.entries)
    random.Random(7).shuffle(shuffled)
    built = tmp_path / "ld.so.cache"
    built.write_bytes(build_ldcache(shuffled))
    again = parse_ldcache(built.read_bytes())
    # Sorted back into ldconfig's own order (names descending as ld.so binary-searches them).
    assert again.entries == cache.entries
    assert again.generator is not None and again.generator.startswith("litebox-pack")
    assert ldconfig_print(built) == ldconfig_print(SYSTEM_CACHE)


# -- caches made by ldconfig and read by ld.so ----------------------------------------------


def _hwcaps_root(tmp_path: Path, level: str) -> Path:
    root = mini_root(tmp_path)
    opt = root / "opt" / "lib"
    plain = lib(opt / "libhw.so.1")
    (opt / "glibc-hwcaps" / level).mkdir(parents=True)
    shutil.copy(plain, opt / "glibc-hwcaps" / level / "libhw.so.1")
    exe(root / "usr" / "bin" / "prog", plain)
    (root / "etc" / "ld.so.conf").write_text("/opt/lib\n")
    return root


@needs_ldconfig
def test_glibc_hwcaps_entries_from_ldconfig_pick_what_ld_so_picks(tmp_path: Path) -> None:
    if not can_chroot(tmp_path):
        pytest.skip("ldconfig -r and a chrooted ld.so need chroot, which is not permitted here")
    root = _hwcaps_root(tmp_path, "x86-64-v2")
    subprocess.run(["ldconfig", "-r", str(root), "-X"], check=True, timeout=60)
    cache = parse_ldcache((root / "etc" / "ld.so.cache").read_bytes())
    ext = [e for e in cache.entries if e.key == "libhw.so.1"]
    assert [e.hwcaps_subdir for e in ext] == ["x86-64-v2", None]  # extension entries first
    assert ext[0].is_hwcaps_extension and ext[0].hwcap & HWCAP_EXTENSION
    v2 = CacheSelector(frozenset({FLAGS_X86_64}), FLAGS_X86_64, ("x86-64-v2",), frozenset({0, 1}))
    baseline = CacheSelector(frozenset({FLAGS_X86_64}), FLAGS_X86_64)
    assert cache.lookup("libhw.so.1", v2) == ext[0]
    assert cache.lookup("libhw.so.1", baseline) == ext[1]
    # What this machine's ld.so picks, and the walker with it.
    view = chroot_list(root, "/usr/bin/prog")
    closure = resolve(["/usr/bin/prog"], root=str(root))
    assert by_name(closure)["libhw.so.1"].path == view.paths["libhw.so.1"]
    assert cache.lookup("libhw.so.1", X86_64).value == view.paths["libhw.so.1"]  # type: ignore[union-attr]
    # Rebuilt by us, the hwcaps entry survives and ldconfig still names its subdirectory.
    ours = tmp_path / "rebuilt.cache"
    ours.write_bytes(build_ldcache(cache.entries))
    assert parse_ldcache(ours.read_bytes()).entries == cache.entries
    assert ldconfig_print(ours) == ldconfig_print(root / "etc" / "ld.so.cache")


def test_ld_so_finds_a_library_through_a_cache_we_built(tmp_path: Path) -> None:
    if not can_chroot(tmp_path):
        pytest.skip("running ld.so against another cache needs chroot, not permitted here")
    root = mini_root(tmp_path)
    custom = lib(root / "opt" / "custom" / "libcustom.so.1")
    exe(root / "usr" / "bin" / "prog", custom)
    before = chroot_list(root, "/usr/bin/prog")
    assert before.missing == {"libcustom.so.1"}
    entries = [
        ("libcustom.so.1", "/opt/custom/libcustom.so.1"),
        ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
    ]
    (root / "etc" / "ld.so.cache").write_bytes(build_ldcache(entries))
    after = chroot_list(root, "/usr/bin/prog")
    assert after.returncode == 0 and not after.missing
    assert after.paths["libcustom.so.1"] == "/opt/custom/libcustom.so.1"
    closure = resolve(["/usr/bin/prog"], root=str(root))
    assert by_name(closure)["libcustom.so.1"].rule == "ld.so.cache"
    assert {lib.realpath for lib in closure.libraries} == after.realpaths


# -- other layouts ---------------------------------------------------------------------------


def _old_block(entries: list[tuple[str, str]]) -> bytes:
    """An old-format ``ld.so-1.7.0`` cache; its strings follow the entry table."""
    strings = bytearray()
    table = bytearray()
    for key, value in entries:
        k = len(strings)
        strings += key.encode() + b"\0"
        v = len(strings)
        strings += value.encode() + b"\0"
        table += struct.pack("<iII", FLAGS_X86_64, k, v)
    return OLD_MAGIC + b"\0" + struct.pack("<I", len(entries)) + bytes(table) + bytes(strings)


@needs_ldconfig
def test_new_format_behind_an_old_block(tmp_path: Path) -> None:
    pairs = [("libb.so.2", "/usr/lib/libb.so.2"), ("liba.so.1", "/usr/lib/liba.so.1")]
    old = OLD_MAGIC + b"\0" + struct.pack("<I", 1) + struct.pack("<iII", FLAGS_X86_64, 0, 0)
    pad = b"\0" * (-len(old) % 8)
    new = bytearray(build_ldcache(pairs))
    # The extension directory's offset counts from the file start: shift it past the prefix.
    (ext,) = struct.unpack_from("<I", new, 32)
    struct.pack_into("<I", new, 32, ext + len(old) + len(pad))
    gen_off = struct.unpack_from("<I", new, ext + 8 + 8)[0]
    struct.pack_into("<I", new, ext + 8 + 8, gen_off + len(old) + len(pad))
    path = tmp_path / "compat.cache"
    path.write_bytes(old + pad + bytes(new))
    cache = parse_ldcache(path.read_bytes())
    assert [(e.key, e.value) for e in cache.entries] == pairs
    assert cache.generator is not None and cache.generator.startswith("litebox-pack")
    assert ldconfig_print(path) == [f"{k} (libc6,x86-64) => {v}" for k, v in pairs]


@needs_ldconfig
def test_old_format_only(tmp_path: Path) -> None:
    pairs = [("libold.so.1", "/lib/libold.so.1")]
    path = tmp_path / "old.cache"
    path.write_bytes(_old_block(pairs))
    cache = parse_ldcache(path.read_bytes())
    assert [(e.key, e.value, e.flags) for e in cache.entries] == [(*pairs[0], FLAGS_X86_64)]
    assert ldconfig_print(path) == ["libold.so.1 (libc6,x86-64) => /lib/libold.so.1"]


@needs_ldconfig
def test_each_class_gets_its_own_entries(tmp_path: Path) -> None:
    entries = [
        CacheEntry("libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1", FLAGS_X86_64),
        CacheEntry("libz.so.1", "/usr/lib/i386-linux-gnu/libz.so.1", FLAG_ELF_LIBC6),
        CacheEntry("lib32only.so", "/usr/lib32/lib32only.so", FLAG_ELF_LIBC6),
    ]
    path = tmp_path / "multi.cache"
    path.write_bytes(build_ldcache(entries))
    cache = parse_ldcache(path.read_bytes())
    i386 = loader_model(32, EM_386, CpuInfo.host()).cache
    assert cache.mapping(X86_64) == {"libz.so.1": "/usr/lib/x86_64-linux-gnu/libz.so.1"}
    assert cache.mapping(i386) == {
        "libz.so.1": "/usr/lib/i386-linux-gnu/libz.so.1",
        "lib32only.so": "/usr/lib32/lib32only.so",
    }
    assert ldconfig_print(path) == [describe(e) for e in cache.entries]


def test_legacy_hwcap_and_platform_entries_follow_the_loader() -> None:
    tls_bit, x86_64_bit, haswell_bit = 1 << 63, 1 << 1, 1 << 50
    entries = [
        CacheEntry("libp.so", "/lib/haswell/libp.so", hwcap=haswell_bit),
        CacheEntry("libp.so", "/lib/tls/x86_64/libp.so", hwcap=tls_bit | x86_64_bit),
        CacheEntry("libp.so", "/lib/libp.so"),
    ]
    cache = parse_ldcache(build_ldcache(entries))
    plain = CacheSelector(frozenset({FLAGS_X86_64}), FLAGS_X86_64, platform_mask=0xF << 48)
    amd = CacheSelector(
        frozenset({FLAGS_X86_64}), FLAGS_X86_64, hwcap=x86_64_bit, platform_mask=0xF << 48
    )
    haswell = CacheSelector(
        frozenset({FLAGS_X86_64}), FLAGS_X86_64, platform_bit=haswell_bit, platform_mask=0xF << 48
    )
    # ldconfig puts the entry with the most hwcap bits first; the first usable one wins.
    assert [e.value for e in cache.entries] == [
        "/lib/tls/x86_64/libp.so",
        "/lib/haswell/libp.so",
        "/lib/libp.so",
    ]
    assert cache.lookup("libp.so", plain).value == "/lib/libp.so"  # type: ignore[union-attr]
    assert cache.lookup("libp.so", amd).value == "/lib/tls/x86_64/libp.so"  # type: ignore[union-attr]
    assert cache.lookup("libp.so", haswell).value == "/lib/haswell/libp.so"  # type: ignore[union-attr]


# -- refusing bad caches ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a cache at all", "bad magic"),
        (b"glibc-ld.so.cache1.1" + b"\0" * 8, "truncated"),
        (b"glibc-ld.so.cache1.1" + struct.pack("<II", 5, 0) + b"\0" * 20, "too short"),
        (b"glibc-ld.so.cache1.1" + struct.pack("<IIB", 0, 0, 3) + b"\0" * 19, "endian"),
    ],
)
def test_corrupt_caches_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(LdCacheError, match=message):
        parse_ldcache(data)
    path = tmp_path / "bad.cache"
    path.write_bytes(data)
    assert load_ldcache(str(path)) is None  # ld.so goes on without such a cache
    assert load_ldcache(str(tmp_path / "absent")) is None


def test_out_of_range_strings_skip_only_their_entry() -> None:
    good = bytearray(build_ldcache([("liba.so", "/a/liba.so"), ("libb.so", "/b/libb.so")]))
    struct.pack_into("<I", good, NEW_HEADER + 8, 10**6)  # first entry's value offset
    cache = parse_ldcache(bytes(good))
    assert len(cache.entries) == 1


def test_hwcaps_entry_needs_a_subdirectory_name() -> None:
    with pytest.raises(ValueError, match="subdirectory"):
        build_ldcache([CacheEntry("x.so", "/x.so", hwcap=HWCAP_EXTENSION)])


# -- the name order ------------------------------------------------------------------------


def test_libcmp_compares_digit_runs_as_numbers() -> None:
    assert libcmp("libfoo.so.10", "libfoo.so.9") > 0
    assert libcmp("libfoo.so.9", "libfoo.so.10") < 0
    assert libcmp("libfoo.so.01", "libfoo.so.1") == 0
    assert libcmp("libfoo.so", "libfoo.so.1") < 0
    assert libcmp("libz.so", "libz.so") == 0


NAMES = st.text(alphabet="ab.-_019", max_size=10)


@given(NAMES, NAMES)
def test_libcmp_is_antisymmetric_and_its_key_matches_equality(a: str, b: str) -> None:
    x, y = libcmp(a, b), libcmp(b, a)
    assert (x > 0) == (y < 0) and (x == 0) == (y == 0)
    assert (x == 0) == (_libcmp_key(a) == _libcmp_key(b))


@given(st.lists(st.tuples(NAMES.filter(bool), NAMES.filter(bool)), max_size=12))
def test_any_entry_list_round_trips(pairs: list[tuple[str, str]]) -> None:
    data = build_ldcache(pairs)
    cache = parse_ldcache(data)
    assert sorted((e.key, e.value) for e in cache.entries) == sorted(pairs)
    keys = [e.key for e in cache.entries]
    assert all(libcmp(keys[i], keys[i + 1]) >= 0 for i in range(len(keys) - 1))
    for key, _ in pairs:
        hit = cache.lookup(key, X86_64)
        assert hit is not None and libcmp(hit.key, key) == 0


def test_selectors_know_their_loaders() -> None:
    assert X86_64.accepted_flags == {FLAGS_X86_64}
    assert loader_model(32, EM_386, CpuInfo.host()).cache.accepted_flags == {1, FLAG_ELF_LIBC6}
    assert os.path.basename(LDSO) == "ld-linux-x86-64.so.2"
