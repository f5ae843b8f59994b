"""Label and field selectors: parse the query-string syntax and match objects.

The grammar is that of ``k8s.io/apimachinery/pkg/labels`` (``=``, ``==``, ``!=``, ``in``, ``notin``, bare key
for "exists", ``!key`` for "does not exist", ``>``/``<`` on integers) and ``.../fields`` (``=``, ``==``,
``!=`` joined by commas, ``\\`` escapes). Pure; raises ``ApiError`` 400 on bad syntax like the real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import validation
from .errors import Obj, bad_request

_IN_SET: Final = re.compile(r"^\s*(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_BINARY: Final = re.compile(
    r"^\s*(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s!=<>(),]*)\s*$"
)
_EXISTS: Final = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=<>(),]+)\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # one of: in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "notin":
            # As in apimachinery: a missing key satisfies "notin" and "!=".
            return not present or labels[self.key] not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if self.op == "gt" else have < want


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (the value lists of in/notin)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check_key(key: str, text: str) -> None:
    problems = validation.qualified_name(key)
    if problems:
        raise bad_request(
            f"unable to parse requirement: {text!r}: key: Invalid value: {key!r}: {problems[0]}"
        )


def _check_value(value: str, text: str) -> None:
    problems = validation.label_value(value)
    if problems:
        raise bad_request(
            f"unable to parse requirement: {text!r}: values[0]: Invalid value: {value!r}: {problems[0]}"
        )


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise bad_request(f"found '', expected: identifier in label selector {text!r}")
        if match := _IN_SET.match(part):
            key = match["key"]
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            _check_key(key, part)
            for value in values:
                _check_value(value, part)
            requirements.append(Requirement(key, match["op"], values))
        elif match := _BINARY.match(part):
            key, op, value = match["key"], match["op"], match["value"]
            _check_key(key, part)
            if op in (">", "<"):
                try:
                    int(value)
                except ValueError:
                    raise bad_request(
                        f"unable to parse requirement: {part!r}: for 'Gt', 'Lt' operators, "
                        "the value must be an integer"
                    ) from None
                requirements.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            else:
                _check_value(value, part)
                requirements.append(Requirement(key, "notin" if op == "!=" else "in", (value,)))
        elif match := _EXISTS.match(part):
            _check_key(match["key"], part)
            requirements.append(Requirement(match["key"], "!" if match["neg"] else "exists"))
        else:
            raise bad_request(
                f"unable to parse requirement: found unexpected token in label selector {part!r}"
            )
    return LabelSelector(tuple(requirements))


def selector_from_match(selector: Obj) -> LabelSelector:
    """A ``metav1.LabelSelector`` object (matchLabels/matchExpressions) as a matcher."""
    requirements = [Requirement(k, "in", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        requirements.append(Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return LabelSelector(tuple(requirements))


FieldGetter = Callable[[Obj], str | None]
"""Extracts one selectable field from an object; None means absent (matches only ``!=``)."""


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    equal: bool


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Obj, getters: Mapping[str, FieldGetter]) -> bool:
        for req in self.requirements:
            have = getters[req.field](obj)
            if (have == req.value) != req.equal:
                return False
        return True

    def exact_name(self) -> str | None:
        """``metadata.name=x`` lets storage skip the scan (kubectl uses it to wait on one object)."""
        for req in self.requirements:
            if req.field == "metadata.name" and req.equal:
                return req.value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            if text[i + 1] not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: {text[i : i + 2]}")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_field_selector(text: str | None, supported: Mapping[str, Any]) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    requirements: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op in ("!=", "==", "="):
            # Find the first unescaped operator occurrence.
            idx = _find_unescaped(part, op)
            if idx >= 0:
                field, value = part[:idx].strip(), _unescape(part[idx + len(op) :])
                if field not in supported:
                    raise bad_request(f"field label not supported: {field}")
                requirements.append(FieldRequirement(field, value, op != "!="))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(requirements))


def _find_unescaped(text: str, op: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(op, i):
            # "=" must not be the second char of "!=" or "==".
            if op == "=" and (text.startswith("==", i) or (i > 0 and text[i - 1] == "!")):
                i += 1
                continue
            return i
        i += 1
    return -1
