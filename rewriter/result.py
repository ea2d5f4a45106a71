"""What happened to a file: one outcome type, used by the manifest, the audit and the CLI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .common import Abi, Strategy
from .fork_patch import ForkPatch
from .trailer import Trailer


class Outcome(StrEnum):
    PATCHED = "patched"
    MARKER = "checked-nothing-to-patch"
    ALREADY_HOOKED = "already-hooked"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Site:
    """One ``syscall`` instruction and what was done with it."""

    address: int
    strategy: Strategy
    window: tuple[int, int] = (0, 0)  # guest bytes replaced by the jump (empty when unpatched)
    stub_vaddr: int | None = None
    stub_size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "strategy": self.strategy.value,
            "window": list(self.window),
            "stub_vaddr": self.stub_vaddr,
            "stub_size": self.stub_size,
        }


@dataclass(frozen=True, slots=True)
class DataInCode:
    """A linear-sweep ``syscall`` with no evidence of being code: its bytes are left alone."""

    address: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "why": self.why}


NO_CODE_MAP = "no code map: every site patched"


@dataclass(frozen=True)
class RewriteResult:
    data: bytes
    outcome: Outcome
    reason: str = ""
    abi: Abi | None = None
    sites: tuple[Site, ...] = ()
    trailer: Trailer | None = None
    fork_patch: ForkPatch | None = None
    candidates: int = 0  # 0F 05 byte pairs in executable sections
    warnings: tuple[str, ...] = field(default=())
    data_in_code: tuple[DataInCode, ...] = ()
    # What told code from data: "eh_frame", "symbols", "eh_frame+symbols", "none" (nothing
    # did: every site patched), "off" (--no-data-guard); "" when no site was found at all.
    code_map: str = ""
    unmapped: tuple[str, ...] = ()  # sections too thinly mapped to judge: every site patched

    @property
    def code_map_notes(self) -> list[str]:
        """What the reader should know about how sites were told from data."""
        if self.code_map == "none":
            return [NO_CODE_MAP]
        return [f"no code map for {name}: every site there patched" for name in self.unmapped]

    @property
    def unpatchable(self) -> tuple[int, ...]:
        return tuple(
            s.address for s in self.sites if s.strategy in (Strategy.TRAPPED, Strategy.KEPT)
        )

    @property
    def patched_sites(self) -> int:
        return sum(1 for s in self.sites if s.stub_vaddr is not None)

    @property
    def strategy_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.strategy.value for s in self.sites).items()))

    def summary(self) -> str:
        if self.outcome is Outcome.PATCHED:
            assert self.trailer is not None
            counts = ", ".join(f"{n} {k}" for k, n in self.strategy_counts.items())
            text = (
                f"patched {self.patched_sites} syscall site(s) ({counts}); "
                f"trampoline {self.trailer.size} bytes at vaddr {self.trailer.vaddr:#x}"
            )
            if self.unpatchable:
                text += f"; {len(self.unpatchable)} unpatchable"
            if self.fork_patch:
                text += "; fork→vfork"
            return text + self._guard_summary()
        if self.outcome is Outcome.MARKER:
            return "checked, nothing to patch (header-only marker)" + self._guard_summary()
        if self.outcome is Outcome.ALREADY_HOOKED:
            return "already rewritten; left as is"
        return f"left unchanged: {self.reason}"

    def _guard_summary(self) -> str:
        text = "".join(f"; {n}" for n in self.code_map_notes)
        if self.data_in_code:
            at = ", ".join(f"{d.address:#x}" for d in self.data_in_code)
            text += f"; {len(self.data_in_code)} data-in-code site(s) left as they are ({at})"
        return text

    def to_json(self) -> dict[str, Any]:
        t = self.trailer
        fp = self.fork_patch
        return {
            "outcome": self.outcome.value,
            "reason": self.reason or None,
            "abi": self.abi.value if self.abi else None,
            "candidates": self.candidates,
            "sites_patched": self.patched_sites,
            "strategies": self.strategy_counts,
            "unpatchable": list(self.unpatchable),
            "trampoline": (
                {"file_offset": t.file_offset, "vaddr": t.vaddr, "size": t.size} if t else None
            ),
            "fork_patch": (
                {
                    "fork": fp.fork_symbol,
                    "vfork": fp.vfork_symbol,
                    "jump_vaddr": fp.jump_vaddr,
                }
                if fp
                else None
            ),
            "sites": [s.to_json() for s in self.sites],
            "data_in_code": [d.to_json() for d in self.data_in_code],
            "code_map": self.code_map or None,
            "code_map_notes": self.code_map_notes,
            "warnings": list(self.warnings),
        }


def unchanged(data: bytes, reason: str) -> RewriteResult:
    return RewriteResult(data, Outcome.UNCHANGED, reason)


def marker_result(
    data: bytes,
    bits: int,
    candidates: int,
    data_in_code: tuple[DataInCode, ...] = (),
    code_map: str = "",
) -> RewriteResult:
    """Checked, nothing to patch: the input plus a trailer whose fields are all zero. Also the
    outcome when every site is data-in-code, so that LiteBox's load-time patcher leaves the
    file alone instead of patching the data."""
    t = Trailer(0, 0, 0, bits)
    return RewriteResult(
        data + t.pack(),
        Outcome.MARKER,
        trailer=t,
        candidates=candidates,
        data_in_code=data_in_code,
        code_map=code_map,
    )
