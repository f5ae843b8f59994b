"""The project's exception types, at the bottom of the import graph.

Nothing past an adapter catches a client library's exceptions: adapters re-raise them as ``SourceError``.
``WireError`` stays inside ``wire`` and becomes FORMERR; it never reaches a protocol callback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class McsDnsError(Exception):
    """Base of every error mcsdns raises on purpose."""


class ConfigError(McsDnsError):
    """A flag, environment variable or config file value is invalid (the CLI exits 2)."""


class StartupError(McsDnsError):
    """What a setting names cannot be used at start-up: a port, a kubeconfig, AWS credentials (exit 1).

    ``setting`` is the flag that asked for it, when known: the composition root fills it in (``--listen``,
    ``--kubeconfig``, ...), since the part that failed does not know which setting chose it. ``reason`` is
    the message without it.
    """

    def __init__(self, reason: str, *, setting: str = "") -> None:
        super().__init__(f"{setting}: {reason}" if setting else reason)
        self.reason, self.setting = reason, setting


class ListenError(StartupError):
    """A socket cannot be bound (address in use or not on this host, no permission for a port below 1024)."""


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


@contextlib.contextmanager
def named_setting(setting: str) -> Iterator[None]:
    """A start-up failure inside names ``setting``: the part that failed does not know which one chose it."""
    try:
        yield
    except StartupError as exc:
        if exc.setting:
            raise
        raise type(exc)(exc.reason, setting=setting) from exc
