"""Registry credentials: ``--username`` with the password on stdin, or Docker's config file."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from ..console import warn
from ..errors import UsageError, UserError
from ..jsonload import loads
from .reference import DOCKER_HUB

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
    """Credentials ``docker login`` stored for ``registry`` (``auths`` only), if any."""
    path = config_path()
    try:
        doc = loads(path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the Docker config: {e}") from None
    if not isinstance(doc, dict):
        return None
    auths = doc.get("auths") or {}
    keys = _HUB_KEYS if registry == DOCKER_HUB else (registry,)
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if _host_of(key) in keys or key in keys:
            creds = _entry(entry, path, key)
            if creds is not None:
                return creds
    helper = (doc.get("credHelpers") or {}).get(registry) or doc.get("credsStore")
    if helper:
        warn(
            f"{path}: credential helper {helper!r} is not supported; "
            "pass --username and --password-stdin if the registry needs a login"
        )
    return None


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
