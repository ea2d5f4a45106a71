"""Faults: a full disk while a layer is unpacked, an --include that changes while it is being
packaged, cache entries that lie about their bytes. Each is an error or a recomputation, never
a bundle that disagrees with its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager import bundle as bundle_mod
from packager.audit import audit_tar
from packager.bundle import write_bundle
from packager.errors import UserError
from packager.plan import build_plan
from packager.resolve import resolve
from packager.rewrite_job import RewriteOptions
from tests.conftest import BuildSample
from tests.hostile import cli, leftovers, limits, one_line_error, tmpfs
from tests.oci_util import file, write_layout


@pytest.fixture(scope="module")
def hello(build_sample: BuildSample) -> Path:
    return build_sample("hello.c", "static")


# -- a full disk while a layer is unpacked ----------------------------------------------------


def _layout_with_big_file(tmp_path: Path) -> Path:
    big = file("data/zeros.bin", b"\0" * (3 << 20))
    layers = [([file("etc/keep", "k\n"), big], "gzip"), ([file("etc/other", "o\n")], "gzip")]
    return write_layout(tmp_path / "layout", layers, {"Cmd": ["/bin/true"]}).path


def test_full_disk_while_unpacking_a_layer(tmp_path: Path) -> None:
    layout = _layout_with_big_file(tmp_path)
    with tmpfs(tmp_path / "small", "1m") as small:
        res = cli("--oci-layout", layout, "-o", "o.tar", cwd=tmp_path, env={"TMPDIR": str(small)})
        one_line_error(res, "layer 1/2", "No space left")
        assert list(small.iterdir()) == []
    assert not (tmp_path / "o.tar").exists() and leftovers(tmp_path) == []


def test_file_size_limit_while_unpacking_a_layer(tmp_path: Path) -> None:
    layout = _layout_with_big_file(tmp_path)
    res = cli("--oci-layout", layout, "-o", "o.tar", cwd=tmp_path, preexec=limits(fsize=1 << 20))
    one_line_error(res, "layer 1/2", "File too large")
    assert not (tmp_path / "o.tar").exists() and leftovers(tmp_path) == []


# -- an --include that changes between hashing and streaming ----------------------------------


def test_include_changing_while_packaged_is_an_error(
    tmp_path: Path, hello: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inc = tmp_path / "data.txt"
    inc.write_bytes(b"A" * 100_000)
    closure = resolve([str(hello)], root=None, library_path=[])
    plan = build_plan(closure, host_root=None, includes=[f"{inc}:/data.txt"], no_rewrite=[])
    real = bundle_mod.rewrite_all

    def changing(*args, **kw):  # type: ignore[no-untyped-def]
        for f, r in real(*args, **kw):
            if f.source == str(inc):
                inc.write_bytes(b"A" * 99_999 + b"B")  # same size, new tail
            yield f, r

    monkeypatch.setattr(bundle_mod, "rewrite_all", changing)
    out = tmp_path / "o.tar"
    with pytest.raises(UserError, match="changed while being packaged"):
        write_bundle(
            plan,
            out,
            options=RewriteOptions(),
            hooked=tmp_path / "o.hooked",
            jobs=1,
            use_cache=False,
        )
    assert not out.exists() and not (tmp_path / "o.hooked").exists()
    assert leftovers(tmp_path) == []


# -- cache entries validated against their bytes ----------------------------------------------


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "litebox-pack" / "rewrite").rglob("*.json"))


def _pack(tmp_path: Path, hello: Path, name: str) -> tuple[int, bytes, str]:
    res = cli(hello, "-o", name, "--no-main-out", "-q", "-j", "1", cwd=tmp_path)
    data = (tmp_path / name).read_bytes() if res.returncode == 0 else b""
    return res.returncode, data, res.stderr.decode()


@pytest.mark.parametrize(
    "damage",
    [
        "null",
        "list",
        "missing-outcome",
        "outcome-not-object",
        "lying-unchanged",
        "lying-marker",
        "lying-sites",
        "swapped-bytes",
    ],
)
def test_bad_cache_entry_is_dropped_and_recomputed(
    tmp_path: Path, hello: Path, other_elf: Path, damage: str
) -> None:
    code, good, _ = _pack(tmp_path, hello, "good.tar")
    assert code == 0
    (meta_path,) = _entries(tmp_path / ".cache")
    bin_path = meta_path.with_suffix(".bin")
    meta = json.loads(meta_path.read_text())
    if damage == "null":
        meta_path.write_text("null")
    elif damage == "list":
        meta_path.write_text("[]")
    elif damage == "missing-outcome":
        del meta["outcome"]
        meta_path.write_text(json.dumps(meta))
    elif damage == "outcome-not-object":
        meta["outcome"] = "patched"
        meta_path.write_text(json.dumps(meta))
    elif damage == "lying-unchanged":
        meta["outcome"]["outcome"] = "unchanged"
        meta_path.write_text(json.dumps(meta))
    elif damage == "lying-marker":
        meta["outcome"]["outcome"] = "checked-nothing-to-patch"
        meta_path.write_text(json.dumps(meta))
    elif damage == "lying-sites":
        assert meta["outcome"]["sites"] > 40
        meta["outcome"]["sites"] = 1
        meta_path.write_text(json.dumps(meta))
    else:  # another program's rewrite, with the sha256 updated to match
        import hashlib

        from rewriter import rewrite_elf

        swapped = rewrite_elf(other_elf.read_bytes()).data
        bin_path.write_bytes(swapped)
        meta["sha256_out"] = hashlib.sha256(swapped).hexdigest()
        meta_path.write_text(json.dumps(meta))
    code, again, err = _pack(tmp_path, hello, "again.tar")
    assert code == 0, err
    assert "Traceback" not in err
    assert "cache entry" in err and "dropped" in err, err
    assert again == good  # recomputed: byte-identical to the first bundle
    report = audit_tar(tmp_path / "again.tar")
    assert report.mismatches == 0
    # the recomputed entry is good again: a third pack uses it without a warning
    code, third, err = _pack(tmp_path, hello, "third.tar")
    assert code == 0 and third == good and "dropped" not in err


@pytest.fixture(scope="module")
def other_elf(build_sample: BuildSample) -> Path:
    # the same program built differently: a similar size and layout, other bytes
    return build_sample("hello.c", "static", extra=("-O0", "-DOTHER"))
