"""``litebox-pack run``: execute a bundle natively with its trampolines live (spec/runtime.md).

An i386 PROGRAM (ELF32, or a "#!" script whose interpreter is one) runs under the i386 build of
the runtime, which its i386 programs exec in turn; the report's "abi" is then "i386" (both
``--abi`` values write the same i386 stubs, so the option does not matter there).

Exit status: the program's own. A program killed by a signal makes ``run`` die of the same
signal. ``--strict`` stops at the first escaped syscall with status ``STRICT_STATUS`` (125) and
one line on stderr. Problems with the bundle itself are one-line errors with status 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..console import warn
from ..errors import UserError
from ..fsutil import write_atomic
from .build import runtime_binary
from .bundle import (
    ABIS,
    Bundle,
    check_program,
    detect_abi,
    has_trailer,
    hooked_program_path,
    is_elf,
    open_bundle,
    program_arch,
    program_path,
    scan_elves,
)
from .report import Records, build_report, parse_records

STRICT_STATUS = 125  # must match STRICT_STATUS in rt.h


@dataclass(frozen=True)
class RunRequest:
    bundle: Path
    program: str | None  # absolute in-bundle path; None with ``hooked``
    args: list[str] = field(default_factory=list)
    abi: str = "auto"
    trace: bool = False
    strict: bool = False
    report: Path | None = None
    hooked: Path | None = None  # the rewritten main binary written beside the tar


def run(req: RunRequest) -> int:
    """Run the program; return its exit status, or -N when signal N killed it."""
    if req.abi not in ("auto", *ABIS):
        raise UserError(f"--abi must be auto, redzone or resume, not {req.abi!r}")
    with open_bundle(req.bundle) as bundle:
        if req.hooked is not None:
            program = hooked_program_path(bundle, req.hooked)
            image = req.hooked.resolve()
        else:
            if not req.program:
                raise UserError("no PROGRAM given: litebox-pack run BUNDLE -- PROGRAM [ARGS...]")
            program = program_path(bundle, req.program)
            image = bundle.host_path(program)
        scan = scan_elves(bundle)
        _check_is_bundle(bundle, program, image, bool(scan.rewritten or scan.markers), req.hooked)
        arch = program_arch(bundle, image)
        if arch == "i386":
            abi, runtime_abi = "i386", "redzone"  # one stub form; the runtime ignores --abi
        else:
            abi = runtime_abi = _choose_abi(req.abi, bundle, image, scan)
        binary = runtime_binary(arch)
        with _records_file() as records:
            cmd = [str(binary), "--bundle", str(bundle.root), "--abi", runtime_abi]
            cmd += ["--report", str(records)]
            if req.trace:
                cmd.append("--trace")
            if req.strict:
                cmd.append("--strict")
            if req.hooked is not None:
                cmd += ["--load-from", str(image)]
            cmd += ["--", program, program, *req.args]
            status = _spawn(cmd)
            rec = parse_records(records.read_text(errors="replace"), arch)
    if req.report is not None:
        doc = build_report(
            rec, bundle=req.bundle, program=program, args=req.args, abi=abi, status=status
        )
        write_atomic(req.report, (json.dumps(doc, indent=2) + "\n").encode())
    _warn_escapes(rec, strict_stopped=req.strict and status == STRICT_STATUS)
    return status


def _check_is_bundle(
    bundle: Bundle, program: str, image: Path, any_rewritten: bool, hooked: Path | None
) -> None:
    if bundle.manifest is None and not any_rewritten:
        raise UserError(
            f"{bundle.source}: not a litebox bundle (no {program} rewritten, no manifest, "
            "no file with a LITEBOX0 trailer)"
        )
    if hooked is not None and not is_elf(image):
        raise UserError(f"--hooked {hooked}: not an ELF file")
    check_program(bundle, image, program)
    if is_elf(image) and not has_trailer(image):
        raise UserError(
            f"{program} in {bundle.source} was not rewritten (no LITEBOX0 trailer): "
            "package it with litebox-pack first"
        )


def _choose_abi(asked: str, bundle: Bundle, image: Path, scan: object) -> str:
    found, where = detect_abi(bundle, [image], scan)  # type: ignore[arg-type]
    if asked == "auto":
        return found or "redzone"  # no stubs anywhere: nothing will enter the callback
    if found and found != asked:
        warn(f"the bundle uses the {found} ABI ({where}); running with --abi {asked} as asked")
    return asked


@contextlib.contextmanager
def _records_file() -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix="litebox-run-", suffix=".records")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _spawn(cmd: list[str]) -> int:
    """Run the runtime in the foreground; like system(), leave ^C and ^\\ to the program."""
    try:
        # close_fds=False: the program inherits our descriptors, as it would natively.
        proc = subprocess.Popen(cmd, close_fds=False)
    except OSError as e:
        raise UserError(f"{cmd[0]}: cannot start the runtime: {e.strerror or e}") from None
    with _ignoring(signal.SIGINT, signal.SIGQUIT):
        try:
            return proc.wait()
        except BaseException:  # SIGTERM: the bundle is about to be removed, stop its program
            proc.kill()
            proc.wait()
            raise


@contextlib.contextmanager
def _ignoring(*sigs: signal.Signals) -> Iterator[None]:
    old = {}
    for sig in sigs:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            old[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _warn_escapes(rec: Records, *, strict_stopped: bool) -> None:
    if rec.escape_count and not strict_stopped:
        objects = sorted({e.obj for e in rec.escapes.values()})
        shown = ", ".join(objects[:3]) + (", ..." if len(objects) > 3 else "")
        warn(
            f"{rec.escape_count} syscall(s) escaped the trampolines at {len(rec.escapes)} "
            f"site(s) in {shown} (see --report)"
        )


def exit_like(status: int) -> int:
    """Die of the same signal as the program (when it was killed), else return its status."""
    if status >= 0:
        return status
    sig = -status
    with contextlib.suppress(OSError, ValueError):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # their disposition cannot be set
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return 128 + sig
