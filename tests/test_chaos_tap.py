"""Audit before actuation under kill -9 (issue 10, part 1).

A real agent process taps pass cards from the simulated SAM (on a pty) against the real
server, and is killed with SIGKILL 100 times at points of a tap: before the decision, after
it, as the prompt starts, as the relay pulses, as an upload returns (stored by the server,
not yet acknowledged on the kiosk) and at a random moment after the card is placed. After
the last kill a clean agent uploads what is left. Then every relay pulse and every spoken
pass must have its decision in the server's audit, and no event may be there twice.

What the agent did is written by this harness, not by the agent: each process appends one
line per relay command and per prompt to a log file (O_APPEND, before the actuation itself,
so an actuation cut short by the kill still counts against the agent). Kill points are
reached by wrapping the agent's verifier, player, gate and client from outside; at its kill
point the process sends itself SIGKILL, which is what an external kill -9 at that instant
does. Each agent is forked from a "zygote" that has already imported everything, so a
hundred restarts fit in well under a minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from device.acting.voice import Player
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import Fleet, audit_rows, card, fleet, prompt_cache, sim

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used below

pytestmark = pytest.mark.slow

KILLS = 100
POINTS = ("before_decide", "after_decide", "at_prompt", "at_relay", "during_upload", "random")
ROOT = Path(__file__).resolve().parents[1]


# -- the agent side (runs in the forked child) ---------------------------------------------
class _Harness:
    """Records actuations durably and kills this process at the chosen point."""

    def __init__(self, log_path: str, kill_at: str) -> None:
        self._fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.kill_at = kill_at
        self.tap_id = ""  # the tap being acted on (taps are handled one at a time)

    def record(self, *words: str) -> None:
        os.write(self._fd, (" ".join((str(os.getpid()), *words)) + "\n").encode())

    def point(self, name: str) -> None:
        if name == self.kill_at:
            self.record("kill", name)
            os.kill(os.getpid(), signal.SIGKILL)


class _RecordingPlayer(Player):
    """Logs each prompt as it starts (the harness's loudspeaker)."""

    def __init__(self, harness: _Harness) -> None:
        self._h = harness

    def play(self, path: Path, text: str | None = None) -> None:
        self._h.record("spoken", self._h.tap_id, str(text))
        self._h.point("at_prompt")

    def stop(self) -> None:
        """Nothing keeps playing."""

    def close(self) -> None:
        """Nothing to release."""


def _instrument(agent: Any, h: _Harness) -> None:
    verifier, gate, client = agent._verifier, agent._gate, agent._client
    decide, open_pulse, upload = verifier.decide, gate.open_pulse, client.upload

    async def decide_hooked(cred: Any, tap_id: str) -> Any:
        h.point("before_decide")
        decision = await decide(cred, tap_id)
        h.tap_id = decision.tap_id
        h.record("decided", decision.tap_id, decision.outcome)
        h.point("after_decide")
        return decision

    def open_pulse_hooked() -> None:
        h.record("relay", h.tap_id)
        h.point("at_relay")
        open_pulse()

    async def upload_hooked(events: list[dict[str, Any]], **kw: Any) -> Any:
        answer = await upload(events, **kw)
        if any(e["kind"] == "decision" for e in events):
            h.point("during_upload")  # stored by the server, not acknowledged here
        return answer

    verifier.decide, gate.open_pulse, client.upload = (
        decide_hooked,
        open_pulse_hooked,
        upload_hooked,
    )


async def _agent_main(spec: dict[str, Any]) -> None:
    from gpiozero.pins.mock import MockFactory

    from device.config import DeviceConfig, load_bundle
    from device.runtime import built_agent

    h = _Harness(spec["log"], spec["kill_at"])
    config = DeviceConfig.from_dict(spec["config"])
    bundle = load_bundle(Path(spec["config"]["bundle"]))
    async with built_agent(
        config, bundle=bundle, player=_RecordingPlayer(h), pin_factory=MockFactory()
    ) as agent:
        _instrument(agent, h)
        while not (agent._reader is not None and agent._reader.connected):
            await asyncio.sleep(0.005)
        h.record("ready")
        if spec["kill_at"] != "drain":
            await asyncio.Event().wait()  # until killed
        while await agent._journal.count():
            await asyncio.sleep(0.05)
        h.record("drained")


def zygote() -> None:
    """Fork one agent per line of stdin (a JSON spec); report its pid and how it ended."""
    import logging

    import device.runtime  # noqa: F401 - imported once, here, for every child

    for line in sys.stdin:
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:
            logging.basicConfig(filename=spec["log"] + ".agent", level=logging.WARNING)
            try:
                asyncio.run(_agent_main(spec))
            finally:
                os._exit(0)
        print(json.dumps({"pid": pid}), flush=True)
        _pid, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), flush=True)


# -- the test side -------------------------------------------------------------------------
class _Log:
    """Reads the harness log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines()]

    async def wait(self, pid: int, word: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(w[0] == str(pid) and w[1] == word for w in self.lines()):
                return True
            await asyncio.sleep(0.005)
        return False


async def _run(
    z: asyncio.subprocess.Process, spec: dict[str, Any], log: _Log, sim: SimulatedReaderPort,
    person: str, rng: random.Random,
) -> int:  # fmt: skip
    """One agent life: start, tap (unless draining), end; returns its wait status."""
    assert z.stdin is not None and z.stdout is not None
    z.stdin.write((json.dumps(spec) + "\n").encode())
    await z.stdin.drain()
    pid = json.loads(await z.stdout.readline())["pid"]
    assert await log.wait(pid, "ready", 20), f"agent {pid} not ready"
    point = spec["kill_at"]
    if point == "drain":
        assert await log.wait(pid, "drained", 20), "journal not drained"
    else:
        sim.place(card(person))
        if point == "random":
            await asyncio.sleep(rng.uniform(0.0, 0.08))
        else:
            await log.wait(pid, "kill", 3)  # the agent kills itself there
        with contextlib.suppress(ProcessLookupError):  # it may have killed itself already
            os.kill(pid, signal.SIGKILL)
    status: int = json.loads(await z.stdout.readline())["status"]
    sim.remove()
    await asyncio.sleep(0.03)  # a find sees the empty field
    return status


async def test_kill_minus_nine_never_actuates_without_audit(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    started = time.monotonic()
    log = _Log(tmp_path / "actuations.log")
    config = {
        "bundle": str(tmp_path / "bundle.json"),
        "state_dir": str(tmp_path / "kiosk"),
        "reader": {"url": sim.path, "poll_interval_s": 0.01},
        "verify": {"deadline_s": 1.2},
        "voice": {"player": "null", "cache_dir": str(prompt_cache)},
        "gpio": {"pin_factory": "mock", "relay_pulse_s": 0.2},
        "upload": {"interval_s": 0.2},
        "heartbeat": {"interval_s": 60},
    }
    z = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from tests.test_chaos_tap import zygote; zygote()",
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    rng = random.Random(10)
    points = [POINTS[i % len(POINTS)] for i in range(KILLS)]
    rng.shuffle(points)
    statuses = []
    try:
        for i, point in enumerate(points):
            spec = {"log": str(log.path), "kill_at": point, "config": config}
            person = fleet.people["pass"][i % 2]
            statuses.append(await _run(z, spec, log, sim, person, rng))
        spec = {"log": str(log.path), "kill_at": "drain", "config": config}
        assert os.WIFEXITED(await _run(z, spec, log, sim, "", rng))
    finally:
        if z.returncode is None:
            z.kill()
        await z.wait()
    assert [os.WTERMSIG(s) for s in statuses if os.WIFSIGNALED(s)] == [signal.SIGKILL] * KILLS
    _check_audit(log, fleet, points, time.monotonic() - started)


def _check_audit(log: _Log, fleet: Fleet, points: list[str], seconds: float) -> None:
    rows = audit_rows(fleet.db)
    decisions = [(json.loads(r["detail"])["tap_id"], r["outcome"]) for r in rows
                 if r["kind"] == "decision"]  # fmt: skip
    audited = dict(decisions)
    lines = log.lines()
    relays = [w[2] for w in lines if w[1] == "relay"]
    spoken_passes = [w[2] for w in lines if w[1] == "spoken" and w[3] == "绿码通行"]
    kills = collections.Counter(w[2] for w in lines if w[1] == "kill")
    decided = {w[2] for w in lines if w[1] == "decided"}
    summary = {
        "kills": len(points),
        "kills_at_points": dict(kills),
        "decided": len(decided),
        "audited": len(audited),
        "relay_pulses": len(relays),
        "spoken_passes": len(spoken_passes),
        "relay_without_audit": sum(1 for t in relays if audited.get(t) != "pass"),
        "spoken_pass_without_audit": sum(1 for t in spoken_passes if audited.get(t) != "pass"),
        "duplicate_events": len(decisions) - len(audited),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(summary))
    assert summary["relay_without_audit"] == 0 and summary["spoken_pass_without_audit"] == 0
    assert summary["duplicate_events"] == 0
    seqs = sorted(r["seq"] for r in rows)
    assert seqs == list(range(1, len(seqs) + 1)), "the audit has gaps or duplicates"
    assert audited.keys() <= decided  # every audited decision was one this harness saw
    # The named kill points were reached (random ones land wherever they land).
    for name in POINTS[:-1]:
        assert kills[name] == points.count(name), (name, kills)
    assert summary["relay_pulses"] >= 10 and summary["spoken_passes"] >= 10
