"""Layer application and symlink materialisation, on layers written entry by entry."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from packager.oci.findings import Findings
from packager.oci.layers import apply_layer
from packager.oci.runscript import run_script
from packager.oci.tree import scan_tree
from tests.oci_util import Entry, directory, file, hardlink, layer_tar, symlink


def apply(root: Path, *layers: list[Entry]) -> Findings:
    findings = Findings()
    root.mkdir(exist_ok=True)
    for entries in layers:
        apply_layer(str(root), io.BytesIO(layer_tar(entries)), findings)
    return findings


def paths_of(root: Path) -> dict[str, str]:
    """Every entry under root: path → 'dir', 'link:TARGET' or the file's text."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_text(errors="replace")
    return out


def test_whiteouts_hide_lower_layers_only_whatever_the_entry_order(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(
        root,
        [
            file("etc/doomed", "x"),
            file("etc/kept", "k"),
            file("opt/old/a", "a"),
            file("opt/old/deep/b", "b"),
            file("opt/top", "t"),
            file("var/redo", "lower"),
        ],
        [
            # the opaque marker comes after an entry of the same layer: that entry stays
            file("opt/new", "n"),
            directory("opt/old/"),
            file("opt/.wh..wh..opq", ""),
            file("etc/.wh.doomed", ""),
            # a whiteout before the same layer re-adds the name: the new file stays
            file("var/.wh.redo", ""),
            file("var/redo", "upper"),
        ],
    )
    assert paths_of(root) == {
        "etc": "dir",
        "opt": "dir",
        "var": "dir",
        "etc/kept": "k",
        "opt/new": "n",
        "opt/old": "dir",  # re-declared by the upper layer, but emptied of lower content
        "var/redo": "upper",
    }


def test_lower_symlink_survives_an_upper_layer_redeclaring_its_directory(tmp_path: Path) -> None:
    """Upstream LiteBox forgets usr/lib/libz.so.1 here (reference §3.2); we must not."""
    root = tmp_path / "root"
    findings = apply(
        root,
        [
            directory("usr/"),
            directory("usr/lib/"),
            file("usr/lib/libz.so.1.3", "ZLIB"),
            symlink("usr/lib/libz.so.1", "libz.so.1.3"),
            symlink("lib", "usr/lib"),
        ],
        [directory("usr/"), directory("usr/lib/"), file("usr/lib/other.so", "O")],
    )
    assert os.readlink(root / "usr/lib/libz.so.1") == "libz.so.1.3"
    tree = scan_tree(str(root), findings)
    zlib = tree.file_at("usr/lib/libz.so.1")
    assert zlib is not None and zlib.source == "usr/lib/libz.so.1.3"
    assert set(zlib.paths) == {
        "usr/lib/libz.so.1.3",
        "usr/lib/libz.so.1",
        "lib/libz.so.1.3",
        "lib/libz.so.1",
    }
    assert findings.items == {}


def test_upper_file_replaces_lower_symlink_and_whiteout_removes_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(
        root,
        [file("a/real", "R"), symlink("a/link", "real"), symlink("a/gone", "real")],
        [file("a/link", "now a file"), file("a/.wh.gone", "")],
    )
    assert paths_of(root) == {"a": "dir", "a/real": "R", "a/link": "now a file"}


def test_hard_links_even_to_later_entries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    findings = apply(
        root,
        [
            hardlink("bin/early", "bin/tool"),  # its target comes later in the layer
            file("bin/tool", "T", 0o755),
            hardlink("bin/late", "bin/tool"),
            hardlink("bin/orphan", "bin/nothing"),
        ],
    )
    st = {n: os.stat(root / "bin" / n) for n in ("tool", "early", "late")}
    assert len({s.st_ino for s in st.values()}) == 1
    assert (root / "bin/early").read_text() == "T"
    assert findings.items == {"hardlink-missing": ["/bin/orphan -> /bin/nothing"]}
    tree = scan_tree(str(root), findings)
    assert [f.paths for f in tree.files] == [["bin/early", "bin/late", "bin/tool"]]


def test_hostile_layer_writes_nothing_outside_and_reports_what_it_dropped(tmp_path: Path) -> None:
    outside = tmp_path / f"outside-{uuid.uuid4().hex}"  # a sibling of the rootfs
    outside.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("host file")
    absolute = Path("/tmp") / f"litebox-pack-test-{uuid.uuid4().hex}"
    root = tmp_path / "root"
    findings = apply(
        root,
        [
            symlink("up", "../" + outside.name),  # relative escape
            symlink("abs", str(outside)),  # absolute escape
            symlink("deep", "../../../../../../.."),
            symlink("host", str(tmp_path)),
        ],
        [
            file("up/through-relative", "x"),
            file("abs/through-absolute", "x"),
            file("deep" + str(absolute), "x"),
            file("../" + outside.name + "/dotdot", "x"),
            file(str(absolute), "x"),
            hardlink("stolen", "../../etc/passwd"),
            hardlink("grabbed", "host/secret"),  # through a link: looked up inside, not found
            Entry("dev/null", "chr"),
            Entry("run/fifo", "fifo"),
            file("usr/bin/su", "S", 0o4755),
            file("usr/bin/wall", "W", 0o2755),
            file("etc/.wh..", ""),
        ],
    )
    assert list(outside.iterdir()) == []
    assert not absolute.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["root", outside.name, "secret"])
    assert secret.stat().st_nlink == 1 and not (root / "grabbed").exists()
    # Links are resolved as the guest would (inside the rootfs), so the writes landed inside.
    assert (root / outside.relative_to("/") / "through-absolute").read_text() == "x"
    assert (root / outside.name / "through-relative").read_text() == "x"
    assert (root / absolute.relative_to("/")).read_text() == "x"
    assert os.stat(root / "usr/bin/su").st_mode & 0o7777 == 0o755
    assert findings.items == {
        "unsafe-path": [
            "../" + outside.name + "/dotdot",
            str(absolute),
            "stolen -> ../../etc/passwd",
            "etc/.wh..",
        ],
        "special-file": ["/dev/null", "/run/fifo"],
        "setuid-bits": ["/usr/bin/su", "/usr/bin/wall"],
        "hardlink-missing": ["/grabbed -> /host/secret"],
    }
    # Scanning never follows a link out either: "deep" is the rootfs itself, a loop.
    tree = scan_tree(str(root), findings)
    assert findings.items["symlink-loop"] == ["/deep -> ../../../../../../.."]
    assert all(not p.startswith("deep/") for f in tree.files for p in f.paths)


def test_symlink_chains_targets_loops_and_dangling_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    findings = apply(
        root,
        [
            file("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "LD", 0o755),
            directory("usr/lib64/"),
            symlink(
                "usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ),
            symlink("lib64", "usr/lib64"),
            file("c", "C"),
            symlink("b", "c"),
            symlink("a", "/b"),  # absolute target, then a relative one
            symlink("loop1", "loop2"),
            symlink("loop2", "loop1"),
            symlink("dangling", "/nowhere/at/all"),
            symlink("usr/bin/X11", "."),  # Debian's classic self-loop
            file("usr/bin/tool", "T"),
        ],
    )
    tree = scan_tree(str(root), findings)
    ld = tree.file_at("lib64/ld-linux-x86-64.so.2")
    assert ld is not None and ld.source == "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert ld.mode == 0o755
    assert set(ld.paths) == {
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "usr/lib64/ld-linux-x86-64.so.2",
        "lib64/ld-linux-x86-64.so.2",
    }
    c = tree.file_at("a")
    assert c is not None and c.source == "c" and c.paths == ["a", "b", "c"]
    assert {"kind": "symlink", "link": "/a", "target": "/b"} in c.reasons
    assert findings.items["dangling-symlink"] == ["/dangling -> /nowhere/at/all"]
    assert sorted(findings.items["symlink-loop"]) == [
        "/loop1 -> loop2",
        "/loop2 -> loop1",
        "/usr/bin/X11 -> .",
    ]
    assert tree.file_at("usr/bin/X11/tool") is None and tree.file_at("usr/bin/tool") is not None


def test_reserved_paths_and_long_paths_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    long = "/".join(["d" * 60] * 5) + "/f"
    findings = apply(
        root,
        [file("litebox/config_and_run.sh", "mine"), file("litebox/other", "o"), file(long, "L")],
    )
    tree = scan_tree(str(root), findings, frozenset({"litebox/config_and_run.sh"}))
    assert [f.paths for f in tree.files] == [["litebox/other"]]
    assert findings.items == {
        "reserved-path": ["/litebox/config_and_run.sh"],
        "unfit-path": ["/" + long],
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {
                "Env": [
                    "PATH=/usr/bin:/bin",
                    "QUOTE=it's $HOME `x`",
                    "EMPTY=",
                    "NOEQUALS",
                    "A;B=c",
                ],
                "WorkingDir": "/srv/my app",
                "Entrypoint": ["/bin/prog", "--flag"],
                "Cmd": ["two words", "it's"],
            },
            "#!/bin/sh\n"
            "export PATH='/usr/bin:/bin'\n"
            "export QUOTE='it'\\''s $HOME `x`'\n"
            "export EMPTY=''\n"
            "cd '/srv/my app'\n"
            'if [ "$#" -gt 0 ]; then\n'
            '    exec "$@"\n'
            "else\n"
            "    exec '/bin/prog' '--flag' 'two words' 'it'\\''s'\n"
            "fi\n",
        ),
        ({}, "#!/bin/sh\ncd '/'\nexec \"$@\"\n"),
        (
            {"Cmd": ["sh"], "WorkingDir": ""},
            '#!/bin/sh\ncd \'/\'\nif [ "$#" -gt 0 ]; then\n    exec "$@"\nelse\n'
            "    exec 'sh'\nfi\n",
        ),
    ],
)
def test_run_script(config: dict, expected: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    findings = Findings()
    script = run_script(config, findings)
    assert script.decode() == expected
    if "Env" in config:
        assert findings.items == {"env": ["NOEQUALS", "A;B=c"]}
    # The shell reads it back as the image meant: the environment, the directory, the words.
    (tmp_path / "srv" / "my app").mkdir(parents=True)
    text = script.decode().replace("cd '/srv/my app'", f"cd '{tmp_path}/srv/my app'")
    probe = tmp_path / "probe.sh"
    probe.write_text(text)
    import subprocess

    res = subprocess.run(
        [
            "/bin/sh",
            str(probe),
            "/bin/sh",
            "-c",
            'printf "%s|%s|" "$QUOTE" "$PWD"; printf "<%s>" "$@"',
            "-",
            "a b",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    quote = "it's $HOME `x`" if "Env" in config else ""
    pwd = f"{tmp_path}/srv/my app" if "Env" in config else "/"
    assert res.stdout == f"{quote}|{pwd}|<a b>"
