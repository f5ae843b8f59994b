"""The four PATCH bodies the API server accepts, applied to plain JSON objects.

- JSON merge patch (RFC 7386, ``application/merge-patch+json``),
- JSON patch (RFC 6902, ``application/json-patch+json``),
- strategic merge patch (``application/strategic-merge-patch+json``, built-in types only) with the
  directives kubectl and client-go emit (``$patch``, ``$retainKeys``, ``$deleteFromPrimitiveList/``,
  ``$setElementOrder/``) and per-type merge keys given as a ``MergeKeys`` table,
- server-side apply (``application/apply-patch+yaml``), approximated as "merge the applied configuration and
  drop the fields this manager applied last time but no longer does". There is no managedFields tracking and
  never an apply conflict (as if ``force=true``).
Pure functions; they never change their inputs. Errors are ``ApiError`` (400 bad body, 422 unappliable patch).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Final

from .errors import ApiError, Obj, bad_request

MergeKeys = Mapping[str, str | None]
"""Dotted path of a list field (list items do not add a path element) -> merge key of its items, or None for a
list of scalars merged as a set (``patchStrategy:"merge"`` without ``patchMergeKey``, e.g. finalizers).
Lists not in the table are atomic: the patch replaces them."""

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_DELETE_FROM: Final = "$deleteFromPrimitiveList/"
_SET_ORDER: Final = "$setElementOrder/"


def _unprocessable(message: str) -> ApiError:
    # The real server answers 422 when a well-formed patch cannot be applied (apiserver handlers/patch.go).
    return ApiError(422, "Invalid", message)


# --- RFC 7386 -------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 -------------------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise _unprocessable(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise _unprocessable(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise _unprocessable(
                f'jsonpatch {op} operation does not apply: doc is missing path: "{path}": missing value'
            )
    return node


def _get(doc: Any, path: str, op: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise _unprocessable(
        f"jsonpatch {op} operation does not apply: doc is missing key: {path}: missing value"
    )


def _remove(doc: Any, path: str, op: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _unprocessable("jsonpatch remove operation does not apply to the root")
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise _unprocessable(
        f"jsonpatch {op} operation does not apply: doc is missing key: {path}: missing value"
    )


def _add(doc: Any, path: str, value: Any, op: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise _unprocessable(f'jsonpatch {op} operation does not apply: doc is missing path: "{path}"')
    return doc


def json_patch(target: Obj, operations: Any) -> Obj:
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc: Any = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
            raise bad_request(f"invalid JSON patch operation {operation!r}")
        op = operation["op"]
        path = operation.get("path")
        if not isinstance(path, str):
            raise bad_request(f"JSON patch operation {op!r} is missing 'path'")
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation.get("value")), op)
        elif op == "remove":
            _remove(doc, path, op)
        elif op == "replace":
            _get(doc, path, op)  # must exist
            if _pointer(path):
                _remove(doc, path, op)
            doc = _add(doc, path, copy.deepcopy(operation.get("value")), op)
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise bad_request(f"JSON patch operation {op!r} is missing 'from'")
            value = _remove(doc, source, op) if op == "move" else copy.deepcopy(_get(doc, source, op))
            doc = _add(doc, path, value, op)
        elif op == "test":
            if _get(doc, path, op) != operation.get("value"):
                raise _unprocessable(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {op}")
    if not isinstance(doc, dict):
        raise _unprocessable("the patch turned the object into something that is not an object")
    return doc


# --- strategic merge patch -------------------------------------------------------------------------------


def strategic_merge_patch(target: Obj, patch: Any, merge_keys: MergeKeys) -> Obj:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    return _smp_map(target, patch, "", merge_keys)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _smp_map(original: Mapping[str, Any] | None, patch: Obj, path: str, merge_keys: MergeKeys) -> Obj:
    directive = patch.get(_DIRECTIVE)
    body = {k: v for k, v in patch.items() if k != _DIRECTIVE}
    if directive == "replace":
        replaced: Obj = _strip_directives(body)
        return replaced
    if directive is not None and directive != "merge":
        raise bad_request(f"unknown patch type: {directive}")
    result: Obj = copy.deepcopy(dict(original)) if isinstance(original, Mapping) else {}
    retain = body.pop(_RETAIN_KEYS, None)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in list(body.items()):
        if key.startswith(_SET_ORDER):
            continue  # ordering hints only; lists here keep the server's order
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM) :]
            current = result.get(field)
            if isinstance(current, list) and isinstance(value, list):
                result[field] = [v for v in current if v not in value]
            continue
        field_path = _join(path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get(_DIRECTIVE) == "delete":
                result.pop(key, None)
            else:
                result[key] = _smp_map(result.get(key), value, field_path, merge_keys)
        elif isinstance(value, list) and field_path in merge_keys:
            result[key] = _smp_list(result.get(key), value, field_path, merge_keys)
        else:
            result[key] = _strip_directives(value)
    return result


def _smp_list(original: Any, patch: list[Any], path: str, merge_keys: MergeKeys) -> list[Any]:
    current: list[Any] = copy.deepcopy(original) if isinstance(original, list) else []
    key = merge_keys[path]
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and _DIRECTIVE in i)]
    if key is None:
        # Scalars merged as a set: keep existing order, append the new ones.
        return current + [v for v in patch if v not in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map: {item!r} does not contain declared merge key: {key}")
        position = next(
            (i for i, have in enumerate(current) if isinstance(have, dict) and have.get(key) == item[key]),
            None,
        )
        if item.get(_DIRECTIVE) == "delete":
            if position is not None:
                current.pop(position)
        elif position is None:
            current.append(_strip_directives(item))
        else:
            current[position] = _smp_map(current[position], item, path, merge_keys)
    return current


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if k not in (_DIRECTIVE, _RETAIN_KEYS) and not k.startswith((_SET_ORDER, _DELETE_FROM))
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


# --- server-side apply (approximation) -------------------------------------------------------------------


def apply_patch(current: Obj, applied: Obj, previous: Obj | None, merge_keys: MergeKeys) -> Obj:
    """Merge ``applied`` into ``current``; fields in ``previous`` (this manager's last apply) that ``applied``
    no longer sets are removed, which is what ownership tracking achieves for a single manager."""
    result = copy.deepcopy(current)
    if previous is not None:
        _drop_unapplied(result, previous, applied)
    return _apply_map(result, applied, "", merge_keys)


def _drop_unapplied(target: Obj, previous: Mapping[str, Any], applied: Mapping[str, Any]) -> None:
    for key, old in previous.items():
        if key in ("apiVersion", "kind") or key not in target:
            continue
        if key not in applied:
            del target[key]
        elif isinstance(old, dict) and isinstance(applied[key], dict) and isinstance(target[key], dict):
            _drop_unapplied(target[key], old, applied[key])


def _apply_map(target: Obj, applied: Mapping[str, Any], path: str, merge_keys: MergeKeys) -> Obj:
    for key, value in applied.items():
        field_path = _join(path, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _apply_map(target[key], value, field_path, merge_keys)
        elif isinstance(value, list) and field_path in merge_keys and isinstance(target.get(key), list):
            merged = _smp_list(target[key], value, field_path, merge_keys)
            # Apply owns the whole list for the keys it names; items it no longer names stay (other owners).
            target[key] = merged
        else:
            target[key] = copy.deepcopy(value)
    return target


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"error decoding patch: {exc}") from None
