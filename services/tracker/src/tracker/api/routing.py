"""A leaner request path for the ingest endpoints, with FastAPI's contract unchanged.

Profiling the tracker under load (py-spy; see docs/performance.md) showed FastAPI's generic
request handling costing more than the tracker's own work: per request it walks the whole
dependency tree again (``solve_dependencies``), runs plain ``def`` dependencies in the
thread pool, decodes the body with ``json.loads`` and then validates the resulting dict,
and validates the returned model once more before serialising it.

:class:`LeanRoute` keeps everything FastAPI derives from an endpoint's signature (OpenAPI,
parameter names, error shapes and their order) and changes only how a request is served,
whenever the plan below can be made for the endpoint:

- the JSON body is decoded and validated in one step by pydantic's Rust parser
  (``model_validate_json``); its errors are FastAPI's, located under ``body``;
- dependencies are called directly from a plan made once per route (``Request`` and
  plain header parameters, sub-dependencies, per-request caching as FastAPI does);
  plain ``def`` dependencies run inline on the event loop, so they must not block (the
  tracker's are in-memory look-ups);
- a returned model is serialised by its own pydantic serializer.

Anything the plan does not cover (query, path or cookie parameters, ``yield``
dependencies, security schemes, several or form bodies, response-model options,
dependency overrides) is served by FastAPI's own handler, unchanged.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

try:  # FastAPI internals mirrored here; without them FastAPI's own handler is used
    from fastapi._body_limit import get_body_limit_error
    from fastapi._compat import Undefined
    from fastapi.routing import _effective_route_context_var
    from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
except ImportError:  # pragma: no cover - another FastAPI: LeanRoute behaves as APIRoute
    get_body_limit_error = Undefined = _effective_route_context_var = None
    MAX_BODY_SIZE_SCOPE_KEY = ""

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_FAILED = object()


@dataclass(frozen=True, slots=True)
class _Call:
    """One function to call for a request: what it takes, and how to call it."""

    call: Callable[..., Any]
    is_async: bool
    name: str | None  # the parameter it fills in its parent (None: called for effect)
    use_cache: bool
    request_params: tuple[str, ...]
    plain_headers: tuple[tuple[str, str], ...]  # (parameter, header name) passed as is
    header_fields: tuple[Any, ...]  # other header parameters: validated by FastAPI
    subcalls: tuple[_Call, ...]


def _is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None))  # noqa: B004 - an instance with an async __call__


def _is_generator(call: Any) -> bool:
    target = inspect.unwrap(call)
    candidates = (target, getattr(target, "__call__", None))  # noqa: B004
    return any(inspect.isgeneratorfunction(c) or inspect.isasyncgenfunction(c)
               for c in candidates if c is not None)


def _plain_header(field: Any) -> str | None:
    """The header's name when FastAPI passes this parameter the header's value as it is,
    or None when absent (an optional ``str`` without constraints), checked against
    FastAPI's own extraction; None otherwise (FastAPI then validates the parameter)."""
    info = field.field_info
    if info.metadata or info.annotation != str | None:
        return None
    name = str(field.alias).lower()
    probe = "Bearer sk_x-y z"
    try:
        given, given_errors = request_params_to_args([field], Headers({name: probe}))
        absent, absent_errors = request_params_to_args([field], Headers({}))
    except Exception:  # a FastAPI that extracts headers otherwise: let it do so
        return None
    if given_errors or absent_errors or given != {field.name: probe} \
            or absent != {field.name: None}:
        return None
    return name


def _plan(dependant: Dependant, *, top: bool) -> _Call | None:
    """How to call ``dependant`` and its dependencies, or None when FastAPI must."""
    call = dependant.call
    if call is None or isinstance(call, SecurityBase) or _is_generator(call):
        return None
    if (dependant.path_params or dependant.query_params or dependant.cookie_params
            or (dependant.body_params and not top)
            or dependant.websocket_param_name or dependant.http_connection_param_name
            or dependant.response_param_name or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name or dependant.own_oauth_scopes):
        return None
    subcalls = []
    for sub in dependant.dependencies:
        planned = _plan(sub, top=False)
        if planned is None:
            return None
        subcalls.append(planned)
    plain, validated = [], []
    for field in dependant.header_params:
        header = _plain_header(field)
        if header is None:
            validated.append(field)
        else:
            plain.append((field.name, header))
    request_params = (dependant.request_param_name,) if dependant.request_param_name else ()
    return _Call(call=call, is_async=_is_async(call), name=dependant.name,
                 use_cache=dependant.use_cache, request_params=request_params,
                 plain_headers=tuple(plain), header_fields=tuple(validated),
                 subcalls=tuple(subcalls))


class LeanRoute(APIRoute):
    """An APIRoute served from a precomputed plan when it can be (see the module's doc)."""

    lean_handler: Handler | None = None
    """The route's own lean handler (as declared in its router), None when FastAPI's
    handler serves it; :class:`~tracker.api.fastpath.IngestFastPath` dispatches to it."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        route: Any = self
        if _effective_route_context_var is not None:
            # Included into another router: the route as seen from there (prefix, deps).
            context = _effective_route_context_var.get()
            if context is not None and getattr(context, "original_route", None) is self:
                route = context
        lean = _lean_handler(route, standard)
        if route is self:
            self.lean_handler = lean
        return lean or standard


def _lean_handler(route: Any, standard: Handler) -> Handler | None:
    if get_body_limit_error is None or _effective_route_context_var is None:
        return None
    try:
        dependant: Dependant = route.dependant
        body_field = route.body_field
        response_field = route.response_field
        options = (route.response_model_include, route.response_model_exclude,
                   route.response_model_exclude_unset, route.response_model_exclude_defaults,
                   not route.response_model_by_alias,
                   getattr(route, "is_json_stream", False),
                   getattr(route, "stream_item_field", None))
        exclude_none = bool(route.response_model_exclude_none)
        embed = route._embed_body_fields
        strict_setting = getattr(route, "strict_content_type", True)
        status = route.status_code or 200
        overrides_provider = route.dependency_overrides_provider
    except AttributeError:  # routes of a FastAPI that look otherwise: keep its handler
        return None
    if any(options) or not _is_async(dependant.call) or _is_generator(dependant.call):
        return None
    plan = _plan(dependant, top=True)
    if plan is None:
        return None

    body_params = list(dependant.body_params)
    model: type[BaseModel] | None = None
    if body_params:
        if len(body_params) != 1 or embed or body_field is None:
            return None
        annotation = body_field.field_info.annotation
        if not (inspect.isclass(annotation) and issubclass(annotation, BaseModel)
                and not body_field.field_info.metadata):
            return None
        model = annotation
    body_name = body_params[0].name if body_params else None

    response_model: type[BaseModel] | None = None
    if response_field is not None:
        response_model = response_field.field_info.annotation
        if not (inspect.isclass(response_model) and issubclass(response_model, BaseModel)):
            return None
    strict = strict_setting if isinstance(strict_setting, bool) \
        else bool(getattr(strict_setting, "value", True))  # FastAPI's DefaultPlaceholder

    async def decode_body(request: Request) -> tuple[Any, list[Any]]:
        """The body as ``model`` and its validation errors; malformed JSON raises at
        once, as FastAPI does (before any dependency runs)."""
        try:
            raw = await request.body()
        except HTTPException:
            raise
        except Exception as exc:  # as FastAPI: a body that could not be read
            if MAX_BODY_SIZE_SCOPE_KEY in request.scope and (
                    limit_error := get_body_limit_error(exc)):
                raise limit_error from exc
            raise HTTPException(400, "There was an error parsing the body") from exc
        content_type = request.headers.get("content-type")
        if content_type is None:
            is_json = not strict
        else:
            media = content_type.partition(";")[0].strip().lower()
            is_json = media == "application/json" or (
                media.startswith("application/") and media.endswith("+json"))
        if raw and is_json:
            try:
                return model.model_validate_json(raw), []  # type: ignore[union-attr]
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
                if all(e["loc"] for e in errors):
                    return None, [{**e, "loc": ("body", *e["loc"])} for e in errors]
                # The document itself is wrong (not JSON, null, not an object): FastAPI's
                # own treatment below answers with its errors, verbatim.
        received: Any = Undefined
        if raw and is_json:
            try:
                received = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise RequestValidationError(
                    [{"type": "json_invalid", "loc": ("body", exc.pos),
                      "msg": "JSON decode error", "input": {}, "ctx": {"error": exc.msg}}],
                    body=exc.doc) from exc
            except UnicodeDecodeError as exc:  # not UTF-8 text at all: as invalid JSON, a 422
                raise RequestValidationError(
                    [{"type": "json_invalid", "loc": ("body", exc.start),
                      "msg": "JSON decode error", "input": {},
                      "ctx": {"error": f"body is not UTF-8 text ({exc.reason})"}}]) from exc
        elif raw:
            received = raw
        values, errors = await request_body_to_args(body_params, received, embed)
        return values.get(body_name), errors  # type: ignore[arg-type]

    async def solve(call: _Call, request: Request, cache: dict[Any, Any],
                    errors: list[Any]) -> Any:
        """``call``'s result (the endpoint's arguments for the plan's top), or _FAILED
        when a parameter was invalid (its errors appended to ``errors``)."""
        kwargs: dict[str, Any] = {}
        failed = False
        for sub in call.subcalls:
            if sub.use_cache and sub.call in cache:
                value = cache[sub.call]
            else:
                value = await solve(sub, request, cache, errors)
                if value is _FAILED:
                    failed = True
                    continue
                if sub.use_cache:
                    cache[sub.call] = value
            if sub.name is not None:
                kwargs[sub.name] = value
        for name in call.request_params:
            kwargs[name] = request
        if call.plain_headers:
            headers = request.headers
            for name, header in call.plain_headers:
                kwargs[name] = headers.get(header)
        if call.header_fields:
            values, header_errors = request_params_to_args(list(call.header_fields),
                                                           request.headers)
            if header_errors:
                errors.extend(header_errors)
                failed = True
            kwargs.update(values)
        if failed:
            return _FAILED
        if call is plan:
            return kwargs
        result = call.call(**kwargs)
        return await result if call.is_async else result

    endpoint: Callable[..., Awaitable[Any]] = plan.call

    async def handler(request: Request) -> Response:
        if getattr(overrides_provider, "dependency_overrides", None):
            return await standard(request)  # dependencies overridden (tests): FastAPI's way
        # FastAPI's order: the body is read (malformed JSON answered) before dependencies
        # run; dependency, header and body errors are then reported together.
        body, body_errors = await decode_body(request) if model is not None else (None, [])
        errors: list[Any] = []
        kwargs = await solve(plan, request, {}, errors)
        errors.extend(body_errors)
        if errors or kwargs is _FAILED:
            raise RequestValidationError(errors)
        if body_name is not None:
            kwargs[body_name] = body
        result = await endpoint(**kwargs)
        if isinstance(result, Response):
            return result
        if response_model is None:
            return JSONResponse(jsonable_encoder(result), status_code=status)
        if type(result) is not response_model:
            result = response_model.model_validate(result, from_attributes=True)
        return Response(result.__pydantic_serializer__.to_json(
            result, by_alias=True, exclude_none=exclude_none),
            status_code=status, media_type="application/json")

    return handler
