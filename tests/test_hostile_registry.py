"""A loopback registry that misbehaves (endless body, trickle, huge blob, wrong digest): every
download is bounded by size and total time, and each fault is one clean error line.

The server is a tiny threaded http.server on 127.0.0.1; each response is bounded in bytes and
seconds itself, so nothing outlives the test. The client's bounds are lowered through the
environment (LITEBOX_PACK_HTTP_TOTAL, LITEBOX_PACK_HTTP_TIMEOUT) so the test runs in seconds."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile import cli, leftovers, one_line_error
from tests.oci_util import (
    LAYER_TYPES,
    OCI_CONFIG,
    OCI_MANIFEST,
    compress,
    file,
    image_config,
    layer_tar,
)

SERVER_SECONDS = 20  # no response of the server lasts longer
SERVER_BYTES = 64 << 20  # nor sends more
BOUNDS = {"LITEBOX_PACK_HTTP_TOTAL": "3", "LITEBOX_PACK_HTTP_TIMEOUT": "2"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    def __init__(self) -> None:
        tar = layer_tar([file("etc/hello", "hi\n")])
        self.layer = compress(tar, "gzip")
        self.config = json.dumps(image_config([tar], {"Cmd": ["/bin/true"]})).encode()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": _digest(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {
                        "mediaType": LAYER_TYPES["gzip"],
                        "digest": _digest(self.layer),
                        "size": len(self.layer),
                    }
                ],
            }
        ).encode()


IMAGE = Image()


class Handler(http.server.BaseHTTPRequestHandler):
    mode = "good"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endless(self, chunk: bytes, pause: float = 0.0) -> None:
        """A close-delimited body that never ends (until the bounds of this server)."""
        self.send_response(200)
        self.send_header("Content-Type", OCI_MANIFEST)
        self.send_header("Connection", "close")
        self.end_headers()
        start, sent = time.monotonic(), 0
        try:
            while time.monotonic() - start < SERVER_SECONDS and sent < SERVER_BYTES:
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # the client gave up: that is the point
        self.close_connection = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/v2/":
            self._send(b"{}", "application/json")
        elif "/manifests/" in path:
            if self.mode == "endless-manifest":
                self._endless(b"[" * 65536)
            elif self.mode == "trickle-manifest":
                self._endless(b" ", pause=0.5)
            else:
                self._send(IMAGE.manifest, OCI_MANIFEST)
        elif path.endswith(_digest(IMAGE.config)):
            self._send(IMAGE.config)
        elif path.endswith(_digest(IMAGE.layer)):
            if self.mode == "huge-blob":
                self._endless(b"\0" * 65536)
            elif self.mode == "trickle-blob":
                self._endless(b"\0", pause=0.5)
            elif self.mode == "wrong-digest":
                self._send(bytes(len(IMAGE.layer)))
            else:
                self._send(IMAGE.layer)
        else:
            self.send_error(404)


@pytest.fixture()
def serve() -> Iterator[object]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(mode: str) -> str:
        handler = type("H", (Handler,), {"mode": mode})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"127.0.0.1:{srv.server_address[1]}/app:latest"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_a_well_behaved_loopback_registry_works(tmp_path: Path, serve) -> None:  # type: ignore[no-untyped-def]
    ref = serve("good")
    res = cli("--oci-image", ref, "-o", "o.tar", "-q", cwd=tmp_path, env=BOUNDS, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o.tar").is_file()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("endless-manifest", "larger than"),
        ("trickle-manifest", "longer than 3 s"),
        ("huge-blob", "larger than"),
        ("trickle-blob", "longer than 3 s"),
        ("wrong-digest", "digest mismatch"),
    ],
)
def test_misbehaving_registry_gives_a_clean_error_in_bounds(
    tmp_path: Path,
    serve,  # type: ignore[no-untyped-def]
    mode: str,
    reason: str,
) -> None:
    ref = serve(mode)
    start = time.monotonic()
    res = cli("--oci-image", ref, "-o", "o.tar", cwd=tmp_path, env=BOUNDS, timeout=60)
    took = time.monotonic() - start
    one_line_error(res, reason)
    # the documented bound: LITEBOX_PACK_HTTP_TOTAL plus one read timeout, plus start-up
    assert took < 3 + 2 + 8, f"took {took:.1f} s"
    assert not (tmp_path / "o.tar").exists() and leftovers(tmp_path) == []
