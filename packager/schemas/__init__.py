"""The JSON documents litebox-pack writes: each one's format number and JSON Schema.

Every document carries ``"format": N``. N changes only with an incompatible change (a field
removed, renamed or retyped); added fields keep it, and the schemas (``NAME.schema.json`` beside
this file, draft 2020-12) allow them. The README links the schemas; the tests validate every
document against its schema.
"""

from __future__ import annotations

from pathlib import Path

FORMAT = {
    "pack": 1,  # pack --json
    "deps": 1,  # deps --json
    "rewrite": 1,  # rewrite --json
    "audit": 1,  # audit --json
    "run-report": 1,  # run --report FILE
    "manifest": 1,  # litebox/manifest.json inside a bundle
    "cache": 1,  # cache --json
}


def schema_file(name: str) -> Path:
    """The schema of document ``name`` (a key of FORMAT)."""
    return Path(__file__).with_name(f"{name}.schema.json")
