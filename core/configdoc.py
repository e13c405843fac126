"""Configuration reference tables generated from the schema, so the docs cannot drift from it.

A schema (a ``msgspec.Struct`` or dataclass type with ``Annotated[..., Meta(...)]`` fields)
becomes a markdown table: key path, type, default, bounds, description. The table lives in
a document between :data:`START` and :data:`END`; ``python -m siheyi.configdoc
module:Schema=FILE ...`` (``make config-docs``) rewrites it there, and a test fails when the
committed text differs from :func:`splice` of :func:`config_table`.

Two conventions keep tables short: sibling tables of one type (``[sources.nat]``,
``[sources.travel]`` …) are documented once as ``<name>``; a table of tables is documented
as ``<key>`` (``Meta(extra={"key": "colour"})`` names it), or as one row when its
``extra`` says ``"collapse": True`` (its entries repeat another table's keys).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import msgspec
from msgspec import inspect as mi

from core.configschema import describe_bounds

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
_HEADER = "| key | type | default | bounds | description |\n|---|---|---|---|---|\n"
_Table = mi.StructType | mi.DataclassType


class Row(NamedTuple):
    """One documented key."""

    key: str
    type: str
    default: str
    bounds: str
    description: str

    def markdown(self) -> str:
        cells = (f"`{self.key}`", self.type, self.default, self.bounds, self.description)
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def config_table(schema: Any) -> str:
    """The markdown reference table of every key ``schema`` accepts."""
    info = mi.type_info(schema)
    assert isinstance(info, _Table), f"{schema!r} is not a table type"
    return _HEADER + "".join(row.markdown() + "\n" for row in rows(info))


def rows(table: _Table, prefix: tuple[str, ...] = ()) -> Iterator[Row]:
    """The rows of ``table``'s keys, nested tables flattened into dotted paths."""
    groups = _sibling_groups(table)
    for f in table.fields:
        plain, meta = _split(f.type)
        path = (*prefix, f.encode_name)
        nested = _table_in(plain)
        if nested is not None and f.encode_name in groups:
            names = groups.pop(f.encode_name)
            if names:
                yield from _group(nested, (*prefix, "<name>"), names)
        elif nested is not None:
            yield from rows(nested, path)
        elif isinstance(plain, mi.DictType):
            yield from _dict_rows(plain, meta, path, _default(f))
        elif isinstance(plain, mi.ListType) and (item := _table_in(plain.item_type)):
            default = _show(_default(f))
            yield Row(".".join(path), _type(plain), default, describe_bounds(plain), _about(meta))
            yield from rows(item, (*prefix, f"{f.encode_name}[]"))
        else:
            default = _show(_default(f))
            yield Row(".".join(path), _type(plain), default, describe_bounds(plain), _about(meta))


def _group(table: _Table, path: tuple[str, ...], names: Sequence[str]) -> Iterator[Row]:
    choices = "one of " + ", ".join(f"`{n}`" for n in names)
    yield Row(".".join(path), "table", "none", choices, _doc(table))
    yield from rows(table, path)


def _dict_rows(
    info: mi.DictType, meta: mi.Metadata | None, path: tuple[str, ...], default: Any
) -> Iterator[Row]:
    extra = (meta.extra if meta else None) or {}
    about = _about(meta)
    keys = _plain(info.key_type)
    value = _plain(info.value_type)
    nested = _table_in(value)
    if isinstance(keys, mi.LiteralType):  # one row per allowed key
        for key in keys.values:
            shown = _show(default.get(key))
            yield Row(
                ".".join((*path, str(key))), _type(value), shown, describe_bounds(value), about
            )
        return
    if nested is None or extra.get("collapse"):
        yield Row(".".join(path), _type(info), _show(default), _key_bounds(keys), about)
        return
    key_path = (*path, f"<{extra.get('key', 'key')}>")
    yield Row(".".join(key_path), "table", _show(default), _key_bounds(keys), about)
    yield from rows(nested, key_path)


def _sibling_groups(table: _Table) -> dict[str, list[str]]:
    """Fields holding the same table type: the first maps to all their names, the rest to
    nothing (they are documented with the first)."""
    by_type: dict[type, list[str]] = {}
    for f in table.fields:
        nested = _table_in(_split(f.type)[0])
        if nested is not None:
            by_type.setdefault(nested.cls, []).append(f.encode_name)
    groups: dict[str, list[str]] = {}
    for names in by_type.values():
        if len(names) > 1:
            groups.update({name: [] for name in names[1:]})
            groups[names[0]] = names
    return groups


def _split(info: mi.Type) -> tuple[mi.Type, mi.Metadata | None]:
    return (info.type, info) if isinstance(info, mi.Metadata) else (info, None)


def _plain(info: mi.Type) -> mi.Type:
    return _split(info)[0]


def _table_in(info: mi.Type) -> _Table | None:
    """The table type of a field (``X`` or ``X | None``), if it is one."""
    if isinstance(info, mi.UnionType):
        tables = [t for t in info.types if isinstance(_plain(t), _Table)]
        return _table_in(tables[0]) if len(tables) == 1 else None
    info = _plain(info)
    return info if isinstance(info, _Table) else None


def _type(info: mi.Type) -> str:
    info = _plain(info)
    if isinstance(info, mi.UnionType):
        return " or ".join(_type(t) for t in info.types if not isinstance(t, mi.NoneType))
    if isinstance(info, mi.LiteralType):
        return _type(mi.type_info(type(info.values[0])))
    if isinstance(info, mi.ListType):
        item = _type(info.item_type)
        return "array of " + ("tables" if item.startswith("table") else f"{item}s")
    if isinstance(info, mi.DictType):
        value = _type(info.value_type)
        return "table of " + ("tables" if value.startswith("table") else f"{value}s")
    names = {
        mi.IntType: "integer",
        mi.FloatType: "number",
        mi.StrType: "string",
        mi.BoolType: "boolean",
        mi.AnyType: "any",
        mi.StructType: "table",
        mi.DataclassType: "table",
    }
    return names.get(type(info), type(info).__name__)


def _default(f: mi.Field) -> Any:
    if f.default_factory is not msgspec.NODEFAULT:
        return f.default_factory()
    return f.default


def _show(value: Any) -> str:
    if value is msgspec.NODEFAULT:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(msgspec.to_builtins(value), ensure_ascii=False)}`"


def _key_bounds(info: mi.Type) -> str:
    bounds = describe_bounds(info)
    return f"keys {bounds}" if bounds else ""


def _about(meta: mi.Metadata | None) -> str:
    schema = (meta.extra_json_schema if meta else None) or {}
    return str(schema.get("description", ""))


def _doc(table: _Table) -> str:
    text = (inspect.getdoc(table.cls) or "").split("\n\n")[0]
    return text.replace("\n", " ").replace("``", "`")


def splice(document: str, table: str) -> str:
    """``document`` with the text between its markers replaced by ``table``."""
    head, start, rest = document.partition(START)
    _, end, tail = rest.partition(END)
    if not (start and end):
        raise ValueError(f"the document has no {START} … {END} markers")
    return f"{head}{START}\n{table}{END}{tail}"
