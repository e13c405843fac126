"""Verify throughput against a bare aiohttp JSON echo, side by side in one run.

Starts two servers on loopback, each its own process:

* a **bare echo**: an aiohttp app whose one route parses the JSON body and answers a JSON
  document of the same size as a real verify answer (no middleware, no access log);
* the **real server** (``kiosk server run``, one process) on a SQLite file (or a PostgreSQL
  URL, ``--database``) seeded with demo people, with ``--kiosks`` provisioned kiosks, each
  with a session token minted from the database.

``wrk`` then loads each in turn (``--rounds`` interleaved rounds, ``--connections`` each,
one wrk thread: the other core is the server's) with the same request body shape; a Lua
script gives every verify request a unique tap id and cycles through the kiosks' tokens and
the seeded people. The last line printed is JSON:
``{"echo_rps", "verify_rps", "ratio", "verify_p99_ms", ...}`` (medians over the rounds).

    .venv/bin/python bench/verify_throughput.py [--rounds 3] [--duration 8]
        [--connections 64] [--access-log on|off] [--database postgresql://…]

Target (issue 11): ratio ≥ 0.5 and verify p99 ≤ 50 ms at 64 connections.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# bench/ is on the path (this script's folder); the root too, for fleetload_setup's imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleetload_setup import free_port, wait_port

ECHO_APP = """
import sys
from aiohttp import web
pad = "x" * int(sys.argv[2])
async def echo(request):
    body = await request.json()
    return web.json_response({"echo": body, "pad": pad})
app = web.Application()
app.router.add_post("/echo", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

#: The real server, as ``kiosk server run --config`` serves it (one process), without the
#: command line's other work (kept here so the bench does not depend on the CLI's options).
SERVER_APP = """
import asyncio, logging, sys
from server.app import create_app
from server.config import load_config
from server.http.serving import serve
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
config = load_config(sys.argv[1])
asyncio.run(serve(create_app(config), config.host, config.port, None))
"""

LUA = r"""
local tokens = {%(tokens)s}
local people = {%(people)s}
local run = "%(run)s"
local n = 0
request = function()
  n = n + 1
  local body = '{"tap_id":"b' .. run .. '-' .. n .. '","credential":{"kind":"id_card",' ..
    '"id_number":"' .. people[(n %% #people) + 1] .. '"}}'
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = "Bearer " .. tokens[(n %% #tokens) + 1]}
  return wrk.format("POST", "%(path)s", headers, body)
end
"""


def seed(database: str, kiosks: int, people: int) -> tuple[list[str], list[str]]:
    """Demo people and provisioned kiosks: (ID numbers, session tokens)."""
    from provisioning.registry import add_device
    from server.fleet.sessions import mint_token
    from server.storage.db import connect
    from server.verify.demodata import load_demo_data
    from siheyi.cli import local_fleet

    load_demo_data(database, people)
    fleet = local_fleet(None, database)
    ids = [
        add_device(fleet, f"SN-B{i:05d}", f"site-{i % 4}", server_url="http://bench").device_id
        for i in range(kiosks)
    ]
    with connect(database) as conn:
        numbers = [
            str(r[0]) for r in conn.execute("SELECT id_number FROM health_codes ORDER BY id_number")
        ]
        tokens = [mint_token(conn, d, ttl_s=3600) for d in ids]
    return numbers, tokens


def write_config(folder: Path, database: str, port: int, access_log: bool) -> Path:
    path = folder / "server.toml"
    path.write_text(
        "[server]\n"
        f"database = {json.dumps(database)}\n"
        f"port = {port}\n"
        f"access_log = {'true' if access_log else 'false'}\n"
        "[limits]\n"
        "device_inflight_each = 64\n",
        encoding="utf-8",
    )
    return path


def lua_script(folder: Path, name: str, path: str, tokens: list[str], people: list[str]) -> Path:
    script = folder / f"{name}.lua"
    quoted = ",".join(json.dumps(t) for t in tokens)
    script.write_text(
        LUA
        % {
            "tokens": quoted,
            "people": ",".join(json.dumps(p) for p in people),
            "run": name,
            "path": path,
        },
        encoding="utf-8",
    )
    return script


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, path: str, script: Path, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    """One wrk run: requests/s, p50/p99 in ms, the count of non-2xx answers, and the
    server's CPU time per request (less sensitive than requests/s to other load on the
    machine)."""
    cpu = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}{path}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    cpu = cpu_seconds(pid) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": round(rps),
        "cpu_us_per_request": round(cpu / max(total, 1) * 1e6, 1),
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS[unit], 2)


def response_size(port: int, tokens: list[str], people: list[str]) -> int:
    """Mean bytes of real verify answers for the first 20 people (the echo answers as much)."""
    import urllib.request

    sizes = []
    for i, number in enumerate(people[:20]):
        body = json.dumps(
            {"tap_id": f"size-probe-{i}", "credential": {"kind": "id_card", "id_number": number}}
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/verify",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {tokens[0]}"},
        )
        with urllib.request.urlopen(req) as resp:
            sizes.append(len(resp.read()))
    return round(statistics.mean(sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--kiosks", type=int, default=64)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--access-log", choices=("on", "off"), default="off")
    parser.add_argument("--database", help="a postgresql:// URL (default: a new SQLite file)")
    parser.add_argument(
        "--profile", help="py-spy record the server's last verify run (collapsed stacks) here"
    )
    parser.add_argument("--server-log", help="keep a copy of the server's log here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="siheyi-bench-") as tmp:
        folder = Path(tmp)
        database = args.database or str(folder / "siheyi.db")
        people, tokens = seed(database, args.kiosks, args.people)
        server_port, echo_port = free_port(), free_port()
        config = write_config(folder, database, server_port, args.access_log == "on")
        log = (folder / "server.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER_APP, str(config)],
            stdout=subprocess.DEVNULL, stderr=log, env=env,
        )  # fmt: skip
        echo: subprocess.Popen[bytes] | None = None
        spy: subprocess.Popen[bytes] | None = None
        try:
            wait_port(server_port, server, 30)
            size = response_size(server_port, tokens, people)
            pad = max(0, size - 150)
            echo = subprocess.Popen([sys.executable, "-c", ECHO_APP, str(echo_port), str(pad)])
            wait_port(echo_port, echo, 30)
            rounds = []
            for r in range(args.rounds):
                echo_lua = lua_script(folder, f"e{r}", "/echo", tokens, people)
                verify_lua = lua_script(folder, f"v{r}", "/v1/verify", tokens, people)
                e = wrk(echo_port, "/echo", echo_lua, args, echo.pid)
                if args.profile and r == args.rounds - 1:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-o",
                         args.profile, "-p", str(server.pid), "-d", str(args.duration), "-r",
                         "200", "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                v = wrk(server_port, "/v1/verify", verify_lua, args, server.pid)
                rounds.append({"echo": e, "verify": v})
                print(json.dumps({"round": r + 1, **rounds[-1]}), flush=True)
            if spy is not None:
                spy.wait()
        finally:
            for proc in (echo, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=30)
            log.close()
        log_lines = sum(1 for _ in (folder / "server.log").open("rb"))
        if args.server_log:
            shutil.copyfile(folder / "server.log", args.server_log)
    echo_rps = statistics.median(x["echo"]["rps"] for x in rounds)
    verify_rps = statistics.median(x["verify"]["rps"] for x in rounds)
    echo_cpu = statistics.median(x["echo"]["cpu_us_per_request"] for x in rounds)
    verify_cpu = statistics.median(x["verify"]["cpu_us_per_request"] for x in rounds)
    print(
        json.dumps(
            {
                "echo_rps": round(echo_rps),
                "verify_rps": round(verify_rps),
                "ratio": round(verify_rps / echo_rps, 3),
                "verify_p99_ms": statistics.median(x["verify"]["p99_ms"] for x in rounds),
                "cpu_ratio": round(echo_cpu / verify_cpu, 3),
                "echo_cpu_us": echo_cpu,
                "verify_cpu_us": verify_cpu,
                "echo_p99_ms": statistics.median(x["echo"]["p99_ms"] for x in rounds),
                "verify_non_2xx": sum(x["verify"]["non_2xx"] for x in rounds),
                "backend": "postgresql" if args.database else "sqlite",
                "access_log": args.access_log,
                "server_log_lines": log_lines,
                "response_bytes": size,
                "connections": args.connections,
            }
        )
    )


if __name__ == "__main__":
    main()
