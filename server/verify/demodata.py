"""Deterministic demo population for the four sources.

``generate_people`` gives CSV-shaped rows (the importer's columns, as text) with valid ID
numbers and a realistic mix: ~80 % green, 12 % yellow, 5 % red and 3 % without a code; most
NAT results negative and recent, some older than the window, a few positive, some missing;
0–3 vaccine doses; ~5 % travel-flagged. ``people_by_outcome`` runs the real policy over those
rows so a demo can pick people that will pass, be checked or have an expired NAT.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from core import idnumbers as identity
from core.checks import (
    SOURCE_NAMES,
    Checks,
    HealthCode,
    NatResult,
    SourceResult,
    Travel,
    Vaccination,
)
from core.policy import INVALID_CREDENTIAL, SitePolicy, decide
from server.storage.db import connect
from server.verify.importer import ImportReport, import_rows

Rows = dict[str, list[dict[str, str]]]

AREA_CODES = (
    "110101",  # 北京 东城区
    "110105",  # 北京 朝阳区
    "310104",  # 上海 徐汇区
    "310115",  # 上海 浦东新区
    "440305",  # 深圳 南山区
    "440106",  # 广州 天河区
    "330106",  # 杭州 西湖区
    "320102",  # 南京 玄武区
    "510107",  # 成都 武侯区
    "420106",  # 武汉 武昌区
)
_LABS = ("金域医学", "迪安诊断", "华大基因", "艾迪康")
_VACCINES = ("北京生物", "科兴中维", "智飞龙科马")
_RISK_AREAS = ("上海市浦东新区", "广州市白云区", "深圳市宝安区", "西安市雁塔区")
_YELLOW_REASONS = ("14天内到访中高风险地区", "未按时完成核酸检测")
_RED_REASONS = ("密切接触者", "确诊或疑似病例")
_BIRTH_FIRST = date(1940, 1, 1)
_BIRTH_LAST = date(2015, 12, 31)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _id_number(rng: random.Random, taken: set[str]) -> str:
    span = (_BIRTH_LAST - _BIRTH_FIRST).days
    while True:
        birth = _BIRTH_FIRST + timedelta(days=rng.randrange(span + 1))
        number = identity.make_id_number(
            rng.choice(AREA_CODES), birth.strftime("%Y%m%d"), f"{rng.randrange(1000):03d}"
        )
        if number not in taken:
            taken.add(number)
            return number


def generate_people(n: int, seed: int, now: datetime) -> Rows:
    """Return ``{"health_code": [...], "nat": [...], "vaccination": [...], "travel": [...]}``.

    Each list holds importer rows (column → text). Same ``n``, ``seed`` and ``now`` give the
    same rows (the helpers draw from ``rng`` in a fixed order). ``now`` must be
    timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    rows: Rows = {kind: [] for kind in SOURCE_NAMES}
    taken: set[str] = set()
    for _ in range(n):
        number = _id_number(rng, taken)
        latest = _nat_history(rng, number, now, rows["nat"])
        _health_code(rng, number, now, latest, rows["health_code"])
        _vaccinations(rng, number, rows["vaccination"])
        flagged = rng.random() < 0.05
        rows["travel"].append(
            {
                "id_number": number,
                "flagged": "1" if flagged else "0",
                "area": rng.choice(_RISK_AREAS) if flagged else "",
                "updated_at": _ts(_hours_ago(rng, now, 0, 24)),
            }
        )
    return rows


def _hours_ago(rng: random.Random, now: datetime, lo: float, hi: float) -> datetime:
    return now - timedelta(hours=rng.uniform(lo, hi))


def _nat_history(
    rng: random.Random, number: str, now: datetime, out: list[dict[str, str]]
) -> tuple[str, datetime] | None:
    """Most people have a recent negative, some an old one, a few a positive, some none."""
    roll = rng.random()
    if roll < 0.78:
        latest: tuple[str, datetime] | None = ("negative", _hours_ago(rng, now, 2, 40))
    elif roll < 0.88:
        latest = ("negative", _hours_ago(rng, now, 50, 200))
    elif roll < 0.90:
        latest = ("positive", _hours_ago(rng, now, 5, 30))
    else:
        return None
    assert latest is not None
    result, sampled = latest
    if rng.random() < 0.5:  # an earlier negative test as history
        earlier = sampled - timedelta(hours=rng.uniform(72, 240))
        out.append(_nat_row(number, earlier, "negative", rng))
    out.append(_nat_row(number, sampled, result, rng))
    return latest


def _health_code(
    rng: random.Random,
    number: str,
    now: datetime,
    latest: tuple[str, datetime] | None,
    out: list[dict[str, str]],
) -> None:
    """A positive NAT makes the code red; otherwise mostly green, some yellow or red, a
    few people with no code at all."""
    roll = rng.random()
    if latest is not None and latest[0] == "positive":
        colour, reason = "red", "核酸检测阳性"
    elif roll < 0.80:
        colour, reason = "green", ""
    elif roll < 0.92:
        colour, reason = "yellow", rng.choice(_YELLOW_REASONS)
    elif roll < 0.97:
        colour, reason = "red", rng.choice(_RED_REASONS)
    else:
        return
    updated = _ts(_hours_ago(rng, now, 0, 72))
    out.append({"id_number": number, "colour": colour, "reason": reason, "updated_at": updated})


def _vaccinations(rng: random.Random, number: str, out: list[dict[str, str]]) -> None:
    doses = rng.choices((0, 1, 2, 3), weights=(8, 7, 30, 55))[0]
    day = date(2021, 3, 1) + timedelta(days=rng.randrange(150))
    vaccine = rng.choice(_VACCINES)
    for dose in range(1, doses + 1):
        out.append(
            {
                "id_number": number,
                "dose": str(dose),
                "vaccinated_at": day.isoformat(),
                "vaccine": vaccine,
            }
        )
        day += timedelta(days=rng.randrange(21, 57) if dose == 1 else rng.randrange(180, 300))


def _nat_row(number: str, sampled: datetime, result: str, rng: random.Random) -> dict[str, str]:
    return {
        "id_number": number,
        "sampled_at": _ts(sampled),
        "result": result,
        "lab": rng.choice(_LABS),
    }


def _checks_from_rows(rows: Rows) -> dict[str, Checks]:
    """Rebuild, per person, the checks the local sources would return for these rows."""
    people: dict[str, dict[str, SourceResult[object]]] = {}

    def slot(number: str) -> dict[str, SourceResult[object]]:
        return people.setdefault(
            number, {name: SourceResult.missing() for name in ("hc", "nat", "vac", "tr")}
        )

    for r in rows.get("health_code", []):
        slot(r["id_number"])["hc"] = SourceResult.ok(
            HealthCode(r["colour"], r["reason"], datetime.fromisoformat(r["updated_at"]))
        )
    latest: dict[str, NatResult] = {}
    for r in rows.get("nat", []):
        nat = NatResult(r["result"], datetime.fromisoformat(r["sampled_at"]), r["lab"])
        slot(r["id_number"])
        if r["id_number"] not in latest or nat.sampled_at > latest[r["id_number"]].sampled_at:
            latest[r["id_number"]] = nat
    for number, nat in latest.items():
        people[number]["nat"] = SourceResult.ok(nat)
    doses: dict[str, list[date]] = {}
    for r in rows.get("vaccination", []):
        slot(r["id_number"])
        doses.setdefault(r["id_number"], []).append(date.fromisoformat(r["vaccinated_at"]))
    for number, days in doses.items():
        people[number]["vac"] = SourceResult.ok(Vaccination(len(days), max(days)))
    for r in rows.get("travel", []):
        slot(r["id_number"])["tr"] = SourceResult.ok(
            Travel(r["flagged"] == "1", r["area"], datetime.fromisoformat(r["updated_at"]))
        )
    return {
        number: Checks(s["hc"], s["nat"], s["vac"], s["tr"])  # type: ignore[arg-type]
        for number, s in people.items()
    }


def people_by_outcome(
    rows: Rows, now: datetime, policy: SitePolicy | None = None
) -> dict[str, list[str]]:
    """Map each outcome (``pass``, ``check``, ``nat_expired``, ``invalid_credential``) to the ID
    numbers that get it at ``now`` under ``policy``, in row order.

    ``invalid_credential`` holds copies of the first people's numbers with a wrong check
    character: tapping them demonstrates the invalid-card prompt.
    """
    policy = policy or SitePolicy()
    result: dict[str, list[str]] = {"pass": [], "check": [], "nat_expired": []}
    checks = _checks_from_rows(rows)
    for number, person in checks.items():
        result[decide(person, now, policy).outcome].append(number)
    result[INVALID_CREDENTIAL] = [corrupt_check_char(n) for n in list(checks)[:5]]
    return result


def corrupt_check_char(id_number: str) -> str:
    """Return ``id_number`` with a wrong (but well-formed) check character."""
    right = id_number[17]
    wrong = "0" if right != "0" else "1"
    return id_number[:17] + wrong


def pick_demo_people(
    rows: Rows,
    now: datetime,
    counts: Mapping[str, int],
    policy: SitePolicy | None = None,
) -> list[tuple[str, str]]:
    """Pick ``counts[outcome]`` people per outcome as ``(outcome, id_number)`` pairs.

    Raises ``ValueError`` when the population has too few people of some outcome.
    """
    groups = people_by_outcome(rows, now, policy)
    picked: list[tuple[str, str]] = []
    for outcome, count in counts.items():
        available: Sequence[str] = groups.get(outcome, [])
        if len(available) < count:
            raise ValueError(f"only {len(available)} demo people with outcome {outcome!r}")
        picked.extend((outcome, number) for number in available[:count])
    return picked


def load_demo_data(
    database: str | Path, n: int = 500, seed: int = 2022, *, now: datetime | None = None
) -> dict[str, ImportReport]:
    """Generate ``n`` demo people and upsert them into ``database``; one report per kind."""
    now = now or datetime.now(UTC)
    rows = generate_people(n, seed, now)
    reports: dict[str, ImportReport] = {}
    with connect(database) as conn:
        for kind, kind_rows in rows.items():
            numbered = list(enumerate(kind_rows, start=2))
            reports[kind] = import_rows(conn, kind, numbered, source=f"demo(seed={seed})")
    return reports
