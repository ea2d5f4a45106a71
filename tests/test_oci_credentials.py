"""Docker credential helpers (``credsStore``, ``credHelpers``), with fake helpers on PATH."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from packager.errors import UserError
from packager.oci.auth import Credentials, from_docker_config
from tests.oci_util import cli, file, registry, write_layout

# A helper in the docker-credential-helpers protocol: `get` reads the server on stdin and prints
# the stored login, or "credentials not found" with status 1. It logs every server asked for.
HELPER = """#!/bin/sh
[ "$1" = get ] || exit 3
read -r server
echo "$server" >> "$(dirname "$0")/asked"
case "$server" in
    {known}) printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server" ;;
    *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def docker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "docker").mkdir()
    return tmp_path


def helper(env: Path, name: str, known: str, user: str, secret: str, body: str = HELPER) -> Path:
    path = env / "bin" / f"docker-credential-{name}"
    path.write_text(body.format(known=known, user=user, secret=secret))
    path.chmod(0o755)
    return path


def config(env: Path, doc: object) -> None:
    (env / "docker" / "config.json").write_text(json.dumps(doc))


def asked(env: Path) -> list[str]:
    log = env / "bin" / "asked"
    return log.read_text().split() if log.exists() else []


def test_creds_store_is_asked_for_the_registry_host(docker_env: Path) -> None:
    helper(docker_env, "fake", "registry.example:5000", "alice", "s3cret")
    config(docker_env, {"credsStore": "fake", "auths": {"registry.example:5000": {}}})
    creds = from_docker_config("registry.example:5000")
    assert creds == Credentials("alice", "s3cret")
    assert asked(docker_env) == ["registry.example:5000"]
    assert "s3cret" not in repr(creds)


def test_docker_hub_is_asked_by_its_historical_url(docker_env: Path) -> None:
    helper(docker_env, "fake", "https://index.docker.io/v1/", "bob", "hub-pw")
    config(docker_env, {"credsStore": "fake"})
    assert from_docker_config("docker.io") == Credentials("bob", "hub-pw")
    assert asked(docker_env) == ["https://index.docker.io/v1/"]


def test_cred_helpers_win_over_creds_store_per_registry(docker_env: Path) -> None:
    helper(docker_env, "store", "*", "from-store", "a")
    helper(docker_env, "special", "ghcr.example", "from-special", "b")
    config(docker_env, {"credsStore": "store", "credHelpers": {"ghcr.example": "special"}})
    assert from_docker_config("ghcr.example") == Credentials("from-special", "b")
    assert from_docker_config("other.example") == Credentials("from-store", "a")


def test_nothing_stored_falls_back_to_auths_then_anonymous(docker_env: Path) -> None:
    helper(docker_env, "fake", "elsewhere.example", "x", "y")
    auth = base64.b64encode(b"carol:file-pw").decode()
    config(docker_env, {"credsStore": "fake", "auths": {"file.example": {"auth": auth}}})
    assert from_docker_config("file.example") == Credentials("carol", "file-pw")
    assert from_docker_config("anon.example") is None
    assert asked(docker_env) == ["file.example", "anon.example"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "#!/bin/sh\necho 'keychain locked' >&2\nexit 1\n",
            "get reg.example failed: keychain locked",
        ),
        ("#!/bin/sh\necho 'not json'\n", "the answer is not JSON"),
        ('#!/bin/sh\necho \'{{"Username": "u"}}\'\n', "the answer has no Secret"),
        (
            '#!/bin/sh\necho \'{{"Username": "<token>", "Secret": "t"}}\'\n',
            "identity token, which is not supported",
        ),
    ],
)
def test_a_failing_helper_is_a_one_line_error(docker_env: Path, body: str, message: str) -> None:
    helper(docker_env, "bad", "", "", "", body=body)
    config(docker_env, {"credsStore": "bad"})
    with pytest.raises(UserError) as err:
        from_docker_config("reg.example")
    text = str(err.value)
    assert text.startswith("docker-credential-bad (named in ") and message in text
    assert "\n" not in text


def test_missing_helper_and_bad_names_are_errors(docker_env: Path) -> None:
    config(docker_env, {"credsStore": "absent"})
    with pytest.raises(UserError, match=r"docker-credential-absent .*: not found on PATH"):
        from_docker_config("reg.example")
    config(docker_env, {"credsStore": "../../bin/sh"})
    with pytest.raises(UserError, match="is not a credential helper name"):
        from_docker_config("reg.example")


def test_pull_from_a_private_registry_with_a_credential_helper(docker_env: Path) -> None:
    user = ("helper-user", "helper-pw-7d1c")
    layout = write_layout(
        docker_env / "layout", [([file("etc/hello", "hi\n")], "gzip")], {"Cmd": ["/bin/true"]}
    )
    with registry(docker_env / "reg", user=user, tls=True) as reg:
        ref = reg.push(layout.path, "tests/private")
        helper(docker_env, "fake", reg.host, *user)
        config(docker_env, {"credsStore": "fake", "auths": {reg.host: {}}})
        env = {
            "REQUESTS_CA_BUNDLE": str(reg.ca),
            "DOCKER_CONFIG": str(docker_env / "docker"),
            "PATH": os.environ["PATH"],
        }
        res = cli("--oci-image", ref, "-o", "img.tar", "-q", cwd=docker_env, env=env)
        assert res.returncode == 0, res.stderr
        assert (docker_env / "img.tar").is_file()
        assert asked(docker_env) == [reg.host]
        # The same helper without the login: the registry refuses, one line, nothing written.
        helper(docker_env, "fake", "nothing-stored", *user)
        res = cli("--oci-image", ref, "-o", "no.tar", "-q", cwd=docker_env, env=env)
        assert res.returncode == 1 and "401" in res.stderr
        assert not (docker_env / "no.tar").exists()
