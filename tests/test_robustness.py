"""Bad input raises RewriteError with one line, never anything else; trailers round-trip."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewriter import RewriteError, Trailer, TrailerState, check_trailer, rewrite_elf
from rewriter.trailer import MAGIC
from tests.elfbuild import tiny_elf

SMALL = tiny_elf(bytes.fromhex("b8 27 00 00 00 0f 05 48 3d 01 f0 ff ff c3 0f 05 c3"))


def rewrite_or_error(data: bytes) -> None:
    try:
        rewrite_elf(data, unpatchable="trap")
    except RewriteError as e:
        msg = str(e)
        assert msg and "\n" not in msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), max_size=12))
def test_random_byte_mutations_raise_only_rewrite_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(SMALL)
    for at, value in edits:
        data[at] = value
    rewrite_or_error(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SMALL)))
def test_truncations_raise_only_rewrite_error(n: int) -> None:
    rewrite_or_error(SMALL[:n])


@pytest.mark.parametrize(
    ("field", "fmt", "value"),
    [
        (32, "<Q", 1 << 60),  # e_phoff far beyond the file
        (40, "<Q", 1 << 60),  # e_shoff far beyond the file
        (56, "<H", 0xFFFF),  # e_phnum absurd
        (60, "<H", 0xFFFF),  # e_shnum absurd
        (58, "<H", 1),  # e_shentsize too small
        (54, "<H", 1),  # e_phentsize too small
    ],
)
def test_absurd_header_fields(field: int, fmt: str, value: int) -> None:
    data = bytearray(SMALL)
    struct.pack_into(fmt, data, field, value)
    with pytest.raises(RewriteError):
        rewrite_elf(bytes(data))


def test_section_beyond_the_file() -> None:
    data = bytearray(SMALL)
    shoff = struct.unpack_from("<Q", data, 40)[0]
    struct.pack_into("<Q", data, shoff + 64 + 32, 1 << 40)  # .text size
    with pytest.raises(RewriteError, match="beyond the file"):
        rewrite_elf(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"\x7fELF\x02\x01\x01" + bytes(20)])
def test_empty_and_truncated(data: bytes) -> None:
    with pytest.raises(RewriteError):
        rewrite_elf(data)


def test_garbage_without_magic_is_left_unchanged() -> None:
    res = rewrite_elf(b"#!/bin/sh\necho hi\n")
    assert res.outcome.value == "unchanged" and res.reason == "not an ELF file"


u64 = st.integers(0, (1 << 64) - 1)


@given(st.integers(0, 16), st.integers(0, 1 << 40), st.integers(1, 1 << 14), st.binary(max_size=64))
def test_trailer_round_trip(page_off: int, page_vaddr: int, size: int, junk: bytes) -> None:
    offset = (len(junk) // 0x1000 + 1 + page_off) * 0x1000
    body = bytearray(offset + size)
    body[: len(junk)] = junk
    t = Trailer(offset, page_vaddr * 0x1000, size)
    c = check_trailer(bytes(body) + t.pack())
    assert c.state is TrailerState.VALID and c.trailer == t


@given(st.binary(max_size=64), u64, u64, u64)
def test_malformed_trailers_are_rejected_with_a_reason(
    prefix: bytes, offset: int, vaddr: int, size: int
) -> None:
    data = prefix + struct.pack("<8sQQQ", MAGIC, offset, vaddr, size)
    c = check_trailer(data)
    if size == 0 or (
        offset % 0x1000 == 0
        and vaddr % 0x1000 == 0
        and offset + size == len(prefix)
        and vaddr + size < 1 << 64
    ):
        assert c.state is TrailerState.VALID
    else:
        assert c.state is TrailerState.INVALID and c.problem


@given(st.integers(0, 255).filter(lambda b: b != ord("0")))
def test_other_version_byte(version: int) -> None:
    data = bytes(64) + b"LITEBOX" + bytes([version]) + bytes(24)
    c = check_trailer(data)
    assert c.state is TrailerState.BAD_VERSION


def test_32_bit_trailer_form() -> None:
    body = bytes(0x2000 + 0x20)
    t = Trailer(0x2000, 0x8000000, 0x20, bits=32)
    packed = t.pack()
    assert len(packed) == 20
    assert check_trailer(body + packed, bits=32).trailer == t


@pytest.mark.parametrize("enabled", [True, False])
def test_rewrite_restores_the_garbage_collector(enabled: bool) -> None:
    """rewrite_elf pauses the cyclic GC for speed; it must leave it as it found it, also when
    the rewrite fails."""
    import gc

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        assert rewrite_elf(SMALL, unpatchable="trap").patched_sites >= 1
        assert gc.isenabled() is enabled
        with pytest.raises(RewriteError):
            rewrite_elf(SMALL)  # one site has no room for a jump: policy "fail" raises
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
