"""Chaos soak: taps while the agent and the server are killed, the disk fills and the clock
steps; then count what the citizen saw against what the audit holds (issue 10, part 8).

One real server process (`kiosk server run`, SQLite) and one real agent process (built as
`kiosk device run` builds it, with a recording loudspeaker and gpiozero's MockFactory) on the
simulated SAM reader (a pty). During the run:

- the agent is killed with SIGKILL at random moments (also mid-tap) and restarted;
- the server is killed with SIGKILL and stays down for a few taps (the kiosk decides offline);
- the kiosk's state directory (a 3 MiB tmpfs where this process may mount one) is filled to
  the last byte for a stretch of taps, then freed;
- with the server down, the kiosk's wall clock steps back two days (the agent's clocks are
  offset by a signal): the events after it must not claim a trusted clock.

The agent process writes what it did to a log (O_APPEND, before each act): `decided`,
`journalled` (the append returned: durable), `relay` and `spoken`. At the end a clean agent
drains the journal and the server's audit is read. Printed:

    {"taps", "decisions", "audited", "lost", "duplicated", "actuated_without_audit",
     "trusted_after_step", "agent_kills", "server_kills", "disk": "tmpfs" | "skipped"}

where lost = journalled decisions missing from the audit, duplicated = decisions stored
twice, actuated_without_audit = relay pulses and spoken passes without their decision.

    .venv/bin/python bench/chaos.py [--taps 150] [--seed 1]   (as root for the disk phase)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.e2e_support: the same test card as the end-to-end tests

from tests.e2e_support import card  # noqa: E402

STEP_BACK_S = 2 * 24 * 3600.0
TMPFS_SIZE = "3m"


# -- the agent process ----------------------------------------------------------------------
def agent_main(spec: dict[str, Any]) -> None:
    """Run an agent that logs its acts; SIGUSR1 steps its wall clock back two days."""
    asyncio.run(_agent(spec))


async def _agent(spec: dict[str, Any]) -> None:
    from gpiozero.pins.mock import MockFactory

    from device.acting.voice import Player
    from device.config import DeviceConfig, load_bundle
    from device.runtime import built_agent

    fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(*words: object) -> None:
        os.write(fd, (" ".join(str(w) for w in (os.getpid(), *words)) + "\n").encode())

    current = {"tap": "", "offset": 0.0}

    class Loudspeaker(Player):
        def play(self, path: Path, text: str | None = None) -> None:
            note("spoken", current["tap"], text)

        def stop(self) -> None:
            """Nothing keeps playing."""

        def close(self) -> None:
            """Nothing to release."""

    def step_back(*_: object) -> None:
        current["offset"] = -STEP_BACK_S

    def ntp_fixed(*_: object) -> None:
        current["offset"] = 0.0

    current["offset"] = spec.get("offset", 0.0)  # a restart keeps the kiosk's wrong clock
    signal.signal(signal.SIGUSR1, step_back)
    signal.signal(signal.SIGUSR2, ntp_fixed)
    config = DeviceConfig.from_dict(spec["config"])
    bundle = load_bundle(Path(spec["config"]["bundle"]))
    async with built_agent(
        config, bundle=bundle, player=Loudspeaker(), pin_factory=MockFactory()
    ) as agent:
        verifier, journal, gate = agent._verifier, agent._journal, agent._gate
        assert gate is not None
        wall = lambda: time.time() + current["offset"]  # noqa: E731 - the kiosk's wall clock
        verifier._wall = verifier.clock._wall = wall
        verifier.clock._offset = wall() - time.monotonic()  # the clock as the kiosk booted
        verifier.clock._ntp_synced = lambda: False  # a kiosk whose NTP has not synced: only
        # the server's time can vouch for its clock
        decide, append, pulse = verifier.decide, journal.append, gate.open_pulse

        async def logged_decide(cred: Any, tap_id: str) -> Any:
            decision = await decide(cred, tap_id)
            current["tap"] = decision.tap_id
            note("decided", decision.tap_id, decision.outcome)
            return decision

        async def logged_append(fields: Any) -> Any:
            event = await append(fields)
            if fields.get("kind") == "decision":
                held = bool((event.get("detail") or {}).get("journal_overflow"))
                note("journalled", fields["detail"]["tap_id"], "held" if held else "disk")
            return event

        def logged_pulse() -> None:
            note("relay", current["tap"])
            pulse()

        verifier.decide, journal.append = logged_decide, logged_append
        gate.open_pulse = logged_pulse
        note("ready")
        if spec.get("drain"):
            while await journal.count():
                await asyncio.sleep(0.1)
            note("drained")
            return
        await asyncio.Event().wait()


# -- the soak ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    def __init__(self, work: Path, taps: int, seed: int) -> None:
        self.work, self.taps, self.rng = work, taps, random.Random(seed)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = work / "server.db"
        self.state = work / "state"
        self.log = work / "acts.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.kills = {"agent": 0, "server": 0}
        self.disk = "skipped"
        self.people: list[str] = []
        self.stepped: set[str] = set()  # taps decided after the clock step, server down
        self.offset = 0.0  # the kiosk's clock error, kept across agent restarts
        self.outage_on_full = 0

    # processes
    def start_server(self) -> None:
        cmd = [sys.executable, "-m", "siheyi.cli", "server", "run", "--database", str(self.db)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        out = open(self.work / "server.log", "ab")  # noqa: SIM115 - the child owns it
        self.server = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url + "/healthz", timeout=1).close()
                return
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self, which: str) -> None:
        proc = self.server if which == "server" else self.agent
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.kills[which] += 1

    def start_agent(self, reader: str, drain: bool = False) -> None:
        spec = {
            "log": str(self.log),
            "drain": drain,
            "offset": self.offset,
            "config": self.agent_config(reader),
        }
        err = open(self.work / "agent.log", "ab")  # noqa: SIM115 - the child owns it
        cmd = [sys.executable, str(Path(__file__).resolve()), "--agent", json.dumps(spec)]
        self.agent = subprocess.Popen(cmd, cwd=ROOT, stdout=err, stderr=err)
        if not self.wait_log(self.agent.pid, "drained" if drain else "ready", 60):
            raise RuntimeError(f"agent not {'drained' if drain else 'ready'}: see agent.log")

    def agent_config(self, reader: str) -> dict[str, Any]:
        return {
            "bundle": str(self.work / "bundle.json"),
            "state_dir": str(self.state),
            "reader": {"url": reader, "poll_interval_s": 0.02},
            "verify": {"deadline_s": 0.8, "circuit_cooldown_s": 0.5},
            "voice": {"player": "null", "cache_dir": str(Path.home() / ".cache" / "siheyi")},
            "gpio": {"pin_factory": "mock", "relay_pulse_s": 0.1},
            "upload": {"interval_s": 0.3},
            "heartbeat": {"interval_s": 2.0},
            "cache": {"snapshot_interval_s": 0},
        }

    def acts(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split(" ", 3) for line in self.log.read_text().splitlines()]

    def wait_log(self, pid: int, word: str, timeout: float, tap: str | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.acts():
                if a[0] == str(pid) and a[1] == word and (tap is None or a[2:3] == [tap]):
                    return True
            time.sleep(0.02)
        return False

    # the disk
    def mount_state(self) -> None:
        self.state.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(self.state)],
            capture_output=True,
        )
        self.disk = "tmpfs" if mounted.returncode == 0 else "skipped"

    def fill_disk(self) -> None:
        with contextlib.suppress(OSError), open(self.state / "ballast", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()

    def free_disk(self) -> None:
        (self.state / "ballast").unlink(missing_ok=True)


def tap_card(sim: Any, soak: Soak, number: str, pid: int) -> str:
    """Place a card until the agent decides (or 4 s); returns the tap id decided ('' none)."""
    before = len(soak.acts())
    sim.place(card(number))
    deadline = time.monotonic() + 4
    tap = ""
    while time.monotonic() < deadline and not tap:
        for a in soak.acts()[before:]:
            if a[0] == str(pid) and a[1] == "decided":
                tap = a[2]
        time.sleep(0.02)
    time.sleep(0.15)  # let the prompt and relay follow
    sim.remove()
    time.sleep(0.05)
    return tap


def run(soak: Soak) -> dict[str, Any]:
    from firmware_bridge.samsim import SimulatedSam
    from firmware_bridge.simserve import SimulatedReaderPort

    sim = SimulatedReaderPort(SimulatedSam(), link=soak.work / "reader").start()
    try:
        soak.start_server()
        soak.start_agent(sim.path)
        down_for = 0
        fill_at, free_at, step_at = (int(soak.taps * f) for f in (0.2, 0.65, 0.8))
        for n in range(soak.taps):
            if n == fill_at and soak.disk == "tmpfs":
                soak.fill_disk()
            if n == free_at:
                soak.free_disk()
            if n == fill_at + 5 and soak.outage_on_full and soak.disk == "tmpfs":
                soak.kill("server")  # disk and server both gone
                down_for = soak.outage_on_full
            if n == step_at:  # server away, then the clock steps back
                soak.kill("server")
                down_for = 6
                assert soak.agent is not None
                soak.agent.send_signal(signal.SIGUSR1)
                soak.offset = -STEP_BACK_S
            elif down_for == 0 and not fill_at <= n < free_at and soak.rng.random() < 0.05:
                soak.kill("server")
                down_for = soak.rng.randint(1, 4)
            assert soak.agent is not None
            pid = soak.agent.pid
            outage = fill_at + 5 <= n < fill_at + 5 + soak.outage_on_full
            # In the disk-and-server outage the agent lives long enough to fill its reserve
            # and hold decisions in memory; it is killed once, near the end, to lose them.
            if outage:
                kill_now = n == fill_at + 5 + soak.outage_on_full - 5
            else:
                kill_now = soak.rng.random() < 0.1
            if kill_now:  # kill the agent while this tap is under way
                sim.place(card(soak.rng.choice(soak.people)))
                time.sleep(soak.rng.uniform(0.0, 0.3))
                soak.kill("agent")
                sim.remove()
                soak.start_agent(sim.path)
                continue
            tap = tap_card(sim, soak, soak.rng.choice(soak.people), pid)
            if soak.offset and tap:  # decided on the stepped clock, the server away
                soak.stepped.add(tap)
            if down_for:
                down_for -= 1
                if down_for == 0:
                    soak.start_server()
                    if soak.offset:  # NTP puts the clock right: a step forward, again
                        soak.offset = 0.0  # untrusted until the server's time agrees
                        assert soak.agent is not None
                        soak.agent.send_signal(signal.SIGUSR2)
        soak.free_disk()
        if soak.server is None or soak.server.poll() is not None:
            soak.start_server()
        soak.kill("agent")
        soak.kills["agent"] -= 1  # the end of the run, not chaos
        soak.start_agent(sim.path, drain=True)
        soak.kill("agent")
        soak.kills["agent"] -= 1
    finally:
        sim.stop()
        soak.kill("server")
    return count(soak)


def count(soak: Soak) -> dict[str, Any]:
    acts = soak.acts()
    decided = {a[2] for a in acts if a[1] == "decided"}
    on_disk = {a[2] for a in acts if a[1] == "journalled" and a[3:] == ["disk"]}
    held = {a[2] for a in acts if a[1] == "journalled" and a[3:] == ["held"]}
    relayed = {a[2] for a in acts if a[1] == "relay"}
    passes = {a[2] for a in acts if a[1] == "spoken" and a[3:] == ["绿码通行"]}
    with sqlite3.connect(soak.db) as conn:
        rows = conn.execute(
            "SELECT json_extract(detail, '$.tap_id'), clock_trusted FROM audit_events"
            " WHERE kind = 'decision'"
        ).fetchall()
        reported = conn.execute("SELECT coalesce(sum(missing + dropped), 0) FROM audit_losses")
        reported_lost = int(reported.fetchone()[0])
    audited: dict[str, int] = {}
    for tap, _trusted in rows:
        audited[tap] = audited.get(tap, 0) + 1
    trusted_after_step = sum(1 for tap, ok in rows if tap in soak.stepped and ok)
    return {
        "taps": soak.taps,
        "decisions": len(decided),
        "audited": len(audited),
        "lost": len(on_disk - audited.keys()),
        "duplicated": sum(n - 1 for n in audited.values()),
        "actuated_without_audit": len((relayed | passes) - audited.keys()),
        "trusted_after_step": trusted_after_step,
        "stepped_taps": len(soak.stepped),
        "held_on_full_disk": len(held),
        "held_lost": len(held - audited.keys()),
        "lost_reported_by_kiosk": reported_lost,
        "agent_kills": soak.kills["agent"],
        "server_kills": soak.kills["server"],
        "disk": soak.disk,
    }


def prepare(soak: Soak) -> None:
    """Demo people in the server's database and one provisioned kiosk with its bundle."""
    from provisioning.registry import add_device, write_bundle
    from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
    from siheyi.cli import local_fleet

    now = dt.datetime.now(dt.UTC)
    load_demo_data(soak.db, 300, 7, now=now)
    picked = pick_demo_people(generate_people(300, 7, now), now, {"pass": 6, "check": 2})
    soak.people = [number for _outcome, number in picked]
    issued = add_device(local_fleet(None, soak.db), "SN-CHAOS-1", "site-a", server_url=soak.url)
    write_bundle(issued, soak.work / "bundle.json")
    soak.mount_state()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--taps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--outage-on-full",
        type=int,
        default=0,
        metavar="TAPS",
        help="also take the server away for TAPS taps while the disk is full (disk and server"
        " both gone: decisions are held in memory, may be lost, and must then be reported)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        agent_main(json.loads(args.agent))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="siheyi-chaos-"))
    soak = Soak(tmp, args.taps, args.seed)
    soak.outage_on_full = args.outage_on_full
    try:
        prepare(soak)
        result = run(soak)
    finally:
        if soak.disk == "tmpfs":
            subprocess.run(["umount", "-l", str(soak.state)], check=False)
        if args.keep:
            print(f"work folder: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    bad = result["lost"] + result["duplicated"] + result["actuated_without_audit"]
    bad += result["held_lost"] > result["lost_reported_by_kiosk"]  # a loss nobody reported
    return 1 if bad or result["trusted_after_step"] else 0


if __name__ == "__main__":
    sys.exit(main())
