import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import BaseModel

from backbeat.serialization import (
    ArgumentError,
    decode_arguments,
    encode_arguments,
    read_back_as_given,
)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    number: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


async def everything(
    when: datetime,
    day: date,
    ident: uuid.UUID,
    amount: Decimal,
    colour: Colour,
    address: Address,
    point: Point,
    wait: timedelta,
    tags: set[str],
    plain,  # unannotated: the JSON value comes back as is
    *,
    limit: int = 10,
) -> None: ...


def test_rich_arguments_round_trip_to_what_the_function_annotates():
    args = (
        datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
        date(2026, 1, 2),
        uuid.UUID(int=42),
        Decimal("10.25"),
        Colour.BLUE,
        Address(street="Main", number=1),
        Point(1, 2),
        timedelta(seconds=90),
        {"a"},
        {"nested": [1, 2.5, None, True]},
    )
    document = encode_arguments("t", args, {"limit": 3})
    assert "pickle" not in document and isinstance(document, str)
    decoded_args, decoded_kwargs = decode_arguments(everything, document)
    assert decoded_args == args
    assert decoded_kwargs == {"limit": 3}
    assert type(decoded_args[3]) is Decimal and type(decoded_args[4]) is Colour


def test_an_unstorable_argument_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"argument 'conn' of task 'emails.send' .*socket"):
        import socket

        with socket.socket() as sock:
            encode_arguments("emails.send", ("ok",), {"conn": sock})
    with pytest.raises(ArgumentError, match="positional argument 1 of task 't'"):
        encode_arguments("t", ("fine", object()), {})


def test_a_malformed_document_is_a_clear_error():
    with pytest.raises(ArgumentError, match="not a valid document"):
        decode_arguments(everything, "{not json")
    with pytest.raises(ArgumentError, match="not a valid document"):
        decode_arguments(everything, '{"args": {}, "kwargs": []}')


def test_a_document_that_does_not_fit_the_function_is_a_clear_error():
    async def two(a: int, b: int) -> None: ...

    with pytest.raises(ArgumentError, match="do not fit"):
        decode_arguments(two, encode_arguments("t", (1,), {}))
    with pytest.raises(ArgumentError, match="stored argument 'b' does not fit"):
        decode_arguments(two, encode_arguments("t", (1, "two"), {}))


def _plain(count: int, label: str, ratio: float, flag: bool, anything, note: str | None = None):
    return count, label, ratio, flag, anything, note


def test_arguments_read_back_as_given_only_when_json_gives_them_back_unchanged():
    """The check a store skips for such arguments (`read_back_as_given`) must say False
    wherever `decode_arguments` would change them or refuse them."""
    assert read_back_as_given(_plain, (1, "a", float("inf"), True, "x"), {})
    assert read_back_as_given(_plain, (1, "a"), {"ratio": 2.5, "flag": False, "anything": None})
    refused = [
        ((1, "a", 0.5, True, [1]), {}),  # a list: validated (its items may change)
        ((True, "a", 0.5, True, 0), {}),  # a bool for an int: validated
        ((1, "a", 1, True, 0), {}),  # an int for a float: becomes 1.0
        ((1, "a", 0.5, True, (1, 2)), {}),  # a tuple comes back a list
        ((1, "a", 0.5, True, 0, "n"), {}),  # `str | None`: validated
        ((1, "a", 0.5), {}),  # missing arguments
        ((1, "a", 0.5, True, 0, None, "extra"), {}),
        ((1, "a", 0.5, True, 0), {"count": 2}),  # given twice
        ((1, "a", 0.5, True, 0), {"nope": 1}),
    ]
    for args, kwargs in refused:
        assert not read_back_as_given(_plain, args, kwargs), (args, kwargs)
