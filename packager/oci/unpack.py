"""Verify, decompress and apply an image's layers into a rootfs directory."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from typing import IO, BinaryIO

import zstandard

from ..errors import UserError
from ..fsutil import HashingReader
from ..tarread import tar_errors
from .findings import Findings
from .image import Image, Layer, sha256_of
from .layers import apply_layer

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compression(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


@contextlib.contextmanager
def decompressed(f: BinaryIO, kind: str) -> Iterator[IO[bytes]]:
    if kind == "gzip":
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            yield g  # type: ignore[misc]
    elif kind == "zstd":
        with zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as z:
            yield z  # type: ignore[misc]
    else:
        yield f


def unpack(image: Image, root: str, findings: Findings) -> None:
    """Apply every layer of ``image``, in order, into ``root`` (an empty real directory)."""
    for i, layer in enumerate(image.layers, 1):
        what = f"{image.where}: layer {i}/{len(image.layers)} ({layer.digest or layer.diff_id})"
        apply_one(layer, root, findings, what)


def apply_one(layer: Layer, root: str, findings: Findings, what: str) -> None:
    with layer.open() as f:
        kind = compression(f.read(4))
        # Check the stored bytes before a single entry is written: docker save layers carry no
        # blob digest, but they are uncompressed, so their diff_id is that digest.
        expected = layer.digest or (layer.diff_id if kind == "none" else None)
        if expected is not None:
            f.seek(0)
            got = sha256_of(f)
            if got != expected:
                raise UserError(f"{what}: digest mismatch: expected {expected}, got {got}")
        f.seek(0)
        with (
            tar_errors(f"{what} ({kind})", (zstandard.ZstdError,)),
            decompressed(f, kind) as stream,
        ):
            hashing = HashingReader(stream)
            apply_layer(root, hashing, findings)  # type: ignore[arg-type]
            # tar readers stop at the end-of-archive blocks; the digest covers the padding too
            while hashing.read(1 << 20):
                pass
            got = "sha256:" + hashing.hexdigest()
        if layer.diff_id is not None and got != layer.diff_id:
            raise UserError(
                f"{what}: uncompressed digest mismatch: the config says {layer.diff_id}, got {got}"
            )
