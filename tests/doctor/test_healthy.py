"""A healthy kiosk: every check ok, exit status 0."""

from __future__ import annotations

from tests.doctor.conftest import Kiosk


async def test_a_healthy_kiosk_passes_every_check(kiosk: Kiosk) -> None:
    report = await kiosk.run()
    for check in report.checks:
        print(check)
    assert [c.name for c in report.checks if c.status != "ok"] == []
    assert report.ok
