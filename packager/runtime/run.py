"""``litebox-pack run``: execute a bundle natively with its trampolines live (spec/runtime.md).

An i386 PROGRAM (ELF32, or a "#!" script whose interpreter is one) runs under the i386 build of
the runtime, which its i386 programs exec in turn; the report's "abi" is then "i386" (both
``--abi`` values write the same i386 stubs, so the option does not matter there).

The guest's file system is LiteBox's view by default (``view="litebox"``, built by the runtime
with user and mount namespaces: view.c) or, with ``view="host-fs"``, the host's with the bundle
found first and writes thrown away. Its environment is exactly ``env``.

Exit status: the program's own. A program killed by a signal makes ``run`` die of the same
signal. ``--strict`` stops at the first escaped syscall, ``--strict-files`` at the first path the
bundle lacks and the host has, both with status ``STRICT_STATUS`` (125) and one line on stderr.
Problems with the bundle itself are one-line errors with status 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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
    tar_ro_tree,
)
from .report import PathUse, Records, build_report, parse_records
from .syscall_names import name

STRICT_STATUS = 125  # must match STRICT_STATUS in rt.h
VIEWS = ("litebox", "host-fs")
MAX_BINDS = 8  # RT_MAX_BINDS in rt.h
PSEUDO = ("/proc", "/dev", "/sys")  # host file systems that are not files a bundle could hold


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
    view: str = "litebox"  # or "host-fs"
    env: list[str] = field(default_factory=list)  # K=V: the guest's whole environment
    binds: list[tuple[str, str]] = field(default_factory=list)  # (host dir, guest dir)
    strict_files: bool = False
    stdin: int | None = None  # passed to Popen; None inherits
    stdout: int | None = None
    stderr: int | None = None


def run(req: RunRequest) -> int:
    """Run the program; return its exit status, or -N when signal N killed it."""
    if req.abi not in ("auto", *ABIS):
        raise UserError(f"--abi must be auto, redzone or resume, not {req.abi!r}")
    if req.view not in VIEWS:
        raise UserError(f"the view must be litebox or host-fs, not {req.view!r}")
    env = _environment(req.env)
    binds = _check_binds(req.binds)
    with _scratch() as scratch, open_bundle(req.bundle, scratch) as bundle:
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
        records = scratch / "records"
        records.touch(mode=0o600)
        (scratch / "stage").mkdir()
        cmd = [str(binary), "--abi", runtime_abi, "--report", str(records)]
        cmd += ["--stage", str(scratch / "stage")]
        if req.view == "host-fs":
            cmd += ["--host-fs", "--bundle", str(bundle.root)]
        else:
            cmd += ["--lower", str(tar_ro_tree(bundle, scratch / "lower"))]
        for host, guest in binds:
            cmd += ["--bind", f"{host}:{guest}"]
        if req.trace:
            cmd.append("--trace")
        if req.strict:
            cmd.append("--strict")
        if req.strict_files:
            cmd.append("--strict-files")
        if req.hooked is not None:
            cmd += ["--load-from", str(image)]
        cmd += ["--", program, program, *req.args]
        status = _spawn(cmd, env, (req.stdin, req.stdout, req.stderr))
        rec = parse_records(records.read_text(errors="replace"), arch)
        rec.host_used = [u for u in rec.host_used if _from_host(u, bundle)]
    if req.report is not None:
        doc = build_report(
            rec,
            bundle=req.bundle,
            program=program,
            args=req.args,
            abi=abi,
            status=status,
            view=req.view,
        )
        write_atomic(req.report, (json.dumps(doc, indent=2) + "\n").encode())
    _warn_escapes(rec, strict_stopped=req.strict and status == STRICT_STATUS)
    if rec.strict_stop is None:  # a --strict(-files) stop is explained by its one line
        _summarize(rec)
    return status


def _environment(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key or "\0" in item:
            raise UserError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _check_binds(binds: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if len(binds) > MAX_BINDS:
        raise UserError(f"--bind: at most {MAX_BINDS} directories")
    out = []
    for host, guest in binds:
        where = Path(host)
        if not where.is_dir():
            raise UserError(f"--bind {host}:{guest}: {host} is not a directory")
        norm = os.path.normpath(guest) if guest.startswith("/") else ""
        if norm in ("", "/") or ":" in host or len(norm) >= 256:
            raise UserError(f"--bind {host}:{guest}: GUEST must be an absolute directory, not /")
        out.append((str(where.resolve()), norm))
    return out


def _from_host(use: PathUse, bundle: Bundle) -> bool:
    """A host path the guest used that is not the bundle's (and not /proc, /dev or /sys)."""
    path, root = use.path, str(bundle.root)
    if any(path == d or path.startswith(d + "/") for d in (*PSEUDO, root)) or path == "/":
        return False
    # Files the guest created itself (in the throwaway layer) are not the host's.
    return not os.path.lexists(bundle.host_path(path)) and os.path.lexists(path)


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
def _scratch() -> Iterator[Path]:
    """A private directory for the record file, the runtime's mount point (stage) and, for a
    directory bundle, its tar_ro copy; removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="litebox-run-"))
    try:
        if any(c in str(tmp) for c in ",:\\"):  # the runtime names it in overlayfs options
            raise UserError(
                f"{tmp.parent}: a temporary directory whose path holds ',', ':' or "
                "'\\' cannot hold the guest's view: set TMPDIR to another one"
            )
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _spawn(cmd: list[str], env: dict[str, str], stdio: tuple[int | None, ...]) -> int:
    """Run the runtime in the foreground; like system(), leave ^C and ^\\ to the program."""
    stdin, stdout, stderr = stdio
    try:
        # close_fds=False: the program inherits our descriptors, as it would natively.
        proc = subprocess.Popen(
            cmd, close_fds=False, env=env, stdin=stdin, stdout=stdout, stderr=stderr
        )
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


def _summarize(rec: Records) -> None:
    """One line each: paths the bundle lacks (with the processes the guest created), paths in
    the kernel's trees that LiteBox lacks, writes LiteBox refuses, writes where its runner
    panics."""
    missing = sorted({u.path for u in rec.missing})
    created = sum(rec.created.values())
    procs = ""
    if created:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(rec.created.items()))
        procs = (
            f"the guest created {created} process{'es' if created > 1 else ''} ({kinds}); "
            "LiteBox's runner (upstream main #828) creates none"
        )
    if missing:
        line = f"{len(missing)} path{'s' if len(missing) > 1 else ''} the bundle lacks, e.g. "
        line += missing[0] + (f"; {procs}" if procs else "") + " (see --report)"
        warn(line)
    elif procs:
        warn(procs)
    kernel = sorted({u.path for u in rec.kernel})
    if kernel:
        warn(
            f"{len(kernel)} path{'s' if len(kernel) > 1 else ''} under /proc, /sys or /dev that "
            f"LiteBox does not provide, e.g. {kernel[0]} (see --report)"
        )
    for how, text in (("r", "LiteBox refuses"), ("p", "LiteBox's runner panics here")):
        hits = sorted({(u.path, u.nr) for u in rec.refused if u.extra[1:] == (how,)})
        if hits:
            path, nr = hits[0]
            warn(
                f"{len(hits)} write{'s' if len(hits) > 1 else ''} where {text}, e.g. "
                f"{name(nr, rec.arch)} {path}: failed with EACCES (see --report)"
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
