"""TOML configuration into a typed schema, with errors a person at a console can act on.

The schemas themselves (``msgspec.Struct`` types, or frozen dataclasses where other code
relies on ``dataclasses.replace``) hold every type, default, bound and description once;
msgspec does the checking. What msgspec cannot do is say *which* table entry failed (it
reports a dict entry as ``[...]``) or speak TOML: this module finds the entry in the data and
names the file, the key path as written in TOML, what is wrong and what was found.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")

#: The pattern of a string that must say something (not empty, not only blanks).
NOT_BLANK = r"\S"

#: Builds the error to raise from its full message (each package has its own ConfigError).
ErrorFactory = Callable[[str], Exception]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MSGSPEC_ERROR = re.compile(r"(?P<what>.*?)(?: - at `(?P<key>key` in `)?(?P<path>\$[^`]*)`)?", re.S)
_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\.\.\.|\d+)\]")
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "object": "a table",
    "array": "an array",
    "null": "nothing",
}


class KeyPath(NamedTuple):
    """Where an error is: the innermost table (as in a ``[table]`` header) and the key in it
    (dotted when it goes into an inline table such as ``prompts.pass``)."""

    table: tuple[str, ...]
    key: tuple[str, ...]

    def dotted(self) -> str:
        """``voice.prompts.pass`` (the kiosk's style)."""
        return ".".join(_toml_key(p) for p in self.table + self.key) or "top level"

    def bracketed(self) -> str:
        """``[sources.nat] url`` (the server's style: the header a person looks for)."""
        key = ".".join(_toml_key(p) for p in self.key)
        if not self.table:
            return key or "top level"
        header = "[" + ".".join(_toml_key(p) for p in self.table) + "]"
        return f"{header} {key}" if key else header


#: Renders a key path for a message.
Style = Callable[[KeyPath], str]


def parse_toml(raw: bytes, source: str, error: ErrorFactory) -> dict[str, Any]:
    """A file's bytes (read by the caller: core does no I/O) parsed as TOML, or ``error``
    naming ``source`` and what went wrong."""
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{source}: invalid TOML: not UTF-8 ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: invalid TOML: {exc}") from exc


def unreadable(path: Path, exc: OSError, error: ErrorFactory) -> Exception:
    """The error for a configuration file that cannot be read."""
    return error(f"{path}: cannot read: {exc.strerror or exc}")


def load(
    data: Any,
    schema: type[T],
    source: str,
    error: ErrorFactory,
    style: Style = KeyPath.dotted,
    prefix: tuple[str, ...] = (),
) -> T:
    """``data`` (from :func:`parse_toml`) as a ``schema`` instance; unknown keys, wrong types
    and values out of bounds raise ``error`` naming ``source`` and the key path (``prefix``
    is prepended: the table ``data`` came from)."""
    strict = strict_schema(typing.cast(Any, schema))
    try:
        checked = msgspec.convert(data, strict)
    except msgspec.ValidationError as exc:
        where, what = explain(str(exc), data, strict)
        where = KeyPath(prefix + where.table, where.key)
        raise error(f"{source}: {style(where)}: {what}") from None
    if strict is schema:
        return typing.cast(T, checked)
    return msgspec.convert(data, schema)


@functools.cache
def strict_schema(schema: Any) -> Any:
    """``schema`` itself for a Struct; for a dataclass, a Struct twin with the same fields,
    types, bounds and defaults that refuses unknown keys (msgspec ignores them for
    dataclasses, and a typo must never fall back to a default)."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return schema
    hints = typing.get_type_hints(schema, include_extras=True)
    fields: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(schema):
        default: Any = f.default
        if default is dataclasses.MISSING:
            default = msgspec.field(
                default_factory=typing.cast(Callable[[], Any], f.default_factory)
            )
        fields.append((f.name, _strict_hint(hints[f.name]), default))
    return msgspec.defstruct(
        schema.__name__, fields, frozen=True, forbid_unknown_fields=True, module=schema.__module__
    )


def _strict_hint(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Annotated:
        return typing.Annotated[(_strict_hint(hint.__origin__), *hint.__metadata__)]
    return strict_schema(hint)


def explain(message: str, data: Any, schema: Any) -> tuple[KeyPath, str]:
    """A msgspec error as (where, what): ``[...]`` resolved to the key found in ``data``,
    the message in words, with the bounds of the field and the value found."""
    match = _MSGSPEC_ERROR.fullmatch(message)
    assert match is not None  # the pattern matches any text
    tokens = [name or index for name, index in _PATH_TOKEN.findall(match["path"] or "$")]
    where, node, hint = _walk(tokens, data, schema)
    what = match["what"]
    named = re.fullmatch(r"Object (contains unknown|missing required) field `(.+)`", what)
    if named:
        where = KeyPath(where.table, (*where.key, named[2]))
        return where, "unknown key" if named[1] == "contains unknown" else "required"
    if match["key"]:
        bad = _first_failing(node, _dict_args(hint)[0], keys=True)
        return KeyPath(where.table, (*where.key, bad)), _wrong(what, bad, _dict_args(hint)[0])
    return where, _wrong(what, node, hint)


def _walk(tokens: list[str], data: Any, schema: Any) -> tuple[KeyPath, Any, Any]:
    """Follow msgspec's path through the data and the schema side by side."""
    table: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    node, hint = data, schema
    for token in tokens:
        hint = _unwrap(hint, node)
        if token == "...":
            hint = _dict_args(hint)[1]
            token = _first_failing(node, hint, keys=False)
        elif token.isdigit() and isinstance(node, list):
            hint = typing.get_args(hint)[0]
        else:
            hint = _field_hint(hint, token)
        node = node[int(token)] if isinstance(node, list) else node.get(token)
        if _is_table(_unwrap(hint, node)):
            table, key = (*table, *key, token), ()
        else:
            key = (*key, token)
    return KeyPath(table, key), node, hint


def _unwrap(hint: Any, node: Any) -> Any:
    """The plain type behind ``Annotated`` and, in a union, the member ``node`` was meant for."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = hint.__origin__
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [m for m in typing.get_args(hint) if m not in (type(None), msgspec.UnsetType)]
        tables = [m for m in members if _is_table(m) or typing.get_origin(m) is dict]
        hint = _unwrap((tables if isinstance(node, dict) and tables else members)[0], node)
    return hint


def _is_table(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, msgspec.Struct)


def _field_hint(struct: Any, name: str) -> Any:
    return next(f.type for f in msgspec.structs.fields(struct) if f.encode_name == name)


def _dict_args(hint: Any) -> tuple[Any, Any]:
    key, value = typing.get_args(_unwrap(hint, {}))
    return key, value


def _first_failing(table: Mapping[str, Any], hint: Any, *, keys: bool) -> str:
    """The first entry of ``table`` (msgspec checks them in order) whose key or value
    ``hint`` refuses."""
    for name, value in table.items():
        try:
            msgspec.convert(name if keys else value, hint)
        except msgspec.ValidationError:
            return name
    return "..."  # pragma: no cover - msgspec refused one of them


def _wrong(what: str, value: Any, hint: Any) -> str:
    """msgspec's complaint in the words of a configuration file."""
    got = "a table" if isinstance(value, dict) else repr(value)
    expected = re.fullmatch(r"Expected `([^`]+)`, got `[^`]+`", what)
    if expected:
        words = [_TYPE_WORDS.get(t, t) for t in expected[1].split(" | ")]
        return f"expected {' or '.join(w for w in words if w != 'nothing')}, got {got}"
    if what.startswith("Invalid enum value"):
        info = _plain(mi.type_info(hint))
        choices = ", ".join(map(_literal, info.values)) if isinstance(info, mi.LiteralType) else ""
        return f"must be one of {choices}, got {got}"
    bounds = describe_bounds(mi.type_info(hint))
    if bounds.startswith("matching"):
        return f"must be a string {bounds}, got {got}"
    return f"must be {bounds}, got {got}" if bounds else f"{what}, got {got}"


def _plain(info: mi.Type) -> mi.Type:
    return info.type if isinstance(info, mi.Metadata) else info


def _literal(value: object) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def describe_bounds(info: mi.Type) -> str:
    """The constraints of a scalar field in words (``in [0, 65535]``, ``> 0``, ``non-empty``);
    shared by error messages and the generated documentation."""
    info = _plain(info)
    if isinstance(info, mi.IntType | mi.FloatType):
        return _range(info.gt, info.ge, info.lt, info.le)
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(_code(_literal(v)) for v in info.values)
    if isinstance(info, mi.StrType):
        if info.pattern == NOT_BLANK:
            return "non-blank"
        if info.pattern is not None:
            return f"matching {_code(info.pattern)}"
        return _length(info.min_length, info.max_length)
    if isinstance(info, mi.UnionType):
        return " or ".join(filter(None, (describe_bounds(t) for t in info.types)))
    return ""


def _length(low: int | None, high: int | None) -> str:
    """Both bounds of a string's length when it has both (``1..100 characters``): "non-empty"
    alone hid the upper bound (and was the whole error for a string too long). An upper
    bound alone is left to msgspec's own words (``length <= 100``), which are exact."""
    if low and high is not None:
        return f"{low}..{high} characters"
    if low:
        return "non-empty" if low == 1 else f"at least {low} characters"
    return ""


def _range(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    low = ("(", gt) if gt is not None else ("[", ge) if ge is not None else None
    high = (")", lt) if lt is not None else ("]", le) if le is not None else None
    if low and high:
        return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {_num(low[1])}"
    if high:
        return f"{'<' if high[0] == ')' else '<='} {_num(high[1])}"
    return ""


def _num(value: float | None) -> str:
    """``86400`` rather than ``86400.0`` or ``8.64e+04``: bounds as a person writes them."""
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _code(text: str) -> str:
    """``text`` as a markdown code span (readable in an error message too)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _toml_key(part: str) -> str:
    return part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
