"""Fuzzing the CLI with mutated ELFs, bundle tars, OCI layouts/archives and image configs.

Each mutated input runs ``litebox-pack`` in a subprocess under strace, with an address-space
limit, and must give: exit 0 (or 3 for ``audit --fail-on``), or exactly one
``litebox-pack: error:`` line with exit 1; never a traceback; at most SECONDS_PER_INPUT seconds
and MAX_RSS_MIB of peak RSS (ru_maxrss from wait4); no file written, created, renamed or
removed outside the input's work directory (strace -f -y records every such call); no partial
output left behind.

A few seconds per family by default, with a fixed seed; LITEBOX_PACK_FUZZ_SECONDS=N runs N
seconds per family, LITEBOX_PACK_FUZZ_SEED=S another sequence.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import resource
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BuildSample
from tests.hostile import EXE, leftovers
from tests.oci_util import add_image, directory, file, symlink, tar_directory

SECONDS = float(os.environ.get("LITEBOX_PACK_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("LITEBOX_PACK_FUZZ_SEED", "1105"))
MIN_INPUTS = 4  # per family, however short the time
SECONDS_PER_INPUT = 60  # under strace, on a shared 2-core machine
MAX_RSS_MIB = 700
MEM_LIMIT = 2 << 30
ALLOWED_OUTSIDE = ("/dev/null", "/dev/tty", "/dev/pts/", "/proc/")
WRITE_CALLS = re.compile(
    r"^(?:\[pid\s+\d+\] )?(?:\d+\s+)?(open|openat|creat|mkdir|mkdirat|rename|renameat2?|unlink|"
    r"unlinkat|rmdir|symlink|symlinkat|link|linkat|chmod|fchmodat|truncate)\((.*)\) = (-?\d+)"
)


def _strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.fail("the fuzz test needs strace (apt-get install strace; .ci/setup does it)")
    return path


# -- mutations ------------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Byte flips, overwrites with boundary values, truncation, duplication of a slice."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            out += bytes([rng.randrange(256)])
        op = rng.random()
        at = rng.randrange(len(out))
        if op < 0.4:
            out[at] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            value = rng.choice([0, 0xFF, 0x7F, 0x80, ord("/"), ord("."), ord("0")])
            out[at : at + rng.randint(1, 8)] = bytes([value]) * rng.randint(1, 8)
        elif op < 0.75:
            del out[rng.randrange(len(out)) :]
        elif op < 0.9:
            n = rng.randint(1, 512)
            out[at:at] = out[at : at + n] * rng.randint(1, 4)
        else:
            out[at : at + 12] = b"%011o\0" % rng.choice([0, 1, 0o77777777777, 10**9])
    return bytes(out)


def _weird_value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(9)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([0, -1, 2**70, 1.5e308])
    if choice == 2:
        return "x" * rng.choice([0, 1, 5000])
    if choice == 3 and depth < 3:
        return [_weird_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if choice == 4 and depth < 3:
        return {"k": _weird_value(rng, depth + 1)}
    if choice == 5:
        return ["/bin/sh", "-c", "true"]
    if choice == 6:
        return ["A=1", "PATH=/bin", "BAD NAME=2", 7]
    if choice == 7:
        return True
    return "/"


def mutate_config(rng: random.Random, config: dict[str, object]) -> bytes:
    doc = json.loads(json.dumps(config))
    inner = doc.setdefault("config", {})
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(["Env", "Cmd", "Entrypoint", "WorkingDir", "config", "rootfs", "os"])
        target = doc if key in ("config", "rootfs", "os") else inner
        if isinstance(target, dict):
            target[key] = _weird_value(rng)
    text = json.dumps(doc).encode()
    r = rng.random()
    if r < 0.15:
        return b"[" * rng.choice([100, 100_000]) + text
    if r < 0.25:
        return text.replace(b"0", b"9" * rng.choice([10, 5000]), 1)
    if r < 0.4:
        return mutate(rng, text)
    return text


# -- running one input ----------------------------------------------------------------------


def _outside(line: str, work: str) -> list[str]:
    """Paths a traced call wrote outside ``work`` (empty when it only read, or stayed in)."""
    m = WRITE_CALLS.match(line)
    if not m or m.group(3).startswith("-"):
        return []  # not a write-like call, or it failed (nothing was touched)
    call, args = m.group(1), m.group(2)
    if call in ("open", "openat") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
        return []
    found = []
    # strace -y prints each dirfd with its path: 3</some/dir>; paths are quoted strings.
    base = None
    for token in re.finditer(r'(?:\d+|AT_FDCWD)<([^>]*)>|"((?:[^"\\]|\\.)*)"|AT_FDCWD', args):
        if token.group(1) is not None:
            base = token.group(1)
        elif token.group(2) is not None:
            path = token.group(2)
            full = path if path.startswith("/") else os.path.join(base or work, path)
            full = os.path.normpath(full)
            if not (full == work or full.startswith(work + "/")) and not full.startswith(
                ALLOWED_OUTSIDE
            ):
                found.append(f"{call}: {full}")
            base = None
        else:
            base = None
    return found


def run_one(args: list[str], work: Path, *, out: Path | None, ok: tuple[int, ...]) -> None:
    """Run ``litebox-pack ARGS`` in ``work`` and check every property of the module docstring."""
    log = work / ".strace"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work / "home"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "TMPDIR": str(work / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LITEBOX_PACK_HTTP_TOTAL": "5",
    }
    for d in ("home", "tmp", "cache"):
        (work / d).mkdir(exist_ok=True)
    cmd = [_strace(), "-f", "-qq", "-y", "-s", "4096", "-o", str(log), "-e",
           "trace=open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,"
           "rmdir,symlink,symlinkat,link,linkat,chmod,fchmodat,truncate",
           str(EXE), *args]  # fmt: skip

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))

    start = time.monotonic()
    with open(work / ".stdout", "wb") as so, open(work / ".stderr", "wb") as se:
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
            preexec_fn=limit,
        )  # fmt: skip
    # wait4: the peak RSS of this input alone (strace's, and its children's: the CLI's)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > SECONDS_PER_INPUT:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail(f"{args}: still running after {SECONDS_PER_INPUT} s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.monotonic() - start
    peak = usage.ru_maxrss / 1024
    stderr = (work / ".stderr").read_bytes()
    (work / ".stdout").unlink()
    (work / ".stderr").unlink()
    err = stderr.decode(errors="replace")
    where = f"{args} (exit {proc.returncode}, {took:.1f} s):\n{err}"
    assert "Traceback" not in err, where
    assert peak < MAX_RSS_MIB, f"peak RSS {peak:.0f} MiB: {where}"
    if proc.returncode == 1:
        lines = [ln for ln in err.splitlines() if ln.strip() and "warning:" not in ln]
        assert len(lines) == 1 and lines[0].startswith("litebox-pack: error: "), where
        if out is not None:
            assert not out.exists(), f"partial output left: {where}"
    else:
        assert proc.returncode in ok, where
    trace = log.read_text(errors="replace").splitlines()
    log.unlink()
    touched = [t for line in trace for t in _outside(line, str(work))]
    assert not touched, f"touched outside the work directory: {touched[:5]}: {where}"
    assert leftovers(work) == [], where
    assert list((work / "tmp").iterdir()) == [], f"temporary files left: {where}"


def fuzz(tmp_path: Path, family: str, make: Callable[[random.Random, Path], list[str]],
         out_name: str | None, ok: tuple[int, ...] = (0,)) -> int:  # fmt: skip
    rng = random.Random(f"{SEED}-{family}")
    deadline = time.monotonic() + SECONDS
    n = 0
    while n < MIN_INPUTS or time.monotonic() < deadline:
        work = tmp_path / f"{family}-{n}"
        work.mkdir()
        args = make(rng, work)
        run_one(args, work, out=work / out_name if out_name else None, ok=ok)
        shutil.rmtree(work)
        n += 1
    return n


# -- the four families ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory, build_sample: BuildSample) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz-seeds")
    hello = build_sample("hello.c", "static")
    res = subprocess.run(
        [str(EXE), hello, "-o", d / "b.tar", "-q", "--no-main-out", "--include",
         "/etc/hostname:/etc/hostname"],
        cwd=d, env={**os.environ, "XDG_CACHE_HOME": str(d / "cache")}, capture_output=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    layout = d / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entries = [directory("etc"), file("etc/a", "a\n"), symlink("lib", "etc"),
               file("../../escape", "x"), file("/abs-escape", "x")]  # fmt: skip
    desc, _, _ = add_image(layout, [(entries, "gzip")], {"Cmd": ["/bin/true"]})
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return {
        "elf": hello.read_bytes(),
        "bundle": (d / "b.tar").read_bytes(),
        "archive": tar_directory(layout, d / "layout.tar").read_bytes(),
    }


CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/true"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": []},
}


def test_fuzz_elves(tmp_path: Path, seeds: dict[str, bytes]) -> None:
    def make(rng: random.Random, work: Path) -> list[str]:
        (work / "in").write_bytes(mutate(rng, seeds["elf"]))
        return ["rewrite", "in", "-o", "out"]

    assert fuzz(tmp_path, "elf", make, "out") >= MIN_INPUTS


def test_fuzz_bundle_tars(tmp_path: Path, seeds: dict[str, bytes]) -> None:
    def make(rng: random.Random, work: Path) -> list[str]:
        data = mutate(rng, seeds["bundle"])
        if rng.random() < 0.4:
            data = gzip.compress(data, mtime=0)
            data = mutate(rng, data) if rng.random() < 0.5 else data
        (work / "b.tar").write_bytes(data)
        return ["audit", "b.tar", "--fail-on", "any", "--json"]

    assert fuzz(tmp_path, "bundle", make, None, ok=(0, 3)) >= MIN_INPUTS


def test_fuzz_run_bundles(tmp_path: Path, seeds: dict[str, bytes]) -> None:
    def make(rng: random.Random, work: Path) -> list[str]:
        # only the tar structure: mutated program bytes could legitimately crash the program
        with tarfile.open(fileobj=io.BytesIO(seeds["bundle"])) as tf:
            manifest = tf.extractfile("litebox/manifest.json").read()  # type: ignore[union-attr]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out:
            for name, data in (("litebox/manifest.json", mutate(rng, manifest)),
                               ("etc/hostname", b"x\n")):  # fmt: skip
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                out.addfile(ti, io.BytesIO(data))
        (work / "b.tar").write_bytes(mutate(rng, buf.getvalue()))
        return ["run", "b.tar", "--", "/etc/hostname"]

    assert fuzz(tmp_path, "run", make, None) >= MIN_INPUTS


def test_fuzz_oci_archives(tmp_path: Path, seeds: dict[str, bytes]) -> None:
    def make(rng: random.Random, work: Path) -> list[str]:
        data = seeds["archive"]
        if rng.random() < 0.5:
            data = mutate(rng, data)
        else:  # mutate one JSON member in place, keeping the tar readable
            buf = io.BytesIO()
            with (
                tarfile.open(fileobj=io.BytesIO(data)) as tf,
                tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out,
            ):
                members = [m for m in tf.getmembers() if m.isreg()]
                victim = rng.choice(members).name
                for m in tf.getmembers():
                    raw = tf.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
                    if m.name == victim:
                        raw = mutate(rng, raw)
                        m.size = len(raw)
                    out.addfile(m, io.BytesIO(raw) if m.isreg() else None)
            data = buf.getvalue()
        (work / "image.tar").write_bytes(data)
        return ["--oci-archive", "image.tar", "-o", "o.tar", "-q"]

    assert fuzz(tmp_path, "oci", make, "o.tar") >= MIN_INPUTS
    assert not Path("/abs-escape").exists()


def test_fuzz_image_configs(tmp_path: Path) -> None:
    def make(rng: random.Random, work: Path) -> list[str]:
        root = work / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "a").write_text("a\n")
        (work / "config.json").write_bytes(mutate_config(rng, CONFIG))
        return ["--rootfs", "root", "--image-config", "config.json", "-o", "o.tar", "-q"]

    assert fuzz(tmp_path, "config", make, "o.tar") >= MIN_INPUTS


def test_the_harness_sees_a_write_outside_and_a_partial_output(tmp_path: Path) -> None:
    """The checks above are real: a write outside the work directory is caught."""
    outside = Path(f"/tmp/litebox-fuzz-outside-{os.getpid()}")
    work = tmp_path / "w"
    work.mkdir()
    (work / "in").write_text("not an ELF\n")
    try:
        with pytest.raises(AssertionError, match="touched outside the work directory"):
            run_one(["rewrite", "in", "-o", str(outside)], work, out=None, ok=(0,))
    finally:
        outside.unlink(missing_ok=True)
    line = '123  openat(AT_FDCWD</w>, "/etc/passwd", O_WRONLY|O_CREAT, 0644) = 3</etc/passwd>'
    assert _outside(line, "/w") == ["openat: /etc/passwd"]
    assert _outside('openat(3</w/x>, "y", O_RDONLY) = 4', "/w") == []
    assert _outside('mkdirat(3</elsewhere>, "d", 0700) = 0', "/w") == ["mkdirat: /elsewhere/d"]
    assert _outside('openat(AT_FDCWD</x>, "rel", O_WRONLY) = 3', "/w") == ["openat: /x/rel"]
