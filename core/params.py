"""Turn a mapping of user parameters into a frozen config dataclass, checking names, types and values.

Each job kind's parameters are one dataclass (see ``core.kinds``). The same class validates a batch spec
on the control plane and configures the job on the worker, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from core.errors import ConfigError

T = TypeVar("T")
MAX_INT = 2**53  # the largest integer a parameter may be: JSON readers (JavaScript) keep integers exact up to it


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(field: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError. Ints are accepted for floats, never bools."""
    if tp is Any:  # the config class checks such a field itself (in __post_init__ or validate)
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        if len(args) == 1:  # Optional[X] with a value: X's own, precise error
            return _coerce(field, value, args[0])
        for arg in args:
            try:
                return _coerce(field, value, arg)
            except ConfigError:
                continue
        raise ConfigError(field, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp) and not isinstance(value, bool):
            return value
        raise ConfigError(field, f"expected one of {_type_name(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            # one value where a list is expected (k: 10 for k: [10]) is a list of one
            return (_coerce(field, value, get_args(tp)[0]),)
        (item_tp, *_rest) = get_args(tp)
        return tuple(_coerce(f"{field}[{i}]", v, item_tp) for i, v in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(field, f"expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(field, f"must be at most 2**53 in size, got an integer of {value.bit_length()} bits")
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > MAX_INT:
                raise ConfigError(field, f"must be at most 2**53 in size, got an integer of {value.bit_length()} bits")
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(field, f"must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a config class used a type this parser does not know
        raise TypeError(f"unsupported parameter type {tp!r} for {field}")
    raise ConfigError(field, f"expected {_type_name(tp)}, got {value!r}")


def parse_config(cls: type[T], params: Mapping[str, Any] | None) -> T:
    """Build ``cls`` from ``params``: unknown names, wrong types and invalid values raise ConfigError.

    After the types are checked, the class's own ``validate()`` (if any) checks ranges and combinations.
    """
    params = dict(params or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(fields), key=str)
    if unknown:
        raise ConfigError(unknown[0], f"unknown parameter; expected one of: {', '.join(sorted(fields))}")
    values = {}
    for name, value in params.items():
        values[name] = _coerce(name, value, hints[name])
    missing = [
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(missing[0], "required parameter is missing")
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def config_to_params(config: Any) -> dict[str, Any]:
    """The JSON-ready parameters of a config, with every default filled in (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def require(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(field, message) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, message)


@dataclasses.dataclass(frozen=True)
class ParamDoc:
    """One parameter as documented by its dataclass: its name, type, default and the comment beside it."""

    name: str
    type: str
    default: Any
    comment: str
    required: bool = False  # no default: the spec must give it


def describe_params(cls: type[Any]) -> list[ParamDoc]:
    """Every parameter of a params dataclass, in order, with the comment written beside (or above) its field in the
    class that declares it: the one definition that ``latentfarm kinds`` and docs/kinds.md print."""
    hints = typing.get_type_hints(cls)
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_field_comments(klass))
    out = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if missing else (f.default if f.default is not dataclasses.MISSING
                                        else f.default_factory())  # type: ignore[misc,operator]
        out.append(ParamDoc(f.name, _type_name(hints.get(f.name, Any)), default, comments.get(f.name, ""), missing))
    return out


def _field_comments(klass: type[Any]) -> dict[str, str]:
    """``name: type = default  # comment`` in ``klass``'s own source, with the comment lines above a field and the
    comment-only lines that continue a field's trailing comment."""
    import inspect
    import re

    try:
        lines = inspect.getsource(klass).splitlines()
    except (OSError, TypeError):
        return {}
    field = re.compile(r"^\s{4}(?P<name>[a-z_][a-z0-9_]*)\s*:[^#]*?(?:#\s?(?P<comment>.*))?$")
    comment_only = re.compile(r"^\s{4}#\s?(?P<text>.*)$")
    found: dict[str, str] = {}
    above: list[str] = []
    last: str | None = None  # the field whose trailing comment the next comment-only line continues
    for line in lines[1:]:
        c = comment_only.match(line)
        if c:
            if last is not None:
                found[last] = f"{found[last]} {c['text'].strip()}".strip()
            else:
                above.append(c["text"].strip())
            continue
        m = field.match(line)
        if m and not line.lstrip().startswith(("def ", "return", "@")):
            text = " ".join([*above, (m["comment"] or "").strip()]).strip()
            found[m["name"]] = text
            last = m["name"] if m["comment"] else None
        else:
            last = None
        above = []
    return found
