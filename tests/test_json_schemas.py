"""Every JSON document the tool writes carries its format number and matches its shipped schema.

The documents come from real runs: pack (programs and a rootfs tree), deps, rewrite, audit, the
run report and the bundle manifest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from packager.schemas import FORMAT, schema_file
from tests.test_pack import cli

ROOT = Path(__file__).resolve().parent.parent
BuildSample = Callable[..., Path]


def check(name: str, doc: dict[str, Any]) -> None:
    """Valid against the schema, with the format number the schema pins."""
    schema = json.loads(schema_file(name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["format"] == FORMAT[name] == schema["properties"]["format"]["const"]


def _json(*args: str | Path, cwd: Path, status: int = 0) -> dict[str, Any]:
    res = cli(*args, cwd=cwd)
    assert res.returncode == status, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _manifest(tar: Path) -> dict[str, Any]:
    with tarfile.open(tar) as tf:
        member = tf.extractfile("litebox/manifest.json")
        assert member is not None
        return json.loads(member.read())  # type: ignore[no-any-return]


def test_every_document_has_a_schema_in_the_package() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "schemas/*.schema.json" in data["tool"]["setuptools"]["package-data"]["packager"]
    shipped = {p.name for p in schema_file("pack").parent.glob("*.schema.json")}
    assert shipped == {f"{name}.schema.json" for name in FORMAT}
    readme = (ROOT / "README.md").read_text()
    for name in FORMAT:
        assert f"(packager/schemas/{name}.schema.json)" in readme, name


def test_pack_and_manifest(build_sample: BuildSample, tmp_path: Path) -> None:
    lone = build_sample("lone.S", "nostdlib")
    doc = _json("/bin/ls", lone, "-o", "b.tar", "--unpatchable", "keep", "--json", cwd=tmp_path)
    check("pack", doc)
    assert doc["unpatchable"]["sites"] == 1
    check("manifest", _manifest(tmp_path / "b.tar"))


def test_added_fields_keep_documents_valid(tmp_path: Path) -> None:
    """Fields added later (at the top and inside entries) need no new format number."""
    doc = _json("/bin/true", "-o", "t.tar", "--json", cwd=tmp_path)
    check("pack", {**doc, "data_in_code": [{"source": "/x", "address": 1}]})
    manifest = _manifest(tmp_path / "t.tar")
    manifest["sbom"] = "litebox/sbom.cdx.json"
    manifest["files"][0]["data_in_code"] = []
    check("manifest", manifest)
    with pytest.raises(jsonschema.ValidationError):
        check("manifest", {**manifest, "format": 2})
    with pytest.raises(jsonschema.ValidationError):
        check("pack", {k: v for k, v in doc.items() if k != "sites"})


def test_pack_of_a_rootfs_tree(tmp_path: Path) -> None:
    tree = tmp_path / "rootfs"
    for src in ("/usr/bin/true", "/usr/lib/x86_64-linux-gnu/libc.so.6"):
        (tree / src.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tree / src.lstrip("/"))
    lib64 = tree / "lib64"
    lib64.mkdir()
    shutil.copy("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", lib64)
    doc = _json("--rootfs", tree, "-o", "r.tar", "--json", cwd=tmp_path)
    check("pack", doc)
    assert "image" in doc
    check("manifest", _manifest(tmp_path / "r.tar"))


def test_deps(tmp_path: Path) -> None:
    check("deps", _json("deps", "/bin/ls", "--json", cwd=tmp_path))
    # A program whose library is gone: the closure lists it as missing (exit 1).
    (tmp_path / "foo.c").write_text("int foo(void) { return 0; }\n")
    (tmp_path / "m.c").write_text("int foo(void); int main(void) { return foo(); }\n")
    gcc = ["gcc", "-shared", "-fPIC", "-o", "libfoo.so", "foo.c"]
    subprocess.run(gcc, cwd=tmp_path, check=True)
    subprocess.run(["gcc", "-o", "m", "m.c", "-L.", "-lfoo"], cwd=tmp_path, check=True)
    (tmp_path / "libfoo.so").unlink()
    missing = _json("deps", "m", "--json", cwd=tmp_path, status=1)
    check("deps", missing)
    assert [m["name"] for m in missing["missing"]] == ["libfoo.so"]
    assert missing["missing"][0]["tried"]  # where the search looked


@pytest.mark.parametrize("unpatchable", ["fail", "keep"])
def test_rewrite(build_sample: BuildSample, tmp_path: Path, unpatchable: str) -> None:
    sample = build_sample("sites.S", "nostdlib") if unpatchable == "fail" else None
    target = sample or build_sample("lone.S", "nostdlib")
    doc = _json(
        "rewrite", target, "-o", "out", "--unpatchable", unpatchable, "--json", cwd=tmp_path
    )
    check("rewrite", doc)
    assert doc["sites"] or doc["unpatchable"]


def test_audit(build_sample: BuildSample, tmp_path: Path) -> None:
    lone = build_sample("lone.S", "nostdlib")
    assert (
        cli("/bin/ls", lone, "-o", "b.tar", "--unpatchable", "keep", cwd=tmp_path).returncode == 0
    )
    audit = _json("audit", "b.tar", "--json", cwd=tmp_path)
    check("audit", audit)
    assert audit["packages"]  # from the bundle's SBOM
    gate = _json("audit", "b.tar", "--json", "--fail-on", "any", cwd=tmp_path, status=3)
    check("audit", gate)
    assert gate["failed"]


def test_run_report(build_sample: BuildSample, tmp_path: Path) -> None:
    hello = build_sample("hello.c")
    assert cli(hello, "-o", "h.tar", cwd=tmp_path).returncode == 0
    res = cli("run", "h.tar", "--report", "r.json", "--", str(hello), "x", cwd=tmp_path)
    assert "hello from litebox-pack" in res.stdout, res.stderr
    check("run-report", json.loads((tmp_path / "r.json").read_text()))


def test_cache(tmp_path: Path) -> None:
    assert cli("/bin/true", "-o", "t.tar", cwd=tmp_path).returncode == 0
    doc = _json("cache", "--json", cwd=tmp_path)
    check("cache", doc)
    assert doc["size"] > 0 and doc["entries"] > 0
