"""Registry credentials: ``--username`` with the password on stdin, or Docker's config file
(its ``auths`` and its credential helpers)."""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, UserError
from ..jsonload import loads
from .reference import DOCKER_HUB

HELPER_TIMEOUT = 60  # seconds: a helper may ask the user to unlock a keychain
HELPER_OUTPUT_MAX = 64 * 1024  # bytes of a helper's answer that are read

# Docker Hub's entry in config.json predates the docker.io name.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB, "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never print a password
        return f"Credentials({self.username!r}, ***)"


def from_options(
    username: str | None, password_stdin: bool, stdin: str | None
) -> Credentials | None:
    if password_stdin and not username:
        raise UsageError("--password-stdin needs --username")
    if username and not password_stdin:
        raise UsageError(
            "--username needs --password-stdin (passwords are never taken as arguments)"
        )
    if not username:
        return None
    password = (stdin or "").rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: no password on standard input")
    return Credentials(username, password)


def config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def from_docker_config(registry: str) -> Credentials | None:
    """Credentials ``docker login`` stored for ``registry``, if any, found as docker does it.

    A credential helper named for the registry in ``credHelpers``, else the ``credsStore``
    helper, is asked first (``docker-credential-NAME get``); when it has nothing for the
    registry, the ``auths`` entry of the file is used.
    """
    path = config_path()
    try:
        doc = loads(path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the Docker config: {e}") from None
    if not isinstance(doc, dict):
        return None
    keys = _HUB_KEYS if registry == DOCKER_HUB else (registry,)
    helpers = doc.get("credHelpers")
    helper = next(
        (
            name
            for key, name in (helpers.items() if isinstance(helpers, dict) else ())
            if key in keys or _host_of(key) in keys
        ),
        None,
    ) or doc.get("credsStore")
    if helper:
        if not isinstance(helper, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", helper):
            raise UserError(f"{path}: {helper!r} is not a credential helper name")
        # Docker stores Docker Hub's login under its historical URL, others under the host.
        server = _HUB_KEYS[0] if registry == DOCKER_HUB else registry
        creds = from_credential_helper(helper, server, path)
        if creds is not None:
            return creds
    auths = doc.get("auths") or {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if _host_of(key) in keys or key in keys:
            creds = _entry(entry, path, key)
            if creds is not None:
                return creds
    return None


def from_credential_helper(name: str, server: str, config: Path) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for ``server`` (the docker-credential-helpers
    protocol: the server on stdin, ``{"Username": ..., "Secret": ...}`` on stdout).

    None when the helper has no credentials for it; a UserError when it cannot be run or fails.
    """
    program = f"docker-credential-{name}"
    where = f"{program} (named in {config})"
    found = shutil.which(program)
    if found is None:
        raise UserError(f"{where}: not found on PATH")
    try:
        res = subprocess.run(
            [found, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"{where}: no answer after {HELPER_TIMEOUT} s") from None
    except OSError as e:
        raise UserError(f"{where}: cannot run: {e.strerror or e}") from None
    out = res.stdout[:HELPER_OUTPUT_MAX].decode("utf-8", "replace")
    if res.returncode != 0:
        # The protocol's answer for "nothing stored for this server".
        if "credentials not found" in out.lower():
            return None
        said = out.strip() or res.stderr[:HELPER_OUTPUT_MAX].decode("utf-8", "replace").strip()
        first = said.splitlines()[0] if said else f"exit status {res.returncode}"
        raise UserError(f"{where}: get {server} failed: {first}")
    try:
        doc = loads(out.encode(), "the answer")  # bounded: nesting, numbers, size
    except UserError:
        raise UserError(f"{where}: get {server}: the answer is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Secret"), str):
        raise UserError(f"{where}: get {server}: the answer has no Secret")
    user = doc.get("Username")
    if not isinstance(user, str) or not user:
        raise UserError(f"{where}: get {server}: the answer has no Username")
    if user == "<token>":
        # An OAuth2 identity (refresh) token, which the registry client cannot exchange.
        raise UserError(
            f"{where}: get {server} gave an identity token, which is not supported; "
            "use --username and --password-stdin"
        )
    return Credentials(user, doc["Secret"])


def _host_of(key: str) -> str:
    host = key.split("://", 1)[-1]
    return host.split("/", 1)[0]


def _entry(entry: object, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            text = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UserError(f"{path}: auths[{key!r}].auth is not base64 of USER:PASSWORD") from None
        user, sep, password = text.partition(":")
        if not sep:
            raise UserError(f"{path}: auths[{key!r}].auth is not base64 of USER:PASSWORD")
        return Credentials(user, password)
    if entry.get("username"):
        return Credentials(str(entry["username"]), str(entry.get("password", "")))
    return None
