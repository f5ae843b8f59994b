"""A directory of YAML manifests as a zone source, rescanned so edits are served within a second.

Every ``*.yaml``/``*.yml``/``*.json`` file below the directory (hidden names skipped, so a Kubernetes
ConfigMap mount's ``..data`` links count once) may hold many documents, ``kind: List`` included, exactly as
``kubectl get -o yaml`` prints them. Objects are validated one by one, as ``kubectl apply`` reports them:
an invalid object is logged once per change of its file with the file, its document (1-based, counting
every ``---`` document; ``items[i]`` inside a List, 0-based) and every reason, and is not served, or
keeps serving its previous version if it had a valid one; the file's valid objects are served. Objects of
kinds mcsdns does not read are named in one warning per file. A file that cannot be read or is not YAML
keeps its last good content whole. Files are scanned by (mtime, size, inode), so unchanged files are not
parsed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mcsdns.errors import ManifestError
from mcsdns.sources.events import Contact, Emit, Listed, SourceName
from mcsdns.sources.objects import Checked, ObjectRef, Record, check, describe, summary

logger = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present

Signature = tuple[int, int, int]

SERVING_PREVIOUS = "serving its previous version"
NOT_SERVED = "not served"
UNIDENTIFIED = (
    "not served; which object this is cannot be told, so the objects this file no longer has keep serving"
    " until it is fixed"
)
FILE_KEPT = "keeping the last good content of this file"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One object of a manifest file that cannot be served as written."""

    path: str
    document: int  # 1-based, counting every document of the file (empty ones too)
    item: int | None  # 0-based index in a List's items, None for a document of its own
    subject: str  # "ServiceImport prod/web" as written; "" when the document is not an object
    ref: ObjectRef | None  # what it would be served as; None when that cannot be told
    problems: tuple[str, ...]  # every reason, in Kubernetes' field-path wording

    def text(self) -> str:
        """``<file> document 3 ServiceImport prod/web: <every reason>``."""
        subject = f" {self.subject}" if self.subject else ""
        return f"{self.path} {_place(self.document, self.item)}{subject}: {summary(self.problems)}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """One file's objects: the records of the valid ones, the rejected ones, and what mcsdns does not read."""

    records: dict[ObjectRef, Record]
    rejections: tuple[Rejection, ...] = ()
    ignored: tuple[str, ...] = ()  # one entry per object not read: "apps/v1 Deployment"


@dataclass(frozen=True, slots=True)
class _Broken:
    """A document that cannot be split into objects (a List whose items are not a list)."""

    subject: str
    problem: str


@dataclass(slots=True)
class _File:
    signature: Signature
    records: dict[ObjectRef, Record]  # what the file serves: its valid objects, previous versions of others
    rejected: tuple[str, ...] = ()  # one line per rejected object, or the file's own error
    failed: Signature | None = None  # the signature whose read or YAML error was already logged


def parse_file(path: str) -> Manifest:
    """The objects of one manifest file, each validated on its own.

    ``ManifestError`` only when the file cannot be read or is not YAML: then nothing in it can be trusted.
    """
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
    except Exception as exc:
        # PyYAML's constructors raise other errors than YAMLError for a scalar that has a type's form but is
        # no such value (the timestamp 2001-13-01, `!!int 0b2`, `!!bool ""`, `!!timestamp x`; found by
        # fuzz/manifests.py): such a file is not usable YAML either.
        raise ManifestError(f"{path}: a value cannot be read: {type(exc).__name__}: {exc}") from None
    rejections: list[Rejection] = []
    ignored: list[str] = []
    entries: list[tuple[int, int | None, str, Checked]] = []
    places: dict[ObjectRef, list[str]] = {}  # where each object the file defines is, to find duplicates
    for document, item, obj in _objects(documents):
        if isinstance(obj, _Broken):
            rejections.append(Rejection(path, document, item, obj.subject, None, (obj.problem,)))
            continue
        if not isinstance(obj, Mapping):
            problem = f"not a Kubernetes object (a {_type_name(obj)})"
            rejections.append(Rejection(path, document, item, "", None, (problem,)))
            continue
        checked = check(obj)
        if checked.ignored is not None and not checked.problems:
            ignored.append(checked.ignored)
            continue
        entries.append((document, item, describe(obj), checked))
        if checked.ref is not None:
            places.setdefault(checked.ref, []).append(_place(document, item))
    records: dict[ObjectRef, Record] = {}
    for document, item, subject, checked in entries:
        problems, ref = checked.problems, checked.ref
        if ref is not None and len(places[ref]) > 1:
            # Which one is meant cannot be told: none is served (a valid previous version keeps serving).
            others = [place for place in places[ref] if place != _place(document, item)]
            problems = (*problems, f"defined more than once in this file (also {', '.join(others)})")
        if problems:
            rejections.append(Rejection(path, document, item, subject, ref, problems))
        elif ref is not None and checked.record is not None:
            records[ref] = checked.record
    rejections.sort(key=lambda r: (r.document, -1 if r.item is None else r.item))
    return Manifest(records, tuple(rejections), tuple(ignored))


def _place(document: int, item: int | None) -> str:
    return f"document {document}" + (f" items[{item}]" if item is not None else "")


_TYPE_NAMES = {list: "list", dict: "mapping", str: "string", int: "number", float: "number", bool: "boolean"}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _objects(documents: list[Any]) -> Iterator[tuple[int, int | None, object]]:
    """(document number from 1, index in a List's items or None, the object) for every object."""
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue  # an empty document, e.g. after a trailing ---
        kind = document.get("kind") if isinstance(document, Mapping) else None
        if not isinstance(kind, str) or not kind.endswith("List"):
            yield number, None, document
            continue
        items = document.get("items") or []
        if not isinstance(items, list):
            yield number, None, _Broken(kind, f"items: a {_type_name(items)}, not a list of objects")
            continue
        # A typed list (ServiceImportList) from the API server carries its items' kind on the list only.
        item_kind = kind[: -len("List")]
        for index, item in enumerate(items):
            if item_kind and isinstance(item, Mapping) and "kind" not in item:
                item = {"kind": item_kind, "apiVersion": document.get("apiVersion"), **item}
            yield number, index, item


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
        self._rejected: tuple[str, ...] = ()

    @property
    def name(self) -> SourceName:
        return SourceName("manifests")

    @property
    def rejected(self) -> tuple[str, ...]:
        """One line per object not served as written, as of the latest scan, across all files, plus one per
        file that cannot be read or is not YAML; ``len()`` is the count.

        Each line is the one logged, without the ``manifests: `` prefix: ``<file> document 3 ServiceImport
        prod/web: <every reason>; serving its previous version`` (or ``; not served``). Made once per scan
        that parsed or dropped a file; reading it costs nothing and is safe from any thread.
        """
        return self._rejected

    async def run(self, emit: Emit) -> None:
        first = True
        failure = ""
        while True:
            try:
                changed = await asyncio.to_thread(self._refresh)
            except OSError as exc:
                changed = False
                if failure != (failure := f"{self._directory}: cannot scan: {exc}"):
                    emit(Contact(self.name, failure))  # the engine logs it once and keeps the last good zone
            else:
                if failure:
                    failure = ""
                    emit(Contact(self.name))
            if changed or (first and not failure):
                emit(Listed(self.name, self._merged()))
                first = False
            await asyncio.sleep(self._poll_interval)

    def _refresh(self) -> bool:
        """Rescan the directory; return whether the served records changed. Runs in a worker thread."""
        found = _scan(self._directory)  # OSError: run() reports it
        if not os.path.isdir(self._directory):
            raise NotADirectoryError(f"{self._directory} is not a directory any more")
        changed = touched = False
        for path in self._files.keys() - found.keys():
            logger.info("manifests: %s removed", path)
            del self._files[path]
            changed = touched = True
        for path, signature in found.items():
            known = self._files.get(path)
            if known is not None and signature == (known.failed or known.signature):
                continue  # unchanged since it was parsed (or since its error was logged)
            touched = True
            try:
                manifest = parse_file(path)
            except ManifestError as exc:
                line = f"{exc}; {FILE_KEPT}"
                logger.error("manifests: %s", line)
                if known is None:
                    known = self._files[path] = _File((0, 0, 0), {})
                known.failed = signature
                known.rejected = (line,)
                continue
            records, rejected = _settle(manifest, known.records if known is not None else {})
            for line in rejected:
                logger.error("manifests: %s", line)
            if manifest.ignored:
                logger.warning("manifests: %s: %s", path, _ignored_text(manifest.ignored))
            if known is None or known.records != records:
                changed = True
            rejected_note = f", {len(rejected)} rejected" if rejected else ""
            logger.info("manifests: loaded %s (%d objects%s)", path, len(manifest.records), rejected_note)
            self._files[path] = _File(signature, records, rejected)
        if touched:
            self._rejected = tuple(line for _, file in sorted(self._files.items()) for line in file.rejected)
        return changed

    def _merged(self) -> dict[ObjectRef, Record]:
        merged: dict[ObjectRef, Record] = {}
        for path, file in sorted(self._files.items()):
            for ref, record in file.records.items():
                if ref in merged:
                    logger.warning("manifests: %s redefines %s %s/%s; the later file wins", path, *ref)
                merged[ref] = record
        return merged


def _settle(
    manifest: Manifest, previous: Mapping[ObjectRef, Record]
) -> tuple[dict[ObjectRef, Record], tuple[str, ...]]:
    """What a file serves now that it holds ``manifest``, and one line per rejected object.

    ``previous`` is what it served before. An invalid object that had a valid version keeps serving that
    version. An object that cannot be told apart (not a mapping, no kind, no name) could be any of the
    file's objects, so while the file has one, every object it served before and no longer has keeps
    serving too (a removed object goes when the file is fixed).
    """
    records = dict(manifest.records)
    lines: list[str] = []
    unidentified = False
    for rejection in manifest.rejections:
        ref = rejection.ref
        if ref is None:
            unidentified = True
            outcome = UNIDENTIFIED
        elif ref not in records and ref in previous:
            records[ref] = previous[ref]
            outcome = SERVING_PREVIOUS
        else:
            outcome = NOT_SERVED
        lines.append(f"{rejection.text()}; {outcome}")
    if unidentified:
        for ref, record in previous.items():
            records.setdefault(ref, record)
    return records, tuple(lines)


def _ignored_text(ignored: tuple[str, ...]) -> str:
    """``ignored 3 objects mcsdns does not read: apps/v1 Deployment (2), v1 ConfigMap``."""
    counts = Counter(ignored)
    kinds = ", ".join(f"{what} ({count})" if count > 1 else what for what, count in counts.items())
    noun = "object" if len(ignored) == 1 else "objects"
    return f"ignored {len(ignored)} {noun} mcsdns does not read: {kinds}"
