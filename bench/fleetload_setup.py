"""Fleet, databases and processes for bench/fleet_load.py.

* :func:`prepare_fleet`: demo people in the source tables, ``kiosks`` devices registered with
  their own Ed25519 keys through the local registry (``server.fleet.registry.upsert_devices``,
  what ``POST /v1/admin/devices`` runs), and a session token for each.
  Tokens are minted from the database with the server's own codec (what
  ``server.fleet.sessions.mint_token`` does, in bulk): the real handshake is rate-limited to
  ``[limits] session_per_s`` (500/s), so 40,000 kiosks would take 80 s of it per database.
  :func:`handshake` runs the real ``POST /v1/session/challenge`` + signed ``POST /v1/session``
  for a sample of kiosks, whose tokens then replace the minted ones.
* :class:`BenchPg`: a PostgreSQL cluster for the bench: tests/pgserver.py's, but with
  PostgreSQL's default durability (``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` on: an acknowledged audit batch is on disk, as it is on SQLite, whose
  audit transactions run with ``synchronous = FULL``).
* :func:`start_servers`, :func:`start_echo`: ``kiosk server run`` processes and the echo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.signing import session_message
from provisioning import keygen
from server.fleet.registry import device_row, upsert_devices
from server.fleet.sessions import TokenCodec, session_secret
from server.storage.db import connect, transaction
from server.verify.demodata import generate_people, load_demo_data
from tests.pgserver import PgCluster, pg_bin

ROOT = Path(__file__).resolve().parent.parent
SITES = 40
TOKEN_TTL_S = 6 * 3600


@dataclass
class Fleet:
    """Who the generator plays: (device_id, token) per kiosk, the people's ID numbers, and
    the private keys of the kiosks that do the real handshake."""

    kiosks: list[tuple[str, str]]
    ids: list[str]
    keys: dict[str, bytes]


def prepare_fleet(database: str, kiosks: int, people: int, handshakes: int) -> Fleet:
    """Fill ``database`` (migrated on first connect) with people, devices and tokens."""
    now = datetime.now(UTC)
    reports = load_demo_data(database, people, 2022, now=now)
    if not all(r.ok for r in reports.values()):
        raise SystemExit("demo data did not import")
    ids = [row["id_number"] for row in generate_people(people, 2022, now)["travel"]]
    pairs = keygen.generate_raw(kiosks)
    rows = [
        (
            i + 1,
            device_row(
                {
                    "serial": f"FL-{i:06d}",
                    "site": f"site-{i % SITES:02d}",
                    "gate": f"g{i % 8}",
                    "public_key": public.hex(),
                }
            ),
        )
        for i, (_, public) in enumerate(pairs)
    ]
    with connect(database) as conn:
        with transaction(conn):
            report = upsert_devices(conn, rows, create_sites=True)
        if report.errors:
            raise SystemExit(f"registration failed: {report.errors[:3]}")
        by_serial = {r.serial: r.device_id for r in report.results}
        codec = TokenCodec(session_secret(conn))
        epochs = dict(conn.execute("SELECT device_id, key_epoch FROM devices").fetchall())
    expires = int(time.time()) + TOKEN_TTL_S
    fleet: list[tuple[str, str]] = []
    keys: dict[str, bytes] = {}
    for i, (private, _) in enumerate(pairs):
        device_id = by_serial[f"FL-{i:06d}"]
        assert device_id is not None
        fleet.append((device_id, codec.issue(device_id, int(epochs[device_id]), expires)))
        if i < handshakes:
            keys[device_id] = private
    return Fleet(fleet, ids, keys)


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


def handshake(fleet: Fleet, port: int) -> int:
    """The real session protocol for the kiosks with keys: their tokens replace the minted.
    Returns how many succeeded (a failure keeps the minted token and is printed)."""
    base = f"http://127.0.0.1:{port}"
    done = 0
    for n, (device_id, _) in enumerate(fleet.kiosks):
        private = fleet.keys.get(device_id)
        if private is None:
            continue
        try:
            fleet.kiosks[n] = (device_id, _session(base, device_id, private))
            done += 1
        except OSError as exc:  # urllib's HTTPError and URLError are OSErrors
            print(f"  handshake of {device_id} failed: {exc}", flush=True)
    return done


def _session(base: str, device_id: str, private: bytes) -> str:
    """Challenge, signature, token: what a kiosk does at start (device/link/identity.py)."""
    nonce = str(_post(base + "/v1/session/challenge", {"device_id": device_id})["nonce"])
    sent = int(time.time())
    signature = Ed25519PrivateKey.from_private_bytes(private).sign(
        session_message(device_id, nonce, sent)
    )
    answer = _post(
        base + "/v1/session",
        {"device_id": device_id, "nonce": nonce, "time": sent, "signature": signature.hex()},
    )
    return str(answer["token"])


class BenchPg(PgCluster):
    """The tests' throw-away cluster, but durable and with room for the pools."""

    def start_again(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c max_connections=200 -c shared_buffers=256MB"
        )
        self._run(
            pg_bin("pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "log"), "-w", "start",
        )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"process on port {port} did not start") from None
            time.sleep(0.05)


def workers_flag() -> bool:
    """Whether ``kiosk server run`` has ``--workers`` (SO_REUSEPORT processes on one port)."""
    out = subprocess.run(
        [sys.executable, "-m", "siheyi.cli", "server", "run", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    return "--workers" in out.stdout


def start_servers(
    database: str, processes: int, log_dir: Path
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """``processes`` servers on ``database``: one ``--workers N`` on one port when the verb
    has it, else N separate processes on N ports. Returns (processes, ports)."""
    base = [sys.executable, "-m", "siheyi.cli", "server", "run", "--database", database]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    groups = [["--workers", str(processes)]] if processes > 1 and workers_flag() else None
    for n, extra in enumerate(groups or [[] for _ in range(processes)]):
        port = free_port()
        log = (log_dir / f"server-{port}.log").open("wb")
        proc = subprocess.Popen(
            [*base, "--port", str(port), *extra], stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip
        wait_port(port, proc)
        procs.append(proc)
        ports.append(port)
        if n == 0:
            time.sleep(0.3)  # the first one migrates; let it finish before the next opens
    return procs, ports


def start_echo(answer_bytes: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "fleetload_echo.py"), "--port", str(port),
         "--answer-bytes", str(answer_bytes)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    wait_port(port, proc)
    return proc, port


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes this bench started (SIGTERM to each one's own group, then wait)."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, 15)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` and their children's threads."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def children(pid: int) -> list[int]:
    """``pid`` and its descendants (a ``--workers`` parent forks its workers)."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out.extend(children(int(child)))
    return out


def postgres_pids(cluster: PgCluster) -> list[int]:
    """The postmaster of ``cluster`` and its backends."""
    pidfile = cluster.data / "postmaster.pid"
    try:
        master = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return children(master)
