"""The SKEW column of ``kiosk provision status`` counts the way the server stores it and
docs/api.md's ``clock_skew_s`` says: server clock minus kiosk clock (issue 14, part 3).

A kiosk whose heartbeat says it was sent 5 s ago has a clock 5 s behind: ``+5.0s``, and the
table and docs/provisioning.md say which way the sign goes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle
from tests.provisioning.test_cli import run

Client = TestClient[web.Request, web.Application]
DOC = Path(__file__).resolve().parents[2] / "docs" / "provisioning.md"


async def test_a_kiosk_5_s_behind_shows_plus_5(
    client: Client,
    auth: dict[str, str],
    device: DeviceBundle,
    db_path: Path | str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    beat = {"boot_id": "b", "sent_at": time.time() - 5}
    resp = await client.post("/v1/heartbeat", json=beat, headers=auth)
    assert resp.status == 200
    assert run(["provision", "status", "--database", str(db_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith(device.serial))
    skew = row.split()[-2]
    assert skew.startswith("+") and abs(float(skew[1:-1]) - 5.0) <= 0.2, row
    assert lines[-1].startswith("SKEW: server clock minus kiosk clock")


def test_the_doc_says_server_minus_kiosk() -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    assert "SKEW is the server's clock minus the kiosk's" in text
