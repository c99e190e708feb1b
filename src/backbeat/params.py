"""What a handler asks for, worked out once from its signature.

A parameter is bound, in this order of precedence, as:

* ``request`` — annotated ``Request`` (or named ``request`` with no annotation);
* injected tasks — annotated ``BackgroundTasks``: a fresh collection per request;
* a path parameter — its name appears in the path (``/users/{id:int}``);
* the JSON body — named ``data``, or annotated with a pydantic model;
* a query parameter — anything else (``str``/``int``/``float``/``bool``, with defaults).

Path, query and body values are validated by pydantic; all failures of a
request are reported together as one 422.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import ClientDisconnect, Request

from backbeat.tasks import BackgroundTasks

BODY_PARAMETER_NAME = "data"


DEFAULT_MAX_BODY_SIZE = 1024 * 1024


class BadRequest(Exception):
    """The body cannot be taken as JSON: malformed (400), too large (413), not JSON (415)."""

    status_code = 400


class PayloadTooLarge(BadRequest):
    status_code = 413


class UnsupportedMediaType(BadRequest):
    status_code = 415


class InvalidParameters(Exception):
    """Path, query or body values failed validation (→ 422); `errors` lists each field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(slots=True)
class ValueParameter:
    name: str
    adapter: TypeAdapter[Any]
    default: Any
    required: bool


@dataclass(slots=True)
class HandlerSignature:
    request: str | None = None
    tasks: list[str] = field(default_factory=list)
    path: list[ValueParameter] = field(default_factory=list)
    query: list[ValueParameter] = field(default_factory=list)
    body: str | None = None
    body_adapter: TypeAdapter[Any] | None = None
    body_model: type[BaseModel] | None = None

    async def bind(
        self, request: Request, max_body_size: int = DEFAULT_MAX_BODY_SIZE
    ) -> tuple[dict[str, Any], BackgroundTasks | None]:
        """Build the handler's keyword arguments; also return the injected tasks, if any."""
        kwargs: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        if self.request:
            kwargs[self.request] = request
        injected = None
        if self.tasks:
            injected = BackgroundTasks()
            for name in self.tasks:
                kwargs[name] = injected
        if self.path:
            _validate_values(self.path, request.path_params, "path", kwargs, errors)
        if self.query:
            _validate_values(self.query, request.query_params, "query", kwargs, errors)
        if self.body:
            body = await read_json_body(request, max_body_size)
            if not body.strip():
                errors.append(
                    {"loc": ["body"], "msg": "A JSON request body is required", "type": "missing"}
                )
            else:
                try:
                    kwargs[self.body] = self._parse_body(body)
                except ValidationError as exc:
                    details = exc.errors(include_url=False, include_input=False)
                    errors.extend(_error_list(details, "body"))
        if errors:
            raise InvalidParameters(errors)
        return kwargs, injected

    def _parse_body(self, body: bytes) -> Any:
        try:
            if self.body_model is not None:
                return self.body_model.model_validate_json(body)
            assert self.body_adapter is not None
            return self.body_adapter.validate_json(body)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                if error["type"] == "json_invalid":
                    raise BadRequest(f"Malformed JSON body: {error['msg']}") from None
            raise


def _is_json(content_type: bytes) -> bool:
    if content_type == b"application/json":  # the common case, without parsing
        return True
    media_type = content_type.partition(b";")[0].strip().lower()
    kind, _, subtype = media_type.partition(b"/")
    return kind == b"application" and (subtype == b"json" or subtype.endswith(b"+json"))


async def read_json_body(request: Request, max_body_size: int) -> bytes:
    """The body, if it is declared JSON and not larger than `max_body_size` bytes.

    A body under any other Content-Type is refused (415) before it is read:
    a cross-site form post needs no CORS preflight, so accepting JSON sent as
    ``text/plain`` or a form would let any page post to the API (the CSRF hole
    of FastAPI's CVE-2021-32677). A size beyond the limit is refused (413)
    without reading the rest.
    """
    content_type = declared = None
    # ASGI header names are lower-case bytes: one pass, no Headers object.
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            declared = value
    if content_type is not None and not _is_json(content_type):
        shown = content_type.partition(b";")[0].strip().decode("latin-1")
        raise UnsupportedMediaType(
            f"Unsupported Media Type {shown!r}: "
            "send the JSON body with Content-Type: application/json"
        )
    if declared is not None and declared.isdigit() and int(declared) > max_body_size:
        raise PayloadTooLarge(f"Request body too large: the limit is {max_body_size} bytes")
    body = await _read_at_most(request, max_body_size)
    if content_type is None and body.strip():
        raise UnsupportedMediaType(
            "Unsupported Media Type: send the JSON body with Content-Type: application/json"
        )
    return body


async def _read_at_most(request: Request, max_body_size: int) -> bytes:
    """The body, read from ``receive`` itself (Starlette's stream costs a tenth of a small
    request) and kept where `Request.body()` finds it, for a handler that asks again."""
    if hasattr(request, "_body"):
        return request._body
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_body_size:
            raise PayloadTooLarge(f"Request body too large: the limit is {max_body_size} bytes")
        if not message.get("more_body", False):
            body = b"".join([*chunks, chunk]) if chunks else chunk
            break
        chunks.append(chunk)
    request._body = body
    return body


def _validate_values(
    parameters: list[ValueParameter],
    source: typing.Mapping[str, Any],
    where: str,
    kwargs: dict[str, Any],
    errors: list[dict[str, Any]],
) -> None:
    for parameter in parameters:
        raw = source.get(parameter.name)
        if raw is None:
            if parameter.required:
                errors.append(
                    {"loc": [where, parameter.name], "msg": "Field required", "type": "missing"}
                )
            else:
                kwargs[parameter.name] = parameter.default
            continue
        try:
            kwargs[parameter.name] = parameter.adapter.validate_python(raw)
        except ValidationError as exc:
            details = exc.errors(include_url=False, include_input=False)
            errors.extend(_error_list(details, where, parameter.name))


def _error_list(details: list[ErrorDetails], *prefix: str) -> list[dict[str, Any]]:
    return [
        {"loc": [*prefix, *detail["loc"]], "msg": detail["msg"], "type": detail["type"]}
        for detail in details
    ]


def analyse(handler: Callable[..., Any], path_parameters: typing.Iterable[str]) -> HandlerSignature:
    """Read the handler's signature once, at decoration time."""
    path_names = set(path_parameters)
    hints = _parameter_hints(handler)
    signature = HandlerSignature()
    for parameter in inspect.signature(handler).parameters.values():
        name = parameter.name
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"handler {handler.__qualname__}: *{name} parameters are not supported")
        annotation = hints.get(name, inspect.Parameter.empty)
        if _is_subclass(annotation, Request) or (
            name == "request" and annotation is inspect.Parameter.empty
        ):
            signature.request = name
        elif _is_subclass(annotation, BackgroundTasks):
            signature.tasks.append(name)
        elif name in path_names:
            signature.path.append(_value_parameter(parameter, annotation))
        elif name == BODY_PARAMETER_NAME or _is_subclass(annotation, BaseModel):
            if signature.body is not None:
                raise TypeError(
                    f"handler {handler.__qualname__} has two body parameters: "
                    f"{signature.body!r} and {name!r}"
                )
            signature.body = name
            if _is_subclass(annotation, BaseModel):
                signature.body_model = annotation
            else:
                empty = annotation is inspect.Parameter.empty
                signature.body_adapter = TypeAdapter(Any if empty else annotation)
        else:
            signature.query.append(_value_parameter(parameter, annotation))
    return signature


def _parameter_hints(handler: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except NameError:
        pass
    # Only the parameters matter: a return annotation naming a type imported
    # inside a function (common in factories) must not stop the handler.
    hints: dict[str, Any] = {}
    namespace = getattr(handler, "__globals__", {})
    for name, annotation in getattr(handler, "__annotations__", {}).items():
        if name == "return":
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except NameError as exc:
                raise TypeError(
                    f"cannot resolve the annotation of parameter {name!r} of handler "
                    f"{handler.__qualname__}: {exc}; define the types it uses at module level"
                ) from None
        hints[name] = annotation
    return hints


def _value_parameter(parameter: inspect.Parameter, annotation: Any) -> ValueParameter:
    required = parameter.default is inspect.Parameter.empty
    target = str if annotation is inspect.Parameter.empty else annotation
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(target)
    except Exception as exc:
        raise TypeError(f"parameter {parameter.name!r}: unsupported annotation {target!r}") from exc
    return ValueParameter(
        name=parameter.name,
        adapter=adapter,
        default=None if required else parameter.default,
        required=required,
    )


def _is_subclass(annotation: Any, cls: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, cls)
