"""The portable JSON encoder matches CPython's json for the output it is used for."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.jsonenc import dumps


def reference(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSONISH)
def test_matches_cpython_json(obj):
    assert dumps(obj) == reference(obj)
    assert json.loads(dumps(obj)) == obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"b": 1, "a": [True, False, None]}, '{"a":[true,false,null],"b":1}'),
        ('q"b\\n\n\x00\x1f\x7f', '"q\\"b\\\\n\\n\\u0000\\u001f\x7f"'),
        ("长期", '"长期"'),
        ((1, -2), "[1,-2]"),
        (1.5, "1.5"),
    ],
)
def test_exact_output(obj, expected):
    assert dumps(obj) == expected


def test_refuses_what_json_cannot_say():
    with pytest.raises(ValueError):
        dumps(float("nan"))
    with pytest.raises(ValueError):
        dumps(float("inf"))
    with pytest.raises(TypeError):
        dumps(b"bytes")
    with pytest.raises(TypeError):
        dumps({1: "x"})
