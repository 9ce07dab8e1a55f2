"""Validation errors in the words of ``params.yaml``: pydantic's errors, each turned into a line
that names the dotted key, the bad value and what is allowed (``algo.steps = 0: must be an
integer >= 1``)."""

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from metalearn.errors import StageError


class ConfigError(StageError, ValueError):
    """A parameter is missing, unknown, mistyped or out of range; the message says how to fix it."""


def _show(value: Any) -> str:
    """A value as written in YAML / on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _dotted(loc: Sequence[str | int]) -> str:
    """pydantic's error location as the key a user writes: ``data.jester.download.parts[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _bare(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and ``| None``."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (types.UnionType, typing.Union):
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _type_at(tp: Any, loc: Sequence[str | int]) -> Any:
    """The (bare) type of the value at ``loc`` under ``tp``."""
    for part in loc:
        tp = _bare(tp)
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True)[part]
        else:  # dict[str, X], list[X] or tuple[X, X]: the item type
            tp = get_args(tp)[-1]
    return _bare(tp)


# pydantic's error types in the words of a YAML file: what the value must be.
_KINDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false"}
_KINDS |= {"string_type": "a string", "list_type": "a list", "tuple_type": "a list [lo, hi]"}
_KINDS |= {"dict_type": "a mapping", "dataclass_type": "a mapping", "finite_number": "finite"}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}
_BOUNDS |= {"less_than": "<"}


def _problem(tp: Any, error: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """One pydantic error as a line that names the key, the value and what is allowed."""
    loc, kind, ctx = error["loc"], error["type"], error.get("ctx", {})
    if loc and loc[-1] == "[key]":  # a mapping's key (a name) is at fault, not its value
        loc = loc[:-1]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        keys = ", ".join(f.name for f in dataclasses.fields(_type_at(tp, loc[:-1])))
        return f"unknown key '{_dotted((*prefix, *loc))}' (valid: {keys})"
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a pair with one item
        loc, kind = loc[:-1], "tuple_type"
    elif kind == "missing":
        return f"missing key '{_dotted((*prefix, *loc))}'"
    if kind == "literal_error":
        rule = "must be one of " + ", ".join(map(str, get_args(_type_at(tp, loc))))
    elif kind in _KINDS:
        rule = f"must be {_KINDS[kind]}"
    elif kind in _BOUNDS:
        number = "an integer" if _type_at(tp, loc) is int else "a number"
        rule = f"must be {number} {_BOUNDS[kind]} {next(iter(ctx.values())):g}"
    else:  # pydantic's own words: "List should have at least 1 item", "Value error, ..."
        rule = error["msg"].removeprefix("Value error, ")
        rule = re.sub(r"^(Input|Dictionary|List|Tuple) should (be|have)", r"must \2", rule)
    return f"{_dotted((*prefix, *loc)) or 'the parameters'} = {_show(error['input'])}: {rule}"


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def validate(tp: Any, data: Any, at: str = "") -> Any:
    """``data`` (plain YAML data) as ``tp``; a :class:`ConfigError` listing every problem, each
    key named from ``at`` (the dotted key of ``data`` itself, e.g. ``algo.maml``) down."""
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as e:
        prefix = tuple(at.split(".")) if at else ()
        problems = [_problem(tp, err, prefix) for err in e.errors()]
        raise ConfigError("\n".join(problems)) from None
