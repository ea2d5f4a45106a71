"""Every bound litebox-pack puts on work that hostile input could make unbounded (README
"Limits"). Each can be changed with the environment variable named beside it; tests lower
them to run in seconds."""

from __future__ import annotations

import os
from typing import TypeVar

N = TypeVar("N", int, float)


def env_number(name: str, default: N) -> N:
    """A positive number from the environment (of the default's type), else ``default``."""
    try:
        value = type(default)(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


MAX_JSON = env_number("LITEBOX_PACK_MAX_JSON", 16 << 20)  # bytes of one JSON document
MAX_PAX = env_number("LITEBOX_PACK_MAX_PAX", 16 << 10)  # bytes of one PAX or GNU long-name record
MAX_PATHS = env_number("LITEBOX_PACK_MAX_PATHS", 1_000_000)  # bundle paths of an image tree
MAX_DIRS = env_number("LITEBOX_PACK_MAX_DIRS", 100_000)  # directories visited walking an image tree
HTTP_TIMEOUT = env_number("LITEBOX_PACK_HTTP_TIMEOUT", 60.0)  # seconds without a byte
HTTP_TOTAL = env_number("LITEBOX_PACK_HTTP_TOTAL", 1800.0)  # seconds for one whole download
MAX_BLOB = env_number("LITEBOX_PACK_MAX_BLOB", 16 << 30)  # bytes of one registry blob
