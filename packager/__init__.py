"""litebox-pack: everything user-facing (CLI, resolver, bundle, audit, runtime)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("litebox-pack")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
