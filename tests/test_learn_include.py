"""The include machinery: lone paths, ELF closures, inputs at their real path, empty dirs."""

from __future__ import annotations

import os
from pathlib import Path

from packager.audit import audit_tar
from tests.conftest import BuildSample
from tests.test_json_schemas import check
from tests.test_pack import cli, manifest_of, pack

SSL_MODULE = "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"


def entry(doc: dict, path: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in doc["files"] if path in f["paths"])


def test_a_lone_include_path_lands_at_the_same_path(
    tmp_path: Path, build_sample: BuildSample
) -> None:
    data = tmp_path / "data" / "table.txt"
    data.parent.mkdir()
    data.write_text("1 2 3\n")
    hello = build_sample("hello.c")
    members, _ = pack(tmp_path, hello, "--include", str(data), "-o", "h.tar")
    assert members[str(data).lstrip("/")] == b"1 2 3\n"
    doc = manifest_of(members)
    assert entry(doc, str(data).lstrip("/"))["included_because"] == [
        {"kind": "include", "spec": str(data)}
    ]


def test_an_included_elf_brings_its_needed_closure(
    tmp_path: Path, build_sample: BuildSample
) -> None:
    hello = build_sample("hello.c")
    members, _ = pack(tmp_path, hello, "--include", SSL_MODULE, "-o", "h.tar")
    doc = manifest_of(members)
    module = entry(doc, SSL_MODULE.lstrip("/"))
    assert module["outcome"] == "checked-nothing-to-patch"  # rewritten: checked, marked
    # hello needs only libc; the module's own DT_NEEDED entries come along, rewritten.
    for lib in ("libssl.so.3", "libcrypto.so.3"):
        f = next(f for f in doc["files"] if f["paths"][0].endswith("/" + lib))
        assert f["outcome"] in ("patched", "checked-nothing-to-patch")  # rewritten
        assert any(r["kind"] == "needed" for r in f["included_because"])
    ssl = next(f for f in doc["files"] if f["paths"][0].endswith("/libssl.so.3"))
    assert {"kind": "needed", "by": SSL_MODULE, "name": "libssl.so.3"}.items() <= next(
        r for r in ssl["included_because"] if r["kind"] == "needed"
    ).items()
    assert audit_tar(tmp_path / "h.tar").failures("any") == []


def test_an_included_script_brings_its_interpreter(
    tmp_path: Path, build_sample: BuildSample
) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho tool\n")
    script.chmod(0o755)
    hello = build_sample("hello.c", "static")
    members, _ = pack(tmp_path, hello, "--include", f"{script}:/opt/tool.sh", "-o", "h.tar")
    assert "opt/tool.sh" in members and "bin/sh" in members
    dash = entry(manifest_of(members), "bin/sh")
    assert dash["source"] == os.path.realpath("/bin/sh") and dash["outcome"] != "unchanged"
    assert "lib/x86_64-linux-gnu/libc.so.6" in members  # hello is static: the shell needs it
    assert any(r.get("rule") == "#! interpreter" for r in dash["included_because"])


def test_an_input_also_appears_at_its_real_path(tmp_path: Path) -> None:
    assert os.path.islink("/usr/bin/python3")
    real = os.path.realpath("/usr/bin/python3")
    members, _ = pack(tmp_path, "/usr/bin/python3", "-o", "py.tar", "--no-main-out")
    assert members["usr/bin/python3"] == members[real.lstrip("/")]
    f = entry(manifest_of(members), "usr/bin/python3")
    assert sorted(f["paths"]) == sorted(["usr/bin/python3", real.lstrip("/")])


def test_an_empty_directory_is_reported_not_lost(tmp_path: Path, build_sample: BuildSample) -> None:
    tree = tmp_path / "templates"
    (tree / "hooks").mkdir(parents=True)
    (tree / "hooks" / "x.sample").write_text("#\n")
    (tree / "branches").mkdir()
    (tree / "deep" / "er").mkdir(parents=True)
    hello = build_sample("hello.c", "static")
    res = cli(hello, "--include", f"{tree}:/t", "-o", "h.tar", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert f"{tree}/branches: empty directory" in warnings[0]
    assert "/t/branches will not exist" in warnings[0]
    assert "/t/deep/er will not exist" in warnings[1]
    members, _ = pack(tmp_path, hello, "--include", f"{tree}:/t", "-o", "h.tar")
    check("manifest", manifest_of(members))
    assert manifest_of(members)["gaps"] == [
        {"path": "t/branches", "source": f"{tree}/branches", "kind": "empty directory"},
        {"path": "t/deep/er", "source": f"{tree}/deep/er", "kind": "empty directory"},
    ]
    assert "t/hooks/x.sample" in members


def test_an_included_script_without_its_interpreter_is_a_warning(
    tmp_path: Path, build_sample: BuildSample
) -> None:
    """Like the stdlib's cgi.py (#! /usr/local/bin/python): bundled, said, not fatal."""
    tree = tmp_path / "lib"
    tree.mkdir()
    (tree / "tool.py").write_text("#!/nonexistent/python\n")
    (tree / "tool.py").chmod(0o755)
    hello = build_sample("hello.c", "static")
    res = cli(hello, "--include", f"{tree}:/lib", "-o", "h.tar", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[0] == (
        "litebox-pack: warning: --include: /nonexistent/python "
        f"(needed by {tree}/tool.py) not found; not bundled"
    )
    members, _ = pack(tmp_path, hello, "--include", f"{tree}:/lib", "-o", "h.tar")
    assert "lib/tool.py" in members


def test_under_root_an_input_appears_at_its_real_path_inside_the_root(
    tmp_path: Path, build_sample: BuildSample
) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/hello-1.0").write_bytes(build_sample("hello.c", "static").read_bytes())
    (root / "usr/bin/hello-1.0").chmod(0o755)
    os.symlink("hello-1.0", root / "usr/bin/hello")
    members, _ = pack(tmp_path, "--root", root, "/usr/bin/hello", "-o", "r.tar", "--no-main-out")
    assert members["usr/bin/hello"] == members["usr/bin/hello-1.0"]
    assert not any(p.startswith(str(tmp_path).lstrip("/")) for p in members)
