"""``$ORIGIN/../lib`` programs (python-build-standalone's layout, upstream LiteBox issue #478).

The loader asks for ``.../bin/../lib/libfoo.so``; LiteBox resolves every path lexically before
looking it up in the tar (litebox/src/fs/resolver.rs), so the bundle stores the library at
``.../lib/libfoo.so`` and nothing with a ".." component.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from packager.plan import litebox_lookup_path
from tests.tarcheck import read_strict
from tests.test_pack import cli, manifest_of

MAIN = '#include <stdio.h>\nint foo(void);\nint main(void) { printf("%d\\n", foo()); return 0; }\n'


@pytest.fixture
def origin_app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    (app / "lib").mkdir()
    (tmp_path / "foo.c").write_text("int foo(void) { return 42; }\n")
    (tmp_path / "m.c").write_text(MAIN)
    for cmd in (
        ["gcc", "-shared", "-fPIC", "-o", "app/lib/libfoo.so", "foo.c"],
        ["gcc", "-o", "app/bin/m", "m.c", "-Lapp/lib", "-lfoo", "-Wl,-rpath,$ORIGIN/../lib"],
    ):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return app


def test_lookup_path_is_litebox_lexical_normalisation() -> None:
    assert litebox_lookup_path("/opt/py/bin/../lib/libpython.so") == "/opt/py/lib/libpython.so"
    assert litebox_lookup_path("/a//b/./c/../../d") == "/a/d"
    assert litebox_lookup_path("/../x") == "/x"  # nothing above the root, as in the kernel


def test_origin_dotdot_lib_is_packed_at_the_normalised_path_and_runs(
    tmp_path: Path, origin_app: Path
) -> None:
    res = cli("app/bin/m", "-o", "app.tar", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    members = {m.path: m.data for m in read_strict(tmp_path / "app.tar")}
    lib = str(origin_app / "lib" / "libfoo.so").lstrip("/")
    assert lib in members
    assert not [p for p in members if "/../" in p or p.startswith("../")]
    [entry] = [f for f in manifest_of(members)["files"] if f["paths"] == [lib]]
    assert entry["source"] == str(origin_app / "lib" / "libfoo.so")
    # The bundle alone serves the program: the host's copy of the app is gone.
    shutil.move(origin_app, tmp_path / "elsewhere")
    program = str(origin_app / "bin" / "m")
    # ld.so takes the program's $ORIGIN from readlink("/proc/self/exe"), and from LD_ORIGIN_PATH
    # when there is no /proc. LiteBox serves /proc/self/exe; a `run` that gives the guest no
    # /proc and only the environment named with --env needs the variable said explicitly.
    origin = f"LD_ORIGIN_PATH={origin_app / 'bin'}"
    takes_env = "--env" in cli("run", "--help", cwd=tmp_path).stdout
    ran = (
        cli("run", "--env", origin, "app.tar", "--", program, cwd=tmp_path)
        if takes_env
        else cli("run", "app.tar", "--", program, cwd=tmp_path)
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "42\n"
