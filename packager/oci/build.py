"""An image or rootfs → a bundle plan, with ``litebox/config.json`` and ``config_and_run.sh``.

``prepare`` yields the plan with the working directory set to a private staging directory that
holds ``rootfs`` (the unpacked image, or a link to the ``--rootfs`` tree) and the generated
``litebox/`` files. Plan sources are relative to it (``rootfs/usr/bin/env``), so the manifest
does not depend on where the image was unpacked: the bundle is the same byte for byte whether
the tree came from a registry, an archive, a layout or ``--rootfs``. The generated files are
plan entries like the others (not rewritten), so the manifest and ``audit`` account for them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..console import warn
from ..errors import UsageError, UserError
from ..fsutil import read_input, require_regular, work_dir
from ..jsonload import MAX_JSON
from ..plan import MANIFEST_PATH, Plan, build_plan, litebox_lookup_path
from ..resolve import DEFAULT_PATH, Closure, confined_realpath, resolve
from ..sbom import SBOM_PATH
from .auth import Credentials, from_docker_config
from .findings import Findings
from .image import (
    Image,
    LayoutDir,
    TarArchive,
    image_from_docker_save,
    image_from_layout,
    parse_json,
)
from .platform import Platform, host_platform, parse_platform
from .reference import parse_reference
from .runscript import check_config, default_command, run_script
from .tree import scan_tree
from .unpack import unpack

if TYPE_CHECKING:
    from .registry import DownloadProgress

CONFIG_PATH = "litebox/config.json"
SCRIPT_PATH = "litebox/config_and_run.sh"
RESERVED = frozenset({CONFIG_PATH, SCRIPT_PATH, MANIFEST_PATH, SBOM_PATH})
SHELL = "/bin/sh"
RUN_ARGS = [SHELL, "/" + SCRIPT_PATH]
ROOTFS = "rootfs"  # the tree's name in the staging directory, and in manifest sources

Reason = dict[str, Any]


@dataclass
class ContainerRequest:
    image: str | None = None
    archive: Path | None = None
    layout: Path | None = None
    rootfs: Path | None = None
    ref: str | None = None  # which image of an archive or layout
    image_config: Path | None = None  # an image config JSON for --rootfs
    platform: str | None = None
    credentials: Credentials | None = None
    insecure: bool = False
    entrypoint_closure: bool = False
    includes: list[str] = field(default_factory=list)
    no_rewrite: list[str] = field(default_factory=list)
    verbose: bool = False
    download_progress: DownloadProgress | None = None  # registry pulls: bytes per layer

    @property
    def described(self) -> str:
        for flag, value in (
            ("--oci-image", self.image),
            ("--oci-archive", self.archive),
            ("--oci-layout", self.layout),
            ("--rootfs", self.rootfs),
        ):
            if value is not None:
                return f"{flag} {value}"
        return ""


@dataclass
class Prepared:
    plan: Plan
    findings: Findings
    info: dict[str, Any]  # for --json: the input, digests, platform, command, what was dropped


def default_output(req: ContainerRequest) -> str:
    """``NAME.tar`` from the repository's last component, the archive's or directory's name."""
    if req.image is not None:
        name = parse_reference(req.image).repository.rsplit("/", 1)[-1]
    else:
        path = req.archive or req.layout or req.rootfs
        assert path is not None
        name = Path(os.path.abspath(path)).name
        if req.archive is not None:
            name = name.removesuffix(".tar")
    return (name or "image") + ".tar"


@contextlib.contextmanager
def prepare(req: ContainerRequest) -> Iterator[Prepared]:
    """Unpack (or take) the rootfs and plan the bundle; the block runs inside the staging
    directory, where the plan's relative sources are."""
    platform = parse_platform(req.platform)
    findings = Findings()
    info: dict[str, Any] = {"input": req.described, "platform": str(platform)}
    with work_dir(tempfile.gettempdir(), "litebox-pack-oci-", "the image work directory") as tmp:
        work = os.path.realpath(tmp)
        if req.rootfs is not None:
            root = _rootfs_dir(req.rootfs)
            os.symlink(root, os.path.join(work, ROOTFS))
            config_bytes = _read_config(req.image_config) if req.image_config else None
        else:
            root = os.path.join(work, ROOTFS)
            os.mkdir(root, 0o755)
            with _open_image(req, platform, work) as image:
                info.update(_describe(image))
                unpack(image, root, findings)
                config_bytes = image.config_bytes
        full = parse_json(config_bytes, "image config") if config_bytes is not None else {}
        config = full.get("config") or {}
        if not isinstance(config, dict):
            raise UserError("image config: 'config' is not an object")
        check_config(config)
        _check_arch(full)
        plan = _closure_plan(root, config) if req.entrypoint_closure else _tree_plan(root, findings)
        _add_includes(plan, req.includes)
        _apply_no_rewrite(plan, req.no_rewrite)
        if not any(SHELL.lstrip("/") in f.paths for f in plan.files):
            warn(f"the bundle has no {SHELL}, so {SCRIPT_PATH} cannot be run as documented")
        if config_bytes is not None:
            _generated(plan, work, CONFIG_PATH, config_bytes, 0o644, {"kind": "image-config"})
        script = run_script(config, findings)
        _generated(plan, work, SCRIPT_PATH, script, 0o755, {"kind": "run-script"})
        info["command"] = default_command(config)
        info["run"] = RUN_ARGS
        findings.warn(req.verbose)
        info["dropped"] = findings.to_json()
        with _inside(work):
            yield Prepared(plan, findings, info)


def _generated(plan: Plan, work: str, path: str, data: bytes, mode: int, reason: Reason) -> None:
    """A file litebox-pack writes itself, staged in ``work`` and bundled unchanged."""
    host = os.path.join(work, path)
    try:
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as f:
            f.write(data)
        os.chmod(host, mode)
    except OSError as e:
        raise UserError(f"{host}: cannot stage {path}: {e.strerror or e}") from None
    f_ = plan.file_for(path)
    f_.add(path, reason)
    f_.rewrite, f_.skip_reason = False, "generated by litebox-pack"


def _rootfs_dir(path: Path) -> str:
    if not path.is_dir():
        raise UserError(f"--rootfs {path}: not a directory")
    return os.path.realpath(path)


def _read_config(path: Path) -> bytes:
    data = read_input(path, "--image-config", limit=MAX_JSON)
    parse_json(data, f"--image-config {path}")
    return data


@contextlib.contextmanager
def _open_image(req: ContainerRequest, platform: Platform, work: str) -> Iterator[Image]:
    if req.image is not None:
        from .registry import pull  # the HTTP stack only when a registry is used

        ref = parse_reference(req.image)
        creds = req.credentials or from_docker_config(ref.registry)
        blobs = os.path.join(work, "blobs")
        os.mkdir(blobs)
        pulling = pull(
            ref, platform, creds, insecure=req.insecure, work=blobs, progress=req.download_progress
        )
        with pulling as image:
            yield image
    elif req.layout is not None:
        layout = LayoutDir(str(req.layout))
        index = layout.top()
        if index is None:
            raise UserError(f"--oci-layout {req.layout}: no index.json (not an OCI image layout)")
        yield image_from_layout(layout, index, req.ref, platform)
    else:
        assert req.archive is not None
        require_regular(req.archive, "--oci-archive")
        with TarArchive(str(req.archive)) as archive:
            if "index.json" in archive.members:
                yield image_from_layout(
                    archive, archive.read_member("index.json"), req.ref, platform
                )
            elif "manifest.json" in archive.members:
                yield image_from_docker_save(archive, req.ref, platform)
            else:
                raise UserError(
                    f"--oci-archive {req.archive}: neither an OCI layout (index.json) nor a "
                    "docker save archive (manifest.json)"
                )


def _describe(image: Image) -> dict[str, Any]:
    return {
        "digest": image.digest,
        "image_platform": image.platform,
        "layers": [layer.digest or layer.diff_id for layer in image.layers],
    }


def _check_arch(config: dict[str, Any]) -> None:
    arch = config.get("architecture")
    host = host_platform().arch
    if arch and arch != host:
        warn(
            f"the image is for {arch}, this machine is {host}: its ELF files are bundled "
            "unchanged (the rewriter handles this machine's architecture only)"
        )


@contextlib.contextmanager
def _inside(root: str) -> Iterator[None]:
    # The rewrite cache must not land in the staging directory when XDG_CACHE_HOME is relative.
    cache = os.environ.get("XDG_CACHE_HOME")
    if cache and not os.path.isabs(cache):
        os.environ["XDG_CACHE_HOME"] = os.path.abspath(cache)
    old = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(old)


# -- what goes in ---------------------------------------------------------------------------


def _tree_plan(root: str, findings: Findings) -> Plan:
    tree = scan_tree(root, findings, RESERVED)
    plan = Plan()
    for tf in tree.files:
        f = plan.file_for(f"{ROOTFS}/{tf.source}")
        f.paths[:] = tf.paths
        f.reasons[:] = tf.reasons
    return plan


def _closure_plan(root: str, config: dict[str, Any]) -> Plan:
    """Only what the default command needs: its program (a script brings its interpreter),
    /bin/sh for config_and_run.sh, their libraries, and the image's ld.so.cache."""
    argv = default_command(config)
    if not argv:
        raise UserError("--entrypoint-closure: the image has no Entrypoint or Cmd")
    for needed in (SHELL,):
        if not os.path.isfile(confined_realpath(root, needed)):
            raise UserError(
                f"--entrypoint-closure: the image has no {needed}, which {SCRIPT_PATH} needs"
            )
    program = _find_program(root, argv[0], config)
    closure = resolve([SHELL, program], root=root)
    closure.raise_if_missing(explain=True)
    plan = Plan()
    for lib, reason in _closure_members(closure, program):
        f = plan.file_for(f"{ROOTFS}/{os.path.relpath(lib.realpath, root)}")
        for path in (lib.path, *lib.aliases):
            f.add(litebox_lookup_path(path), reason)
    cache = confined_realpath(root, "/etc/ld.so.cache")
    if os.path.isfile(cache):
        f = plan.file_for(f"{ROOTFS}/{os.path.relpath(cache, root)}")
        f.add("/etc/ld.so.cache", {"kind": "ld.so.cache"})
    return plan


def _closure_members(closure: Closure, program: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    for lib in closure.inputs:
        yield lib, ({"kind": "shell"} if lib.path == SHELL else {"kind": "entrypoint"})
    for lib in closure.libraries:
        yield lib, {"kind": "needed", "by": lib.needed_by, "name": lib.name, "rule": lib.rule}


def _find_program(root: str, word: str, config: dict[str, Any]) -> str:
    """The image path the kernel would run for ``word`` (PATH from the image's Env)."""
    if "/" in word:
        workdir = str(config.get("WorkingDir") or "/")
        return os.path.normpath(os.path.join(workdir, word))
    path = list(DEFAULT_PATH)
    for item in config.get("Env") or []:
        if str(item).startswith("PATH="):
            path = [d for d in str(item)[5:].split(":") if d]
    for d in path:
        candidate = os.path.join("/", d, word)
        host = confined_realpath(root, candidate)
        try:
            st = os.stat(host)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise UserError(f"--entrypoint-closure: {word}: not found in the image's PATH {':'.join(path)}")


def _add_includes(plan: Plan, includes: list[str]) -> None:
    if not includes:
        return
    extra = build_plan(Closure([], [], []), host_root=None, includes=includes, no_rewrite=[])
    taken = {p: f.source for f in plan.files for p in f.paths} | dict.fromkeys(
        RESERVED, "litebox-pack"
    )
    for inc in extra.files:
        for p in inc.paths:
            if p in taken:
                raise UserError(f"--include: tar path {p!r} is already in the image ({taken[p]})")
        f = plan.file_for(inc.source)
        for p in inc.paths:
            f.add(p, inc.reasons[0])


def _apply_no_rewrite(plan: Plan, paths: list[str]) -> None:
    """``--no-rewrite`` names files as the image does (``/usr/bin/x``), or an --include's host
    path."""
    by_path = {p: f for f in plan.files for p in f.paths}
    for given in paths:
        f = by_path.get(given.strip("/"))
        if f is None:
            real = os.path.realpath(given)
            f = next((g for g in plan.files if g.source == real), None)
        if f is None:
            raise UsageError(f"--no-rewrite {given}: no such file in the bundle")
        f.rewrite, f.skip_reason = False, "--no-rewrite"
