"""Images as manifests, configs and layer blobs, wherever they are stored.

An OCI image layout (a directory, or a tar of one: ``--oci-layout``, ``--oci-archive``) and a
registry serve blobs by digest; a ``docker save`` tar names them by path in its
``manifest.json``. Either way the result is an ``Image``: the raw config bytes, and the layers
in order, each with the digests it must match. Every blob read here is checked against its
digest before it is used: manifests and configs as they are read, layers before extraction
(and again, uncompressed, against the config's ``diff_ids`` while they are extracted).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from ..errors import UserError
from ..fsutil import open_input
from ..jsonload import MAX_JSON, load_object, loads
from ..tarread import open_tar, tar_errors
from .platform import Platform, describe

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_NESTING = 4  # index → index → manifest; deeper is not an image
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20

Opener = Callable[[], contextlib.AbstractContextManager[BinaryIO]]


@dataclass
class Layer:
    media_type: str
    digest: str | None  # of the stored (maybe compressed) blob, when known
    diff_id: str | None  # of the uncompressed tar, from the config
    open: Opener = field(repr=False)


@dataclass
class Image:
    config_bytes: bytes
    layers: list[Layer]
    digest: str | None  # of the manifest
    where: str  # for messages: the reference, file or directory

    @property
    def config(self) -> dict[str, Any]:
        return parse_json(self.config_bytes, f"{self.where}: image config")

    @property
    def platform(self) -> str:
        return describe(self.config)


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    return load_object(data, what)


def check_digest(digest: object, what: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise UserError(f"{what}: unsupported or malformed digest {digest!r} (want sha256:HEX)")
    return digest


def sha256_of(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise UserError(f"{what}: digest mismatch: expected {digest}, got {got}")
    return data


class BlobStore:
    """Blobs by digest: a layout directory, a layout inside a tar, or downloaded files."""

    where = ""

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def declare(self, digest: str, size: object) -> None:
        """A descriptor says blob ``digest`` has ``size`` bytes (registries bound downloads
        by it; local stores check digests, which covers sizes)."""

    def read_manifest(self, desc: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """A manifest or index (registries serve those apart from blobs)."""
        return self.read_json(desc, "manifest")

    def read_json(self, desc: dict[str, Any], what: str) -> tuple[bytes, dict[str, Any]]:
        digest = check_digest(desc.get("digest"), what)
        size = desc.get("size")
        self.declare(digest, size)
        if isinstance(size, int) and size > MAX_JSON:
            raise UserError(f"{what} {digest}: {size} bytes is too large for a manifest or config")
        with self.open_blob(digest) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise UserError(f"{what} {digest}: too large for a manifest or config")
        verify_bytes(data, digest, f"{self.where}: {what} {digest}")
        return data, parse_json(data, f"{self.where}: {what} {digest}")


def _media_type(desc: dict[str, Any], doc: dict[str, Any]) -> str:
    return str(doc.get("mediaType") or desc.get("mediaType") or "")


def _kind(media_type: str, doc: dict[str, Any]) -> str:
    if media_type in INDEXES or (not media_type and "manifests" in doc):
        return "index"
    if media_type in MANIFESTS or (not media_type and "config" in doc and "layers" in doc):
        return "manifest"
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise UserError("Docker schema 1 manifests are not supported (re-push the image)")
    raise UserError(f"unsupported manifest type {media_type or 'unknown'!r}")


def pick(entries: list[dict[str, Any]], platform: Platform, where: str) -> dict[str, Any]:
    """The index entry for ``platform``; entries without a platform only when alone."""
    usable = [e for e in entries if isinstance(e, dict)]
    with_platform = [e for e in usable if isinstance(e.get("platform"), dict)]
    if with_platform:
        matches = [e for e in with_platform if platform.matches(e["platform"])]
        if matches:
            # An entry that spells the requested variant (or none) beats a guessed one.
            exact = [e for e in matches if e["platform"].get("variant") == platform.variant]
            return (exact or matches)[0]
        have = ", ".join(sorted({describe(e["platform"]) for e in with_platform}))
        raise UserError(f"{where}: no {platform} image (the index has {have}); use --platform")
    if len(usable) == 1:
        return usable[0]
    if not usable:
        raise UserError(f"{where}: the index lists no images")
    raise UserError(f"{where}: the index lists {len(usable)} images; choose one with --ref")


def load_image(
    store: BlobStore,
    desc: dict[str, Any],
    platform: Platform,
    *,
    first: tuple[bytes, dict[str, Any]] | None = None,
) -> Image:
    """Follow ``desc`` (an index or manifest descriptor) to one image for ``platform``.

    ``first``: the already fetched and verified bytes of ``desc`` (a registry's answer).
    """
    where = store.where
    for _ in range(MAX_NESTING):
        _, doc = first or store.read_manifest(desc)
        first = None
        kind = _kind(_media_type(desc, doc), doc)
        if kind == "index":
            manifests = doc.get("manifests")
            if not isinstance(manifests, list):
                raise UserError(f"{where}: index without a manifests list")
            desc = pick(manifests, platform, where)
            continue
        return _image(store, desc, doc, platform)
    raise UserError(f"{where}: indexes nested more than {MAX_NESTING} deep")


def _image(
    store: BlobStore, desc: dict[str, Any], doc: dict[str, Any], platform: Platform
) -> Image:
    where = store.where
    config_desc = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config_desc, dict) or not isinstance(layers, list):
        raise UserError(f"{where}: manifest without config or layers")
    config_bytes, config = store.read_json(config_desc, "config")
    diff_ids = diff_ids_of(config, len(layers), where)
    out = []
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        if not isinstance(layer, dict):
            raise UserError(f"{where}: malformed layer descriptor")
        media_type = str(layer.get("mediaType", ""))
        digest = check_digest(layer.get("digest"), f"{where}: layer")
        if "foreign" in media_type or "nondistributable" in media_type:
            raise UserError(f"{where}: layer {digest} is a foreign (Windows) layer")
        if "encrypted" in media_type:
            raise UserError(f"{where}: layer {digest} is encrypted")
        store.declare(digest, layer.get("size"))
        out.append(Layer(media_type, digest, diff_id, _opener(store, digest)))
    image = Image(config_bytes, out, desc.get("digest"), where)
    _check_platform(config, platform, where)
    return image


def _opener(store: BlobStore, digest: str) -> Opener:
    return lambda: store.open_blob(digest)


def diff_ids_of(config: dict[str, Any], count: int, where: str) -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or len(ids) != count:
        n = len(ids) if isinstance(ids, list) else 0
        raise UserError(f"{where}: the config lists {n} layer diff_ids for {count} layers")
    return [check_digest(d, f"{where}: diff_id") for d in ids]


def _check_platform(config: dict[str, Any], platform: Platform, where: str) -> None:
    if config.get("os") not in (None, platform.os):
        raise UserError(f"{where}: the image is for {describe(config)}, not {platform}")


# -- OCI image layouts -----------------------------------------------------------------------


class LayoutDir(BlobStore):
    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        check_digest(digest, self.where)
        host = os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])
        try:
            return open(host, "rb")
        except OSError as e:
            raise UserError(f"{self.where}: blob {digest}: {e.strerror or e}") from None

    def top(self) -> bytes | None:
        try:
            with open(os.path.join(self.path, "index.json"), "rb") as f:
                return f.read(MAX_JSON + 1)  # one more: loads() refuses what is too large
        except FileNotFoundError:
            return None


class TarArchive(BlobStore):
    """A tar file (``docker save`` or an OCI layout), members read in place by offset."""

    def __init__(self, path: str) -> None:
        self.where = path
        # Open for the archive's lifetime: layers are read from it one after the other.
        self.raw = open_input(path)
        try:
            with tar_errors(path):
                self.tar = open_tar(self.raw, "r:*")
                self.members = {
                    _member_name(m.name): m for m in self.tar.getmembers() if m.isreg() or m.islnk()
                }
        except BaseException:
            self.raw.close()
            raise

    def close(self) -> None:
        self.tar.close()
        self.raw.close()

    def __enter__(self) -> TarArchive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextlib.contextmanager
    def open_member(self, name: str) -> Iterator[BinaryIO]:
        member = self.members.get(name)
        if member is None:
            raise UserError(f"{self.where}: no {name} in the archive")
        f = self.tar.extractfile(member)
        if f is None:
            raise UserError(f"{self.where}: {name} is not a file")
        with f:
            yield f  # type: ignore[misc]

    def read_member(self, name: str) -> bytes:
        with self.open_member(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise UserError(f"{self.where}: {name} is too large")
        return data

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        check_digest(digest, self.where)
        return self.open_member("blobs/sha256/" + digest.split(":", 1)[1])


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def select_in_index(index: dict[str, Any], ref: str | None, where: str) -> list[dict[str, Any]]:
    """Entries of an image layout's top index.json, narrowed to ``ref`` when given."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise UserError(f"{where}: index.json has no manifests list")
    if ref is None:
        return entries
    chosen = [e for e in entries if isinstance(e, dict) and _names(e, ref)]
    if not chosen:
        names = sorted(
            {str((e.get("annotations") or {}).get(REF_NAME, "")) for e in entries} - {""}
        )
        raise UserError(f"{where}: no image named {ref!r} (names: {', '.join(names) or 'none'})")
    return chosen


def _names(entry: dict[str, Any], ref: str) -> bool:
    notes = entry.get("annotations") or {}
    name = str(notes.get(REF_NAME, ""))
    full = str(notes.get(CONTAINERD_NAME, ""))
    return ref in (name, full) or full.endswith(":" + ref) or full.endswith("/" + ref)


def image_from_layout(
    store: LayoutDir | TarArchive, index_bytes: bytes, ref: str | None, platform: Platform
) -> Image:
    index = parse_json(index_bytes, f"{store.where}: index.json")
    entries = select_in_index(index, ref, store.where)
    desc = pick(entries, platform, store.where) if len(entries) > 1 else _only(entries, store)
    return load_image(store, desc, platform)


def _only(entries: list[dict[str, Any]], store: BlobStore) -> dict[str, Any]:
    if not entries or not isinstance(entries[0], dict):
        raise UserError(f"{store.where}: index.json lists no images")
    return entries[0]


# -- docker save ------------------------------------------------------------------------------


def image_from_docker_save(archive: TarArchive, ref: str | None, platform: Platform) -> Image:
    where = archive.where
    doc = loads(archive.read_member("manifest.json"), f"{where}: manifest.json")
    if not isinstance(doc, list) or not doc:
        raise UserError(f"{where}: manifest.json lists no images")
    entries = [e for e in doc if isinstance(e, dict)]
    if ref is not None:
        entries = [e for e in entries if _tagged(e, ref)]
        if not entries:
            raise UserError(f"{where}: no image tagged {ref!r}")
    if len(entries) > 1:
        tags = ", ".join(t for e in entries for t in (e.get("RepoTags") or []))
        raise UserError(f"{where}: {len(entries)} images ({tags}); choose one with --ref")
    entry = entries[0]
    config_name = _member_name(str(entry.get("Config", "")))
    config_bytes = archive.read_member(config_name)
    named = _digest_in_name(config_name)
    if named:
        verify_bytes(config_bytes, named, f"{where}: config {config_name}")
    config = parse_json(config_bytes, f"{where}: config")
    names = entry.get("Layers")
    if not isinstance(names, list):
        raise UserError(f"{where}: manifest.json entry without Layers")
    diff_ids = diff_ids_of(config, len(names), where)
    layers = []
    for name, diff_id in zip(names, diff_ids, strict=True):
        member = _member_name(str(name))
        layers.append(Layer("", _digest_in_name(member), diff_id, _member_opener(archive, member)))
    _check_platform(config, platform, where)
    return Image(config_bytes, layers, None, where)


def _member_opener(archive: TarArchive, name: str) -> Opener:
    return lambda: archive.open_member(name)


def _tagged(entry: dict[str, Any], ref: str) -> bool:
    tags = [str(t) for t in (entry.get("RepoTags") or [])]
    return any(t == ref or t == ref + ":latest" or t.endswith("/" + ref) for t in tags)


def _digest_in_name(name: str) -> str | None:
    """``blobs/sha256/HEX`` and ``HEX.json``-style names say their content's digest."""
    m = re.match(r"^(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?$", name)
    return f"sha256:{m.group(1)}" if m else None


def bytes_opener(data: bytes) -> Opener:
    return lambda: contextlib.nullcontext(io.BytesIO(data))
