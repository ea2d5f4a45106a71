"""The cache's size: ``litebox-pack cache`` (show, prune, clear) and the automatic cap."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from packager.cache import RewriteCache
from packager.cache_limit import entries, parse_size, prune

EXE = Path(sys.executable).parent / "litebox-pack"
HOUR = 3600


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env}
    return subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=300
    )


def disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for p in paths:
        os.utime(p, (then, then))


def fake_rewrite_entry(root: Path, key: str, size: int, used_ago: float) -> list[Path]:
    d = root / "rewrite" / key[:2]
    d.mkdir(parents=True, exist_ok=True)
    data, meta = d / f"{key}.bin", d / f"{key}.json"
    data.write_bytes(b"x" * size)
    meta.write_text("{}")
    age([data, meta], used_ago)
    return [data, meta]


def test_prune_removes_least_recently_used_whole_entries(tmp_path: Path) -> None:
    root = tmp_path / "litebox-pack"
    old = fake_rewrite_entry(root, "aa" + "0" * 62, 1000, 3 * HOUR)
    mid = fake_rewrite_entry(root, "ab" + "0" * 62, 1000, 2 * HOUR)
    new = fake_rewrite_entry(root, "ba" + "0" * 62, 1000, 1 * HOUR)
    runtime = root / "runtime" / "0123abcd"
    runtime.mkdir(parents=True)
    (runtime / "litebox-runtime").write_bytes(b"r" * 500)
    age([runtime / "litebox-runtime"], 4 * HOUR)
    assert len(entries(root)) == 4
    removed, freed = prune(root, 2100)
    # The runtime (oldest) and the oldest rewrite entry, both files of it, nothing else.
    assert (removed, freed) == (2, 500 + 1000 + 2)
    assert not runtime.exists() and not any(p.exists() for p in old)
    assert all(p.exists() for p in mid + new)
    assert prune(root, 0) == (2, 2004)
    assert entries(root) == []


def test_a_cache_hit_counts_as_a_use(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path)
    key = "cd" + "1" * 62
    # a consistent entry (get() validates it against the bytes): an unchanged file's copy
    source = tmp_path.with_name(tmp_path.name + "-input")  # outside the cache it measures
    source.write_bytes(b"bytes")
    outcome = {"outcome": "unchanged", "reason": "not an ELF file", "sites": 0}
    meta = {"sha256_out": hashlib.sha256(b"bytes").hexdigest(), "outcome": outcome}
    stored = cache.put(key, b"bytes", meta)
    assert stored is not None
    files = list(stored.parent.iterdir())
    age(files, 5 * HOUR)
    [before] = entries(tmp_path)
    assert cache.get(key, str(source)) is not None
    [after] = entries(tmp_path)
    assert after.last_used - before.last_used > 4 * HOUR


def test_cache_command_shows_prunes_and_clears(tmp_path: Path) -> None:
    assert cli(tmp_path, "/bin/true", "-o", "t.tar", "-q").returncode == 0
    root = tmp_path / "xdg" / "litebox-pack"
    res = cli(tmp_path, "cache")
    assert res.returncode == 0, res.stderr
    assert f"location: {root}" in res.stdout
    doc = json.loads(cli(tmp_path, "cache", "--json").stdout)
    assert doc["location"] == str(root)
    assert doc["size"] == disk_usage(root) > 0
    assert doc["entries"] >= 2  # the program and libc, at least
    assert doc["max_size"] == 2 << 30
    res = cli(tmp_path, "cache", "prune", "--max-size", "1K")
    assert res.returncode == 0, res.stderr
    assert disk_usage(root) <= 1024
    res = cli(tmp_path, "cache", "clear")
    assert res.returncode == 0 and disk_usage(root) == 0
    res = cli(tmp_path, "cache", "prune", "--max-size", "lots")
    assert res.returncode == 2
    assert res.stderr.startswith("litebox-pack: error: --max-size 'lots': not a size")


def test_pack_keeps_the_cache_under_its_cap(tmp_path: Path) -> None:
    root = tmp_path / "xdg" / "litebox-pack"
    stale = fake_rewrite_entry(root, "ee" + "0" * 62, 3 << 20, 48 * HOUR)
    res = cli(tmp_path, "/bin/true", "-o", "t.tar", "-q", LITEBOX_PACK_CACHE_MAX="2M")
    assert res.returncode == 0, res.stderr
    assert not any(p.exists() for p in stale)  # over the cap: the stale entry went
    kept = entries(root)  # this pack's own entries stay: they were just used
    assert kept and all(e.last_used > time.time() - HOUR for e in kept)
    # Without a cap (0), nothing is removed.
    stale = fake_rewrite_entry(root, "ef" + "0" * 62, 3 << 20, 48 * HOUR)
    assert (
        cli(tmp_path, "/bin/true", "-o", "t.tar", "-q", LITEBOX_PACK_CACHE_MAX="0").returncode == 0
    )
    assert all(p.exists() for p in stale)


def test_a_bad_cap_setting_warns_and_the_pack_still_succeeds(tmp_path: Path) -> None:
    res = cli(tmp_path, "/bin/true", "-o", "t.tar", "-q", LITEBOX_PACK_CACHE_MAX="lots")
    assert res.returncode == 0 and (tmp_path / "t.tar").is_file()
    assert res.stderr == (
        "litebox-pack: warning: LITEBOX_PACK_CACHE_MAX: 'lots': not a size (examples: 500M, 2G, "
        "1.5GiB, 4096); the cache is not pruned\n"
    )
    res = cli(tmp_path, "cache", LITEBOX_PACK_CACHE_MAX="lots")
    assert res.returncode == 2 and "LITEBOX_PACK_CACHE_MAX: 'lots'" in res.stderr


def test_sizes_parse_in_binary_units() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("500M") == 500 << 20
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("2g") == 2 << 30
