"""The learn loop fed with run reports (a stand-in for `run`): what it adds, when it stops, what
X.learned holds and how --include-from reads it back."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from packager.bundle import write_bundle
from packager.cmd_pack import _HostBuilder
from packager.errors import UserError
from packager.learn import (
    MAX_LITEBOX_RUNS,
    Learned,
    LearnResult,
    Outcome,
    Workload,
    candidates,
    learn,
    learned_text,
    parse_include_text,
    parse_workload_file,
    run_workload,
)
from packager.plan import Plan
from packager.resolve import resolve
from packager.rewrite_job import RewriteOptions
from packager.runtime.build import runtime_binary
from tests.conftest import BuildSample
from tests.test_pack import cli

SSL_MODULE = "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"


def members(tar: Path) -> set[str]:
    with tarfile.open(tar) as t:
        return {"/" + m.name for m in t.getmembers()}


class FakeRun:
    """A program whose needs depend on what the bundle holds: ``needs(bundle_paths)`` gives
    the guest paths it touches. host-fs runs report the ones the bundle lacks as host_used,
    LiteBox-view runs as missing (the contract of `run --report`)."""

    def __init__(self, needs: Callable[[set[str]], list[str]], status: int = 0) -> None:
        self.needs, self.status = needs, status
        self.calls: list[tuple[int, str]] = []

    def __call__(self, bundle: Path, w: Workload, view: str, env: list[str]) -> Outcome:
        self.calls.append((w.number, view))
        have = members(bundle)
        lacking = [{"path": p, "syscall": "openat", "count": 1} for p in self.needs(have)]
        lacking = [i for i in lacking if i["path"] not in have]
        key = "host_used" if view == "host-fs" else "missing"
        files: dict[str, Any] = {"missing": [], "kernel": [], "host_used": [], "refused_writes": []}
        files[key] = lacking
        return Outcome(self.status, {"view": view, "files": files}, b"out\n", b"err\n")


@pytest.fixture
def builder(build_sample: BuildSample) -> _HostBuilder:
    hello = build_sample("hello.c")
    return _HostBuilder(resolve([str(hello)]), None, [], [])


def pack_with_for(builder: _HostBuilder, cache: Path) -> Callable[..., Plan]:
    def pack_with(specs: list[tuple[str, Any]], draft: Path | None) -> Plan:
        plan, extra = builder.plan(list(specs))
        if draft is not None:
            write_bundle(
                plan,
                draft,
                options=RewriteOptions(),
                hooked=None,
                jobs=1,
                use_cache=False,
                extra=extra,
            )
        return plan

    return pack_with


def data_files(tmp_path: Path, *names: str) -> list[str]:
    out = []
    for name in names:
        p = tmp_path / "data" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name + "\n")
        out.append(str(p))
    return out


def test_host_files_then_litebox_misses_until_nothing_is_missing(
    tmp_path: Path, builder: _HostBuilder
) -> None:
    a, b, c = data_files(tmp_path, "a.conf", "b.conf", "c.conf")

    def needs(have: set[str]) -> list[str]:
        # a is read at once; b only once a is there (an include chain); c by workload 2 only.
        return [a, *([b] if a in have else [])]

    run = FakeRun(needs)
    w1, w2 = Workload(1, ["/x/hello"]), Workload(2, ["/x/hello", "-v"])
    run2 = FakeRun(lambda have: [c])

    def execute(bundle: Path, w: Workload, view: str, env: list[str]) -> Outcome:
        return (run if w.number == 1 else run2)(bundle, w, view, env)

    found = learn([w1, w2], [], pack_with_for(builder, tmp_path), execute, tmp_path)
    assert found.files == {a.lstrip("/"): (a, 1), b.lstrip("/"): (b, 1), c.lstrip("/"): (c, 2)}
    # host-fs once each, then LiteBox rounds until one adds nothing: b, then nothing.
    assert run.calls == [(1, "host-fs"), (1, "litebox"), (1, "litebox")]
    assert found.runs == 6
    text = learned_text(found, [w1, w2])
    lines = text.splitlines()
    assert lines[2:] == [
        "# workload 1: /x/hello",
        f"{a}:{a}",
        f"{b}:{b}",
        "# workload 2: /x/hello -v",
        f"{c}:{c}",
    ]
    assert parse_include_text(text, "X.learned") == [
        (f"{a}:{a}", {"kind": "learned", "workload": 1}),
        (f"{b}:{b}", {"kind": "learned", "workload": 1}),
        (f"{c}:{c}", {"kind": "learned", "workload": 2}),
    ]


def test_a_repack_from_the_learned_specs_is_byte_identical(
    tmp_path: Path, builder: _HostBuilder
) -> None:
    a, b = data_files(tmp_path, "a.conf", "b.conf")
    found = learn(
        [Workload(1, ["/x/hello"])],
        [],
        pack_with_for(builder, tmp_path),
        FakeRun(lambda have: [b, a, SSL_MODULE]),
        tmp_path,
    )
    result = LearnResult.of(tmp_path / "x.learned", found, [Workload(1, ["/x"])], verbose=False)
    (tmp_path / "x.learned").write_text(result.text)
    again = parse_include_text((tmp_path / "x.learned").read_text(), "x.learned")
    pack_with = pack_with_for(builder, tmp_path)
    pack_with(result.specs, tmp_path / "one.tar")
    pack_with(again, tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as t:
        doc = json.load(t.extractfile("litebox/manifest.json"))  # type: ignore[arg-type]
    entry = next(f for f in doc["files"] if f["source"] == a)
    assert entry["included_because"] == [{"kind": "learned", "workload": 1}]
    # The module's libssl comes with its closure: "needed by", not learned.
    ssl = next(f for f in doc["files"] if f["paths"][0].endswith("/libssl.so.3"))
    assert [r["kind"] for r in ssl["included_because"]] == ["needed"]


def test_files_a_learned_elf_brings_are_not_learned_twice(
    tmp_path: Path, builder: _HostBuilder
) -> None:
    libssl = "/lib/x86_64-linux-gnu/libssl.so.3"
    found = learn(
        [Workload(1, ["/x/hello"])],
        [],
        pack_with_for(builder, tmp_path),
        FakeRun(lambda have: [SSL_MODULE, libssl]),
        tmp_path,
    )
    assert list(found.files) == [SSL_MODULE.lstrip("/")]


def test_a_loop_that_never_settles_stops_with_an_error(
    tmp_path: Path, builder: _HostBuilder
) -> None:
    made: list[str] = []

    def needs(have: set[str]) -> list[str]:
        made.extend(data_files(tmp_path, f"gen{len(made)}.dat"))  # always one more
        return list(made)

    with pytest.raises(UserError, match="did not converge") as e:
        learn(
            [Workload(1, ["/x/hello"])],
            [],
            pack_with_for(builder, tmp_path),
            FakeRun(needs),
            tmp_path,
        )
    assert f"after {MAX_LITEBOX_RUNS} runs" in str(e.value)


def test_a_report_without_files_is_a_clear_error(tmp_path: Path, builder: _HostBuilder) -> None:
    def execute(bundle: Path, w: Workload, view: str, env: list[str]) -> Outcome:
        return Outcome(0, {"view": view})

    with pytest.raises(UserError, match=r"workload 1: the run report has no files\.host_used"):
        learn([Workload(1, ["/x"])], [], pack_with_for(builder, tmp_path), execute, tmp_path)


def test_what_a_reported_path_turns_into(tmp_path: Path) -> None:
    (tmp_path / "empty" / "leaf").mkdir(parents=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "one").write_text("1")
    (tmp_path / "full" / "sub").mkdir()
    (tmp_path / "full" / "sub" / "deeper").write_text("2")
    (tmp_path / "only-dirs" / "d").mkdir(parents=True)
    (tmp_path / "only-dirs" / "d" / "f").write_text("3")
    (tmp_path / "link").symlink_to(tmp_path / "full" / "one")
    t = str(tmp_path)
    items = [
        {"path": p}
        for p in (
            f"{t}/empty/leaf",
            f"{t}/full",
            f"{t}/only-dirs",
            f"{t}/link",
            f"{t}/nothing",
            "/proc/self/maps",
            "/dev/null",
            "/etc/hostname",
            "/etc/passwd",
        )
    ]
    found = candidates(items, bundled={"etc/passwd"}, expand_dirs=True)
    assert found.files == {
        f"{t}/full/one".lstrip("/"): f"{t}/full/one",  # the directory's own files
        f"{t}/link".lstrip("/"): f"{t}/link",  # a symlink to a file is bundled as a file
        "etc/hostname": "/etc/hostname",
    }
    assert found.gaps == {f"{t}/empty/leaf".lstrip("/"): f"{t}/empty/leaf"}
    # Left out, to be reported: what no bundle can hold (LiteBox has no /proc either).
    assert found.stuck == sorted(["/dev/null", "/proc/self/maps", f"{t}/only-dirs"])
    # In the host-fs view a directory brings nothing of its own; an empty one is still a gap.
    hostfs = candidates(items, bundled={"etc/passwd"}, expand_dirs=False)
    assert set(hostfs.files) == {f"{t}/link".lstrip("/"), "etc/hostname"}
    assert hostfs.gaps == found.gaps and hostfs.stuck == []
    # A directory the bundle already implies needs nothing.
    assert candidates([{"path": "/etc"}], {"etc/passwd"}, expand_dirs=True).files == {}
    odd = candidates([{"path": "/a:b"}, {"path": "/x\ny"}], set(), expand_dirs=True)
    assert odd.stuck == ["/a:b", "/x\ny"] and odd.files == {}


def test_workload_file_syntax(tmp_path: Path) -> None:
    f = tmp_path / "w.txt"
    f.write_text(
        "# comment\n\npython3 -c 'import json; print(1)'  # trailing comment\n"
        '/usr/bin/python3 -c "print(2)" a\\ b\n'
    )
    got = parse_workload_file(f, ["/usr/bin/python3"], first=2)
    assert got == [
        Workload(2, ["/usr/bin/python3", "-c", "import json; print(1)"]),
        Workload(3, ["/usr/bin/python3", "-c", "print(2)", "a b"]),
    ]
    f.write_text("gzip -c\n")
    with pytest.raises(UserError, match="'gzip' is not an input's name"):
        parse_workload_file(f, ["/usr/bin/python3"], first=1)
    f.write_text("python3 -c 'unclosed\n")
    with pytest.raises(UserError, match=r"w.txt:1: No closing quotation"):
        parse_workload_file(f, ["/usr/bin/python3"], first=1)
    f.write_text("# nothing\n")
    with pytest.raises(UserError, match="no command"):
        parse_workload_file(f, ["/usr/bin/python3"], first=1)


def test_bad_workload_header_in_include_from() -> None:
    with pytest.raises(UserError, match="X:2: bad workload header"):
        parse_include_text("a:b\n# workload x: y\n", "X")
    assert parse_include_text("# hi\n/a:/b\n\n/c\n", "X") == [("/a:/b", None), ("/c", None)]
    with pytest.raises(UserError, match=r"X:1: --include ':/b'"):
        parse_include_text(":/b\n", "X")


def test_a_failing_workload_is_a_warning_with_its_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    learned = Learned(outcomes={1: Outcome(3, {}, b"partial\n", b"boom\n")})
    LearnResult.of(tmp_path / "x.learned", learned, [Workload(1, ["/bin/x", "a"])], verbose=False)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "litebox-pack: warning: workload 1 (/bin/x a) exited with status 3 under LiteBox's view",
        "  workload 1 stdout| partial",
        "  workload 1 stderr| boom",
    ]
    learned = Learned(outcomes={1: Outcome(0, {}, b"fine\n", b"")})
    LearnResult.of(tmp_path / "x.learned", learned, [Workload(1, ["/bin/x"])], verbose=False)
    assert capsys.readouterr().err == ""  # captured, not shown, when all went well


@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        (["/bin/true", "-o", "t.tar", "--", "x"], "add --learn", 2),
        (["/bin/true", "-o", "t.tar", "--env", "A=1"], "use it with --learn", 2),
        (["/bin/true", "-o", "t.tar", "--learn", "--env", "NOEQUALS"], "expected NAME=VALUE", 2),
        (["--rootfs", "/", "-o", "t.tar", "--learn"], "--learn applies to programs", 2),
        (["--root", "/", "/bin/true", "-o", "t.tar", "--learn"], "not inside --root", 2),
        (["/bin/true", "-o", "t.tar", "--include-from", "nofile"], "nofile: no such file", 1),
        (["/bin/true", "-o", "t.tar", "--workload", "nofile"], "nofile: no such file", 1),
        (["/bin/true", "-o", "t.tar", "--learn", "--include-from", "t.learned"], "overwrite", 2),
    ],
)
def test_learn_options_refused_in_one_line(
    tmp_path: Path, args: list[str], message: str, status: int
) -> None:
    (tmp_path / "t.learned").write_text("# an earlier X.learned\n")
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == status, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t.tar").exists()
    assert (tmp_path / "t.learned").read_text() == "# an earlier X.learned\n"


def test_a_multi_line_workload_keeps_x_learned_one_entry_a_line(tmp_path: Path) -> None:
    w = Workload(1, ["/usr/bin/python3", "-c", "import os\nprint(1)"])
    learned = Learned(files={"etc/a": ("/etc/a", 1)})
    text = learned_text(learned, [w])
    assert text.splitlines()[2:] == [
        "# workload 1: /usr/bin/python3 -c 'import os\\nprint(1)'",
        "/etc/a:/etc/a",
    ]
    assert parse_include_text(text, "X") == [("/etc/a:/etc/a", {"kind": "learned", "workload": 1})]


def test_what_no_bundle_can_hold_is_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    learned = Learned(
        left_out=["/proc/a", "/proc/b", "/sys/c", "/sys/d"],
        outcomes={1: Outcome(0, {}, b"", b"")},
    )
    LearnResult.of(tmp_path / "x.learned", learned, [Workload(1, ["/bin/x"])], verbose=False)
    assert capsys.readouterr().err == (
        "litebox-pack: warning: the workloads looked up 4 path(s) no bundle can hold, which "
        "LiteBox will not have: /proc/a, /proc/b, /sys/c and 1 more\n"
    )


def test_a_workload_that_does_not_finish_is_stopped(tmp_path: Path) -> None:
    res = cli("/bin/sh", "/bin/sleep", "-o", "s.tar", "--no-main-out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # The shell forks the sleep: the child must go too, not only the runtime.
    w = Workload(1, ["/bin/sh", "-c", "/bin/sleep 300; echo done"])
    runtime_binary()  # built now, on a cold cache, not inside the workload's 2 s
    start = time.monotonic()
    with pytest.raises(UserError, match="workload 1: still running after 2 s, stopped"):
        run_workload(tmp_path / "s.tar", w, "litebox", [], timeout=2)
    assert time.monotonic() - start < 60
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "/bin/sleep 300" not in ps


def test_a_workload_runs_with_exactly_its_environment(tmp_path: Path) -> None:
    res = cli("/usr/bin/env", "-o", "e.tar", "--no-main-out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = run_workload(tmp_path / "e.tar", Workload(1, ["/usr/bin/env"]), "litebox", ["A=1", "B=2"])
    assert (out.status, out.stdout, out.stderr) == (0, b"A=1\nB=2\n", b"")
    # The report comes back too: the bundled ld.so looked for the cache the bundle lacks.
    assert out.report["view"] == "litebox"
    assert [i["path"] for i in out.report["files"]["missing"]] == ["/etc/ld.so.cache"]


def test_a_workload_or_include_from_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "w.fifo"
    os.mkfifo(fifo)
    for option in ("--workload", "--include-from"):
        res = cli("/bin/true", "-o", "t.tar", "--learn", option, fifo, cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and "not a regular file" in lines[0], lines
        assert not (tmp_path / "t.tar").exists()
