"""The one exception type the rewriter raises for bad input or an impossible rewrite."""

from __future__ import annotations


class RewriteError(Exception):
    """A file could not be parsed or rewritten. The message is one line, fit for a user."""


class UnpatchableSyscallsError(RewriteError):
    """Some syscall sites have no room for a jump (policy ``fail``)."""

    def __init__(self, addresses: list[int]) -> None:
        self.addresses = tuple(addresses)
        shown = ", ".join(f"{a:#x}" for a in self.addresses)
        super().__init__(f"{len(self.addresses)} unpatchable syscall site(s) at [{shown}]")
