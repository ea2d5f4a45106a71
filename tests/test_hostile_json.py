"""Every JSON document litebox-pack reads goes through one bounded loader: wrong types, deep
nesting, huge numbers, bad bytes and oversize documents are one-line errors, never tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.audit import audit_tar
from packager.errors import UserError
from packager.jsonload import MAX_DEPTH, load_object, loads
from tests.hostile import cli, leftovers, one_line_error, plain_tar

DEEP = b"[" * 100_000
BIG_NUMBER = b'{"a": ' + b"7" * 5000 + b"}"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (DEEP, "nested deeper"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (BIG_NUMBER, "5000 digits"),
        (b"{nope", "not valid JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": NaN}', "NaN"),
    ],
)
def test_loader_refuses_with_one_line(data: bytes, reason: str) -> None:
    with pytest.raises(UserError, match=reason) as e:
        loads(data, "doc")
    assert "\n" not in str(e.value) and str(e.value).startswith("doc: ")


def test_loader_size_bound() -> None:
    with pytest.raises(UserError, match="larger than the 10-byte JSON limit"):
        loads(b'{"a": "0123456789"}', "doc", limit=10)
    assert load_object(b'{"a": [1, 2.5, {"b": null}]}', "doc") == {"a": [1, 2.5, {"b": None}]}


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("x\n")
    return root


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (b'{"config":{"Entrypoint":"/bin/sh","Cmd":["-c","true"]}}', "config.Entrypoint"),
        (b'{"config":{"Env":5}}', "config.Env"),
        (b'{"config":{"Cmd":7}}', "config.Cmd"),
        (b'{"config":{"Cmd":["a", 1]}}', "config.Cmd"),
        (b'{"config":{"WorkingDir":[]}}', "config.WorkingDir"),
        (DEEP, "nested deeper"),
        (BIG_NUMBER, "digits"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_bad_image_config(tmp_path: Path, config: bytes, reason: str) -> None:
    root = _rootfs(tmp_path)
    cfg = tmp_path / "config.json"
    cfg.write_bytes(config)
    res = cli("--rootfs", root, "--image-config", cfg, "-o", "o.tar", cwd=tmp_path, timeout=60)
    one_line_error(res, reason)
    assert not (tmp_path / "o.tar").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(("index", "reason"), [(DEEP, "nested deeper"), (BIG_NUMBER, "digits")])
def test_bad_layout_index(tmp_path: Path, index: bytes, reason: str) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "index.json").write_bytes(index)
    res = cli("--oci-layout", layout, "-o", "o.tar", cwd=tmp_path, timeout=60)
    one_line_error(res, "index.json", reason)


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [(b"{nope", "not valid JSON"), (b"\xff\xfe[]", "not UTF-8"), (DEEP, "nested deeper")],
)
def test_bad_docker_save_manifest(tmp_path: Path, manifest: bytes, reason: str) -> None:
    archive = tmp_path / "saved.tar"
    archive.write_bytes(plain_tar({"manifest.json": manifest}))
    res = cli("--oci-archive", archive, "-o", "o.tar", cwd=tmp_path, timeout=60)
    one_line_error(res, "manifest.json", reason)


@pytest.mark.parametrize("manifest", [DEEP, BIG_NUMBER])
def test_bad_bundle_manifest_in_audit_and_run(tmp_path: Path, manifest: bytes) -> None:
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(plain_tar({"litebox/manifest.json": manifest, "bin/x": b"#!/bin/sh\n"}))
    report = audit_tar(bundle)
    assert report.manifest is not None and not report.manifest.valid
    assert any("manifest.json" in p for p in report.problems)
    res = cli("audit", bundle, "--json", cwd=tmp_path, timeout=60)
    assert res.returncode == 0 and b"Traceback" not in res.stderr
    assert json.loads(res.stdout)["manifest"]["valid"] is False
    one_line_error(cli("run", bundle, "--", "/bin/x", cwd=tmp_path, timeout=60), "manifest.json")
