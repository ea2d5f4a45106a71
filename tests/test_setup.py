"""The README's two commands, the set-up script they call and the package's metadata."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess

from tests.conftest import ROOT

# What packing a program needs; everything else belongs to the test set-up.
MAIN_JOB_PACKAGES = {"gcc", "libc6-dev", "python3-venv"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def setup_list(*args: str) -> list[str]:
    res = subprocess.run(
        [str(ROOT / ".ci/setup"), *args, "--list"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_readme_first_command_sets_up_only_the_main_job() -> None:
    first = readme_commands()[0]
    assert first.startswith(".ci/setup && ")
    assert set(setup_list()) == MAIN_JOB_PACKAGES


def test_test_setup_installs_the_rest() -> None:
    second = readme_commands()[1]
    assert second.startswith(".ci/setup --tests && ")
    packages = setup_list("--tests")
    assert set(packages) >= MAIN_JOB_PACKAGES
    for tool in ("gcc-multilib", "docker-registry", "skopeo", "umoci", "busybox-static"):
        assert tool in packages
    assert len(packages) == len(set(packages))


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_setup_refuses_unknown_options() -> None:
    res = subprocess.run([str(ROOT / ".ci/setup"), "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "--bogus" in res.stderr


def test_readme_first_command_leaves_nothing_untracked() -> None:
    # Every file the first command writes into the checkout is ignored by git.
    words = shlex.split(readme_commands()[0].replace("&&", " "))
    written = [words[i + 1] for i, w in enumerate(words) if w == "-o"]
    tar = next(w for w in written if w.endswith(".tar"))
    written.append(tar.removesuffix(".tar") + ".hooked")
    res = subprocess.run(
        ["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True
    )
    ignored = {line.removeprefix("./") for line in res.stdout.split()}
    assert ignored == {w.removeprefix("./") for w in written}


def test_metadata_uses_an_spdx_license_and_ships_it() -> None:
    meta = importlib.metadata.metadata("litebox-pack")
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert any(
        c.startswith("Programming Language :: Python :: 3.11")
        for c in meta.get_all("Classifier") or []
    )
    assert meta.get_all("Project-URL")
