"""litebox-pack: everything user-facing (CLI, resolver, bundle, audit, runtime)."""

# The one place the version lives (pyproject.toml reads it from here): importlib.metadata
# would cost every command ~40 ms of start-up.
__version__ = "0.3.0.dev0"
