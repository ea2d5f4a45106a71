"""Pulling from a registry (Docker Registry HTTP API v2 / OCI distribution) with python-dxf.

python-dxf does the protocol: the bearer-token flow (anonymous, or with Basic credentials to
the token realm), Basic auth, manifest and blob requests, and it checks every blob's sha256 as
it streams. This module adds what an image pull needs around it: choosing HTTPS or (only for
loopback registries and ``--insecure-registry``) plain HTTP, checking manifest digests, and
one-line errors. Blobs are downloaded into the caller's work directory before use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, cast

import requests
from dxf import DXF, DXFBase, exceptions

from ..errors import UserError
from .auth import Credentials, config_path
from .image import MAX_JSON, BlobStore, Image, check_digest, load_image, parse_json
from .platform import Platform
from .reference import ImageRef

TIMEOUT = 60.0  # seconds per request (connect and each read), not for a whole blob
# Told when a blob download starts (digest, size if the registry says it); returns the function
# told each chunk's length as it arrives.
DownloadProgress = Callable[[str, int | None], Callable[[int], None]]


class RegistryStore(BlobStore):
    def __init__(
        self, client: DXF, ref: ImageRef, work: str, progress: DownloadProgress | None = None
    ) -> None:
        self.client = client
        self.ref = ref
        self.work = work
        self.where = str(ref)
        self.progress = progress

    def fetch_manifest(self, reference: str) -> tuple[bytes, dict[str, Any]]:
        """GET a manifest by tag or digest; its bytes must match the digest asked for, or the
        one the registry announces."""
        with registry_errors(self.ref):
            _, r = self.client.get_manifest_and_response(reference)
        return self.check_manifest(reference, r)

    def check_manifest(self, reference: str, r: requests.Response) -> tuple[bytes, dict[str, Any]]:
        data = r.content
        if len(data) > MAX_JSON:
            raise UserError(f"{self.where}: manifest too large")
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = reference if reference.startswith("sha256:") else None
        expected = expected or r.headers.get("Docker-Content-Digest")
        if expected and got != expected:
            raise UserError(
                f"{self.where}: manifest {reference}: digest mismatch: expected {expected}, "
                f"got {got}"
            )
        doc = parse_json(data, f"{self.where}: manifest")
        doc.setdefault("mediaType", r.headers.get("Content-Type", "").split(";")[0].strip())
        return data, doc

    def read_manifest(self, desc: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        return self.fetch_manifest(check_digest(desc.get("digest"), f"{self.where}: manifest"))

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        check_digest(digest, self.where)
        path = os.path.join(self.work, digest.split(":", 1)[1])
        if not os.path.exists(path):
            self._download(digest, path)
        return open(path, "rb")

    def _download(self, digest: str, path: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.work, suffix=".part")
        with os.fdopen(fd, "wb") as out, registry_errors(self.ref):
            # python-dxf raises DXFDigestMismatchError after the last chunk if the bytes differ
            # python-dxf's pull_blob returns (chunks, size) with size=True, chunks without
            size: int | None
            try:
                reply = self.client.pull_blob(digest, size=True, chunk_size=1 << 20)
                chunks, size = cast(tuple[Iterable[bytes], int], reply)
            except KeyError:  # no Content-Length (a chunked reply): a bar without a total
                reply = self.client.pull_blob(digest, chunk_size=1 << 20)
                chunks, size = cast(Iterable[bytes], reply), None
            advance = self.progress(digest, size) if self.progress else None
            for chunk in chunks:
                out.write(chunk)
                if advance is not None:
                    advance(len(chunk))
        os.replace(tmp, path)


@contextlib.contextmanager
def registry_errors(ref: ImageRef, reraise: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """python-dxf's and requests' exceptions as one-line UserErrors (but ``reraise``)."""
    try:
        yield
    except reraise:
        raise
    except exceptions.DXFUnauthorizedError:
        raise UserError(
            f"{ref}: the registry refused access (401 Unauthorized); log in with --username "
            f"and --password-stdin, or put credentials in {config_path()}"
        ) from None
    except exceptions.DXFAuthInsecureError:
        raise UserError(
            f"{ref}: the registry wants credentials over plain HTTP; litebox-pack sends "
            "credentials over HTTPS only"
        ) from None
    except exceptions.DXFDigestMismatchError as e:
        raise UserError(
            f"{ref}: blob {e.expected}: digest mismatch: the registry sent {e.got}"
        ) from None
    except exceptions.DXFError as e:
        raise UserError(f"{ref}: {e}") from None
    except requests.HTTPError as e:
        raise UserError(f"{ref}: {_http_error(e.response)}") from None
    except requests.RequestException as e:
        raise UserError(f"{ref}: cannot reach registry {ref.api_host}: {_short(e)}") from None


def _http_error(r: requests.Response | None) -> str:
    if r is None:
        return "HTTP error"
    detail = ""
    with contextlib.suppress(ValueError, AttributeError, KeyError, IndexError, TypeError):
        err = r.json()["errors"][0]
        detail = f": {err.get('code', '')} {err.get('message', '')}".rstrip()
    what = {404: "not found (no such repository, tag or digest)", 403: "access denied"}
    return f"{r.status_code} {what.get(r.status_code, r.reason)}{detail}"


def _short(e: Exception) -> str:
    text = str(e.args[0] if e.args else e)
    return text.splitlines()[0][:300]


@contextlib.contextmanager
def pull(
    ref: ImageRef,
    platform: Platform,
    creds: Credentials | None,
    *,
    insecure: bool,
    work: str,
    progress: DownloadProgress | None = None,
) -> Iterator[Image]:
    """The image ``ref`` names for ``platform``; its blobs are downloaded into ``work`` as they
    are opened. HTTPS first; plain HTTP only for loopback registries or ``insecure``."""

    def authenticate(client: DXFBase, response: requests.Response) -> None:
        user = creds.username if creds else None
        password = creds.password if creds else None
        client.authenticate(user, password, actions=["pull"], response=response)

    plain_allowed = insecure or ref.is_loopback
    attempts = [False, True] if plain_allowed else [False]
    for plain in attempts:
        client = DXF(
            ref.api_host,
            ref.repository,
            authenticate,
            insecure=plain,
            tlsverify=not insecure,
            timeout=TIMEOUT,
        )
        with client:
            store = RegistryStore(client, ref, work, progress)
            try:
                with registry_errors(
                    ref, reraise=(requests.ConnectionError,) if not plain and plain_allowed else ()
                ):
                    _, response = client.get_manifest_and_response(ref.reference)
            except requests.ConnectionError as e:
                if _bad_certificate(e):
                    # HTTPS is there but not trusted: falling back to HTTP would be a downgrade.
                    raise UserError(
                        f"{ref}: cannot reach registry {ref.api_host}: TLS certificate not "
                        "trusted (trust its CA with REQUESTS_CA_BUNDLE=FILE, or use "
                        "--insecure-registry)"
                    ) from None
                continue  # no HTTPS there: a loopback or --insecure-registry registry on HTTP
            first = store.check_manifest(ref.reference, response)
            desc = {"digest": "sha256:" + hashlib.sha256(first[0]).hexdigest()}
            yield load_image(store, desc, platform, first=first)
            return


def _bad_certificate(e: BaseException) -> bool:
    """Did TLS fail on the certificate (rather than because the server speaks plain HTTP)?"""
    seen: set[int] = set()
    todo: list[object] = [e]
    while todo:
        x = todo.pop()
        if id(x) in seen or not isinstance(x, BaseException):
            continue
        seen.add(id(x))
        if isinstance(x, ssl.SSLCertVerificationError):
            return True
        todo += [x.__cause__, x.__context__, *x.args, getattr(x, "reason", None)]
    return "CERTIFICATE_VERIFY_FAILED" in str(e)
