"""Test helpers for container images: layer tars, OCI image layouts, a real registry.

Layers are written with Python's tarfile (entries in exactly the order a test gives, so
whiteouts can come before or after what they hide); layouts follow the OCI image-layout spec.
The registry is Debian's ``docker-registry`` (the CNCF distribution server), started on a free
loopback port with its own storage directory; images reach it through ``skopeo copy``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
REGISTRY = "/usr/bin/docker-registry"
EXE = Path(sys.executable).parent / "litebox-pack"


# -- layers ---------------------------------------------------------------------------------


@dataclass
class Entry:
    """One tar entry. kind: file, dir, symlink, hardlink, fifo, chr; ``data`` for files,
    ``target`` for links."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def file(name: str, data: bytes | str, mode: int = 0o644) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode=mode)


def host_file(name: str, path: str | os.PathLike[str], mode: int | None = None) -> Entry:
    p = Path(path)
    return Entry(
        name, "file", p.read_bytes(), mode=p.stat().st_mode & 0o7777 if mode is None else mode
    )


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, "dir", mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", target=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def layer_tar(entries: list[Entry]) -> bytes:
    """An uncompressed layer tar with the entries in the order given (PAX for long names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            info.mtime = 0
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[e.kind]
            info.linkname = e.target
            tar.addfile(info)
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- image layouts --------------------------------------------------------------------------


@dataclass
class Layout:
    path: Path
    manifest_digest: str = ""
    config_bytes: bytes = b""
    layer_digests: list[str] = field(default_factory=list)

    def blob(self, d: str) -> Path:
        return self.path / "blobs" / "sha256" / d.split(":", 1)[1]


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    d = digest(data)
    blob = layout / "blobs" / "sha256" / d.split(":", 1)[1]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return {"digest": d, "size": len(data)}


def image_config(
    layers: list[bytes], config: dict[str, Any], arch: str = "amd64"
) -> dict[str, Any]:
    return {
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in layers]},
        "history": [{"created_by": "litebox-pack tests"} for _ in layers],
    }


def add_image(
    layout: Path, layers: list[tuple[list[Entry], str]], config: dict[str, Any], arch: str = "amd64"
) -> tuple[dict[str, Any], bytes, list[str]]:
    """Store one image's blobs; return its manifest descriptor, config bytes, layer digests."""
    tars = [layer_tar(entries) for entries, _ in layers]
    config_bytes = json.dumps(image_config(tars, config, arch), indent=1).encode()
    descs = []
    for tar, (_, kind) in zip(tars, layers, strict=True):
        descs.append({"mediaType": LAYER_TYPES[kind], **_put(layout, compress(tar, kind))})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **_put(layout, config_bytes)},
        "layers": descs,
    }
    desc = {"mediaType": OCI_MANIFEST, **_put(layout, json.dumps(manifest).encode())}
    desc["platform"] = {"architecture": arch, "os": "linux"}
    return desc, config_bytes, [d["digest"] for d in descs]


def write_layout(
    path: Path,
    layers: list[tuple[list[Entry], str]],
    config: dict[str, Any],
    *,
    tag: str = "latest",
    other_arch: bool = False,
) -> Layout:
    """An OCI image layout holding one image (amd64), or with ``other_arch`` an index of it and
    a small arm64 image, tagged ``tag``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    desc, config_bytes, layer_digests = add_image(path, layers, config)
    top = desc
    if other_arch:
        other, _, _ = add_image(
            path, [([file("etc/arch", "arm64\n")], "gzip")], {"Cmd": ["/bin/true"]}, "arm64"
        )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [other, desc]}
        top = {"mediaType": OCI_INDEX, **_put(path, json.dumps(index).encode())}
    top = {**{k: v for k, v in top.items() if k != "platform"}}
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (path / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
    )
    return Layout(path, desc["digest"], config_bytes, layer_digests)


def tar_directory(src: Path, dest: Path) -> Path:
    """A plain tar of a directory (how an OCI layout is shipped as an archive)."""
    with tarfile.open(dest, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return dest


# -- tools ----------------------------------------------------------------------------------


def run(cmd: list[str | os.PathLike[str]], **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{cmd}: {res.stderr}"
    return res


def skopeo_copy(src: str, dest: str, *extra: str) -> None:
    run(["skopeo", "copy", "--insecure-policy", "--all", *extra, src, dest])


def cli(
    *args: str | os.PathLike[str],
    cwd: Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cache: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run litebox-pack; ``cache``: a rewrite/runtime cache shared between calls."""
    full = {**os.environ, "XDG_CACHE_HOME": str(cache or cwd / ".cache"), **(env or {})}
    return subprocess.run(
        [str(EXE), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full,
        input=stdin,
        timeout=300,
    )


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if ".cache" not in p.parts)


# -- the registry ---------------------------------------------------------------------------


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    ca: Path | None = None  # the certificate to trust when it speaks TLS
    user: tuple[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def blob_file(self, d: str) -> Path:
        hexd = d.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def manifest(self, repo: str, tag: str = "latest") -> tuple[str, dict[str, Any]]:
        """The registry's own digest and text of a manifest (a push may re-encode it, and
        skopeo compresses plain layers on the way)."""
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return str(r.headers["Docker-Content-Digest"]), json.loads(r.read())

    def push(self, layout: Path, repo: str, tag: str = "latest") -> str:
        extra = ["--dest-tls-verify=false"]
        if self.user:
            extra.append(f"--dest-creds={self.user[0]}:{self.user[1]}")
        ref = f"{self.host}/{repo}:{tag}"
        skopeo_copy(f"oci:{layout}:{tag}", f"docker://{ref}", *extra)
        return ref


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's libxcrypt does bcrypt, which the registry's htpasswd wants

        # cost 4 (the minimum): the registry checks it on every request
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def certificate(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", key, "-out", cert,
        ]
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def registry(
    d: Path,
    *,
    user: tuple[str, str] | None = None,
    tls: bool = False,
    token_server: TokenServer | None = None,
) -> Iterator[Registry]:
    """A docker-registry on a free loopback port, storage under ``d``; stopped on exit.

    ``user``: htpasswd (Basic) auth; ``token_server``: bearer-token auth, as Docker Hub does it
    (both need ``tls``: clients send no credentials to plain HTTP)."""
    if not os.access(REGISTRY, os.X_OK):
        raise AssertionError(f"{REGISTRY} is missing: apt-get install docker-registry")
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    reg = Registry(f"127.0.0.1:{port}", d / "storage", user=user)
    http: dict[str, Any] = {"addr": reg.host}
    if tls:
        cert, key = certificate(d)
        http["tls"] = {"certificate": str(cert), "key": str(key)}
        reg.ca = cert
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(reg.storage)}},
        "http": http,
    }
    if user:
        (d / "htpasswd").write_text(f"{user[0]}:{_bcrypt(user[1])}\n")
        config["auth"] = {"htpasswd": {"realm": "litebox-tests", "path": str(d / "htpasswd")}}
    if token_server:
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": TokenServer.SERVICE,
                "issuer": TokenServer.ISSUER,
                "rootcertbundle": str(token_server.cert),
            }
        }
    # JSON is YAML: no YAML writer needed.
    (d / "config.yml").write_text(json.dumps(config))
    log = (d / "registry.log").open("wb")
    reg.proc = subprocess.Popen([REGISTRY, "serve", str(d / "config.yml")], stdout=log, stderr=log)
    try:
        _wait_ready(reg, d / "registry.log")
        yield reg
    finally:
        reg.proc.terminate()
        try:
            reg.proc.wait(10)
        except subprocess.TimeoutExpired:
            reg.proc.kill()
            reg.proc.wait()
        log.close()


def _wait_ready(reg: Registry, log: Path) -> None:
    scheme = "https" if reg.ca else "http"
    ctx = ssl.create_default_context(cafile=str(reg.ca)) if reg.ca else None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert reg.proc is not None
        if reg.proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {log.read_text()}")
        try:
            urllib.request.urlopen(f"{scheme}://{reg.host}/v2/", timeout=2, context=ctx)
            return
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"docker-registry did not start: {log.read_text()}")


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


class TokenServer:
    """A bearer-token service for the registry (the Docker token protocol, anonymous).

    It grants what is asked, to anyone, in RS256 JWTs whose x5c header carries its certificate
    (the registry trusts that certificate as its root), and records each request's query and
    whether it carried an Authorization header. HTTPS only, like every token realm.
    """

    SERVICE = "litebox-test-registry"
    ISSUER = "litebox-test-tokens"

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = certificate(d)
        self.requests: list[tuple[dict[str, list[str]], bool]] = []
        self.port = free_port()
        self.realm = f"https://127.0.0.1:{self.port}/token"

    def token(self, scopes: list[str]) -> str:
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": "",
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing.encode(),
            capture_output=True,
            check=True,
        ).stdout
        return f"{signing}.{_b64url(signature)}"

    @contextlib.contextmanager
    def serving(self) -> Iterator[TokenServer]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                server.requests.append((query, "Authorization" in self.headers))
                body = json.dumps({"token": server.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(10)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
