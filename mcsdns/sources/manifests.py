"""A directory of YAML manifests as a zone source, rescanned so edits are served within a second.

Every ``*.yaml``/``*.yml``/``*.json`` file below the directory (hidden names skipped, so a Kubernetes
ConfigMap mount's ``..data`` links count once) may hold many documents, ``kind: List`` included, exactly as
``kubectl get -o yaml`` prints them. A file is taken whole or not at all: if it does not parse, or one of
its objects is invalid, one error names the file and the object, and the last good content of that file
keeps serving. Files are scanned by (mtime, size, inode), so unchanged files are not parsed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mcsdns.errors import ManifestError
from mcsdns.sources.events import Emit, Listed, SourceName
from mcsdns.sources.objects import ObjectRef, Record, convert, describe

logger = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present

Signature = tuple[int, int, int]


@dataclass(slots=True)
class _File:
    signature: Signature
    records: dict[ObjectRef, Record]  # the last good content
    failed: Signature | None = None  # the signature whose error was already logged


def parse_file(path: str) -> dict[ObjectRef, Record]:
    """The records of one manifest file; ``ManifestError`` names the file and the object at fault."""
    try:
        with open(path, encoding="utf-8") as handle:
            documents = list(yaml.load_all(handle, Loader=_Loader))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ManifestError(f"{path}:{where}: {problem}") from None
    records: dict[ObjectRef, Record] = {}
    for obj in _objects(path, documents):
        try:
            converted = convert(obj)
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from None
        if converted is None:
            continue
        ref, record = converted
        if ref in records:
            raise ManifestError(f"{path}: {describe(obj)} appears twice")
        records[ref] = record
    return records


def _objects(path: str, documents: list[Any]) -> Iterator[Mapping[str, Any]]:
    for index, document in enumerate(documents):
        if document is None:
            continue
        if not isinstance(document, Mapping):
            raise ManifestError(f"{path}: document {index + 1} is not a Kubernetes object")
        if document.get("kind") == "List" or str(document.get("kind", "")).endswith("List"):
            items = document.get("items") or []
            if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
                raise ManifestError(f"{path}: document {index + 1}: items is not a list of objects")
            yield from items
        else:
            yield document


def _scan(directory: str) -> dict[str, Signature]:
    found: dict[str, Signature] = {}
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith(SUFFIXES):
                continue
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # removed between listing and stat: the next scan sees it gone
            found[path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    return found


class ManifestSource:
    def __init__(self, directory: str, *, poll_interval: float = 0.25) -> None:
        self._directory = directory
        self._poll_interval = poll_interval
        self._files: dict[str, _File] = {}

    @property
    def name(self) -> SourceName:
        return SourceName("manifests")

    async def run(self, emit: Emit) -> None:
        first = True
        while True:
            changed = await asyncio.to_thread(self._refresh)
            if changed or first:
                emit(Listed(self.name, self._merged()))
                first = False
            await asyncio.sleep(self._poll_interval)

    def _refresh(self) -> bool:
        """Rescan the directory; return whether the served records changed. Runs in a worker thread."""
        try:
            found = _scan(self._directory)
        except OSError as exc:
            logger.error("manifests %s: cannot scan: %s; serving the last good content", self._directory, exc)
            return False
        if not os.path.isdir(self._directory):
            logger.error(
                "manifests %s: not a directory any more; serving the last good content", self._directory
            )
            return False
        changed = False
        for path in self._files.keys() - found.keys():
            logger.info("manifests: %s removed", path)
            del self._files[path]
            changed = True
        for path, signature in found.items():
            known = self._files.get(path)
            if known is not None and signature in (known.signature, known.failed):
                continue
            try:
                records = parse_file(path)
            except ManifestError as exc:
                logger.error("manifests: %s; keeping the last good content of this file", exc)
                if known is None:
                    known = self._files[path] = _File((0, 0, 0), {})
                known.failed = signature
                continue
            if known is None or known.records != records:
                changed = True
            logger.info("manifests: loaded %s (%d objects)", path, len(records))
            self._files[path] = _File(signature, records)
        return changed

    def _merged(self) -> dict[ObjectRef, Record]:
        merged: dict[ObjectRef, Record] = {}
        for path, file in sorted(self._files.items()):
            for ref, record in file.records.items():
                if ref in merged:
                    logger.warning("manifests: %s redefines %s %s/%s; the later file wins", path, *ref)
                merged[ref] = record
        return merged
