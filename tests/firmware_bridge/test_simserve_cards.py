"""The simulator's cards file is checked on load, and ``tap``/``place`` name a card without
ambiguity: ``#3`` by index, ``…1234`` (or ``...1234``) by the last digits (issue 14, part 5)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import idcard
from firmware_bridge.samsim import CARD_FIELDS, SAMPLE_CARDS, card_problems
from firmware_bridge.simserve import SimulatedReaderPort, load_cards, pick_card


def _file(tmp_path: Path, cards: Any) -> Path:
    path = tmp_path / "cards.json"
    path.write_text(json.dumps(cards, ensure_ascii=False), encoding="utf-8")
    return path


def test_the_sample_cards_and_what_decode_prints_load(tmp_path: Path) -> None:
    decoded = [idcard.decode_text(idcard.encode_text(c)) for c in SAMPLE_CARDS.values()]
    for card in decoded:
        card["photo_bytes"] = 1024
    cards = [*SAMPLE_CARDS.values(), *decoded, {"name": "王五", "id_number": "1"}]
    assert load_cards(_file(tmp_path, cards)) == cards
    assert load_cards(_file(tmp_path, {"cards": cards[:1]})) == cards[:1]


def test_card_fields_are_the_fields_idcard_stores() -> None:
    layouts = {"resident": idcard._RESIDENT, "J": idcard._J, "I": idcard._I, "Y": idcard._Y}
    for kind, layout in layouts.items():
        stored = tuple(key for key, _off, _size in layout)
        extra = ("english_name",) if kind == "Y" else ()  # Y stores it in two pieces
        assert set(CARD_FIELDS[kind]) == set(stored + extra), kind


def test_a_misspelled_field_is_an_error_naming_card_and_field(tmp_path: Path) -> None:
    cards = [SAMPLE_CARDS["resident"], {**SAMPLE_CARDS["long_term"], "adress": "x"}]
    with pytest.raises(ValueError) as error:
        load_cards(_file(tmp_path, cards))
    assert str(error.value) == (
        f"{tmp_path / 'cards.json'}: card #1 (李四): field 'adress': unknown field"
        " (did you mean 'address'?)"
    )


@pytest.mark.parametrize(
    ("card", "field", "words"),
    [
        ({"card_type": "Z"}, "card_type", "must be one of resident, J, I, Y"),
        ({"card_type": "I", "english_name": "A", "address": "x"}, "address", "has no address"),
        ({"name": 7}, "name", "must be text"),
        ({"chip_serial": "12"}, "chip_serial", "8 numbers"),
        ({"name": "x" * 20}, "", "name"),  # does not fit its field
        ("a card", "", "must be an object"),
    ],
)
def test_each_kind_of_problem(card: Any, field: str, words: str) -> None:
    (problem,) = card_problems(card)
    assert problem[0] == field and words in problem[1]


def test_every_problem_of_the_file_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_cards(_file(tmp_path, [{"nmae": "a"}, {"card_type": "J", "nation": "01"}]))
    lines = str(error.value).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "card #0: field 'nmae': unknown field (did you mean 'name'?)",
        "card #1: field 'nation': card_type J has no nation",
    ]


def _cards(*endings: str) -> list[dict[str, Any]]:
    return [{"name": f"p{i}", "id_number": "11010119900307" + end} for i, end in enumerate(endings)]


def test_tap_by_index_and_by_last_digits() -> None:
    cards = _cards("1234", "5673", "0002", "9999")
    assert pick_card(cards, "#3")["name"] == "p3"
    assert pick_card(cards, "…1234")["name"] == "p0"
    assert pick_card(cards, "...73")["name"] == "p1"
    assert pick_card(cards, "5673")["name"] == "p1"  # no card #5673: unambiguous
    assert pick_card(cards, "2")["name"] == "p2"  # #2 and …2 are the same card
    with pytest.raises(ValueError, match=r"3 is ambiguous \(cards #1, #3\): say #3 .* or …3"):
        pick_card(cards, "3")
    with pytest.raises(ValueError, match=r"…9 names cards #0, #1: give more digits, or #N"):
        pick_card(_cards("1239", "9999"), "…9")
    with pytest.raises(ValueError, match=r"no card #4 \(cards: #0-#3\)"):
        pick_card(cards, "#4")
    with pytest.raises(ValueError, match="no card's number ends in 8888"):
        pick_card(cards, "…8888")


def test_the_control_line_answers_an_ambiguous_tap_with_an_error() -> None:
    port = SimulatedReaderPort()
    cards = _cards("0001", "0003")  # "1": card #1, or the number ending in 1 (card #0)
    assert port.control("tap 1 0", cards).startswith("error: 1 is ambiguous (cards #0, #1)")
    assert not port.sam.present
    assert port.control("place #1", cards) == "placed p1"
    assert port.control("place …0001", cards) == "placed p0" and port.sam.present


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("birth", "1990/03/07"),  # once "birth: 10 characters do not fit 16 bytes"
        ("birth", "1990-02-30"),  # not a real date
        ("valid_from", "2015-6-1"),
        ("valid_to", "never"),  # once served as is
        ("valid_to", "20350601"),
    ],
)
def test_a_bad_date_is_named_as_a_date(tmp_path: Path, field: str, value: str) -> None:
    card = {**SAMPLE_CARDS["resident"], field: value}
    also = " or 长期" if field == "valid_to" else ""
    assert card_problems(card) == [(field, f"must be a date YYYY-MM-DD{also}, not {value!r}")]
    with pytest.raises(ValueError, match=f"card #0 \\(张三\\): field '{field}': must be a date"):
        load_cards(_file(tmp_path, [card]))


def test_good_dates_load_long_term_and_blank_included() -> None:
    long_term = SAMPLE_CARDS["long_term"]
    assert long_term["valid_to"] == "长期" and card_problems(long_term) == []
    assert card_problems({**SAMPLE_CARDS["resident"], "valid_from": ""}) == []
    assert card_problems({**SAMPLE_CARDS["permit_j"], "birth": "2000-02-29"}) == []  # leap day
    assert card_problems({"card_type": "I", "valid_to": "长期"}) == []
    assert card_problems({"valid_from": "长期"})[0][0] == "valid_from"


def test_date_checks_agree_under_micropython() -> None:
    """samsim runs on the MCU too: the same cards get the same answers there."""
    # imported by name: that module's vectors are untyped (they run under MicroPython too)
    mp: Any = importlib.import_module("tests.firmware_bridge.test_micropython")

    script = (
        "from firmware_bridge import samsim\n"
        "for c in ({'birth': '1990-02-30'}, {'valid_to': 'never'}, {'valid_to': '长期'},"
        " {'birth': '2000-02-29'}):\n"
        "    print(' | '.join(f + ': ' + r for f, r in samsim.card_problems(c)))\n"
    )
    answers = [
        subprocess.run(
            [binary, "-c", script], capture_output=True, text=True, cwd=mp.ROOT, timeout=60
        )
        for binary in (mp.micropython_binary(), sys.executable)
    ]
    assert answers[0].returncode == 0, answers[0].stderr
    assert answers[0].stdout == answers[1].stdout
    assert answers[0].stdout.count("must be a date") == 2
