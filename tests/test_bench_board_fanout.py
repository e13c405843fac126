"""bench/board_fanout.py at a tiny scale, so it cannot rot, and its delivery matching.

The bench itself runs end to end (its own server with two workers on the tests'
PostgreSQL, kiosk sockets, boards, taps, the bare baseline); only counts are checked here —
speed is the bench's business, not the tests'.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.idnumbers import mask
from tests.pgserver import PgCluster

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # the bench's modules import each other by name
accounts = importlib.import_module("boardfanout_accounts")
match = importlib.import_module("boardfanout_match")

IDS = ["110101199003071234", "110101199003075678", "120101198511110011"]


def board(role: str, *sites: str) -> object:
    return accounts.Board(role, role, frozenset(sites) if sites else None, "-")


def test_a_tap_reaches_the_admins_and_its_sites_guards_once_each() -> None:
    masks = [mask(i) for i in IDS]
    sent = [["k1", 0, 100.0, 200], ["k1", 1, 101.0, 200], ["k2", 0, 100.5, 200]]
    sites = {"k1": "site-00", "k2": "site-01"}
    boards = [board("admin"), board("guard", "site-00"), board("guard", "site-01")]
    arrivals = [
        [0, "k1", masks[0], 100.1, 100.2],
        [0, "k1", masks[1], 101.1, 101.3],  # the kiosk's next tap, told apart by its person
        [0, "k2", masks[0], 100.6, 100.7],
        [1, "k1", masks[0], 100.1, 100.4],
        [1, "k1", masks[0], 100.1, 100.5],  # the same tap twice at one board
        [2, "k2", masks[0], 100.6, 100.6],
        [2, "k9", masks[0], 100.6, 100.6],  # no such tap
    ]
    figures = match.deliveries(sent, masks, sites, boards, [0, 1, 2], {"arrivals": arrivals})
    assert figures["expected"] == 6  # admin 3, site-00's guard 2, site-01's guard 1
    assert figures["delivered"] == 5  # site-00's guard never got k1's second tap
    assert figures["dropped"] == 1
    assert (figures["duplicates"], figures["unmatched"]) == (1, 1)
    assert figures["latency"]["max_ms"] == pytest.approx(400.0)
    assert figures["latency"]["p50_ms"] == pytest.approx(200.0)


def test_failed_taps_and_boards_not_open_are_not_expected() -> None:
    masks = [mask(IDS[0])]
    sent = [["k1", 0, 100.0, 429], ["k1", 0, 110.0, 200]]
    figures = match.deliveries(
        sent, masks, {"k1": "site-00"}, [board("admin"), board("admin")], [1], {"arrivals": []}
    )
    assert (figures["taps_failed"], figures["expected"], figures["dropped"]) == (1, 1, 1)


def test_masks_shared_by_two_people_are_left_out() -> None:
    twins = ["110101199003071234", "110101200001011234", "120101198511110011"]
    assert mask(twins[0]) == mask(twins[1])
    assert match.unique_masks(twins) == [2]


def test_guards_spread_over_the_sites_then_admins() -> None:
    planned = accounts.plan_boards(5, 2, 2)
    assert [(role, sites) for _, role, sites in planned] == [
        ("guard", ["site-00"]),
        ("guard", ["site-01"]),
        ("guard", ["site-00"]),
        ("admin", []),
        ("admin", []),
    ]


@pytest.mark.timeout(240)
def test_the_bench_runs_at_a_tiny_scale(pg_cluster: PgCluster) -> None:
    database = pg_cluster.new_database(migrated=False)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "board_fanout.py"), "--database", database,
         "--kiosks", "50", "--boards", "3", "--admins", "1", "--seconds", "2", "--rate", "5",
         "--people", "200", "--logins", "1", "--drain", "2", "--hold-seconds", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=220, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["kiosks"], summary["boards"]) == (50, 3)
    # 10 taps from kiosks 0-9 (sites 0-9): the admin sees all, site-00's and site-01's guard one
    assert (summary["delivered"], summary["dropped"]) == (12, 0)
    assert not math.isnan(summary["event_p99_ms"])
    assert not math.isnan(summary["event_p99_ms_without_kiosks"])  # the same taps, no sockets
    assert summary["bare_rss_per_socket_kib"] is not None
