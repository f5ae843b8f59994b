"""Request handling of the emulator, independent of sockets: a ``Request`` in, a ``Response`` or a
``WatchStream`` out.

Resolves ``/api/v1/...`` and ``/apis/<group>/<version>/...`` paths to a resource type (``ApiRouter``),
negotiates the representation (JSON, YAML, server-side ``Table``, ``PartialObjectMetadata``, aggregated
discovery), calls ``Storage`` and renders errors as ``Status`` objects. Watches become a ``WatchStream`` that
writes one JSON event per line with BOOKMARKs and a server-side timeout, including streaming lists
(``sendInitialEvents``, which kubectl's waits use): the current objects, then a BOOKMARK annotated
``k8s.io/initial-events-end``. Injected faults apply here; the admin
paths under ``/_emulator/`` call the ``EmulatorHooks`` given at construction and bypass faults and pauses.

"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import unquote

import yaml

from . import discovery, errors, tables
from .errors import ApiError, FieldError, Obj, bad_request
from .faults import Faults
from .resources import ResourceRegistry, ResourceType
from .selectors import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector
from .storage import APPLY_PATCH, BOOKMARK, PATCH_TYPES, Storage, Watcher

log = logging.getLogger(__name__)

_JSON: Final = "application/json"
_ADMIN_PREFIX: Final = "/_emulator/"
_IDLE_POLL: Final = 1.0  # seconds between checks for a vanished watch client


class EmulatorHooks(Protocol):
    """What the admin paths can ask of the emulator (implemented by ``KubeApiEmulator``)."""

    def close_watches(self) -> int: ...

    def fail_next(
        self,
        count: int,
        *,
        code: int = 500,
        retry_after: int | None = None,
        methods: list[str] | None = None,
        path_contains: str | None = None,
    ) -> None: ...

    def compact(self) -> str: ...

    def pause(self, mode: str = "hang", *, seconds: float | None = None) -> None: ...

    def validate_pause_mode(self, mode: str) -> None: ...

    def resume(self) -> None: ...

    def state(self) -> Obj: ...


@dataclass(frozen=True)
class WatchSettings:
    bookmark_interval: float = 60.0
    """Seconds between BOOKMARK events on watches that allow them (the real server: about a minute)."""
    default_timeout: tuple[float, float] = (1800.0, 3600.0)
    """Server-side timeout of a watch without ``timeoutSeconds``: uniform in this range, like the real
    server's ``--min-request-timeout`` (1800 s) times a random factor in [1, 2)."""


@dataclass(frozen=True)
class Route:
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool = False


class ApiRouter:
    """Maps ``/api/v1/...`` and ``/apis/<group>/<version>/...`` paths to a ``Route``."""

    def __init__(self, registry: ResourceRegistry) -> None:
        self._registry = registry

    def route(self, parts: list[str]) -> Route | None:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        if not rest:
            return None
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = self._registry.by_url(group, version, rest[2])
            if rt is not None and rt.namespaced and len(rest) <= 5:
                return Route(
                    rt,
                    version,
                    rest[1],
                    rest[3] if len(rest) > 3 else None,
                    rest[4] if len(rest) > 4 else None,
                    watch_path,
                )
        rt = self._registry.by_url(group, version, rest[0])
        if rt is None or len(rest) > 3:
            return None
        if rt.namespaced and len(rest) > 1:
            return None
        return Route(
            rt,
            version,
            None,
            rest[1] if len(rest) > 1 else None,
            rest[2] if len(rest) > 2 else None,
            watch_path,
        )


@dataclass
class Response:
    code: int
    body: bytes
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None
    """Runs once the response is sent (an admin action that cuts this very connection)."""


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def json_response(code: int, obj: Any, content_type: str = _JSON) -> Response:
    return Response(code, encode(obj), content_type)


def error_response(exc: ApiError) -> Response:
    return Response(exc.code, encode(exc.status), _JSON, dict(exc.headers))


def _media_types(accept: str) -> list[tuple[str, dict[str, str]]]:
    result = []
    for part in (accept or "*/*").split(","):
        fields = [f.strip() for f in part.split(";")]
        params = {}
        for item in fields[1:]:
            key, _, value = item.partition("=")
            params[key.strip().lower()] = value.strip()
        result.append((fields[0].lower(), params))
    return result


def _json_ok(media_type: str) -> bool:
    return media_type in (_JSON, "*/*", "application/*", "application/json;stream=watch")


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


def _int_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid {name} {value!r}: must be an integer") from None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", _JSON).split(";")[0].strip().lower()

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "*/*")


class WatchStream:
    """A watch ready to stream; the handler runs ``stream`` with a chunk writer."""

    def __init__(
        self,
        app: ApiApp,
        watcher: Watcher | None,
        *,
        error: ApiError | None,
        timeout: float,
        bookmarks: bool,
        form: str,
        include_object: str,
    ) -> None:
        self.app = app
        self.watcher = watcher
        self.error = error
        self.timeout = timeout
        self.bookmarks = bookmarks
        self.form = form
        """"object", "table" (kubectl get -w) or "metadata" (PartialObjectMetadata, metadata informers)."""
        self.include_object = include_object
        self.closed_by_server = False
        """Whether a fault hook or shutdown ended the watch (rather than its timeout or the client)."""
        self._stopped = False

    def close(self) -> None:
        """Unregister the watcher (idempotent); call once streaming is over, however it ended."""
        if self.watcher is not None and not self._stopped:
            self._stopped = True
            self.closed_by_server = self.watcher.closed
            self.app.storage.stop_watch(self.watcher)

    def stream(self, write: Callable[[bytes], None], client_gone: Callable[[], bool]) -> None:
        if self.error is not None or self.watcher is None:
            # A watch that cannot start (410 Expired, version too large) is a 200 with one ERROR event.
            assert self.error is not None
            write(encode({"type": "ERROR", "object": self.error.status}))
            return
        app, watcher = self.app, self.watcher
        rt = watcher.resource
        api_version = rt.api_version(watcher.version)
        deadline = time.monotonic() + self.timeout
        interval = app.watch_settings.bookmark_interval
        next_bookmark = time.monotonic() + interval
        first_table = True
        while not watcher.closed:
            now = time.monotonic()
            if now >= deadline:
                if self.bookmarks:
                    # Bookmark just before the server ends the watch, so the client resumes from it.
                    self._bookmark(write, api_version)
                return
            wake = min(deadline, next_bookmark if self.bookmarks else deadline, now + _IDLE_POLL)
            event = watcher.next(max(0.0, wake - now))
            if app.faults.paused:
                app.wait_running_or_stopped()  # "hang" holds events as well as requests
            if event is not None:
                visible = watcher.visible(event)
                if visible is None:
                    continue
                kind, obj = visible
                if kind == BOOKMARK:  # the end of a streaming list's initial events
                    write(self._bookmark_line(api_version, obj["metadata"]))
                elif self.form == "metadata":
                    partial = {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    }
                    write(encode({"type": kind, "object": partial}))
                elif self.form == "table":
                    # kubectl get -w: one row per event, column definitions only in the first.
                    table = tables.to_table(
                        rt,
                        [obj],
                        api_version=api_version,
                        resource_version=obj["metadata"]["resourceVersion"],
                        continue_token=None,
                        include_object=self.include_object,
                        with_columns=first_table,
                    )
                    first_table = False
                    write(encode({"type": kind, "object": table}))
                else:
                    write(event.encoded(kind, obj, api_version))
                continue
            if watcher.closed or client_gone():
                return
            if self.bookmarks and time.monotonic() >= next_bookmark and self._bookmark(write, api_version):
                next_bookmark = time.monotonic() + interval

    def _bookmark(self, write: Callable[[bytes], None], api_version: str) -> bool:
        assert self.watcher is not None
        version = self.app.storage.progress_version(self.watcher)
        if version is None:
            return False
        write(self._bookmark_line(api_version, {"resourceVersion": str(version)}))
        return True

    def _bookmark_line(self, api_version: str, metadata: Obj) -> bytes:
        assert self.watcher is not None
        return encode(
            {
                "type": BOOKMARK,
                "object": {
                    "kind": self.watcher.resource.kind,
                    "apiVersion": api_version,
                    "metadata": {**metadata, "creationTimestamp": None},
                },
            }
        )


class ApiApp:
    """Request handling independent of sockets: Request in, Response or WatchStream out."""

    def __init__(
        self,
        storage: Storage,
        faults: Faults,
        hooks: EmulatorHooks,
        *,
        watch_settings: WatchSettings,
        server_address: Callable[[], str],
        stopping: threading.Event,
    ) -> None:
        self.storage = storage
        self.registry = storage.registry
        self.faults = faults
        self.hooks = hooks
        self.watch_settings = watch_settings
        self._server_address = server_address
        self._router = ApiRouter(storage.registry)
        self._stopping = stopping
        self._rng = random.Random()
        self.internal_error: str | None = None
        """The first request the emulator failed on by a bug of its own (HTTP 500 InternalError), as
        ``"<method> <path>: <exception>"``; None while there is none. ``mcsdns demo`` stops on it."""
        self.observers: list[Callable[[Request], None]] = []
        """Called with every API request (admin paths excluded) before faults apply, on the server's thread:
        what a client asked, whatever the answer (``KubeApiEmulator.observe_requests``)."""

    def wait_running_or_stopped(self) -> None:
        while not self.faults.wait_running(0.5):
            if self._stopping.is_set():
                return

    def handle(self, request: Request) -> Response | WatchStream:
        if request.path.startswith(_ADMIN_PREFIX):
            return self._admin(request)
        for observe in tuple(self.observers):
            observe(request)
        if self.faults.paused:
            self.wait_running_or_stopped()
        failure = self.faults.take_failure(request.method, request.path)
        if failure is not None:
            return error_response(failure)
        hold = self.faults.take_hold(request.method, request.path)
        response = self._answer(request)
        if hold:
            # Carried out and sent to watches already; only this reply is late (a slow network path).
            with self.faults.holding_reply():
                self._stopping.wait(hold)
        return response

    def _answer(self, request: Request) -> Response | WatchStream:
        try:
            return self._dispatch(request)
        except ApiError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug must still answer like an API server, not drop the connection
            log.exception("emulator failed on %s %s", request.method, request.path)
            if self.internal_error is None:
                self.internal_error = f"{request.method} {request.path}: {exc.__class__.__name__}: {exc}"
            return error_response(
                ApiError(
                    500,
                    "InternalError",
                    f"Internal error occurred: {exc}",
                    details={"causes": [{"message": str(exc)}]},
                )
            )

    # --- non-resource paths -----------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> Response | WatchStream:
        parts = [unquote(p) for p in request.path.split("/") if p]
        if request.method == "GET":
            special = self._non_resource(parts, request)
            if special is not None:
                return special
        route = self._router.route(parts)
        if route is None:
            if request.method != "GET" and self._is_discovery_path(parts):
                return error_response(errors.method_not_allowed())

            raise errors.path_not_found()
        return self._resource(route, request)

    def _is_discovery_path(self, parts: list[str]) -> bool:
        return (
            parts in (["api"], ["apis"], ["version"])
            or parts[:1] == ["openapi"]
            or (parts[:1] == ["api"] and len(parts) == 2)
            or (parts[:1] == ["apis"] and len(parts) in (2, 3))
        )

    def _non_resource(self, parts: list[str], request: Request) -> Response | None:
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if parts == ["version"]:
            return json_response(200, discovery.version_info())
        if parts in (["api"], ["apis"]):
            aggregated = self._wants_aggregated(request.accept)
            if aggregated is not None:
                doc = discovery.aggregated_discovery(
                    self.registry, core=parts == ["api"], api_version=f"apidiscovery.k8s.io/{aggregated}"
                )
                return json_response(
                    200, doc, f"{_JSON};g=apidiscovery.k8s.io;v={aggregated};as=APIGroupDiscoveryList"
                )
            if parts == ["api"]:
                return json_response(200, discovery.api_versions(self._server_address()))
            return json_response(200, discovery.api_group_list(self.registry))
        if parts == ["api", "v1"]:
            return self._found(discovery.api_resource_list(self.registry, "", "v1"))
        if parts[:1] == ["apis"] and len(parts) == 2:
            return self._found(discovery.api_group(self.registry, parts[1]))
        if parts[:1] == ["apis"] and len(parts) == 3:
            return self._found(discovery.api_resource_list(self.registry, parts[1], parts[2]))
        if parts == ["openapi", "v3"]:
            return json_response(200, discovery.openapi_v3_index(self.registry))
        if parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
            group, version = (
                ("", parts[3]) if parts[2] == "api" else (parts[3], parts[4] if len(parts) == 5 else "")
            )
            return self._found(discovery.openapi_v3_document(self.registry, group, version))
        return None

    @staticmethod
    def _found(doc: Obj | None) -> Response:
        if doc is None:
            raise errors.path_not_found()
        return json_response(200, doc)

    @staticmethod
    def _wants_aggregated(accept: str) -> str | None:
        for media_type, params in _media_types(accept):
            if (
                media_type == _JSON
                and params.get("as") == "APIGroupDiscoveryList"
                and params.get("g") == "apidiscovery.k8s.io"
                and params.get("v") in ("v2", "v2beta1")
            ):
                return params["v"]
            if _json_ok(media_type) and "as" not in params:
                return None
        return None

    # --- resources --------------------------------------------------------------------------------------

    def _resource(self, route: Route, request: Request) -> Response | WatchStream:
        rt, method, query = route.rt, request.method, request.query
        if route.subresource is not None and route.subresource not in rt.subresources:
            raise errors.path_not_found()
        self._representation(request)  # 406 before any write, not after

        if rt.strategy.review:
            if method != "POST" or route.name is not None or route.namespace is not None:
                raise errors.method_not_allowed()
            return json_response(201, self._review(rt, route.version, self._body(request), request))
        if route.subresource == "finalize" and method != "PUT":
            raise errors.method_not_allowed()
        collection = route.name is None
        if method == "GET":
            if route.watch_path or _flag(query, "watch"):
                return self._watch(route, request)
            if collection:
                return self._list(route, request)
            obj = self.storage.get(rt, route.namespace, route.name or "")
            return self._object(route, request, 200, obj)
        if method == "POST" and collection and (route.namespace is not None or not rt.namespaced):
            obj = self.storage.create(
                rt,
                self._body(request),
                namespace=route.namespace,
                version=route.version,
                dry_run=self._dry_run(query),
            )
            return self._object(route, request, 201, obj)
        if method == "PUT" and not collection:
            obj = self.storage.update(
                rt,
                self._body(request),
                namespace=route.namespace,
                name=route.name or "",
                version=route.version,
                subresource=route.subresource,
                dry_run=self._dry_run(query),
            )
            return self._object(route, request, 200, obj)
        if method == "PATCH" and not collection:
            return self._patch(route, request)
        if method == "DELETE":
            return self._delete(route, request)
        raise errors.method_not_allowed()

    @staticmethod
    def _review(rt: ResourceType, version: str, body: Any, request: Request) -> Obj:
        """The answer to a review, computed as the API server computes it and stored nowhere. The emulator
        authenticates no one and authorizes everything, and says so: a request is the anonymous user's (or
        the one it impersonates, as ``kubectl --as`` asks), and every access review is allowed."""
        api_version = rt.api_version(version)
        if not isinstance(body, dict):
            raise bad_request("the request body is not an object")
        if body.get("kind", rt.kind) != rt.kind or body.get("apiVersion", api_version) != api_version:
            raise bad_request(
                f"the body is {body.get('apiVersion')}, Kind={body.get('kind')},"
                f" not {api_version}, Kind={rt.kind}"
            )
        metadata = {**(body.get("metadata") or {}), "creationTimestamp": None}
        head = {"kind": rt.kind, "apiVersion": api_version, "metadata": metadata}
        if rt.kind == "SelfSubjectReview":
            impersonated = request.headers.get("impersonate-user")
            user: Obj = (
                {"username": impersonated, "groups": ["system:authenticated"]}
                if impersonated
                else {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
            )
            return {**head, "status": {"userInfo": user}}
        spec = body.get("spec")
        if not isinstance(spec, dict):
            spec = {}
        problems: list[FieldError] = []
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        # ValidateSubjectAccessReviewSpec / ValidateSelfSubjectAccessReviewSpec.
        if resource is None and non_resource is None:
            problems.append(
                errors.required(
                    "spec.resourceAttributes",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )
            )
        elif resource is not None and non_resource is not None:
            problems.append(
                errors.invalid(
                    "spec.nonResourceAttributes",
                    non_resource,
                    "cannot be specified in combination with resourceAttributes",
                )
            )
        if (
            rt.kind == "SubjectAccessReview"
            and not spec.get("user")
            and not spec.get("groups")
            and not spec.get("uid")
        ):
            problems.append(
                errors.invalid(
                    "spec.user", spec.get("user", ""), "at least one of user or group must be specified"
                )
            )
        if problems:
            raise errors.invalid_object(rt.kind, rt.group, "", problems)
        status = {
            "allowed": True,
            "reason": "the Kubernetes API emulator has no RBAC: every request is allowed",
        }
        return {**head, "spec": spec, "status": status}

    @staticmethod
    def _dry_run(query: dict[str, str]) -> bool:
        value = query.get("dryRun")
        if value in (None, ""):
            return False
        if value != "All":
            raise bad_request(f'Invalid dry run value: "{value}", supported values: "All"')
        return True

    @staticmethod
    def _body(request: Request) -> Any:
        if not request.body:
            raise bad_request("the request body is empty")
        content_type = request.content_type
        try:
            if content_type in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(request.body)
            if content_type in (_JSON, "") or content_type.endswith("+json"):
                return json.loads(request.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding the request body: {exc}") from None
        raise errors.unsupported_media_type(content_type, [_JSON, "application/yaml"])

    def _representation(self, request: Request) -> tuple[str, str]:
        """("object" | "table" | "metadata", includeObject) from the Accept header."""
        for media_type, params in _media_types(request.accept):
            wanted = params.get("as")
            if media_type == _JSON and wanted == "Table" and params.get("g") == "meta.k8s.io":
                return "table", request.query.get("includeObject", "Metadata")
            if (
                media_type == _JSON
                and wanted in ("PartialObjectMetadata", "PartialObjectMetadataList")
                and params.get("g") == "meta.k8s.io"
            ):
                return "metadata", ""
            if _json_ok(media_type) and wanted is None:
                return "object", ""
            if media_type in ("application/yaml",) and wanted is None:
                return "yaml", ""
        raise errors.not_acceptable(request.accept)

    def _shape(self, route: Route, obj: Obj, *, in_list: bool = False) -> Obj:
        api_version = route.rt.api_version(route.version)
        if in_list and not route.rt.strategy.custom_resource:
            # Items of typed (built-in) lists carry no apiVersion/kind; unstructured CR lists do.
            return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return {**obj, "apiVersion": api_version}

    def _object(self, route: Route, request: Request, code: int, obj: Obj) -> Response:
        form, include = self._representation(request)
        if form == "table":
            table = tables.to_table(
                route.rt,
                [obj],
                api_version=route.rt.api_version(route.version),
                resource_version=obj["metadata"].get("resourceVersion", ""),
                continue_token=None,
                include_object=include,
            )
            return json_response(code, table)
        if form == "metadata":
            return json_response(
                code,
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            )
        if form == "yaml":
            return Response(code, yaml.safe_dump(self._shape(route, obj)).encode(), "application/yaml")
        return json_response(code, self._shape(route, obj))

    def _selectors(self, route: Route, query: dict[str, str]) -> tuple[LabelSelector, FieldSelector]:
        return (
            parse_label_selector(query.get("labelSelector")),
            parse_field_selector(query.get("fieldSelector"), route.rt.field_getters),
        )

    def _list(self, route: Route, request: Request) -> Response:
        query = request.query
        labels, fields = self._selectors(route, query)
        result = self.storage.list(
            route.rt,
            namespace=route.namespace,
            labels=labels,
            fields=fields,
            limit=_int_param(query, "limit"),
            continue_token=query.get("continue") or None,
            resource_version=query.get("resourceVersion"),
            resource_version_match=query.get("resourceVersionMatch") or None,
        )
        form, include = self._representation(request)
        if form == "table":
            return json_response(
                200,
                tables.to_table(
                    route.rt,
                    result.items,
                    api_version=route.rt.api_version(route.version),
                    resource_version=result.resource_version,
                    continue_token=result.continue_token,
                    include_object=include,
                ),
            )
        metadata: Obj = {"resourceVersion": result.resource_version}
        if result.continue_token:
            metadata["continue"] = result.continue_token
        if result.remaining is not None:
            metadata["remainingItemCount"] = result.remaining
        if form == "metadata":
            items = [
                {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
                for o in result.items
            ]
            return json_response(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                    "items": items,
                },
            )
        body = {
            "kind": route.rt.list_kind,
            "apiVersion": route.rt.api_version(route.version),
            "metadata": metadata,
            "items": [self._shape(route, o, in_list=True) for o in result.items],
        }
        if form == "yaml":
            return Response(200, yaml.safe_dump(body).encode(), "application/yaml")
        return json_response(200, body)

    @staticmethod
    def _streaming_list(query: dict[str, str]) -> bool | None:
        """``sendInitialEvents`` of a watch (KEP-3157 streaming lists, asked for by client-go's
        WatchListClient, which is on in kubectl 1.37, the one the tests use), with the API server's
        preconditions (ValidateListOptions): it needs resourceVersionMatch=NotOlderThan and bookmarks,
        and resourceVersionMatch on a watch needs it."""
        raw = query.get("sendInitialEvents")
        match = query.get("resourceVersionMatch") or ""
        problems: list[FieldError] = []
        if raw is None:
            if match:
                problems.append(
                    errors.forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    )
                )
        else:
            if match != "NotOlderThan":
                problems.append(
                    errors.forbidden(
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    )
                )
            if not _flag(query, "allowWatchBookmarks"):
                problems.append(
                    errors.forbidden(
                        "allowWatchBookmarks",
                        "sendInitialEvents requires setting allowWatchBookmarks to true",
                    )
                )
        if problems:
            raise errors.invalid_object("ListOptions", "meta.k8s.io", "", problems)
        return None if raw is None else raw.lower() in ("true", "1")

    def _watch(self, route: Route, request: Request) -> WatchStream:
        query = request.query
        labels, fields = self._selectors(route, query)
        if route.name is not None:
            # Legacy /watch/.../<name>: a watch on one object, i.e. fieldSelector=metadata.name=<name>.
            fields = parse_field_selector(
                ",".join(filter(None, [query.get("fieldSelector"), f"metadata.name={route.name}"])),
                route.rt.field_getters,
            )
        form, include = self._representation(request)
        send_initial_events = self._streaming_list(query)
        timeout_seconds = _int_param(query, "timeoutSeconds")
        if timeout_seconds is not None and timeout_seconds > 0:
            timeout = float(timeout_seconds)
        else:
            low, high = self.watch_settings.default_timeout
            timeout = self._rng.uniform(low, high)
        try:
            watcher = self.storage.watch(
                route.rt,
                namespace=route.namespace,
                labels=labels,
                fields=fields,
                resource_version=query.get("resourceVersion"),
                version=route.version,
                send_initial_events=send_initial_events,
            )
        except ApiError as exc:
            if exc.code == 400:
                raise
            return WatchStream(
                self, None, error=exc, timeout=0, bookmarks=False, form="object", include_object=""
            )
        return WatchStream(
            self,
            watcher,
            error=None,
            timeout=timeout,
            bookmarks=_flag(query, "allowWatchBookmarks"),
            form=form,
            include_object=include,
        )

    def _patch(self, route: Route, request: Request) -> Response:
        content_type = request.content_type
        if content_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(content_type, list(PATCH_TYPES))
        if not request.body:
            raise bad_request("the request body is empty")
        try:
            body = yaml.safe_load(request.body) if content_type == APPLY_PATCH else json.loads(request.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding patch: {exc}") from None
        obj, created = self.storage.patch(
            route.rt,
            namespace=route.namespace,
            name=route.name or "",
            patch_type=content_type,
            body=body,
            version=route.version,
            subresource=route.subresource,
            field_manager=request.query.get("fieldManager"),
            dry_run=self._dry_run(request.query),
        )
        return self._object(route, request, 201 if created else 200, obj)

    def _delete(self, route: Route, request: Request) -> Response:
        query, rt = request.query, route.rt
        options: Obj = {}
        if request.body:
            try:
                parsed = json.loads(request.body)
            except ValueError as exc:
                raise bad_request(f"error decoding DeleteOptions: {exc}") from None
            if isinstance(parsed, dict):
                options = parsed
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = options.get("orphanDependents", query.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        dry_run = self._dry_run(query) or options.get("dryRun") == ["All"]
        if route.name is None:
            if "deletecollection" not in rt.verbs or (rt.namespaced and route.namespace is None):
                raise errors.method_not_allowed()
            labels, fields = self._selectors(route, query)
            items = self.storage.delete_collection(
                rt,
                namespace=route.namespace,
                labels=labels,
                fields=fields,
                propagation_policy=policy,
                dry_run=dry_run,
            )
            return json_response(
                200,
                {
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version(route.version),
                    "metadata": {"resourceVersion": self.storage.resource_version},
                    "items": [self._shape(route, o, in_list=True) for o in items],
                },
            )
        if route.subresource is not None:
            raise errors.method_not_allowed()
        result = self.storage.delete(
            rt,
            namespace=route.namespace,
            name=route.name,
            propagation_policy=policy,
            preconditions=options.get("preconditions"),
            dry_run=dry_run,
        )
        if not result.deleted:
            # Deletion waits for finalizers: the answer is the object with its deletionTimestamp
            # (202 when the client asked for foreground cascading, as the real server answers).
            return self._object(route, request, 202 if policy == "Foreground" else 200, result.obj)
        if rt.strategy.return_deleted_object:
            return self._object(route, request, 200, result.obj)
        meta = result.obj["metadata"]
        details: Obj = {"name": meta["name"], "kind": rt.plural, "uid": meta.get("uid")}
        if rt.group:
            details["group"] = rt.group
        return json_response(
            200,
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
        )

    # --- admin ------------------------------------------------------------------------------------------

    def _admin(self, request: Request) -> Response:
        action = request.path[len(_ADMIN_PREFIX) :].strip("/")
        query = request.query
        hooks = self.hooks
        try:
            if action == "state" and request.method == "GET":
                return json_response(200, hooks.state())
            if request.method != "POST":
                raise errors.method_not_allowed()
            if action == "close-watches":
                return json_response(200, {"closed": hooks.close_watches()})
            if action == "fail":
                retry_after = _int_param(query, "retryAfter")
                methods = [m for m in query.get("methods", "").split(",") if m] or None
                hooks.fail_next(
                    _int_param(query, "count") or 1,
                    code=_int_param(query, "code") or 500,
                    retry_after=retry_after,
                    methods=methods,
                    path_contains=query.get("pathContains") or None,
                )
                return json_response(200, hooks.state())
            if action == "compact":
                return json_response(200, {"compactedResourceVersion": hooks.compact()})
            if action == "pause":
                text = query.get("seconds")
                seconds = float(text) if text else None
                mode = query.get("mode", "hang")
                hooks.validate_pause_mode(mode)
                if mode != "refuse":
                    hooks.pause(mode, seconds=seconds)
                    return json_response(200, hooks.state())
                # "refuse" cuts this very connection, so the listener closes once the answer is out; until
                # then the gate already holds every other request.
                self.faults.pause(mode)
                response = json_response(200, hooks.state())
                response.after = lambda: hooks.pause(mode, seconds=seconds)
                return response

            if action == "resume":
                hooks.resume()
                return json_response(200, hooks.state())
        except ValueError as exc:
            return error_response(bad_request(str(exc)))
        except ApiError as exc:
            return error_response(exc)
        return error_response(errors.path_not_found())
