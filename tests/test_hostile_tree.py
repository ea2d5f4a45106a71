"""Directory symlinks cannot make the image walk unbounded: it visits at most
LITEBOX_PACK_MAX_DIRS directories, then cuts further expansions and says which."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from packager.oci.findings import Findings
from packager.oci.tree import scan_tree
from tests.hostile import cli
from tests.oci_util import directory, file, symlink, write_layout


def _bomb(root: Path, levels: int) -> None:
    """L0 holds one file; each L$i holds d0..d9 -> ../L$(i-1): 10**levels copies of it."""
    (root / "L0").mkdir(parents=True)
    (root / "L0" / "f").write_text("x\n")
    for i in range(1, levels + 1):
        (root / f"L{i}").mkdir()
        for k in range(10):
            os.symlink(f"../L{i - 1}", root / f"L{i}" / f"d{k}")


def test_symlink_bomb_in_rootfs_is_cut_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _bomb(root, 8)
    start = time.monotonic()
    env = {"LITEBOX_PACK_MAX_DIRS": "20000"}
    res = cli("--rootfs", root, "-o", "o.tar", "--json", cwd=tmp_path, timeout=120, env=env)
    assert time.monotonic() - start < 60
    assert res.returncode == 0, res.stderr
    assert b"expansion-cut" in res.stderr
    cut = json.loads(res.stdout)["image"]["dropped"]["expansion-cut"]
    assert cut and all(" -> ../L" in c for c in cut)


def test_default_budget_bounds_an_eight_level_bomb(tmp_path: Path) -> None:
    from packager.limits import MAX_DIRS

    root = tmp_path / "root"
    _bomb(root, 8)  # 10**8 directories if expanded in full
    findings = Findings()
    start = time.monotonic()
    tree = scan_tree(str(root), findings)
    assert time.monotonic() - start < 60
    assert tree.visited <= MAX_DIRS + 9
    assert findings.count("expansion-cut") > 0


def test_directory_budget_is_configurable_and_deterministic(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    _bomb(root, 4)  # 10**4 copies of L0/f: within the default budget
    full = scan_tree(str(root), Findings())
    assert "L4/d9/d9/d9/d9/f" in full.by_path and full.visited <= 20_000
    import packager.oci.tree as tree_mod

    monkeypatch.setattr(tree_mod, "MAX_DIRS", 100)
    cut_findings = Findings()
    cut = scan_tree(str(root), cut_findings)
    assert cut.visited <= 100 + 10  # the budget, plus the real directories themselves
    assert cut_findings.count("expansion-cut") > 0
    again = Findings()
    assert list(scan_tree(str(root), again).by_path) == list(cut.by_path)
    assert again.items == cut_findings.items


def test_symlink_bomb_in_a_layer(tmp_path: Path) -> None:
    entries = [directory("L0"), file("L0/f", "x\n")]
    for i in range(1, 8):
        entries.append(directory(f"L{i}"))
        entries += [symlink(f"L{i}/d{k}", f"../L{i - 1}") for k in range(10)]
    layout = write_layout(tmp_path / "layout", [(entries, "gzip")], {"Cmd": ["/bin/true"]})
    start = time.monotonic()
    res = cli(
        "--oci-layout",
        layout.path,
        "-o",
        "o.tar",
        cwd=tmp_path,
        timeout=120,
        env={"LITEBOX_PACK_MAX_DIRS": "5000"},
    )
    assert time.monotonic() - start < 60
    assert res.returncode == 0, res.stderr
    assert b"expansion-cut" in res.stderr
