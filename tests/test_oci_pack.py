"""Container images end to end: a real registry, real archives and layouts, real runs.

The test image is assembled from this machine's files: busybox-static as /bin/sh, a dynamic
program linked against zlib with its libraries laid out like Debian's merged /usr (``lib``,
``lib64`` and ``libz.so.1`` are symlinks), in three layers (gzip, zstd, plain) with
whiteouts, an opaque directory, a hard link and an upper layer re-declaring ``usr/lib``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from packager.audit import FailOn, audit_tar
from rewriter import read_trailer
from tests.oci_util import (
    EXE,
    Entry,
    Layout,
    Registry,
    TokenServer,
    cli,
    digest,
    directory,
    file,
    hardlink,
    host_file,
    listing,
    registry,
    run,
    skopeo_copy,
    symlink,
    tar_directory,
    write_layout,
)
from tests.tarcheck import read_strict
from tests.tty import run_on_terminal

APP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int main(int argc, char **argv) {
    const char *msg = "litebox";
    printf("zlib %s crc %lx\n", zlibVersion(), crc32(0, (const Bytef *)msg, strlen(msg)));
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    const char *g = getenv("GREETING");
    printf("GREETING=%s\n", g ? g : "(unset)");
    char line[256] = "(none)\n";
    FILE *f = fopen("/etc/greeting", "r");
    if (f) { if (!fgets(line, sizeof line, f)) strcpy(line, "(empty)\n"); fclose(f); }
    printf("greeting file: %s", line);
    return 3;
}
"""
CONFIG = {
    "Env": ["PATH=/usr/local/bin:/bin", 'GREETING=it\'s "quoted" $HOME'],
    "WorkingDir": "/srv",
    "Entrypoint": ["/usr/local/bin/app"],
    "Cmd": ["arg one", "it's"],
}
LIBDIR = "usr/lib/x86_64-linux-gnu"
RUN_SCRIPT = ["/bin/sh", "/litebox/config_and_run.sh"]


@dataclass
class BuiltImage:
    layout: Layout
    gzip_layout: Path  # the same image with every layer gzip (for umoci and docker-archive)
    rootfs: Path  # unpacked by umoci, an independent implementation of layer application
    config: Path  # the raw config blob
    cache: Path  # rewrite and runtime cache shared by the tests


def _libs(program: Path) -> list[Path]:
    out = run(["ldd", program]).stdout
    return [Path(w) for line in out.splitlines() for w in line.split() if w.startswith("/")]


def _layers(app: Path) -> list[tuple[list[Entry], str]]:
    libs = {p.name: p for p in _libs(app)}
    base = [
        directory("bin/"),
        host_file("bin/busybox", "/bin/busybox", 0o755),
        symlink("bin/sh", "busybox"),
        symlink("bin/cat", "/bin/busybox"),
        directory("usr/"),
        directory("usr/lib/"),
        directory(LIBDIR + "/"),
        host_file(f"{LIBDIR}/libc.so.6", libs["libc.so.6"].resolve(), 0o755),
        host_file(f"{LIBDIR}/ld-linux-x86-64.so.2", libs["ld-linux-x86-64.so.2"].resolve(), 0o755),
        host_file(f"{LIBDIR}/libz.so.1.2.13", libs["libz.so.1"].resolve(), 0o644),
        symlink(f"{LIBDIR}/libz.so.1", "libz.so.1.2.13"),
        directory("usr/lib64/"),
        symlink("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        symlink("lib", "usr/lib"),
        symlink("lib64", "usr/lib64"),
        file("etc/doomed", "whited out\n"),
        file("opt/old/file", "hidden by an opaque directory\n"),
    ]
    upper = [
        # Re-declaring the parents must keep libz.so.1 (upstream LiteBox loses it).
        directory("usr/"),
        directory("usr/lib/"),
        directory(LIBDIR + "/"),
        host_file("usr/local/bin/app", app, 0o755),
        hardlink("usr/local/bin/app-again", "usr/local/bin/app"),
        file("opt/new", "added with the opaque marker\n"),
        file("opt/.wh..wh..opq", ""),
        file("etc/.wh.doomed", ""),
    ]
    top = [
        file("etc/greeting", "hello from layer 3\n"),
        file("srv/data.txt", "data\n"),
        symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC"),  # dangling: reported
    ]
    return [(base, "gzip"), (upper, "zstd"), (top, "none")]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    d = tmp_path_factory.mktemp("image")
    src = d / "app.c"
    src.write_text(APP_C)
    run(["gcc", "-O2", "-o", d / "app", src, "-lz"])
    layout = write_layout(d / "layout", _layers(d / "app"), CONFIG)
    config = d / "config.json"
    config.write_bytes(layout.config_bytes)
    gz = d / "layout-gzip"
    skopeo_copy(f"oci:{layout.path}:latest", f"oci:{gz}:latest", "--dest-compress-format=gzip")
    run(["umoci", "unpack", "--image", f"{gz}:latest", d / "umoci"])
    return BuiltImage(layout, gz, d / "umoci" / "rootfs", config, d / "cache")


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def pack(tmp: Path, img: BuiltImage, *args: str | Path, out: str = "out.tar", **kw):  # type: ignore[no-untyped-def]
    res = cli(*args, "-o", out, cwd=tmp, cache=img.cache, **kw)
    assert res.returncode == 0, res.stderr
    return tmp / out, res


def members(tar: Path) -> dict[str, bytes]:
    return {m.path: m.data for m in read_strict(tar)}


def test_registry_pull_is_a_complete_runnable_bundle(
    tmp_path: Path, image: BuiltImage, plain_registry: Registry
) -> None:
    ref = plain_registry.push(image.layout.path, "tests/app")
    tar, res = pack(tmp_path, image, "--oci-image", ref, "--json")
    doc = json.loads(res.stdout)
    served, manifest = plain_registry.manifest("tests/app")
    assert doc["image"]["digest"] == served
    assert doc["image"]["layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert doc["image"]["layers"][:2] == image.layout.layer_digests[:2]
    assert doc["image"]["dropped"] == {
        "dangling-symlink": ["/etc/localtime -> /usr/share/zoneinfo/Etc/UTC"]
    }
    assert res.stderr.startswith("litebox-pack: warning: dangling-symlink: 1 symlinks")
    assert "/etc/localtime" in res.stderr

    files = members(tar)
    # whiteouts, the opaque directory, the hard link, and symlinks materialised as copies
    assert "etc/doomed" not in files and "opt/old/file" not in files
    assert files["opt/new"] == b"added with the opaque marker\n"
    assert files["usr/local/bin/app-again"] == files["usr/local/bin/app"]
    libz = files[f"{LIBDIR}/libz.so.1"]
    for alias in (f"{LIBDIR}/libz.so.1.2.13", "lib/x86_64-linux-gnu/libz.so.1"):
        assert files[alias] == libz
    assert files["lib64/ld-linux-x86-64.so.2"] == files[f"{LIBDIR}/ld-linux-x86-64.so.2"]
    assert files["bin/sh"] == files["bin/busybox"] == files["bin/cat"]
    # every ELF of the image rewritten, the 0644 shared library too
    for path in ("bin/busybox", "usr/local/bin/app", f"{LIBDIR}/libc.so.6", f"{LIBDIR}/libz.so.1"):
        assert read_trailer(files[path]) is not None, path
    assert files["litebox/config.json"] == image.layout.config_bytes
    assert files["litebox/config_and_run.sh"].startswith(b"#!/bin/sh\nexport PATH=")
    manifest = json.loads(files["litebox/manifest.json"])
    by_source = {f["source"].removeprefix("rootfs/"): f for f in manifest["files"]}
    assert by_source[f"{LIBDIR}/libz.so.1.2.13"]["included_because"][0] == {
        "kind": "symlink",
        "link": f"/{LIBDIR}/libz.so.1",
        "target": "libz.so.1.2.13",
    }
    outcomes = {src: by_source[src]["outcome"] for src in by_source}
    assert outcomes["bin/busybox"] == outcomes[f"{LIBDIR}/libc.so.6"] == "patched"
    assert outcomes["usr/local/bin/app"] == "checked-nothing-to-patch"  # its syscalls are libc's
    assert by_source["litebox/config_and_run.sh"]["included_because"] == [{"kind": "run-script"}]
    assert by_source["litebox/config.json"]["reason"] == "generated by litebox-pack"
    assert audit_tar(tar).failures(FailOn.ANY) == []

    # Run it the documented way and natively (chroot into umoci's unpacking): same output.
    got = cli("run", tar, "--", *RUN_SCRIPT, cwd=tmp_path, cache=image.cache)
    native = _native(image, files["litebox/config_and_run.sh"], tmp_path)
    assert (got.returncode, got.stdout) == (native.returncode, native.stdout), got.stderr
    assert got.returncode == 3
    assert "arg 1: arg one\narg 2: it's\n" in got.stdout
    assert 'GREETING=it\'s "quoted" $HOME\n' in got.stdout
    assert "greeting file: hello from layer 3\n" in got.stdout
    # Arguments replace the default command, as upstream's script does.
    cat = cli(
        "run", tar, "--", *RUN_SCRIPT, "/bin/cat", "/srv/data.txt", cwd=tmp_path, cache=image.cache
    )
    assert (cat.returncode, cat.stdout) == (0, "data\n"), cat.stderr


def _native(img: BuiltImage, script: bytes, tmp: Path) -> subprocess.CompletedProcess[str]:
    root = tmp / "native-root"
    shutil.copytree(img.rootfs, root, symlinks=True)
    (root / "litebox").mkdir()
    (root / "litebox" / "config_and_run.sh").write_bytes(script)
    # chroot as root (CI); elsewhere in a user namespace. Found here: the child's env is empty.
    if os.geteuid() == 0:
        prefix = [shutil.which("chroot") or "/usr/sbin/chroot", str(root)]
    else:
        prefix = [shutil.which("unshare") or "/usr/bin/unshare", "-r", "-R", str(root)]
    return subprocess.run(
        [*prefix, *RUN_SCRIPT], capture_output=True, text=True, env={}, timeout=60
    )


def test_archive_layout_registry_and_rootfs_give_identical_bundles(
    tmp_path: Path, image: BuiltImage, plain_registry: Registry
) -> None:
    save = tmp_path / "docker-save.tar"
    skopeo_copy(f"oci:{image.gzip_layout}:latest", f"docker-archive:{save}:tests/app:latest")
    oci_archive = tmp_path / "oci-archive.tar"
    skopeo_copy(f"oci:{image.layout.path}:latest", f"oci-archive:{oci_archive}:latest")
    layout_tar = tar_directory(image.layout.path, tmp_path / "input-layout.tar")
    ref = plain_registry.push(image.layout.path, "tests/same")
    sources = {
        "layout": ["--oci-layout", str(image.layout.path)],
        "layout-gzip": ["--oci-layout", str(image.gzip_layout)],
        "docker-save": ["--oci-archive", str(save)],
        "skopeo-oci-archive": ["--oci-archive", str(oci_archive)],
        "layout-tar": ["--oci-archive", str(layout_tar)],
        "registry": ["--oci-image", ref],
        "rootfs": ["--rootfs", str(image.rootfs), "--image-config", str(image.config)],
    }
    digests = {}
    for name, args in sources.items():
        tar, _ = pack(tmp_path, image, *args, "-q", out=f"{name}.tar")
        digests[name] = digest(tar.read_bytes())
    assert len(set(digests.values())) == 1, digests
    # The default name comes from the image: here the layout directory's.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli("--oci-layout", image.layout.path, "-q", cwd=elsewhere, cache=image.cache)
    assert res.returncode == 0, res.stderr
    assert listing(elsewhere) == ["layout.tar"]
    assert digest((elsewhere / "layout.tar").read_bytes()) == digests["layout"]


def test_entrypoint_closure(tmp_path: Path, image: BuiltImage) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("included\n")
    tar, _ = pack(
        tmp_path,
        image,
        "--oci-layout",
        image.layout.path,
        "--entrypoint-closure",
        "--include",
        f"{extra}:/etc/greeting",
    )
    files = members(tar)
    assert set(files) == {
        "usr/local/bin/app",
        "bin/sh",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libz.so.1",
        "lib/x86_64-linux-gnu/libc.so.6",
        "etc/greeting",
        "litebox/config.json",
        "litebox/config_and_run.sh",
        "litebox/manifest.json",
        "litebox/sbom.cdx.json",
    }
    got = cli("run", tar, "--", *RUN_SCRIPT, cwd=tmp_path, cache=image.cache)
    assert got.returncode == 3, got.stderr
    assert "greeting file: included\n" in got.stdout and "arg 1: arg one\n" in got.stdout


def test_platform_selection_from_an_index(
    tmp_path: Path, image: BuiltImage, plain_registry: Registry
) -> None:
    multi = write_layout(
        tmp_path / "multi",
        [([file("etc/arch", "amd64\n")], "gzip")],
        {"Cmd": ["/bin/sh"]},
        other_arch=True,
    )
    ref = plain_registry.push(multi.path, "tests/multi")
    for args in (["--oci-layout", str(multi.path)], ["--oci-image", ref]):
        tar, _ = pack(tmp_path, image, *args, "-q")
        assert members(tar)["etc/arch"] == b"amd64\n"
        tar, _ = pack(tmp_path, image, *args, "-q", "--platform", "linux/arm64")
        assert members(tar)["etc/arch"] == b"arm64\n"
    res = cli("--oci-layout", multi.path, "--platform", "linux/s390x", "-o", "x.tar", cwd=tmp_path)
    assert (
        res.returncode == 1 and "no linux/s390x image" in res.stderr and "linux/arm64" in res.stderr
    )
    assert not (tmp_path / "x.tar").exists()


def _fails(tmp: Path, *args: str | Path, message: str, **kw) -> None:  # type: ignore[no-untyped-def]
    before = listing(tmp)
    res = cli(*args, "-o", "fail.tar", cwd=tmp, **kw)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert listing(tmp) == before


def test_registry_failures_leave_nothing(
    tmp_path: Path, image: BuiltImage, plain_registry: Registry
) -> None:
    cache = {"cache": image.cache}
    _fails(
        tmp_path,
        "--oci-image",
        f"{plain_registry.host}/tests/app:no-such-tag",
        message="404 not found",
        **cache,
    )
    _fails(
        tmp_path,
        "--oci-image",
        f"{plain_registry.host}/tests/nothing-here",
        message="404 not found",
        **cache,
    )
    # a layer only this repository has, then corrupted in the registry's storage
    marked = write_layout(
        tmp_path / "marked", [([file("etc/marker", uuid.uuid4().hex)], "gzip")], {"Cmd": ["/x"]}
    )
    ref = plain_registry.push(marked.path, "tests/corrupt")
    blob = plain_registry.blob_file(marked.layer_digests[0])
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    _fails(tmp_path, "--oci-image", ref, message="digest mismatch", **cache)
    # nothing listens there
    _fails(
        tmp_path,
        "--oci-image",
        f"127.0.0.1:{_closed_port()}/tests/app",
        message="cannot reach registry",
        **cache,
    )


def _closed_port() -> int:
    from tests.oci_util import free_port

    return free_port()


def test_registry_with_login(
    tmp_path: Path, image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    user = ("tester", f"pw-{uuid.uuid4().hex[:8]}")
    with registry(tmp_path_factory.mktemp("auth-registry"), user=user, tls=True) as reg:
        ref = reg.push(image.layout.path, "tests/private")
        env = {"REQUESTS_CA_BUNDLE": str(reg.ca), "DOCKER_CONFIG": str(tmp_path / "no-docker")}
        _fails(tmp_path, "--oci-image", ref, message="401 Unauthorized", env=env, cache=image.cache)
        _fails(
            tmp_path,
            "--oci-image",
            ref,
            "--username",
            user[0],
            "--password-stdin",
            stdin="wrong\n",
            message="401 Unauthorized",
            env=env,
            cache=image.cache,
        )
        a, _ = pack(
            tmp_path,
            image,
            "--oci-image",
            ref,
            "--username",
            user[0],
            "--password-stdin",
            "-q",
            out="a.tar",
            stdin=user[1] + "\n",
            env=env,
        )
        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        (docker / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        b, _ = pack(
            tmp_path,
            image,
            "--oci-image",
            ref,
            "-q",
            out="b.tar",
            env={**env, "DOCKER_CONFIG": str(docker)},
        )
        # TLS is verified: without the test CA the certificate is refused
        no_ca = {"DOCKER_CONFIG": str(tmp_path / "no-docker")}
        _fails(
            tmp_path,
            "--oci-image",
            ref,
            "--username",
            user[0],
            "--password-stdin",
            stdin=user[1],
            message="TLS certificate not trusted",
            cache=image.cache,
            env=no_ca,
        )
        c, _ = pack(
            tmp_path,
            image,
            "--oci-image",
            ref,
            "--insecure-registry",
            "--username",
            user[0],
            "--password-stdin",
            "-q",
            out="c.tar",
            stdin=user[1],
            env=no_ca,
        )
    local = tmp_path / "local.tar"
    pack(tmp_path, image, "--oci-layout", image.layout.path, "-q", out=local.name)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes() == local.read_bytes()


def test_hostile_image(tmp_path: Path, image: BuiltImage) -> None:
    outside = tmp_path / f"outside-{uuid.uuid4().hex}"
    outside.mkdir()
    bad = [
        symlink("escape", str(outside)),
        symlink("up", "../../../../../../../../.."),
        file("escape/through-link", "stays inside\n"),
        file("up" + str(outside) + "/through-dotdot-link", "stays inside\n"),
        file("../" + outside.name + "/dotdot", "x"),
        file(str(outside / "absolute"), "x"),
        hardlink("passwd", "../../../../etc/passwd"),
        Entry("dev/sda", "chr"),
        Entry("run/fifo", "fifo"),
        file("usr/bin/su", "setuid", 0o4755),
        file("litebox/config_and_run.sh", "#!/bin/sh\necho hijacked\n", 0o755),
    ]
    layout = write_layout(tmp_path / "hostile", [(bad, "gzip")], {"Cmd": ["/bin/true"]})
    tar, res = pack(tmp_path, image, "--oci-layout", layout.path, "--json")
    assert list(outside.iterdir()) == []
    dropped = json.loads(res.stdout)["image"]["dropped"]
    assert dropped["unsafe-path"] == [
        "../" + outside.name + "/dotdot",
        str(outside / "absolute"),
        "passwd -> ../../../../etc/passwd",
    ]
    assert dropped["special-file"] == ["/dev/sda", "/run/fifo"]
    assert dropped["setuid-bits"] == ["/usr/bin/su"]
    assert dropped["reserved-path"] == ["/litebox/config_and_run.sh"]
    assert dropped["symlink-loop"] == ["/up -> ../../../../../../../../.."]
    lines = res.stderr.splitlines()
    assert "litebox-pack: warning: the bundle has no /bin/sh" in lines[0]
    assert {line.split(": ")[2] for line in lines[1:]} == set(dropped)
    files = members(tar)
    inside = str(outside).lstrip("/")
    assert files[f"{inside}/through-link"] == files[f"{inside}/through-dotdot-link"]
    assert files["litebox/config_and_run.sh"] != b"#!/bin/sh\necho hijacked\n"
    assert {m.path: m.mode for m in read_strict(tar)}["usr/bin/su"] == 0o755


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/bin/true", "--oci-layout", "x"], "give programs, or one of"),
        (["--oci-layout", "a", "--rootfs", "b"], "give programs, or one of"),
        (["--oci-image", "x", "--root", "/"], "--root applies to programs"),
        (["/bin/true", "--platform", "linux/amd64"], "--platform applies to container images"),
        (["--oci-image", "x", "--username", "u"], "--username needs --password-stdin"),
        (["--oci-image", "Bad/Name"], "not a valid image name"),
        (["--oci-image", "x", "--platform", "linux"], "expected OS/ARCH"),
        (["--rootfs", "missing-dir"], "not a directory"),
        (["--oci-layout", ".", "--image-config", "c.json"], "--image-config goes with --rootfs"),
        (["--oci-image", "x", "--ref", "v1"], "--ref chooses an image"),
        (["--oci-archive", "missing.tar"], "no such file"),
        (["--oci-layout", "."], "no index.json"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    _fails(tmp_path, *args, message=message)


def test_readme_program_from_an_image_tree(tmp_path: Path, image: BuiltImage) -> None:
    """The README's Docker example packages one program of an image tree with --root."""
    tar, _ = pack(tmp_path, image, "--root", image.rootfs, "/usr/local/bin/app", "-q")
    files = members(tar)
    assert files["usr/local/bin/app"] == (tmp_path / "out.hooked").read_bytes()
    assert {"lib64/ld-linux-x86-64.so.2", "usr/local/bin/app"} <= set(files)
    assert any(p.endswith("/libz.so.1") for p in files)


def test_script_entrypoint_brings_its_interpreter(tmp_path: Path, image: BuiltImage) -> None:
    layers = [
        (
            [
                host_file("bin/busybox", "/bin/busybox", 0o755),
                symlink("bin/sh", "busybox"),
                file("usr/local/bin/start", '#!/bin/sh\necho "started: $*"\n', 0o755),
                file("etc/unrelated", "not in the closure\n"),
            ],
            "gzip",
        )
    ]
    config = {"Env": ["PATH=/usr/local/bin:/bin"], "Entrypoint": ["start"], "Cmd": ["x y"]}
    layout = write_layout(tmp_path / "script", layers, config)
    tar, _ = pack(tmp_path, image, "--oci-layout", layout.path, "--entrypoint-closure")
    files = members(tar)
    assert set(files) - {"litebox/config.json", "litebox/config_and_run.sh"} == {
        "usr/local/bin/start",
        "bin/sh",
        "litebox/manifest.json",
        "litebox/sbom.cdx.json",
    }
    got = cli("run", tar, "--", *RUN_SCRIPT, cwd=tmp_path, cache=image.cache)
    assert (got.returncode, got.stdout) == (0, "started: x y\n"), got.stderr


def test_corrupt_or_inconsistent_local_images_are_refused(
    tmp_path: Path, image: BuiltImage
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(image.layout.path, bad)
    blob = Layout(bad).blob(image.layout.layer_digests[1])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    _fails(tmp_path, "--oci-layout", bad, message="digest mismatch", cache=image.cache)
    _fails(
        tmp_path,
        "--oci-archive",
        tar_directory(bad, tmp_path / "bad-layout.tar"),
        message="digest mismatch",
        cache=image.cache,
    )
    # A config whose diff_ids do not describe the layers (all blobs consistent otherwise).
    layout = write_layout(tmp_path / "lying", [([file("a", "a")], "gzip")], {})
    manifest_blob = Layout(layout.path).blob(layout.manifest_digest)
    manifest = json.loads(manifest_blob.read_bytes())
    lying = json.dumps(
        {
            **json.loads(layout.config_bytes),
            "rootfs": {"type": "layers", "diff_ids": [digest(b"not the layer")]},
        }
    ).encode()
    (layout.path / "blobs/sha256" / digest(lying)[7:]).write_bytes(lying)
    manifest["config"] = {**manifest["config"], "digest": digest(lying), "size": len(lying)}
    text = json.dumps(manifest).encode()
    (layout.path / "blobs/sha256" / digest(text)[7:]).write_bytes(text)
    index = json.loads((layout.path / "index.json").read_text())
    index["manifests"][0].update(digest=digest(text), size=len(text))
    (layout.path / "index.json").write_text(json.dumps(index))
    _fails(
        tmp_path,
        "--oci-layout",
        layout.path,
        message="uncompressed digest mismatch",
        cache=image.cache,
    )


def test_anonymous_bearer_token_flow(
    tmp_path: Path, image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Docker Hub's way: a 401 names a token realm; an anonymous token for the pull scope."""
    tokens = TokenServer(tmp_path_factory.mktemp("tokens"))
    with (
        tokens.serving(),
        registry(tmp_path_factory.mktemp("token-registry"), tls=True, token_server=tokens) as reg,
    ):
        ref = reg.push(image.layout.path, "tests/anonymous")
        assert reg.ca is not None
        ca = tmp_path / "ca.pem"
        ca.write_text(reg.ca.read_text() + tokens.cert.read_text())
        env = {"REQUESTS_CA_BUNDLE": str(ca), "DOCKER_CONFIG": str(tmp_path / "no-docker")}
        first = len(tokens.requests)
        tar, _ = pack(tmp_path, image, "--oci-image", ref, "-q", env=env)
        ours = tokens.requests[first:]
    assert ours, "the registry's 401 sent the client to the token realm"
    for query, authorized in ours:
        assert not authorized  # anonymous: no credentials anywhere
        assert query["scope"] == ["repository:tests/anonymous:pull"]
        assert query["service"] == [TokenServer.SERVICE]
    local, _ = pack(tmp_path, image, "--oci-layout", image.layout.path, "-q", out="local.tar")
    assert tar.read_bytes() == local.read_bytes()


def test_registry_pull_shows_bytes_per_layer_on_a_terminal(
    tmp_path: Path, image: BuiltImage, plain_registry: Registry
) -> None:
    ref = plain_registry.push(image.layout.path, "tests/progress")
    _, manifest = plain_registry.manifest("tests/progress")
    env = {"XDG_CACHE_HOME": str(image.cache), "COLUMNS": "120"}
    argv = [str(EXE), "--oci-image", ref, "-o", str(tmp_path / "t.tar")]
    status, text = run_on_terminal(argv, env)
    assert status == 0, text
    for layer in manifest["layers"]:
        assert f"pulling {layer['digest'].split(':')[1][:12]}" in text
    assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? (bytes|kB|MB)", text), text
    # Piped: no bar, the summary only.
    piped = cli("--oci-image", ref, "-o", "p.tar", cwd=tmp_path, cache=image.cache)
    assert piped.returncode == 0 and "pulling" not in piped.stderr and "files" in piped.stderr
