"""``litebox-pack deps`` end to end, through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from packager.resolve import resolve
from tests.test_resolve import exe, lib, mini_root, rpath, runpath

EXE = Path(sys.executable).parent / "litebox-pack"


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=clean, timeout=120
    )


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("litebox-pack: error: ")
    return res.stderr.strip()


def test_tree_shows_each_library_under_its_first_needer(tmp_path: Path) -> None:
    d = tmp_path / "d"
    libb = lib(d / "libb.so")
    liba = lib(d / "liba.so", libb)
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d}", *rpath(d))
    res = cli("deps", prog, cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    lines = res.stdout.splitlines()
    assert lines[0] == str(prog)
    assert lines[1] == "├── /lib64/ld-linux-x86-64.so.2 [interpreter]"
    assert lines[2] == f"├── liba.so => {liba} [DT_RPATH of {prog}]"
    assert lines[3] == f"│   └── libb.so => {libb} [DT_RPATH of {prog}]"
    assert lines[4].startswith("└── libc.so.6 => ") and lines[4].endswith("[ld.so.cache]")
    assert len(lines) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "prog", "prog.c"]  # wrote nothing


def test_every_library_of_a_system_program_is_listed_with_its_rule() -> None:
    res = cli("deps", "/bin/ls")
    assert res.returncode == 0, res.stderr
    closure = resolve(["/bin/ls"])
    for item in closure.libraries:
        shown = item.path if item.name == item.path else f"{item.name} => {item.path}"
        assert any(line.endswith(f"── {shown} [{item.rule}]") for line in res.stdout.splitlines())


def test_json_is_the_closure(tmp_path: Path) -> None:
    res = cli("deps", "--json", "/bin/true", "/bin/ls")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc == {"format": 1, **resolve(["/bin/true", "/bin/ls"]).to_json()}
    assert [i["path"] for i in doc["inputs"]] == ["/bin/true", "/bin/ls"]
    assert doc["missing"] == []
    reals = [item["realpath"] for item in doc["libraries"]]
    assert len(reals) == len(set(reals))


def test_missing_library_is_shown_and_exits_1_with_one_line(tmp_path: Path) -> None:
    d = tmp_path / "d"
    libb = lib(d / "libb.so")
    liba = lib(d / "liba.so", libb)
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d}", *runpath(d))
    res = cli("deps", prog)
    assert res.returncode == 1
    assert "│   └── libb.so => not found" in res.stdout
    assert one_error_line(res) == (
        f"litebox-pack: error: 1 missing library: libb.so (needed by {liba})"
    )
    res = cli("deps", "--json", prog)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    [item] = doc["missing"]
    assert {k: item[k] for k in ("name", "needed_by", "reason")} == {
        "name": "libb.so",
        "needed_by": str(liba),
        "reason": "not found",
    }
    one_error_line(res)


def test_missing_library_lists_every_place_tried_with_its_rule(tmp_path: Path) -> None:
    # Like libtree: the DT_RUNPATH directories, ld.so.cache, the default directories, in order.
    d, other = tmp_path / "d", tmp_path / "other"
    libb = lib(d / "libb.so")
    liba = lib(d / "liba.so", libb, *runpath(other))  # libb is not in liba's DT_RUNPATH
    prog = exe(tmp_path / "prog", liba, f"-Wl,-rpath-link,{d}", *runpath(d))
    res = cli("deps", "--json", prog)
    assert res.returncode == 1
    [item] = json.loads(res.stdout)["missing"]
    tried = [(t["path"], t["rule"], t["result"]) for t in item["tried"]]
    assert tried == [
        (f"{other}/libb.so", "DT_RUNPATH", "absent"),
        ("/etc/ld.so.cache", "ld.so.cache", "no entry"),
        ("/lib/x86_64-linux-gnu/libb.so", "default directory", "absent"),
        ("/usr/lib/x86_64-linux-gnu/libb.so", "default directory", "absent"),
        ("/lib/libb.so", "default directory", "absent"),
        ("/usr/lib/libb.so", "default directory", "absent"),
    ]
    text = cli("deps", prog).stdout.splitlines()
    at = text.index("│   └── libb.so => not found")
    assert text[at + 1 : at + 3] == [
        f"│         tried {other}/libb.so [DT_RUNPATH]: absent",
        "│         tried /etc/ld.so.cache [ld.so.cache]: no entry",
    ]
    # pack says the same in its one-line error, and writes nothing.
    out = tmp_path / "out.tar"
    res = cli("pack", prog, "-o", out)
    assert res.returncode == 1 and not out.exists()
    assert one_error_line(res) == (
        f"litebox-pack: error: 1 missing library: libb.so (needed by {liba}; tried DT_RUNPATH "
        f"{other}/libb.so, ld.so.cache /etc/ld.so.cache: no entry, default directory "
        "/lib/x86_64-linux-gnu/libb.so /usr/lib/x86_64-linux-gnu/libb.so /lib/libb.so "
        "/usr/lib/libb.so)"
    )


def test_library_path_option(tmp_path: Path) -> None:
    d = tmp_path / "d"
    liba = lib(d / "liba.so")
    prog = exe(tmp_path / "prog", liba)
    assert cli("deps", prog).returncode == 1
    res = cli("deps", "--library-path", f"/nonexistent:{d}", prog)
    assert res.returncode == 0, res.stderr
    assert f"liba.so => {liba} [--library-path]" in res.stdout


def test_root_option_prints_target_paths(tmp_path: Path) -> None:
    root = mini_root(tmp_path)
    exe(root / "usr" / "bin" / "prog", "-lc")
    res = cli("deps", "--root", root, "/usr/bin/prog")
    assert res.returncode == 0, res.stderr
    assert str(root) not in res.stdout
    assert "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 [default directory]" in res.stdout
    doc = json.loads(cli("deps", "--json", "--root", root, "/usr/bin/prog").stdout)
    assert all(item["realpath"].startswith(str(root)) for item in doc["libraries"])


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 40)
    cases = [
        (tmp_path / "absent", "no such file"),
        (tmp_path, "is a directory"),
        (corrupt, "not a valid ELF file"),
    ]
    for path, reason in cases:
        res = cli("deps", path)
        assert res.returncode == 1 and res.stdout == ""
        line = one_error_line(res)
        assert str(path) in line and reason in line
    res = cli("deps", "--root", tmp_path / "absent", "/bin/true")
    assert res.returncode == 1 and "not a directory" in one_error_line(res)


def test_usage_error_without_inputs() -> None:
    res = cli("deps")
    assert res.returncode == 2
