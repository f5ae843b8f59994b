"""API errors of the emulated Kubernetes API server, each carried as a ``metav1.Status`` body.

Bottom of the emulator's import graph: storage raises ``ApiError`` and the HTTP layer sends ``error.status``
unchanged, so clients see the ``reason``/``code``/``details`` a real API server sends (API conventions,
"Response Status Kind"). Messages copy the real server's wording where clients or people match on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

Obj = dict[str, Any]
"""A Kubernetes object (or any JSON object) as decoded from JSON."""

# metav1.CauseType values used in field errors (k8s.io/apimachinery/pkg/util/validation/field).
REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
FORBIDDEN: Final = "FieldValueForbidden"
DUPLICATE: Final = "FieldValueDuplicate"
TOO_MANY: Final = "FieldValueTooMany"
TOO_LONG: Final = "FieldValueTooLong"

_CAUSE_TEXT: Final = {
    REQUIRED: "Required value",
    INVALID: "Invalid value",
    NOT_SUPPORTED: "Unsupported value",
    FORBIDDEN: "Forbidden",
    DUPLICATE: "Duplicate value",
    TOO_MANY: "Too many",
    TOO_LONG: "Too long",
}
# Error types whose message shows the offending value, as field.Error.ErrorBody does.
_SHOWS_VALUE: Final = {INVALID, NOT_SUPPORTED, DUPLICATE, TOO_MANY}


def _render_value(value: Any) -> str:
    # field.Error prints strings quoted and numbers bare (Go's %q / %d); JSON gives the same for scalars.
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure, rendered like ``field.Error``: ``spec.type: Unsupported value: "X": ...``."""

    type: str
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        text = _CAUSE_TEXT[self.type]
        if self.type in _SHOWS_VALUE:
            text += ": " + _render_value(self.value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> Obj:
        return {"reason": self.type, "message": self.body(), "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(REQUIRED, field, None, detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(INVALID, field, value, detail)


def not_supported(field: str, value: Any, supported: list[str]) -> FieldError:
    return FieldError(
        NOT_SUPPORTED, field, value, "supported values: " + ", ".join(f'"{s}"' for s in supported)
    )


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(FORBIDDEN, field, None, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError(DUPLICATE, field, value)


def too_many(field: str, count: int, limit: int) -> FieldError:
    return FieldError(TOO_MANY, field, count, f"must have at most {limit} items")


class ApiError(Exception):
    """A request failed; ``status`` is the ``Status`` object to send and ``code`` its HTTP status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
        metadata: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.metadata = metadata or {}

    @property
    def status(self) -> Obj:
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _qualified(resource: str, group: str) -> str:
    # schema.GroupResource.String(): "services" for core, "serviceimports.multicluster.x-k8s.io" otherwise.
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str) -> Obj:
    details: Obj = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        details=_details(name, group, resource),
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        details=_details(name, group, resource),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        details=_details(name, group, resource),
    )


STALE_OBJECT: Final = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid_object(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    # errors.NewInvalid: one error is inlined, several are bracketed and comma-separated.
    qualified_kind = f"{kind}.{group}" if group else kind
    rendered = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    details = _details(name, group, kind)
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {rendered}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden_request(message: str, *, resource: str = "", group: str = "", name: str = "") -> ApiError:
    return ApiError(403, "Forbidden", message, details=_details(name, group, resource))


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", details={}
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
        details={"causes": [{"reason": "UnsupportedMediaType", "message": content_type}]},
    )


def not_acceptable(accept: str) -> ApiError:
    return ApiError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, "
        f"application/yaml (asked for {accept})",
    )


def resource_version_too_large(requested: int, current: int) -> ApiError:
    # The real cache waits ~3 s for the version, then answers 504 with cause ResourceVersionTooLarge so that
    # reflectors relist instead of retrying the same version (apiserver storage/cacher).
    return ApiError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        details={
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )


def injected(code: int, retry_after: int | None = None) -> ApiError:
    """The error a fault hook sends: same shape the real server uses for that status code."""
    reason, message = {
        429: ("TooManyRequests", "Too many requests, please try again later."),
        500: ("InternalError", "Internal error occurred: injected by the emulator"),
        503: ("ServiceUnavailable", "The server is currently unable to handle the request"),
        504: ("Timeout", "The server was unable to return a response in the time allotted"),
    }.get(code, ("InternalError", f"injected error {code}"))
    details: Obj = {}
    headers: dict[str, str] = {}
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    if code == 500:
        details["causes"] = [{"message": "injected by the emulator"}]
    return ApiError(code, reason, message, details=details, headers=headers)
