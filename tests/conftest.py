"""Shared fixtures: samples built with the system compiler, once per session."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

# How each kind of sample is linked. Assembly samples (.S) bring their own _start.
KIND_FLAGS = {
    "dynamic": ["-O2"],
    "static": ["-O2", "-static"],
    "static-pie": ["-O2", "-static-pie"],
    "shared": ["-O2", "-shared", "-fPIC"],
    "nostdlib": ["-nostdlib", "-static"],
    # i386 (ELF32) builds, for samples named *32*
    "dynamic32": ["-m32", "-O2"],
    "static32": ["-m32", "-O2", "-static"],
    "nostdlib32": ["-m32", "-nostdlib", "-static"],
}

BuildSample = Callable[..., Path]


@pytest.fixture(scope="session")
def build_sample(tmp_path_factory: pytest.TempPathFactory) -> BuildSample:
    """``build_sample("hello.c", "static")`` compiles samples/hello.c and returns the binary.

    Extra compiler/linker flags go in ``extra``; results are cached for the session.
    """
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required to build the samples (apt-get install gcc)")
    out_dir = tmp_path_factory.mktemp("samples")
    built: dict[tuple[str, str, tuple[str, ...]], Path] = {}

    def build(source: str, kind: str = "dynamic", extra: tuple[str, ...] | list[str] = ()) -> Path:
        key = (source, kind, tuple(extra))
        if key not in built:
            src = SAMPLES / source
            stem = src.stem + "-" + kind + ("-" + str(len(built)) if extra else "")
            out = out_dir / (stem + (".so" if kind == "shared" else ""))
            cmd = ["gcc", *KIND_FLAGS[kind], "-o", str(out), str(src), *extra]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                pytest.fail(f"building {source} ({kind}) failed:\n{res.stderr}")
            built[key] = out
        return built[key]

    return build


@pytest.fixture(scope="session")
def libc_path() -> Path:
    return Path("/usr/lib/x86_64-linux-gnu/libc.so.6")


@pytest.fixture(scope="session")
def ldso_path() -> Path:
    return Path("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
