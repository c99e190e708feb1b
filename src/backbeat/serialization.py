"""Task arguments as JSON, for stores: never pickle.

`encode_arguments` turns a task's positional and keyword arguments into one
JSON document; what JSON cannot hold is a `TypeError` naming the argument.
Supported: JSON values (dict, list, str, int, float, bool, None), pydantic
models, dataclasses, `datetime`, `date`, `time`, `timedelta`, `UUID`, `Decimal`,
`Enum`, tuples and sets (as lists), and nestings of these.

`decode_arguments` reads them back for a function, validating each argument
against the function's annotation with pydantic, so a `UUID`, a `Decimal` or a
model comes back as one. An unannotated parameter gets the plain JSON value.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, from_json, to_json

__all__ = [
    "ArgumentError",
    "carried_in",
    "decode_arguments",
    "encode_arguments",
    "encode_result",
    "read_back_as_given",
]


class ArgumentError(TypeError):
    """Arguments that cannot be stored, or a stored document that does not fit the function."""


def encode_arguments(
    task_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    carried: dict[str, str] | None = None,
) -> str:
    """The stored document; `carried` is what observers keep with the task (a trace's
    context), under its own key."""
    document: dict[str, Any] = {"args": args, "kwargs": kwargs}
    if carried:
        document["carried"] = carried
    try:
        return to_json(document).decode()
    except (PydanticSerializationError, TypeError, ValueError):
        pass
    # Find the culprit, to name it.
    for index, value in enumerate(args):
        _check(task_name, f"positional argument {index}", value)
    for key, value in kwargs.items():
        _check(task_name, f"argument {key!r}", value)
    raise ArgumentError(f"the arguments of task {task_name!r} cannot be stored as JSON")


def carried_in(document: str | bytes) -> dict[str, str] | None:
    """What observers kept with a stored task, if anything (a cheap look first: most have
    nothing)."""
    text = document.decode() if isinstance(document, bytes) else document
    if '"carried"' not in text:
        return None
    try:
        carried = from_json(text).get("carried")
    except (ValueError, AttributeError):
        return None
    if not isinstance(carried, dict):
        return None
    return {str(key): str(value) for key, value in carried.items()}


def encode_result(value: Any) -> str | None:
    """A task's return value as JSON; None (with the reason) when it is not JSON."""
    if value is None:
        return None
    try:
        return to_json(value).decode()
    except (PydanticSerializationError, TypeError, ValueError):
        raise ArgumentError(
            f"a {type(value).__module__}.{type(value).__qualname__} cannot be stored as JSON"
        ) from None


def _check(task_name: str, label: str, value: Any) -> None:
    try:
        to_json(value)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise ArgumentError(
            f"{label} of task {task_name!r} cannot be stored as JSON: "
            f"{type(value).__module__}.{type(value).__qualname__} ({exc})"
        ) from None


def read_back_as_given(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """Whether these arguments fit `func` and come back from JSON exactly as given: ints,
    floats, strings, booleans and None, each for a parameter that is unannotated or
    annotated with its very type. Then `decode_arguments` would return them unchanged, and
    the check a store makes before accepting a task can skip it (the usual task: pydantic's
    validation cost more than the rest of storing it). False sends it the long way."""
    signature, adapters, positional, required, exact = _analysed(func)
    given = positional[: len(args)]
    if len(args) > len(positional) or not required.issubset((*given, *kwargs)):
        return False
    for key in kwargs:
        parameter = signature.parameters.get(key)
        if parameter is None or parameter.kind is parameter.POSITIONAL_ONLY or key in given:
            return False
    for name, value in (*zip(given, args, strict=True), *kwargs.items()):
        kind = type(value)
        if kind not in _PLAIN or (name in adapters and exact.get(name) is not kind):
            return False
    return True


# What JSON gives back as it was given (infinities and NaN too: `to_json` writes them as
# ``Infinity`` and ``NaN``, which `from_json` reads).
_PLAIN = (int, float, str, bool, type(None))


def decode_arguments(
    func: Callable[..., Any], document: str | bytes
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        data = from_json(document)
        raw_args, raw_kwargs = data["args"], data["kwargs"]
        if not isinstance(raw_args, list) or not isinstance(raw_kwargs, dict):
            raise TypeError("args must be a list and kwargs an object")
    except (ValueError, TypeError, KeyError) as exc:
        raise ArgumentError(f"stored arguments are not a valid document: {exc}") from None
    signature, adapters, positional, required, exact = _analysed(func)
    if (
        len(raw_args) <= len(positional)
        and required.issubset((*positional[: len(raw_args)], *raw_kwargs))
        and all(key in signature.parameters for key in raw_kwargs)
    ):
        # The common case, without inspect's (slow) bind: validate in place. Any
        # problem takes the general path below, which names the argument.
        try:
            args = tuple(
                value if type(value) is exact.get(name) else _validated(adapters, name, value)
                for name, value in zip(positional, raw_args, strict=False)
            )
            kwargs = {
                key: value if type(value) is exact.get(key) else _validated(adapters, key, value)
                for key, value in raw_kwargs.items()
            }
        except ValidationError:
            pass
        else:
            return args, kwargs
    try:
        bound = signature.bind(*raw_args, **raw_kwargs)
    except TypeError as exc:
        raise ArgumentError(f"stored arguments do not fit {_name(func)}: {exc}") from None
    for name, value in bound.arguments.items():
        adapter = adapters.get(name)
        if adapter is None:
            continue
        try:
            bound.arguments[name] = adapter.validate_python(value)
        except ValidationError as exc:
            raise ArgumentError(
                f"stored argument {name!r} does not fit {_name(func)}: {exc}"
            ) from None
    return bound.args, bound.kwargs


def _validated(adapters: dict[str, TypeAdapter[Any]], name: str, value: Any) -> Any:
    adapter = adapters.get(name)
    return value if adapter is None else adapter.validate_python(value)


@functools.lru_cache(maxsize=1024)
def _analysed(
    func: Callable[..., Any],
) -> tuple[
    inspect.Signature,
    dict[str, TypeAdapter[Any]],
    tuple[str, ...],
    frozenset[str],
    dict[str, type],
]:
    """A task function's signature and an adapter per annotated parameter (once per function);
    and for the parameters annotated `int`, `float`, `str` or `bool`, the one type of JSON
    value that needs no validation (the usual task's arguments: pydantic's call cost more
    than the rest of reading them back)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    signature = inspect.signature(func)
    adapters: dict[str, TypeAdapter[Any]] = {}
    exact: dict[str, type] = {}
    for name, parameter in signature.parameters.items():
        hint = hints.get(name)
        if hint is None or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        adapters[name] = TypeAdapter(hint)
        if hint in (int, float, str, bool):
            exact[name] = hint
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = tuple(n for n, p in signature.parameters.items() if p.kind in kinds)
    has_var = any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()
    )
    required = frozenset(
        n
        for n, p in signature.parameters.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )
    # Functions with *args/**kwargs always take the general path (positional=()).
    return signature, adapters, () if has_var else positional, required, exact


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))
