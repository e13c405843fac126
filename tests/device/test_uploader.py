"""The uploader deletes only what the server acknowledged, and survives a server outage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from device.link.client import ServerClient
from device.recording.journal import Journal
from device.recording.uploader import Uploader


def decision(i: int) -> dict[str, Any]:
    return {"kind": "decision", "outcome": "pass", "clock_trusted": True, "detail": {"i": i}}


async def test_uploads_in_batches_and_deletes_only_acked(tmp_path: Path) -> None:
    received: list[list[int]] = []
    state = {"fail": True, "ack_limit": 10**9}

    async def audit(request: web.Request) -> web.Response:
        if state["fail"]:
            return web.json_response({"error": "internal"}, status=503)
        events = (await request.json())["events"]
        seqs = [e["seq"] for e in events]
        received.append(seqs)
        acked = min(seqs[-1], state["ack_limit"])
        stored = len([s for s in seqs if s <= acked])
        return web.json_response(
            {
                "acked_seq": acked,
                "stored": stored,
                "duplicates": 0,
                "chain_breaks": [],
                "conflicts": [],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/audit", audit)
    server = TestServer(app)
    await server.start_server()
    client = ServerClient(str(server.make_url("")), token="k-1.s")
    async with Journal(tmp_path / "j.db", "k-1", "boot") as journal:
        for i in range(7):
            await journal.append(decision(i))
        up = Uploader(journal, client, interval_s=0.05, batch_size=3)
        task = asyncio.create_task(up.run())
        await asyncio.sleep(0.3)
        assert await journal.count() == 7 and up.failures >= 1  # server failing: nothing lost
        state["fail"] = False
        state["ack_limit"] = 5  # the server stored only up to seq 5
        up.poke()
        for _ in range(100):
            if await journal.count() == 2:
                break
            await asyncio.sleep(0.05)
        assert [e["seq"] for e in await journal.pending(10)] == [6, 7]
        state["ack_limit"] = 10**9
        for _ in range(100):
            if await journal.count() == 0:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await client.close()
    await server.close()
    assert received[0] == [1, 2, 3]
    assert {s for batch in received for s in batch} == set(range(1, 8))


class FakeServer:
    """A server that stores by (epoch, seq), answers ``held`` and refuses a poison event
    with 400 naming it (``name=False``: without naming it, as a terse server would)."""

    def __init__(self, *, name: bool = True) -> None:
        self.stored: dict[tuple[str, int], dict[str, Any]] = {}
        self.batches: list[list[int]] = []
        self.name = name

    async def audit(self, request: web.Request) -> web.Response:
        events = (await request.json())["events"]
        self.batches.append([e["seq"] for e in events])
        assert len({e.get("epoch", "") for e in events}) == 1
        for i, event in enumerate(events):
            if event["detail"].get("poison"):
                where = f"events[{i}].detail" if self.name else "body"
                return web.json_response(
                    {"error": "bad_request", "detail": f"{where}: refused"}, status=400
                )
        for event in events:
            self.stored[(event.get("epoch", ""), event["seq"])] = event
        seqs = [e["seq"] for e in events]
        return web.json_response(
            {"acked_seq": 0, "stored": len(seqs), "duplicates": 0, "chain_breaks": [],
             "conflicts": [], "held": [[seqs[0], seqs[-1]]], "epoch": events[0].get("epoch", "")}
        )  # fmt: skip


async def serve(fake: FakeServer) -> tuple[TestServer, ServerClient]:
    app = web.Application()
    app.router.add_post("/v1/audit", fake.audit)
    server = TestServer(app)
    await server.start_server()
    return server, ServerClient(str(server.make_url("")), token="k-1.s")


@pytest.mark.parametrize("name", [True, False])
async def test_a_poison_event_goes_to_the_dead_letters_not_in_the_way(
    tmp_path: Path, name: bool
) -> None:
    fake = FakeServer(name=name)
    server, client = await serve(fake)
    async with Journal(tmp_path / "j.db", "k-1", "boot") as journal:
        for i in range(6):
            await journal.append(decision(i) | ({"detail": {"poison": True}} if i == 3 else {}))
        up = Uploader(journal, client, batch_size=5)
        assert await up.drain_once() == 5
        assert await journal.count() == 0
        letters = await journal.dead_letters()
        assert [d["event"]["seq"] for d in letters] == [4] and "refused" in letters[0]["error"]
        assert up.dead_lettered == 1
        assert sorted(seq for _, seq in fake.stored) == [1, 2, 3, 5, 6]
        assert (await journal.state())["dead_letters"] == 1
    await client.close()
    await server.close()


async def test_events_the_disk_cannot_take_go_straight_to_the_server(tmp_path: Path) -> None:
    fake = FakeServer()
    server, client = await serve(fake)
    journal = Journal(tmp_path / "j.db", "k-1", "boot", max_pages=16, reserve_bytes=0)
    pad = "x" * 1500
    events = []
    for i in range(200):
        events.append(await journal.append(decision(i) | {"detail": {"pad": pad}}))
        if journal.overflow_count >= 3:
            break
    assert journal.overflow_count == 3  # the disk is full: three events only in memory
    up = Uploader(journal, client, batch_size=500)
    assert await up.drain_once() == len(events)
    assert journal.overflow_count == 0 and await journal.count() == 0
    assert [fake.stored[(e["epoch"], e["seq"])] for e in events] == events
    await journal.close()
    async with Journal(tmp_path / "j.db", "k-1", "boot-2") as again:
        nxt = await again.append(decision(999))  # acknowledged: no loss, no new epoch
        assert (nxt["epoch"], nxt["seq"]) == (events[-1]["epoch"], events[-1]["seq"] + 1)
    await client.close()
    await server.close()


async def test_batches_never_mix_epochs(tmp_path: Path) -> None:
    fake = FakeServer()
    server, client = await serve(fake)
    path = tmp_path / "j.db"
    journal = Journal(path, "k-1", "boot", max_pages=16, reserve_bytes=0)
    pad = "x" * 1500
    while journal.overflow_count == 0:
        await journal.append(decision(0) | {"detail": {"pad": pad}})
    await journal.close()  # the held event dies: the next start opens a new epoch
    async with Journal(path, "k-1", "boot-2") as again:
        await again.append(decision(1))
        up = Uploader(again, client, batch_size=500)
        assert await up.drain_once() == len(fake.stored)
        assert await again.count() == 0
        assert len(fake.batches) == 2 and fake.batches[1] == [1, 2]  # new epoch: notice, event
        assert len({epoch for epoch, _ in fake.stored}) == 2
    await client.close()
    await server.close()


async def test_a_revoked_kiosk_decides_check_and_still_drains_its_journal(
    tmp_path: Path,
) -> None:
    """Issue 10, part 2, end to end on the real server: after revocation every tap decides
    ``check`` (the cache never opens the gate), and the uploader keeps handing the journal in
    on the audit-only token; the server stores those events flagged."""
    import sqlite3
    import time

    from device.config import VoiceConfig, load_bundle
    from device.deciding.clock import ClockTrust
    from device.deciding.verifier import Verifier
    from device.link.identity import DeviceIdentity
    from device.sources.credentials import Credential
    from provisioning.registry import add_device, revoke_device
    from server.app import create_app
    from server.config import ServerConfig
    from siheyi.cli import local_fleet

    db = tmp_path / "server.db"
    server = TestServer(create_app(ServerConfig.default(database=db)))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    add_device(local_fleet(None, db), "SN-1", "site-a", server_url=url, bundle_path=tmp_path / "b")
    bundle = load_bundle(tmp_path / "b")
    identity = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, tmp_path / "b")
    client = ServerClient(url, identity)
    verifier = Verifier(
        client, VoiceConfig().prompt, bytes(32), 5.0, clock=ClockTrust(ntp_synced=lambda: True)
    )
    number = "11010519491231002X"

    async def tap(i: int) -> str:
        cred = Credential(kind="id_card", id_number=number, completed_at=time.monotonic())
        decision = await verifier.decide(cred, f"t-{i}")
        fields = {"kind": "decision", "outcome": decision.outcome, "clock_trusted": True}
        await journal.append({**fields, "detail": {"reasons": list(decision.reasons)}})
        up.poke()
        return decision.outcome

    async def drained() -> None:
        for _ in range(200):
            if await journal.count() == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"journal not drained: {up.last_error}")

    async with Journal(tmp_path / "j.db", bundle.device_id, "boot") as journal:
        up = Uploader(journal, client, interval_s=0.05)
        task = asyncio.create_task(up.run())
        try:
            await tap(1)
            await drained()
            revoke_device(local_fleet(None, db), "SN-1")
            client._token = None  # the session token expired (the server would say so)
            await asyncio.sleep(1.05)  # the CLI revoked it: seen within status_sync_s
            assert [await tap(i) for i in range(2, 5)] == ["check"] * 3
            assert verifier._last_refusal == "revoked"
            await drained()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            await server.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, flagged, detail FROM audit_events ORDER BY seq").fetchall()
    assert [(seq, flag) for seq, flag, _ in rows] == [(1, None)] + [
        (seq, "revoked") for seq in (2, 3, 4)
    ]
    assert all("server_refused:revoked" in detail for _, _, detail in rows[1:])


@pytest.mark.parametrize("turns", range(6))
async def test_a_stop_that_meets_a_poke_still_stops_the_uploader(
    tmp_path: Path, turns: int
) -> None:
    """The agent stops its uploader by cancelling it; a poke (an event journalled at stop)
    landing just before must not swallow the cancellation (asyncio.wait_for does on Python
    3.11, and the loop then ran on and held the agent's stop: seen as a 60 s hang)."""
    async with Journal(tmp_path / "j.db", "k-1", "boot") as journal:
        up = Uploader(journal, ServerClient("http://127.0.0.1:9", token="k-1.s"), interval_s=30)
        task = asyncio.create_task(up.run())
        for _ in range(20):  # until it waits for a poke (nothing to upload)
            await asyncio.sleep(0.01)
        up.poke()
        for _ in range(turns):  # the cancellation lands at each point of the wake-up
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done == {task} and task.cancelled()
