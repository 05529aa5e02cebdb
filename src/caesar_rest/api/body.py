"""Strict JSON request bodies: what the service stores must be JSON again when it is read."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from caesar_rest.errors import Invalid

#: Deepest nesting accepted in a request body (Python's parser gives up near 1000).
MAX_DEPTH = 64


def _refuse_constant(name: str) -> NoReturn:
    # Python's json accepts NaN, Infinity and -Infinity; JSON does not, nor does PostgreSQL's
    # json type, and the service would write them back as invalid JSON.
    raise Invalid(f"Request body is not valid JSON: {name} is not a JSON number")


def check_value(value: Any) -> None:
    """Refuse NUL characters in strings and keys, and nesting deeper than :data:`MAX_DEPTH`.

    PostgreSQL stores neither ``\\u0000`` in ``json`` nor NUL in ``text``. Iterative, so a
    deep value cannot exhaust the stack here.

    Raises
    ------
    Invalid
        A NUL character or too deep a value.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise Invalid("Request body holds a NUL character (\\u0000), which is refused")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise Invalid(f"Request body is nested too deep ({MAX_DEPTH} levels at most)")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def loads_strict(raw: bytes | str) -> Any:
    """Parse a request body as strict JSON and check it with :func:`check_value`.

    Raises
    ------
    Invalid
        Not JSON (NaN and Infinity included), nested too deep, or holding a NUL character.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise Invalid(f"Request body is nested too deep ({MAX_DEPTH} levels at most)") from None
    except (ValueError, UnicodeDecodeError):
        raise Invalid("Request body is not valid JSON") from None
    check_value(value)
    return value
