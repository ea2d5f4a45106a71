"""``litebox-pack audit``: what a bundle's bytes say about its rewriting, for people and CI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from .audit import AuditReport, Cls, FailOn, MemberReport, audit_tar
from .console import PATH_ARG, console, print_json, user_errors

EXIT_FAIL_ON = 3

_STYLE = {
    Cls.PATCHED: "green",
    Cls.MARKER: "cyan",
    Cls.UNPATCHED: "yellow",
    Cls.INVALID: "bold red",
    Cls.NON_ELF: "dim",
}


# Paragraphs as single strings: typer's rich help keeps a docstring's line breaks.
HELP = "\n\n".join(
    (
        "Classify every file of a LiteBox bundle from its bytes.",
        "Each ELF is patched (stub count, stub ABI and trampoline read from the bytes), "
        "checked-nothing-to-patch (header-only marker), unpatched (no trailer) or "
        "invalid-trailer; other files are non-elf. When the tar has litebox/manifest.json, "
        "each entry is compared with the bytes (sha256, outcome, sites, trampoline size, ABI) "
        "and disagreements are listed. Without a manifest, unpatchable sites cannot be known.",
        "Prints a table and a summary line, or with --json an object with the keys "
        "format, audit_format, tool, version, bundle, abi, manifest, summary, members, skipped, "
        "problems, fail_on, failed (schema: packager/schemas/audit.schema.json).",
        "Exit status: 0 audited (whatever the findings, unless --fail-on matches); "
        "1 the bundle cannot be read (missing, a directory, not a tar); "
        "2 bad command line; 3 --fail-on matched.",
    )
)


def register(app: typer.Typer) -> None:
    app.command("audit", help=HELP)(audit)


@user_errors
def audit(
    bundle: Annotated[
        Path,
        typer.Argument(
            readable=False,
            help="The tar to audit (any tar; gzip/xz too).",
            metavar="BUNDLE",
            click_type=PATH_ARG,
            show_default=False,
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (format 1).")
    ] = False,
    fail_on: Annotated[
        FailOn | None,
        typer.Option(
            "--fail-on",
            case_sensitive=False,
            metavar="CHECK",
            help="Exit 3 when the bundle has what CHECK names: unpatched (an ELF without a "
            "trailer or with an invalid one), unpatchable (sites the manifest records as "
            "trapped or kept), "
            "mismatch (manifest contradicts the bytes, mixed stub ABIs, duplicate paths, "
            "links, PAX or GNU long-name records), any of these, or data-in-code (sites the "
            "manifest records as left alone for want of evidence that they are code).",
        ),
    ] = None,
) -> None:
    """Classify every file of a LiteBox bundle from its bytes (see HELP)."""
    report = audit_tar(bundle)
    failed = report.failures(fail_on)
    if json_out:
        print_json(report.to_json(fail_on))
    else:
        _print_text(report)
    if failed:
        typer.echo(
            f"litebox-pack: audit: --fail-on {fail_on.value if fail_on else ''}: "
            + "; ".join(failed),
            err=True,
        )
        raise typer.Exit(EXIT_FAIL_ON)


def _trampoline(m: MemberReport) -> str:
    t = m.trailer
    if t is None:
        return ""
    if t.size == 0:
        return "marker"
    return f"{t.size} B @ {t.vaddr:#x}"


def _note(m: MemberReport) -> str:
    parts = [m.reason] if m.reason and m.cls is not Cls.PATCHED else []
    if m.unpatchable:
        kept = f", {m.kept} kept as syscall(s)" if m.kept else ""
        parts.append(f"{m.unpatchable} unpatchable{kept}")
    if m.data_in_code:
        at = ", ".join(f"{d['address']:#x}" for d in m.data_in_code)
        parts.append(f"{len(m.data_in_code)} data-in-code, left as they are ({at})")
    parts += [f"MISMATCH: {x}" for x in m.mismatches]
    parts += m.notes
    return "; ".join(p for p in parts if p)


def _print_text(report: AuditReport) -> None:
    out = console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("path", overflow="fold")
    table.add_column("class")
    table.add_column("ABI")
    table.add_column("sites", justify="right")
    table.add_column("trampoline")
    table.add_column("note", overflow="fold")
    for m in report.members:
        elf = m.cls is not Cls.NON_ELF
        # Text cells: a "[" in a path must not be read as rich markup.
        table.add_row(
            Text(m.path),
            Text(m.cls.value, style=_STYLE[m.cls]),
            Text(m.abi or ""),
            Text(str(m.sites) if elf else ""),
            Text(_trampoline(m)),
            Text(_note(m)),
        )
    out.print(table)
    if report.skipped:
        kinds = Counter(s.type for s in report.skipped)
        listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        out.print(f"skipped (not regular files): {listing}", markup=False, soft_wrap=True)
    for p in report.problems:
        out.print(f"problem: {p}", markup=False, soft_wrap=True)
    for pkg in report.packages or []:  # from the bundle's SBOM
        n = len(pkg["files"])
        owner = (
            f"package {pkg['name']} {pkg['version']} ({pkg['purl']})"
            if pkg["purl"]
            else "no package"
        )
        out.print(f"{owner}: {n} file(s)", markup=False, soft_wrap=True)
    out.print(report.summary_line(), markup=False, soft_wrap=True)
