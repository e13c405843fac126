"""Provision N kiosks end to end: keys, bundles and registration against a real server.

The bench initialises a fleet database (sites, an administrator), starts the real server
(`kiosk server run`, its own process) on loopback, logs in as the administrator and then,
timed:

1. generates N Ed25519 key pairs on every core (worker processes, in chunks);
2. registers each chunk's *public* keys as soon as it is ready (`POST /v1/admin/devices`,
   thousands per request — the server assigns device ids);
3. writes each chunk's bundles (one JSON file per kiosk, mode 0600, private key inside) in
   the workers, then syncs the disk once.

Target (DESIGN.md): 21,390 kiosks in ≤ 15 s on the 2-core machine. The last line printed is
`{"devices": N, "seconds": S, "per_s": R}`.

    .venv/bin/python bench/provision.py [--devices 21390] [--chunk 2674] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from provisioning import keygen
from server.offline.keys import server_public_key, site_key
from server.storage.db import connect, transaction

PASSWORD = "bench-password-0123"
SITES = 40


def write_bundles(common: dict[str, str], items: list[tuple[str, ...]], out_dir: str) -> int:
    """Worker: one 0600 JSON bundle per (serial, site, gate, device_id, private, public)."""
    files = []
    for serial, site, gate, device_id, private, public in items:
        bundle = {
            "device_id": device_id,
            "serial": serial,
            "site": site,
            "gate": gate,
            "server_url": common["server_url"],
            "fleet_key": common[f"site_key:{site}"],  # the pseudonym key of its own site
            "server_key": common["server_key"],
            "private_key": private,
            "public_key": public,
            "tls_ca": common["tls_ca"],
        }
        files.append((os.path.join(out_dir, f"{serial}.json"), json.dumps(bundle, indent=2) + "\n"))
    return keygen.write_files(files)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(db: Path) -> dict[str, str]:
    """Fleet database: keys, sites, an administrator (not timed)."""
    from server.accounts.passwords import hash_password
    from server.fleet import registry as fleet
    from server.fleet.admin import create_admin

    with connect(db) as conn, transaction(conn):
        sites = [f"site-{i:02d}" for i in range(SITES)]
        fleet.add_sites(conn, sites)
        create_admin(conn, "bench", hash_password(PASSWORD), fleet.now_iso())
        return {
            **{f"site_key:{site}": site_key(conn, site) for site in sites},
            "server_key": server_public_key(conn),
            "tls_ca": "",
        }


def start_server(db: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "siheyi.cli", "server", "run", "--database", str(db),
         "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("server did not start") from None
            time.sleep(0.05)


async def provision(
    url: str,
    devices: int,
    chunk: int,
    out_dir: Path,
    common: dict[str, str],
    pool: ProcessPoolExecutor,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            url + "/v1/admin/login", json={"username": "bench", "password": PASSWORD}
        ) as resp:
            headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        started = time.perf_counter()
        sizes = [min(chunk, devices - start) for start in range(0, devices, chunk)]
        keys = [loop.run_in_executor(pool, keygen.generate_raw, n) for n in sizes]
        writes = []
        registered = 0
        serial_base = 0
        for n, future in zip(sizes, keys, strict=True):
            pairs = await future
            rows = [
                {
                    "serial": f"SN-{serial_base + i:06d}",
                    "site": f"site-{(serial_base + i) % SITES:02d}",
                    "gate": f"g{(serial_base + i) % 8}",
                    "public_key": public.hex(),
                }
                for i, (_, public) in enumerate(pairs)
            ]
            async with http.post(
                url + "/v1/admin/devices", json={"devices": rows}, headers=headers
            ) as resp:
                report = await resp.json()
            if resp.status != 200 or report["errors"]:
                raise SystemExit(f"registration failed: {resp.status} {str(report)[:500]}")
            ids = {d["serial"]: d["device_id"] for d in report["devices"]}
            registered += report["created"]
            items = [
                (
                    r["serial"],
                    r["site"],
                    r["gate"],
                    ids[r["serial"]],
                    private.hex(),
                    r["public_key"],
                )
                for r, (private, _) in zip(rows, pairs, strict=True)
            ]
            writes.append(loop.run_in_executor(pool, write_bundles, common, items, str(out_dir)))
            serial_base += n
        written = sum(await asyncio.gather(*writes))
        await asyncio.to_thread(os.sync)
        seconds = time.perf_counter() - started
    return {"registered": registered, "written": written, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=21_390)
    parser.add_argument("--chunk", type=int, default=2674)
    parser.add_argument("--keep", metavar="DIR", help="keep the database and bundles here")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="siheyi-provision-"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = work / "bundles"
    out_dir.mkdir(mode=0o700, exist_ok=True)
    db = work / "fleet.db"
    try:
        common = prepare(db)
        port = free_port()
        common["server_url"] = f"http://127.0.0.1:{port}"
        server = start_server(db, port)
        try:
            with keygen.pool() as pool:
                pool.submit(keygen.generate_raw, 1).result()  # workers up before the clock
                pool.submit(keygen.generate_raw, 1).result()
                result = asyncio.run(
                    provision(common["server_url"], args.devices, args.chunk, out_dir, common, pool)
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
        with connect(db) as conn:
            stored = conn.execute(
                "SELECT COUNT(*) FROM devices WHERE public_key IS NOT NULL"
            ).fetchone()[0]
        files = sum(1 for _ in out_dir.iterdir())
        assert result["registered"] == stored == files == args.devices, (result, stored, files)
        seconds = result["seconds"]
        summary = {
            "devices": args.devices,
            "seconds": round(seconds, 2),
            "per_s": round(args.devices / seconds, 1),
        }
        print(json.dumps(summary))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
