"""Defects a new user hits in normal use (issue 12): each test runs the real command line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_pack import EXE, cli

BuildSample = Callable[..., Path]


def _manifest(tar: Path) -> dict:  # type: ignore[type-arg]
    with tarfile.open(tar) as tf:
        member = tf.extractfile("litebox/manifest.json")
        assert member is not None
        return json.loads(member.read())  # type: ignore[no-any-return]


def _summary(stderr: str) -> dict[str, str]:
    """The pack summary's rows (name, value), in order: the lines after the tar's name."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("files "))
    rows = {}
    for line in lines[start:]:
        m = re.fullmatch(r"(\S+)\s{2,}(\S.*)", line)
        if m is None:
            break
        rows[m[1]] = m[2]
    return rows


# --- the .hooked main binary ------------------------------------------------------------------


def test_hooked_is_named_after_the_bundle(build_sample: BuildSample, tmp_path: Path) -> None:
    exe = build_sample("hello.c", "static")
    (tmp_path / "h").mkdir()
    red = cli(exe, "-o", "h/red.tar", cwd=tmp_path)
    res = cli("--abi", "resume", exe, "-o", "h/res.tar", cwd=tmp_path)
    assert red.returncode == 0 and res.returncode == 0, red.stderr + res.stderr
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [
        "red.hooked",
        "red.tar",
        "res.hooked",
        "res.tar",
    ]
    # The printed runner command names the bundle's own .hooked.
    assert "--initial-files h/red.tar h/red.hooked" in red.stderr
    assert "--initial-files h/res.tar h/res.hooked" in res.stderr
    for name in ("red", "res"):
        doc = _manifest(tmp_path / "h" / f"{name}.tar")
        main = next(f for f in doc["files"] if {"kind": "input"} in f["included_because"])
        hooked = (tmp_path / "h" / f"{name}.hooked").read_bytes()
        assert doc["main"] == {"path": str(exe).lstrip("/"), "sha256": main["sha256_out"]}
        assert hashlib.sha256(hooked).hexdigest() == main["sha256_out"]


def test_a_name_without_tar_gets_hooked_appended(tmp_path: Path) -> None:
    res = cli("/bin/true", "-o", "b.img", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "b.img.hooked").is_file()


def test_replacing_another_bundles_hooked_is_said(
    build_sample: BuildSample, tmp_path: Path
) -> None:
    exe = build_sample("hello.c", "static")
    assert cli(exe, "-o", "a.tar", cwd=tmp_path).returncode == 0
    # Packing a.tar again replaces its own .hooked: nothing to say.
    again = cli(exe, "-o", "a.tar", cwd=tmp_path)
    assert again.returncode == 0 and "replacing" not in again.stderr
    # Another bundle written over a.hooked says so.
    other = cli("--abi", "resume", exe, "-o", "b.tar", "--main-out", "a.hooked", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert "warning: a.hooked: replacing a file that is not b.tar's main binary" in other.stderr


def test_run_hooked_refuses_another_bundles_binary(
    build_sample: BuildSample, tmp_path: Path
) -> None:
    exe = build_sample("hello.c", "static")
    assert cli(exe, "-o", "red.tar", cwd=tmp_path).returncode == 0
    assert cli("--abi", "resume", exe, "-o", "res.tar", cwd=tmp_path).returncode == 0
    wrong = cli("run", "--hooked", "red.hooked", "res.tar", "--", "x", cwd=tmp_path)
    assert wrong.returncode == 1
    lines = wrong.stderr.splitlines()
    assert len(lines) == 1 and "red.hooked: not the main binary of res.tar" in lines[0]
    right = cli("run", "--hooked", "res.hooked", "res.tar", "--", "x", cwd=tmp_path)
    assert "hello from litebox-pack (argc=2)" in right.stdout, right.stderr


# --- --unpatchable keep -------------------------------------------------------------------------


def test_kept_sites_are_counted_and_listed_everywhere(
    build_sample: BuildSample, tmp_path: Path
) -> None:
    lone = build_sample("lone.S", "nostdlib")
    res = cli(lone, "-o", "lone.tar", "--unpatchable", "keep", "-v", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = _manifest(tmp_path / "lone.tar")
    (entry,) = [f for f in doc["files"] if f["source"] == str(lone)]
    (addr,) = entry["unpatchable"]
    assert entry["strategies"] == {"kept": 1}
    # -v line, table column and listing
    assert f"{lone}: patched, 0 sites, 1 kept ({addr:#x})" in res.stderr
    summary = _summary(res.stderr)
    assert summary["kept"] == "1"
    # The class audit gives the bytes (no stub: a slot-only trampoline)
    assert (summary["patched"], summary["checked-nothing-to-patch"]) == ("0", "1")
    assert f"kept: {lone} {addr:#x}" in res.stderr
    js = cli(lone, "-o", "lone.tar", "--unpatchable", "keep", "--json", cwd=tmp_path)
    summary = json.loads(js.stdout)["unpatchable"]
    assert summary == {
        "policy": "keep",
        "sites": 1,
        "files": [{"source": str(lone), "addresses": [f"{addr:#x}"]}],
    }
    # audit: no false mismatch, the kept site is an unpatchable one
    ok = cli("audit", "lone.tar", "--fail-on", "mismatch", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 kept as syscall" in ok.stdout and "MISMATCH" not in ok.stdout
    gate = cli("audit", "lone.tar", "--fail-on", "unpatchable", "--json", cwd=tmp_path)
    assert gate.returncode == 3
    report = json.loads(gate.stdout)
    assert report["summary"]["kept_sites"] == 1 and report["summary"]["mismatches"] == 0
    (member,) = [m for m in report["members"] if m["path"] == str(lone).lstrip("/")]
    assert (member["unpatchable"], member["kept"]) == (1, 1)


# --- output that is not a terminal ----------------------------------------------------------------


def test_piped_output_is_never_wrapped(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 70) / ("e" * 70)
    deep.mkdir(parents=True)
    shutil.copy("/bin/true", deep / "true")
    args = (deep / "true", "/bin/ls", "-o", "t.tar", "-v")
    cli(*args, cwd=tmp_path)  # fill the cache: the second run's time cell says "(N cached)"
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    # One -v line per file, each holding its whole path.
    assert any(line.startswith(f"{deep / 'true'}: ") for line in lines)
    summary = _summary(res.stderr)
    classes = ["patched", "checked-nothing-to-patch", "unpatched", "non-elf"]
    assert list(summary) == ["files", *classes, "sites", "size", "time"]
    assert re.fullmatch(r"\d+\.\d\d s \(\d+ cached\)", summary["time"])
    assert "--initial-files t.tar t.hooked" in res.stderr


# --- inputs ---------------------------------------------------------------------------------------


def test_an_input_that_is_no_program_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("hello\n")
    res = cli("./t.txt", "-o", "t.tar", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "litebox-pack: error: t.txt: neither an ELF program nor a #! script; add data with "
        "--include t.txt:/GUEST/PATH, or force it with --allow-data-input"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
    forced = cli("./t.txt", "-o", "t.tar", "--allow-data-input", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "t.txt" in _manifest(tmp_path / "t.tar")["main"]["path"]


def test_a_script_input_is_still_a_program(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    res = cli(script, "-o", "s.tar", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    paths = {p for f in _manifest(tmp_path / "s.tar")["files"] for p in f["paths"]}
    assert "bin/sh" in paths or "usr/bin/sh" in paths


# --- verbs ----------------------------------------------------------------------------------------


def test_a_mistyped_verb_is_named(tmp_path: Path) -> None:
    res = cli("dep", "./hello", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == "litebox-pack: error: no command 'dep' (did you mean 'deps'?)\n"
    # A file of that name is an input, as before.
    (tmp_path / "dep").write_text("#!/bin/sh\n")
    assert cli("dep", "-o", "dep.tar", cwd=tmp_path).returncode == 0
    # A word near no verb is still taken for a missing input.
    far = cli("zzz", cwd=tmp_path)
    assert far.returncode == 1 and "zzz: no such file" in far.stderr


def test_help_prints_the_help(tmp_path: Path) -> None:
    res = cli("help", cwd=tmp_path)
    assert res.returncode == 0 and "Usage: litebox-pack" in res.stdout
    assert all(verb in res.stdout for verb in ("pack", "rewrite", "deps", "audit", "run"))
    deps = cli("help", "deps", cwd=tmp_path)
    assert deps.returncode == 0 and "Usage: litebox-pack deps" in deps.stdout


def test_host_guest_inputs_give_one_bundle_from_any_directory(
    build_sample: BuildSample, tmp_path: Path
) -> None:
    exe = build_sample("hello.c")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(exe, tmp_path / d / "hello")
        res = cli("./hello:/app/bin/hello", "-o", f"../{d}.tar", cwd=tmp_path / d)
        assert res.returncode == 0, res.stderr
        assert "(bundle path /app/bin/hello)" in res.stderr
    a, b = (tmp_path / "a.tar").read_bytes(), (tmp_path / "b.tar").read_bytes()
    assert a == b
    doc = _manifest(tmp_path / "a.tar")
    assert doc["main"]["path"] == "app/bin/hello"
    main = next(f for f in doc["files"] if {"kind": "input"} in f["included_because"])
    assert main["paths"] == ["app/bin/hello"] and main["source"] == "hello"
    ran = cli("run", "a.tar", "--", "/app/bin/hello", "x", cwd=tmp_path)
    assert "hello from litebox-pack (argc=2)" in ran.stdout, ran.stderr
    # Without a GUEST the input keeps its own absolute path.
    plain = cli(tmp_path / "a" / "hello", "-o", "p.tar", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert _manifest(tmp_path / "p.tar")["main"]["path"] == str(tmp_path / "a/hello").lstrip("/")


def test_a_guest_path_must_be_absolute(tmp_path: Path) -> None:
    res = cli("/bin/true:app/true", "-o", "t.tar", cwd=tmp_path)
    assert res.returncode == 2
    assert "expected HOST_PATH or HOST_PATH:/GUEST_PATH" in res.stderr
    assert not (tmp_path / "t.tar").exists()


# --- help -----------------------------------------------------------------------------------------


def _help(verb: str, columns: int) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    res = subprocess.run(
        [str(EXE), verb, "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


VERBS = ("pack", "rewrite", "deps", "audit", "run")


@pytest.mark.parametrize("verb", VERBS)
def test_help_sentences_flow(verb: str) -> None:
    """Each paragraph of a command's help is one line when the terminal is wide enough."""
    from packager.cli import SUMMARIES, build_app

    text = _help(verb, 2000)
    command = next(c for c in build_app([verb]).registered_commands if c.name == verb)
    paragraphs = [p for p in (command.help or "").split("\n\n") if p]
    assert paragraphs[0] == SUMMARIES[verb]
    assert len(paragraphs) >= 2
    lines = [line.strip() for line in text.splitlines()]
    for p in paragraphs:
        assert p in lines, p


@pytest.mark.parametrize("verb", VERBS)
def test_help_placeholders_are_consistent(verb: str) -> None:
    text = _help(verb, 80)
    for odd in ("<str>", "<int", "{input", "{bundle", "[inputs]", "BUNDLE.tar}", "<redzone"):
        assert odd not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    words = re.findall(r"[\[{]([^\]}]+)[\]}]", usage)
    assert words and all(w == w.upper() or w.startswith("-- ") for w in words), usage


def test_fail_on_choices_are_whole_words() -> None:
    text = _help("audit", 80)
    for choice in ("unpatched", "unpatchable", "mismatch"):
        assert re.search(rf"\b{choice}\b", text), choice


# --- shell completion -----------------------------------------------------------------------------


def _complete(words: str, cword: int) -> list[str]:
    env = {
        **os.environ,
        "_LITEBOX_PACK_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    res = subprocess.run([str(EXE)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_shell_completion_completes_commands_options_and_choices() -> None:
    assert _complete("litebox-pack au", 1) == ["audit"]
    assert _complete("litebox-pack audit --fa", 2) == ["--fail-on"]
    assert _complete("litebox-pack audit --fail-on un", 3) == ["unpatched", "unpatchable"]
    assert "--unpatchable" in _complete("litebox-pack pack --unp", 2)
    # Without this typer ignores the "bash" argument and asks shellingham for the parent
    # shell, which a test run started by a non-shell (a CI agent, a background job) lacks.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = subprocess.run(
        [str(EXE), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert script.returncode == 0 and "_LITEBOX_PACK_COMPLETE=complete_bash" in script.stdout


def test_bench_rewrite_names_are_not_cut_when_piped() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/libz.so.1"
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_rewrite.py"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run(
        [sys.executable, str(bench), lib], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "libz" in line)
    assert "libz.so.1" in row and "…" not in res.stdout
    header = next(line for line in res.stdout.splitlines() if "exec bytes" in line)
    assert "rewrite ms" in header and "0F05 pairs" in header


def test_pack_counts_files_as_audit_classes_them(build_sample: BuildSample, tmp_path: Path) -> None:
    lone = build_sample("lone.S", "nostdlib")
    (tmp_path / "data").write_text("not a program\n")
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    args = ["/bin/ls", lone, "./data", "--allow-data-input", "--unpatchable", "keep"]
    res = cli(*args, "--no-rewrite", libc, "-o", "b.tar", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    classes = json.loads(res.stdout)["classes"]
    audit = json.loads(cli("audit", "b.tar", "--json", cwd=tmp_path).stdout)
    by_file: dict[str, str] = {}  # audit classes members; pack counts distinct files
    doc = _manifest(tmp_path / "b.tar")
    for m in audit["members"]:
        entry = next((f for f in doc["files"] if m["path"] in f["paths"]), None)
        if entry is not None:
            by_file[entry["paths"][0]] = m["class"]
    counted: dict[str, int] = {}
    for cls in by_file.values():
        counted[cls] = counted.get(cls, 0) + 1
    assert classes == dict(sorted(counted.items()))
    assert set(classes) == {"patched", "checked-nothing-to-patch", "unpatched", "non-elf"}
