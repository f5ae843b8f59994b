"""Name, label and ObjectMeta validation shared by every emulated resource type.

Pure functions returning ``FieldError`` lists; the rules and messages follow
``k8s.io/apimachinery/pkg/util/validation`` and ``.../api/validation/objectmeta.go`` so that 422 answers read
like a real server's. Imports only ``errors``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, Final

from .errors import FieldError, invalid, required

_DNS1123_LABEL: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN: Final = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + ")*"
_DNS1035_LABEL: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_PART: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE: Final = "(" + _QUALIFIED_NAME_PART + ")?"

_DNS1123_LABEL_RE: Final = re.compile(f"^{_DNS1123_LABEL}$")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(f"^{_DNS1123_SUBDOMAIN}$")
_DNS1035_LABEL_RE: Final = re.compile(f"^{_DNS1035_LABEL}$")
_QUALIFIED_NAME_RE: Final = re.compile(f"^{_QUALIFIED_NAME_PART}$")
_LABEL_VALUE_RE: Final = re.compile(f"^{_LABEL_VALUE}$")
CONFIG_MAP_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")  # IsConfigMapKey

NameValidator = Callable[[str], list[str]]
"""Returns the reasons a name is invalid (empty when valid), like apimachinery's ``IsDNS1123Label``."""


def _max_len(value: str, limit: int) -> list[str]:
    return [f"must be no more than {limit} characters"] if len(value) > limit else []


def dns1123_label(value: str) -> list[str]:
    problems = _max_len(value, 63)
    if not _DNS1123_LABEL_RE.match(value):
        problems.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
            f"regex used for validation is '{_DNS1123_LABEL}')"
        )
    return problems


def dns1123_subdomain(value: str) -> list[str]:
    problems = _max_len(value, 253)
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
            f"regex used for validation is '{_DNS1123_SUBDOMAIN}')"
        )
    return problems


def dns1035_label(value: str) -> list[str]:
    problems = _max_len(value, 63)
    if not _DNS1035_LABEL_RE.match(value):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
            "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
            f"'abc-123', regex used for validation is '{_DNS1035_LABEL}')"
        )
    return problems


def qualified_name(value: str) -> list[str]:
    """Label and annotation keys, finalizers: ``[prefix/]name`` with a DNS-subdomain prefix."""
    prefix, slash, name = value.rpartition("/")
    problems: list[str] = []
    if slash:
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems += [f"prefix part {p}" for p in dns1123_subdomain(prefix)]
    if not name:
        problems.append("name part must be non-empty")
    else:
        if len(name) > 63:
            problems.append("name part must be no more than 63 characters")
        if not _QUALIFIED_NAME_RE.match(name):
            problems.append(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
                f"regex used for validation is '{_QUALIFIED_NAME_PART}')"
            )
    return problems


def label_value(value: str) -> list[str]:
    problems = _max_len(value, 63)
    if not _LABEL_VALUE_RE.match(value):
        problems.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
            f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')"
        )
    return problems


def ip_address(value: str, family: str | None = None) -> list[str]:
    """``family`` is "IPv4", "IPv6" or None for either; messages as in apimachinery's IsValidIP."""
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    if family == "IPv4" and parsed.version != 4:
        return ["must be a valid IPv4 address"]
    if family == "IPv6" and parsed.version != 6:
        return ["must be a valid IPv6 address"]
    return []


def check(field: str, value: str, validator: NameValidator) -> list[FieldError]:
    return [invalid(field, value, problem) for problem in validator(value)]


def is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


_TOTAL_ANNOTATION_SIZE: Final = 256 * 1024


def object_meta(meta: Any, *, namespaced: bool, name_validator: NameValidator) -> list[FieldError]:
    """ValidateObjectMeta: name, namespace, labels, annotations, finalizers, ownerReferences."""
    if not isinstance(meta, dict):
        return [required("metadata")]
    errors: list[FieldError] = []
    name = meta.get("name")
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        errors.append(invalid("metadata.name", name, "must be a string"))
    else:
        errors += check("metadata.name", name, name_validator)
    namespace = meta.get("namespace")
    if namespaced:
        if not namespace:
            errors.append(required("metadata.namespace"))
        elif isinstance(namespace, str):
            errors += check("metadata.namespace", namespace, dns1123_label)
    elif namespace:
        errors.append(
            FieldError("FieldValueForbidden", "metadata.namespace", None, "not allowed on this type")
        )
    errors += _string_map("metadata.labels", meta.get("labels"), label_value)
    errors += _string_map("metadata.annotations", meta.get("annotations"), None)
    annotations = meta.get("annotations")
    if (
        isinstance(annotations, dict)
        and sum(len(k) + len(str(v)) for k, v in annotations.items()) > _TOTAL_ANNOTATION_SIZE
    ):
        errors.append(
            FieldError(
                "FieldValueTooLong",
                "metadata.annotations",
                None,
                f"must have at most {_TOTAL_ANNOTATION_SIZE} bytes",
            )
        )
    errors += _finalizers(meta.get("finalizers"))
    errors += _owner_references(meta.get("ownerReferences"))
    return errors


def _string_map(field: str, value: Any, value_validator: NameValidator | None) -> list[FieldError]:
    if value is None:
        return []
    if not is_string_map(value):
        return [invalid(field, value, "must be a map of string keys to string values")]
    errors: list[FieldError] = []
    for key, item in value.items():
        errors += check(field, key, qualified_name)
        if value_validator is not None:
            errors += check(f"{field}", item, value_validator)
    return errors


def _finalizers(value: Any) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        return [invalid("metadata.finalizers", value, "must be a list of strings")]
    errors: list[FieldError] = []
    for i, finalizer in enumerate(value):
        errors += check(f"metadata.finalizers[{i}]", finalizer, qualified_name)
    return errors


def _owner_references(value: Any) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [invalid("metadata.ownerReferences", value, "must be a list")]
    errors: list[FieldError] = []
    controllers = 0
    for i, ref in enumerate(value):
        field = f"metadata.ownerReferences[{i}]"
        if not isinstance(ref, dict):
            errors.append(invalid(field, ref, "must be an object"))
            continue
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                errors.append(required(f"{field}.{key}", f"{key} must not be empty"))
        if ref.get("controller") is True:
            controllers += 1
    if controllers > 1:
        errors.append(
            invalid("metadata.ownerReferences", value, "Only one reference can have Controller set to true")
        )
    return errors
