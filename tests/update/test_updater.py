"""The updater from offer to trial, to commit or rollback, with fake server and fake pip."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import msgspec
import pytest

from core import wire
from core.idnumbers import make_id_number
from device.errors import ServerUnavailable
from device.link.client import ChunkSink
from device.update.install import InstallError
from device.update.settings import UpdateSettings
from device.update.state import load, new_record
from device.update.updater import Updater
from tests.update.fakes import (
    KEY_HEX,
    FakeBuilder,
    FakeSource,
    install_first,
    offer_for,
    running,
    state,
    wheel_bytes,
    write_release,
)


def settings(tmp_path: Path, **changes: object) -> UpdateSettings:
    values: dict[str, object] = {
        "release_key": KEY_HEX,
        "root": str(tmp_path / "opt"),
        "state_dir": str(tmp_path / "var"),
        "idle_s": 0.0,
        **changes,
    }
    return UpdateSettings(**values)  # type: ignore[arg-type]


def updater(
    tmp_path: Path, data: bytes, running_version: str = "1.0", **changes: object
) -> Updater:
    if not (tmp_path / "opt" / "current").exists():
        install_first(tmp_path / "opt", "1.0")
    up = Updater(
        settings(tmp_path, **changes),
        FakeSource(data),
        running_version=running_version,
        builder=FakeBuilder(),
        poll_s=0.01,
    )
    up.idle_for = lambda: 100.0
    return up


async def offered(up: Updater, offer: wire.UpdateOffer) -> None:
    """Hand ``offer`` to a running updater and wait for it to be carried out or refused."""
    task = asyncio.create_task(up.run())
    try:
        up.offer(offer)
        async with asyncio.timeout(20):
            while not up.exit_requested.is_set():
                report = up.report()
                if report is not None and report.state == "failed":
                    break
                if report is not None and "retrying" in (report.detail or ""):
                    break
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_offer_is_installed_switched_to_and_put_on_trial(tmp_path: Path) -> None:
    up = updater(tmp_path, wheel_bytes("2.0"))
    await offered(up, offer_for("2.0"))
    assert up.exit_requested.is_set()
    assert running(tmp_path / "opt") == "2.0"
    assert (tmp_path / "opt" / "previous").readlink() == Path("releases/1.0")
    written = state(tmp_path / "var")
    assert (written["state"], written["previous"], written["boots"]) == ("trial", "1.0", 0)
    assert up.report() == wire.UpdateReport("2.0", "trial", None, up.report().at)  # type: ignore[union-attr]
    assert not list((tmp_path / "var" / "update").glob("downloads/*"))


@pytest.mark.parametrize(
    ("offer", "served", "why"),
    [
        (offer_for("2.0", signature="ab" * 64), wheel_bytes("2.0"), "not signed by the pinned"),
        (offer_for("2.0", sha256="0" * 64), wheel_bytes("2.0"), "SHA-256"),
        (offer_for("2.0"), wheel_bytes("2.0") + b"more", "larger than"),
        (offer_for("2.0", size=10**10), wheel_bytes("2.0"), "outside"),
        (offer_for("2.0"), wheel_bytes("2.0")[:-3], "downloaded"),
    ],
    ids=["bad-signature", "wrong-sha256", "oversized", "absurd-size", "short"],
)
async def test_a_release_that_is_not_the_signed_one_is_never_installed(
    tmp_path: Path, offer: wire.UpdateOffer, served: bytes, why: str
) -> None:
    up = updater(tmp_path, served)
    await offered(up, offer)
    report = up.report()
    assert report is not None and report.state == "failed" and why in (report.detail or "")
    assert report.retry is False  # refused: counts against the release
    assert not (tmp_path / "opt" / "releases" / "2.0").exists()
    assert running(tmp_path / "opt") == "1.0"
    assert not up.exit_requested.is_set()
    assert not list((tmp_path / "var" / "update").glob("downloads/*"))  # no .part left
    up.offer(offer)  # the same release again: refused for good
    assert up._offer is None


async def test_no_pinned_key_refuses_every_offer(tmp_path: Path) -> None:
    up = updater(tmp_path, wheel_bytes("2.0"), release_key="")
    await offered(up, offer_for("2.0"))
    report = up.report()
    assert report is not None and report.state == "failed"
    assert "no release key" in (report.detail or "")


async def test_a_server_that_cannot_deliver_is_retried_at_the_next_offer(tmp_path: Path) -> None:
    class Down(FakeSource):
        async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None:
            raise ServerUnavailable("no route")

    up = updater(tmp_path, b"")
    up._source = Down(b"")
    await offered(up, offer_for("2.0"))
    report = up.report()
    assert report is not None and report.state == "downloading"
    up.offer(offer_for("2.0"))
    assert up._offer is not None  # taken again


async def test_an_offer_during_a_tap_waits_until_the_tap_has_ended(tmp_path: Path) -> None:
    up = updater(tmp_path, wheel_bytes("2.0"))
    tap_running = True
    order: list[str] = []

    async def drain() -> None:
        order.append(f"drain while tap_running={tap_running}")

    up.idle_for = lambda: None if tap_running else 100.0
    up.drain = drain
    task = asyncio.create_task(up.run())
    up.offer(offer_for("2.0"))
    async with asyncio.timeout(20):
        while not (tmp_path / "opt" / "releases" / "2.0").exists():
            await asyncio.sleep(0.01)
    for _ in range(20):  # the updater polls every 10 ms: it has looked many times
        await asyncio.sleep(0.01)
    assert not up.exit_requested.is_set() and running(tmp_path / "opt") == "1.0"
    tap_running = False
    async with asyncio.timeout(20):
        await up.exit_requested.wait()
    await task
    assert order == ["drain while tap_running=False"]
    assert running(tmp_path / "opt") == "2.0"


async def test_a_trial_whose_self_test_passes_is_committed_and_reported_once(
    tmp_path: Path,
) -> None:
    first = updater(tmp_path, wheel_bytes("2.0"))
    await offered(first, offer_for("2.0"))
    up = updater(tmp_path, b"", running_version="2.0")  # the new agent

    async def ok() -> str:
        return ""

    up.self_test = ok
    await asyncio.wait_for(up._settle_trial(), 10)
    report = up.report()
    assert report is not None and report.state == "committed"
    await up.delivered({"version": "2.0", "state": "committed", "detail": None, "at": 1.0})
    assert up.report() is not None  # another report than the one stored: still due
    await up.delivered(msgspec.to_builtins(report))
    assert up.report() is None
    record = load(tmp_path / "var" / "update" / "state.json")
    assert record is not None and record.acked
    assert running(tmp_path / "opt") == "2.0"


async def test_a_trial_whose_self_test_fails_switches_back_and_exits(tmp_path: Path) -> None:
    first = updater(tmp_path, wheel_bytes("2.0"))
    await offered(first, offer_for("2.0"))
    up = updater(tmp_path, b"", running_version="2.0")

    async def broken() -> str:
        return "the lookup failed although the server answers"

    up.self_test = broken
    await asyncio.wait_for(up._settle_trial(), 10)
    assert up.exit_requested.is_set()
    assert running(tmp_path / "opt") == "1.0"
    written = state(tmp_path / "var")
    assert written["state"] == "rolled_back" and written["failing"] is None
    assert "self-test failed" in str(written["detail"])
    again = updater(tmp_path, b"", running_version="1.0")  # the old agent, restarted
    assert again.report() is not None and again.report().state == "rolled_back"  # type: ignore[union-attr]
    again.offer(offer_for("2.0"))  # offered again: not retried
    assert again._offer is None


async def test_an_installed_release_left_by_an_interrupted_switch_is_reused(
    tmp_path: Path,
) -> None:
    install_first(tmp_path / "opt", "1.0")
    up = updater(tmp_path, wheel_bytes("2.0"))
    up._builder = FakeBuilder(doctor_exit=0)
    await offered(up, offer_for("2.0"))
    (tmp_path / "opt" / "current").unlink()
    (tmp_path / "opt" / "current").symlink_to("releases/1.0")
    marker = tmp_path / "opt" / "releases" / "2.0" / "siheyi-release.json"
    before = marker.stat().st_mtime_ns
    again = updater(tmp_path, wheel_bytes("2.0"))
    await offered(again, offer_for("2.0"))
    assert marker.stat().st_mtime_ns == before
    assert running(tmp_path / "opt") == "2.0"


async def test_an_offered_version_that_is_no_plain_name_is_refused(tmp_path: Path) -> None:
    """A version becomes a directory name: ``../x`` must never reach the file system."""
    offer = offer_for("2.0")
    up = updater(tmp_path, wheel_bytes("2.0"))
    await offered(
        up,
        wire.UpdateOffer(
            "../x", offer.filename, offer.sha256, offer.signature, offer.size, offer.url
        ),
    )
    report = up.report()
    assert report is not None and report.state == "failed"
    assert not (tmp_path / "opt" / "x").exists()


async def test_a_kiosk_not_installed_under_root_downloads_nothing(tmp_path: Path) -> None:
    """Run from a clone there is no release to come back to: no update is ever tried."""
    source = FakeSource(wheel_bytes("2.0"))
    up = Updater(
        settings(tmp_path), source, running_version="1.0", builder=FakeBuilder(), poll_s=0.01
    )
    await offered(up, offer_for("2.0"))
    report = up.report()
    assert (
        report is not None and report.state == "failed" and "no way back" in (report.detail or "")
    )
    assert source.fetched == []


async def test_a_switch_that_fails_after_the_drain_still_restarts_into_the_old_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent has stopped taking taps: it must not carry on without them."""

    def broken(link: Path, target: str) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr("device.update.updater.switch_link", broken)
    up = updater(tmp_path, wheel_bytes("2.0"))
    await offered(up, offer_for("2.0"))
    assert up.exit_requested.is_set()
    assert running(tmp_path / "opt") == "1.0"
    report = up.report()
    assert report is not None and report.state == "failed" and "read-only" in (report.detail or "")


def test_a_report_never_carries_a_clear_id_number() -> None:
    """A detail quoting some tool's output is masked: the server refuses clear numbers."""
    number = make_id_number("110105", "19491231", "002")
    report = new_record("2.0", "failed", detail=f"pip said {number}").report()
    assert report.detail is not None and number not in report.detail
    assert "1101**********" in report.detail


async def test_offers_repeated_while_a_release_fails_do_not_try_it_again(tmp_path: Path) -> None:
    """Heartbeats keep offering during a long install; once it failed, it is not redone."""
    source = FakeSource(wheel_bytes("2.0"))
    up = updater(tmp_path, b"")
    up._source = source

    class Failing(FakeBuilder):
        async def build(self, wheel: Path, partial: Path) -> None:
            up.offer(offer_for("2.0"))  # the next heartbeat's offer, mid-install
            raise InstallError("pip install failed (exit 1)")

    up._builder = Failing()
    task = asyncio.create_task(up.run())
    up.offer(offer_for("2.0"))
    async with asyncio.timeout(20):
        while up._offer is not None or up._wake.is_set() or up.report() is None:
            await asyncio.sleep(0.01)  # until the loop has taken the second offer too
    for _ in range(20):
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert up.report() is not None and up.report().state == "failed"  # type: ignore[union-attr]
    assert source.fetched == ["/v1/device/releases/2.0/wheel"]


async def test_a_full_disk_fails_the_offer_before_the_download_and_retries_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource(wheel_bytes("2.0"))
    up = updater(tmp_path, b"")
    up._source = source
    full = shutil.disk_usage(tmp_path)._replace(free=50 << 20)
    monkeypatch.setattr("device.update.install.shutil.disk_usage", lambda path: full)
    await offered(up, offer_for("2.0"))
    report = up.report()
    assert report is not None and report.state == "failed" and "50 MB free" in (report.detail or "")
    assert report.retry is True  # no verdict on the release: a rollout does not count it
    assert source.fetched == []
    up.offer(offer_for("2.0"))
    assert up._offer is not None  # room may have been made: tried again


async def test_a_commit_removes_the_releases_neither_link_needs(tmp_path: Path) -> None:
    first = updater(tmp_path, wheel_bytes("2.0"))
    write_release(tmp_path / "opt" / "releases" / "0.9", "0.9")
    (tmp_path / "opt" / "releases" / "3.0.partial").mkdir()
    await offered(first, offer_for("2.0"))
    up = updater(tmp_path, b"", running_version="2.0")
    await asyncio.wait_for(up._settle_trial(), 10)
    assert sorted(p.name for p in (tmp_path / "opt" / "releases").iterdir()) == ["1.0", "2.0"]


def test_a_retried_failure_is_reported_as_such_on_the_wire(tmp_path: Path) -> None:
    """What the boot guard writes for an interrupted switch reaches the server as
    ``retry: true``, a refused release as ``retry: false``."""
    path = tmp_path / "state.json"
    path.write_text('{"version": "2.0", "state": "failed", "retry": true, "detail": "interrupted"}')
    record = load(path)
    assert record is not None
    sent = msgspec.to_builtins(record.report())
    assert (sent["state"], sent["retry"]) == ("failed", True)
    assert new_record("2.0", "rolled_back").report().retry is False
