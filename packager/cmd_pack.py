"""``litebox-pack pack`` (the default command): package programs and their libraries."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from typer.core import TyperCommand

from rewriter import Abi

from .bundle import BundleSummary, write_bundle
from .bundle import Progress as ProgressFn
from .console import PATH_ARG, help_text, print_json, progress_bar, stderr, user_errors, warn
from .errors import UsageError, UserError
from .fsutil import STDOUT, check_output, output_target, write_atomic
from .hooked import default_path as hooked_path
from .hooked import replaces_foreign
from .learn import (
    LearnResult,
    Reason,
    Workload,
    learned_path,
    parse_include_from,
    parse_workload_file,
    run_workload,
)
from .learn import learn as run_learn
from .options import AbiOpt, NoDataGuardOpt, NoForkPatchOpt, UnpatchableOpt
from .plan import Plan, PlannedFile, build_plan, parse_input
from .resolve import Closure, resolve
from .rewrite_job import FileResult, RewriteOptions
from .schemas import FORMAT
from .selfcheck import Extra, check_self_contained

if TYPE_CHECKING:
    from .oci.build import ContainerRequest
    from .oci.registry import DownloadProgress


WORKLOAD_ARGS = "litebox-pack.workload"  # ctx.meta key: the words after "--"


class _PackCommand(TyperCommand):
    """``pack`` takes ``-- ARGS``: the words after the first ``--`` are the --learn workload's
    arguments, not more inputs (click would mix them into the positional arguments)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if "--" in args:
            cut = args.index("--")
            ctx.meta[WORKLOAD_ARGS] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    app.command("pack", cls=_PackCommand, help=help_text(pack.__doc__))(pack)


@user_errors
def pack(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Programs (ELF or #! scripts) to package, each as HOST or HOST:GUEST (its "
            "path in the bundle; default: its own absolute path).",
            metavar="INPUT...",
            click_type=PATH_ARG,
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            readable=False,
            help="The tar to write (default: the first input's name + .tar).",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="HOST:TAR",
            help="Add a file, or a directory recursively, at TAR in the bundle (PATH alone: at "
            "the same path). ELF files are rewritten and bring their libraries. Repeatable.",
        ),
    ] = None,
    include_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--include-from",
            metavar="FILE",
            help="Read --include specs from FILE, one a line (an X.learned file, or your own; "
            "# starts a comment). Repeatable.",
        ),
    ] = None,
    no_rewrite: Annotated[
        list[str] | None,
        typer.Option("--no-rewrite", metavar="PATH", help="Bundle PATH unchanged. Repeatable."),
    ] = None,
    learn: Annotated[
        bool,
        typer.Option(
            "--learn",
            help="Run the first program (with the arguments after --) against the bundle and "
            "add every file it uses; write them to OUT.learned for --include-from.",
            rich_help_panel="Learning what a program uses",
        ),
    ] = False,
    workload: Annotated[
        list[Path] | None,
        typer.Option(
            "--workload",
            metavar="FILE",
            help="Learn from each command of FILE: one a line, shell-like words, the first an "
            "input's name or an absolute bundle path (with --learn: after the -- workload). "
            "Repeatable.",
            rich_help_panel="Learning what a program uses",
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            metavar="K=V",
            help="The workloads' environment, exactly (as for run --env). Repeatable.",
            rich_help_panel="Learning what a program uses",
        ),
    ] = None,
    abi: AbiOpt = Abi.REDZONE,
    unpatchable: UnpatchableOpt = "fail",
    no_fork_patch: NoForkPatchOpt = False,
    no_data_guard: NoDataGuardOpt = False,
    library_path: Annotated[
        str | None,
        typer.Option(
            "--library-path",
            metavar="DIRS",
            help="Colon-separated directories searched like LD_LIBRARY_PATH.",
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            metavar="DIR",
            readable=False,
            help="Resolve and read everything inside DIR (a sysroot or unpacked "
            "rootfs), never from the host.",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "-j",
            "--jobs",
            min=0,
            metavar="N",
            help="Parallel rewrites (0, the default: all cores).",
            show_default=False,
        ),
    ] = 0,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use or fill the rewrite cache.")
    ] = False,
    main_out: Annotated[
        Path | None,
        typer.Option(
            "--main-out",
            metavar="FILE",
            readable=False,
            help="Where to write the rewritten main binary (default: beside the tar, named after "
            "it: h/app.tar -> h/app.hooked).",
        ),
    ] = None,
    no_main_out: Annotated[
        bool, typer.Option("--no-main-out", help="Do not write the main binary beside the tar.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Say what happened to every file.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")] = False,
    allow_data_input: Annotated[
        bool,
        typer.Option(
            "--allow-data-input",
            help="Accept inputs that are neither ELF programs nor #! scripts (bundled as they "
            "are; --include HOST:GUEST is the usual way to add data).",
        ),
    ] = False,
    oci_image: Annotated[
        str | None,
        typer.Option(
            "--oci-image",
            metavar="REF",
            help="Package a whole image from a registry: REPO, REPO:TAG or REPO@DIGEST, "
            "optionally REGISTRY/ in front (default Docker Hub).",
            rich_help_panel="Container images",
        ),
    ] = None,
    oci_archive: Annotated[
        Path | None,
        typer.Option(
            "--oci-archive",
            readable=False,
            metavar="FILE",
            help="Package an image from a `docker save` tar or an OCI image-layout tar.",
            rich_help_panel="Container images",
        ),
    ] = None,
    oci_layout: Annotated[
        Path | None,
        typer.Option(
            "--oci-layout",
            readable=False,
            metavar="DIR",
            help="Package an image from an OCI image-layout directory.",
            rich_help_panel="Container images",
        ),
    ] = None,
    rootfs: Annotated[
        Path | None,
        typer.Option(
            "--rootfs",
            readable=False,
            metavar="DIR",
            help="Package an unpacked root file system tree.",
            rich_help_panel="Container images",
        ),
    ] = None,
    image_config: Annotated[
        Path | None,
        typer.Option(
            "--image-config",
            readable=False,
            metavar="FILE",
            help="With --rootfs: the image config JSON (Env, WorkingDir, Entrypoint, Cmd) for "
            "litebox/config.json and config_and_run.sh.",
            rich_help_panel="Container images",
        ),
    ] = None,
    ref: Annotated[
        str | None,
        typer.Option(
            "--ref",
            metavar="NAME",
            help="Which image of an archive or layout holding several (tag or ref name).",
            rich_help_panel="Container images",
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            metavar="OS/ARCH[/VARIANT]",
            help="Image platform to pick from an index (default: this machine's, linux/amd64).",
            rich_help_panel="Container images",
        ),
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(
            "--username",
            metavar="NAME",
            help="Registry user (default: ~/.docker/config.json, else anonymous).",
            rich_help_panel="Container images",
        ),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the registry password from standard input.",
            rich_help_panel="Container images",
        ),
    ] = False,
    insecure_registry: Annotated[
        bool,
        typer.Option(
            "--insecure-registry",
            help="Allow plain HTTP and unverified TLS (always allowed for loopback registries: "
            "plain HTTP only).",
            rich_help_panel="Container images",
        ),
    ] = False,
    entrypoint_closure: Annotated[
        bool,
        typer.Option(
            "--entrypoint-closure",
            help="Package only the image's Entrypoint/Cmd program, /bin/sh, their libraries "
            "(and --include files), not the whole image.",
            rich_help_panel="Container images",
        ),
    ] = False,
) -> None:
    """Package programs, their libraries and their loader into a tar LiteBox can mount.

    Every ELF is rewritten (syscalls become trampoline jumps), every library appears at each
    path the loader will ask for, and the rewritten main binary is written beside the tar.
    With --oci-image, --oci-archive, --oci-layout or --rootfs a whole container image is
    packaged instead, with litebox/config_and_run.sh to start it.
    Nothing is written when anything fails.
    """
    if json_out and str(output) == STDOUT:
        raise UsageError("-o - writes the tar to standard output; --json cannot go there too")
    workload_args: list[str] | None = ctx.meta.get(WORKLOAD_ARGS)
    learning = learn or bool(workload)
    if workload_args is not None and not learn:
        raise UsageError("the words after -- are the --learn workload's arguments: add --learn")
    if env and not learning:
        raise UsageError("--env sets the workloads' environment: use it with --learn")
    for item in env or []:
        if "=" not in item or item.startswith("="):
            raise UsageError(f"--env {item!r}: expected NAME=VALUE")
    image_sources = [oci_image, oci_archive, oci_layout, rootfs]
    if sum(s is not None for s in image_sources) + bool(inputs) > 1:
        raise UsageError(
            "give programs, or one of --oci-image, --oci-archive, --oci-layout, --rootfs"
        )
    if any(s is not None for s in image_sources):
        # Imported here: host-mode runs should not pay for the registry client's imports.
        from .oci.auth import from_options
        from .oci.build import ContainerRequest

        host_only = {
            "--root": root is not None,
            "--library-path": library_path is not None,
            "--main-out": main_out is not None,
            "--learn": learning,
            "--include-from": bool(include_from),
        }
        for flag, given in host_only.items():
            if given:
                raise UsageError(f"{flag} applies to programs, not to images")
        if image_config is not None and rootfs is None:
            raise UsageError("--image-config goes with --rootfs (images carry their config)")
        if ref is not None and oci_archive is None and oci_layout is None:
            raise UsageError("--ref chooses an image in --oci-archive or --oci-layout")
        request = ContainerRequest(
            image=oci_image,
            archive=oci_archive,
            layout=oci_layout,
            rootfs=rootfs,
            ref=ref,
            image_config=image_config,
            platform=platform,
            credentials=from_options(
                username, password_stdin, sys.stdin.read() if password_stdin else None
            ),
            insecure=insecure_registry,
            entrypoint_closure=entrypoint_closure,
            includes=include or [],
            no_rewrite=no_rewrite or [],
            verbose=verbose and not quiet,
        )
        _pack_image(
            request,
            output,
            RewriteOptions(abi, unpatchable, not no_fork_patch, not no_data_guard),
            jobs=jobs,
            use_cache=not no_cache,
            json_out=json_out,
            verbose=verbose,
            quiet=quiet,
        )
        return
    container_only = {
        "--image-config": image_config is not None,
        "--ref": ref is not None,
        "--platform": platform is not None,
        "--username": username is not None,
        "--password-stdin": password_stdin,
        "--insecure-registry": insecure_registry,
        "--entrypoint-closure": entrypoint_closure,
    }
    for flag, given in container_only.items():
        if given:
            raise UsageError(f"{flag} applies to container images (--oci-image, ...)")
    if not inputs:
        raise UsageError("nothing to package: give programs, or --oci-image/--oci-archive/...")
    if root is not None and not root.is_dir():
        raise UserError(f"--root {root}: not a directory")
    if root is not None and learning:
        raise UsageError("--learn runs the programs on this machine, not inside --root")
    hosts, guests = zip(*(parse_input(str(p)) for p in inputs), strict=True)
    out = output or Path(Path(hosts[0]).name + ".tar")
    streamed = output_target(out).stream
    if not streamed and out.suffix != ".tar":
        warn(f"{out}: LiteBox's runner only accepts files whose name ends in .tar")
    dirs = [d for d in (library_path or "").split(":") if d]
    closure = resolve(list(hosts), root=str(root) if root else None, library_path=dirs)
    closure.raise_if_missing(explain=True)
    if not allow_data_input:
        _refuse_data_inputs(closure)
    specs: list[Spec] = [(s, None) for s in include or []]
    for path in include_from or []:
        specs += parse_include_from(path)
    builder = _HostBuilder(closure, str(root) if root else None, no_rewrite or [], dirs, guests)
    # A streamed tar (-o -, /dev/stdout) has no "beside": the main binary goes to the current
    # directory, named after the input.
    default = Path(Path(hosts[0]).name + ".hooked") if streamed else hooked_path(out)
    hooked = None if no_main_out else (main_out or default)
    if hooked is not None:
        output_target(hooked)
        if not streamed and replaces_foreign(hooked, out):
            warn(f"{hooked}: replacing a file that is not {out}'s main binary")
    options = RewriteOptions(abi, unpatchable, not no_fork_patch, not no_data_guard)
    show = not quiet and not json_out
    learned: LearnResult | None = None
    if learning:
        learned = _learn(
            builder,
            specs,
            options,
            out,
            sources=include_from or [],
            workloads=_workloads(closure, guests, learn, workload_args, workload or []),
            env=env or [],
            jobs=jobs or os.cpu_count() or 1,
            use_cache=not no_cache,
            verbose=verbose and show,
        )
        specs += learned.specs
    plan, extra = builder.plan(specs)
    _warn_gaps(plan)
    with _progress(plan, enabled=show) as on_file:
        summary = write_bundle(
            plan,
            out,
            options=options,
            hooked=hooked,
            jobs=jobs or os.cpu_count() or 1,
            use_cache=not no_cache,
            extra=extra,
            progress=_chain(on_file, _verbose_line if verbose and show else None),
            packages_root=os.path.realpath(root) if root else "/",
        )
    if learned is not None:
        write_atomic(learned.path, learned.text.encode())
    command = _runner_command(out, hooked)
    if json_out:
        doc = {"format": FORMAT["pack"], **summary.to_json()}
        doc.update(runner=command, main=plan.main_path)
        if learned is not None:
            doc["learned"] = learned.to_json()
        print_json(doc)
    elif show:
        _print_summary(summary, plan, command)
        if learned is not None:
            stderr.print(learned.summary(), soft_wrap=True)


Spec = tuple[str, Reason | None]  # an --include spec and its manifest reason (None: --include)


class _HostBuilder:
    """Plans for the host-mode inputs with a given list of include specs (the learn loop asks
    for many; the final pack for one)."""

    def __init__(
        self,
        closure: Closure,
        root: str | None,
        no_rewrite: list[str],
        dirs: list[str],
        guests: Sequence[str | None] = (),
    ) -> None:
        self.closure, self.root, self.no_rewrite, self.dirs = closure, root, no_rewrite, dirs
        self.guests = guests

    def plan(self, specs: list[Spec]) -> tuple[Plan, Extra]:
        plan = build_plan(
            self.closure,
            host_root=self.root,
            includes=[spec for spec, _ in specs],
            no_rewrite=self.no_rewrite,
            guest_paths=self.guests,
            include_reasons={spec: r for spec, r in specs if r is not None},
            include_closures=True,
            real_paths=True,
            library_path=self.dirs,
        )
        return plan, check_self_contained(plan, plan.closure)


def _workloads(
    closure: Closure,
    guests: Sequence[str | None],
    learn: bool,
    args: list[str] | None,
    files: list[Path],
) -> list[Workload]:
    programs = [guest or lib.path for lib, guest in zip(closure.inputs, guests, strict=True)]
    out = [Workload(1, [programs[0], *(args or [])])] if learn else []
    for path in files:
        out += parse_workload_file(path, programs, first=len(out) + 1)
    return out


def _learn(
    builder: _HostBuilder,
    given: list[Spec],
    options: RewriteOptions,
    out: Path,
    *,
    sources: list[Path],
    workloads: list[Workload],
    env: list[str],
    jobs: int,
    use_cache: bool,
    verbose: bool,
) -> LearnResult:
    """Run the learn loop with draft bundles beside ``out``; return X.learned and its specs
    (parsed back from its text, so the final pack and a repack from the file agree)."""
    target = learned_path(out)
    check_output(target)
    if any(os.path.realpath(src) == os.path.realpath(target) for src in sources):
        # The new file lists only what the old one did not bring: a repack from it would lose
        # the old file's entries.
        raise UsageError(f"--include-from {target} with --learn would overwrite it: copy it first")

    def pack_with(specs: list[tuple[str, Reason]], draft: Path | None) -> Plan:
        plan, extra = builder.plan([*given, *specs])
        if draft is not None:
            write_bundle(
                plan,
                draft,
                options=options,
                hooked=None,
                jobs=jobs,
                use_cache=use_cache,
                extra=extra,
            )
        return plan

    def log(line: str) -> None:
        if verbose:
            stderr.print(f"learn: {line}", soft_wrap=True, markup=False)

    with tempfile.TemporaryDirectory(prefix=".litebox-learn-", dir=out.parent or ".") as work:
        found = run_learn(workloads, env, pack_with, run_workload, Path(work), log=log)
    return LearnResult.of(target, found, workloads, verbose=verbose)


def _warn_gaps(plan: Plan) -> None:
    for line in plan.warnings:
        warn(line)
    for gap in plan.gaps:
        warn(
            f"{gap['source']}: {gap['kind']}; LiteBox's tar file system cannot hold it "
            f"(/{gap['path']} will not exist in the bundle)"
        )


def _refuse_data_inputs(closure: Closure) -> None:
    """An input must be something execve runs: an ELF or a ``#!`` script (a data file given as a
    program is a mistake far more often than a wish)."""
    for inp in closure.inputs:
        try:
            with open(inp.realpath, "rb") as fh:
                head = fh.read(4)
        except OSError as e:
            raise UserError(f"{inp.name}: cannot read: {e.strerror or e}") from None
        if head != b"\x7fELF" and not head.startswith(b"#!"):
            raise UserError(
                f"{inp.name}: neither an ELF program nor a #! script; add data with "
                f"--include {inp.name}:/GUEST/PATH, or force it with --allow-data-input"
            )


def _pack_image(
    request: ContainerRequest,
    output: Path | None,
    options: RewriteOptions,
    *,
    jobs: int,
    use_cache: bool,
    json_out: bool,
    verbose: bool,
    quiet: bool,
) -> None:
    """Package a container image or rootfs tree (see packager/oci)."""
    from .oci.build import ROOTFS, RUN_ARGS, default_output, prepare

    # Absolute: prepare() runs the block inside its staging directory.
    given = output or Path(default_output(request))
    out = given if str(given) == STDOUT else Path(os.path.abspath(given))
    if not output_target(out).stream and out.suffix != ".tar":
        warn(f"{out}: LiteBox's runner only accepts files whose name ends in .tar")
    show = not quiet and not json_out
    with _downloads(show) as request.download_progress, prepare(request) as prepared:
        with _progress(prepared.plan, enabled=show) as on_file:
            summary = write_bundle(
                prepared.plan,
                out,
                options=options,
                hooked=None,
                jobs=jobs or os.cpu_count() or 1,
                use_cache=use_cache,
                progress=_chain(on_file, _verbose_line if verbose and show else None),
                packages_root=ROOTFS,
            )
        summary.output = str(output or out.name)
    command = _image_runner_command(summary.output, RUN_ARGS)
    if json_out:
        doc = {"format": FORMAT["pack"], **summary.to_json()}
        print_json({**doc, "runner": command, "image": prepared.info})
    elif show:
        _print_summary(summary, prepared.plan, command)
        local = ["litebox-pack", "run", summary.output, "--", *RUN_ARGS]
        line = f"or here with:\n  {' '.join(shlex.quote(p) for p in local)}"
        stderr.print(line, markup=False, soft_wrap=True)


def _image_runner_command(out: str, run_args: list[str]) -> str:
    parts = ["litebox_runner_linux_userland", "--unstable", "--env", "HOME=/"]
    parts += ["--initial-files", out, "--program-from-tar", *run_args]
    return " ".join(shlex.quote(p) for p in parts)


class _progress:
    """A rich progress bar on stderr while files are rewritten (only on a terminal)."""

    def __init__(self, plan: Plan, enabled: bool) -> None:
        self.plan, self.enabled = plan, enabled
        self.bar: Progress | None = None

    def __enter__(self) -> ProgressFn | None:
        if not self.enabled:
            return None
        self.bar = progress_bar(
            TextColumn("rewriting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
        )
        if self.bar is None:
            return None
        task = self.bar.add_task("", total=len(self.plan.files))

        def step(f: PlannedFile, r: FileResult) -> None:
            assert self.bar is not None
            self.bar.update(task, advance=1, description=Path(f.source).name)

        return step

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextlib.contextmanager
def _downloads(enabled: bool) -> Iterator[DownloadProgress | None]:
    """A progress bar per layer (bytes) while a registry pull downloads (only on a terminal)."""
    bar = (
        progress_bar(
            TextColumn("pulling {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        )
        if enabled
        else None
    )
    if bar is None:
        yield None
        return

    def start(digest: str, size: int | None) -> Callable[[int], None]:
        task = bar.add_task(digest.split(":")[-1][:12], total=size)
        return lambda n: bar.update(task, advance=n)

    try:
        yield start
    finally:
        bar.stop()


def _chain(*fns: ProgressFn | None) -> ProgressFn | None:
    """One progress callback calling each of ``fns`` that is not None (or None if none is)."""
    live = [f for f in fns if f is not None]

    def call(f: PlannedFile, r: FileResult) -> None:
        for fn in live:
            fn(f, r)

    return call if live else None


def _verbose_line(f: PlannedFile, r: FileResult) -> None:
    o = r.outcome
    what = o["outcome"] + (f" ({o['reason']})" if o.get("reason") else "")
    if o["outcome"] == "patched":
        what += f", {o['sites']} sites"
    if o.get("unpatchable"):
        left = "trapped" if o.get("strategies", {}).get("trapped") else "kept"
        what += f", {len(o['unpatchable'])} {left} ({_addresses(o['unpatchable'])})"
    what += "".join(f", {n}" for n in o.get("code_map_notes") or ())
    if o.get("data_in_code"):
        at = _addresses([d["address"] for d in o["data_in_code"]])
        what += f", {len(o['data_in_code'])} data-in-code left as they are ({at})"
    line = f"{f.source}: {what}{' [cached]' if r.cached else ''} -> {', '.join(f.paths)}"
    # Not markup (a path may hold "["), and left to the terminal to wrap: never cut mid-path.
    stderr.print(line, markup=False, soft_wrap=True, highlight=False)


def _addresses(addrs: list[int]) -> str:
    return " ".join(f"{a:#x}" for a in addrs)


def _runner_command(out: Path, hooked: Path | None) -> str:
    parts = ["litebox_runner_linux_userland", "--unstable", "--env", "HOME=/"]
    parts += ["--initial-files", str(out)]
    if hooked is not None:
        parts.append(str(hooked))
    return " ".join(shlex.quote(p) for p in parts)


# Audit's classes (packager/audit.py), from the outcome the rewriter reported.
_CLASSES = ("patched", "checked-nothing-to-patch", "unpatched", "non-elf")


def _print_summary(s: BundleSummary, plan: Plan, command: str) -> None:
    # One row per count: audit's long class names fit any terminal, and a CI log greps them.
    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 0, 0, 2))
    table.add_column("what")
    table.add_column("count", justify="right")
    left = "trapped" if s.policy == "trap" else "kept"
    table.add_row("files", str(s.files))
    for c in _CLASSES:
        table.add_row(c, str(s.classes.get(c, 0)))
    table.add_row("sites", str(s.sites))
    if s.policy != "fail":
        table.add_row(left, str(s.unpatchable_sites))
    if s.data_in_code:
        table.add_row("data-in-code", str(sum(len(d) for d in s.data_in_code.values())))
    table.add_row("size", f"{s.size / 1048576:.1f} MiB")
    table.add_row("time", f"{s.seconds:.2f} s" + (f" ({s.cached} cached)" if s.cached else ""))
    stderr.print(s.output, markup=False, soft_wrap=True)
    stderr.print(table)
    for source, addrs in s.unpatchable:
        stderr.print(f"{left}: {source} {_addresses(addrs)}", markup=False, soft_wrap=True)
    for source, sites in s.data_in_code.items():
        at = _addresses([d["address"] for d in sites])
        stderr.print(f"data-in-code, left as they are: {source} {at}", markup=False, soft_wrap=True)
    if s.hooked:
        line = f"main binary: {s.hooked} (bundle path {plan.main_path})"
        stderr.print(line, markup=False, soft_wrap=True)
    stderr.print(f"run it under LiteBox with:\n  {command}", markup=False, soft_wrap=True)
