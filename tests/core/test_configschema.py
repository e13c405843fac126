"""The shared TOML→schema loader and the reference-table generator, on small schemas."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest
from msgspec import Meta, Struct

from core import configdoc
from core.configschema import KeyPath, Style, load, parse_toml, unreadable
from siheyi import configdoc as siheyi_configdoc


class Boom(ValueError):
    pass


class Rule(Struct, frozen=True, forbid_unknown_fields=True):
    """One rule."""

    on: bool
    level: Annotated[int, Meta(gt=0, le=9, description="how loud | how long")] = 1


class Outer(Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, description="what it is called")] = "x"
    rules: Annotated[dict[str, Rule], Meta(extra={"key": "rule"})] = {}
    words: dict[Literal["yes", "no"], str] = msgspec.field(default_factory=lambda: {"yes": "是"})
    left: Rule | None = None
    right: Rule | None = None
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Inner:
    rate: Annotated[float, Meta(ge=0.5, lt=2)] = 1.0


@dataclass(frozen=True)
class Top:
    inner: Inner = field(default_factory=Inner)


def fails(data: object, schema: type, style: Style = KeyPath.dotted) -> str:
    with pytest.raises(Boom) as info:
        load(data, schema, "f.toml", Boom, style)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"rules": {"ok": {"on": True}, "a b": {"on": True, "x": 1}}},
            'rules."a b".x: unknown key',
        ),
        ({"rules": {"r": {"on": True, "level": 10}}}, "rules.r.level: must be in (0, 9], got 10"),
        ({"rules": {"r": {"level": 1}}}, "rules.r.on: required"),
        ({"rules": {"r": 3}}, "rules.r: expected a table, got 3"),
        ({"words": {"yes": "y", "maybe": "?"}}, 'words.maybe: must be one of "no", "yes"'),
        ({"words": {"no": 1}}, "words.no: expected a string, got 1"),
        ({"left": {"on": 1}}, "left.on: expected true or false, got 1"),
        ({"name": ""}, "name: must be non-empty, got ''"),
        ({"mode": "c"}, 'mode: must be one of "a", "b", got \'c\''),
        ({"bogus": 1}, "f.toml: bogus: unknown key"),
    ],
)
def test_errors_name_the_file_and_the_key_path(data: object, message: str) -> None:
    assert message in fails(data, Outer)


def test_server_style_names_the_table_header() -> None:
    bracketed = KeyPath.bracketed
    assert fails({"rules": {"r": {"on": "no"}}}, Outer, bracketed).endswith(
        "f.toml: [rules.r] on: expected true or false, got 'no'"
    )
    assert "f.toml: [left]: expected a table" in fails({"left": 1}, Outer, bracketed)
    assert "f.toml: words.maybe:" in fails({"words": {"maybe": ""}}, Outer, bracketed)


def test_prefix_names_the_table_the_data_came_from() -> None:
    with pytest.raises(Boom, match=r"f.toml: \[outer.left\] on: required"):
        load({"left": {}}, Outer, "f.toml", Boom, KeyPath.bracketed, prefix=("outer",))


def test_dataclass_schemas_refuse_unknown_keys_and_stay_dataclasses() -> None:
    assert "inner.rat: unknown key" in fails({"inner": {"rat": 1}}, Top)
    assert "inner.rate: must be in [0.5, 2), got 2" in fails({"inner": {"rate": 2}}, Top)
    top = load({"inner": {"rate": 1}}, Top, "f.toml", Boom)
    assert top == Top(Inner(1.0)) and isinstance(top.inner.rate, float)
    assert dataclasses.replace(top.inner, rate=0.7).rate == 0.7


def test_parse_toml_names_the_file(tmp_path: Path) -> None:
    try:
        (tmp_path / "missing.toml").read_bytes()
    except OSError as exc:
        assert "missing.toml: cannot read" in str(unreadable(tmp_path / "missing.toml", exc, Boom))
    with pytest.raises(Boom, match=r"bad\.toml: invalid TOML"):
        parse_toml(b"[x\n", "bad.toml", Boom)
    with pytest.raises(Boom, match=r"bad\.toml: invalid TOML: not UTF-8"):
        parse_toml(b"a = '\xff'\n", "bad.toml", Boom)


def test_table_rows() -> None:
    table = configdoc.config_table(Outer)
    lines = table.splitlines()
    assert lines[0] == "| key | type | default | bounds | description |"
    assert '| `name` | string | `"x"` | non-empty | what it is called |' in lines
    assert "| `rules.<rule>` | table | `{}` |  |  |" in lines
    assert "| `rules.<rule>.on` | boolean | required |  |  |" in lines
    assert "| `rules.<rule>.level` | integer | `1` | in (0, 9] | how loud \\| how long |" in lines
    assert '| `words.yes` | string | `"是"` |  |  |' in lines
    assert "| `words.no` | string | none |  |  |" in lines
    # sibling tables of one type: documented once
    assert "| `<name>` | table | none | one of `left`, `right` | One rule. |" in lines
    assert "| `<name>.level` | integer | `1` | in (0, 9] | how loud \\| how long |" in lines
    assert not any(line.startswith("| `left") for line in lines)
    assert '| `mode` | string | `"a"` | one of `"a"`, `"b"` |  |' in lines


def test_splice_and_main(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="markers"):
        configdoc.splice("no markers here", "| t |\n")
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{configdoc.START}\nold\n{configdoc.END}\noutro\n", encoding="utf-8")
    assert siheyi_configdoc.main([f"tests.core.test_configschema:Top={doc}"]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(f"intro\n{configdoc.START}\n| key |") and "old" not in text
    assert text.endswith(f"{configdoc.END}\noutro\n")
    assert "| `inner.rate` | number | `1` | in [0.5, 2) |  |" in text
    assert configdoc.splice(text, configdoc.config_table(Top)) == text
