"""The project's exception types, at the bottom of the import graph.

Nothing past an adapter catches a client library's exceptions: adapters re-raise them as ``SourceError``.
``WireError`` stays inside ``wire`` and becomes FORMERR; it never reaches a protocol callback.
"""

from __future__ import annotations


class McsDnsError(Exception):
    """Base of every error mcsdns raises on purpose."""


class ConfigError(McsDnsError):
    """A flag, environment variable or config file value is invalid (the CLI exits 2)."""


class ListenError(McsDnsError):
    """A DNS socket cannot be bound (address in use, no permission for a port below 1024)."""


class ManifestError(McsDnsError):
    """A manifest file or one object in it cannot be used; the message names the file and object."""


class SourceError(McsDnsError):
    """A zone source (manifests, Kubernetes, Cloud Map) failed; the last good zone keeps serving."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class WriteConflict(SourceError):
    """Another writer changed the object first (HTTP 409): re-read and decide again."""


class WireError(McsDnsError):
    """A DNS message is malformed (answered with FORMERR)."""
