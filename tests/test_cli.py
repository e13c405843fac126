"""The `kiosk` command line, run as a user runs it: as a subprocess."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from firmware_bridge import sam
from firmware_bridge.samsim import SAMPLE_CARDS

KIOSK = [sys.executable, "-m", "siheyi.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KIOSK, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=ENV
    )


def test_help_lists_every_part() -> None:
    out = run("--help").stdout
    for verb in ("server", "provision", "reader", "device", "demo"):
        assert verb in out


def test_the_agent_command_line_leaves_the_server_and_opencv_unloaded(tmp_path: Path) -> None:
    """`kiosk device run` on a Pi: the server's modules and OpenCV are ~48 MB it never uses."""
    probe = (
        "import sys\n"
        "from siheyi import cli\n"
        "code = cli.main(['device', 'run', '--config', sys.argv[1]])\n"
        "heavy = [m for m in ('cv2', 'numpy', 'server.cli', 'psycopg') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    missing = tmp_path / "missing.toml"
    done = subprocess.run(
        [sys.executable, "-c", probe, str(missing)], capture_output=True, text=True, env=ENV
    )
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert "missing.toml" in done.stderr  # the config error is still reported
    doctor = probe.replace("['device', 'run',", "['doctor', '--json',")
    done = subprocess.run(
        [sys.executable, "-c", doctor, str(missing)], capture_output=True, text=True, env=ENV
    )
    assert done.stdout.strip().endswith("2 []"), done.stdout + done.stderr


def test_reader_decode_prints_json_per_frame_and_fails_on_a_bad_one() -> None:
    no_card = "AA AA AA 96 69 00 04 00 00 80 84"
    found = "AAAAAA9669 0008 00009F 00000000 97"
    bad = "AA AA AA 96 69 00 04 00 00 90 95"  # checksum should be 94
    proc = run("reader", "decode", stdin=f"{no_card}\n{found}\n{bad}\n")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1
    assert lines[0]["status"] == "80" and lines[1]["status"] == "9F"
    assert lines[2]["error"] == "checksum"


def test_reader_decode_read_base_reply() -> None:
    from firmware_bridge.idcard import encode_text
    from firmware_bridge.samsim import PHOTO_FILLER

    card = SAMPLE_CARDS["resident"]
    reply = sam.build_response(0, 0, 0x90, sam.read_base_data(encode_text(card), PHOTO_FILLER))
    proc = run("reader", "decode", stdin=reply.hex(" "))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["card"]["id_number"] == card["id_number"] and out["card"]["photo_bytes"] == 1024
    assert "photo" not in out["card"]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps(list(SAMPLE_CARDS.values()), ensure_ascii=False), encoding="utf-8")
    proc = subprocess.Popen(
        [*KIOSK, "reader", "simulate", "--cards", str(cards)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    yield proc, path
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def transact(port: serial.Serial, command: bytes) -> sam.Frame:
    port.write(command)
    parser = sam.ResponseParser()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for item in parser.feed(port.read(max(1, port.in_waiting))):
            assert isinstance(item, sam.Frame), item
            return item
    raise AssertionError("no reply")


def test_reader_simulate_answers_on_its_pty_and_obeys_control(
    simulator: tuple[subprocess.Popen[str], str],
) -> None:
    proc, path = simulator
    assert proc.stdin is not None and proc.stdout is not None
    assert Path(path).exists()
    with serial.serial_for_url(path, baudrate=115200, timeout=0.05) as port:
        assert transact(port, sam.reset_command()).sw3 == 0x90
        assert transact(port, sam.find_card_command()).sw3 == 0x80
        proc.stdin.write("place #0\n")  # by index: a bare 0 may also end a card number
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("placed")
        assert transact(port, sam.find_card_command()).sw3 == 0x9F
        assert transact(port, sam.select_card_command()).sw3 == 0x90
        frame = transact(port, sam.read_base_command())
        assert frame.sw3 == 0x90 and len(frame.raw) == 1295
        proc.stdin.write("bogus\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("error: unknown command")
    proc.stdin.write("quit\n")
    proc.stdin.flush()
    assert proc.wait(timeout=5) == 0


def test_demo_json_taps() -> None:
    proc = run("demo", "--taps", "6", "--json", "--port", "0", "--people", "1000", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *decisions, summary = [json.loads(line) for line in proc.stdout.splitlines()]  # only JSON
    assert len(decisions) == 6 and summary["summary"]["taps"] == 6
    for d in decisions:
        assert d["outcome"] in {"pass", "check", "nat_expired", "invalid_credential"}
        assert d["prompt"] and d["offline"] is False and d["latency_ms"] < 1000
        assert "*" in d["masked_id"]
    # The board's address and a demo guard's login go to stderr with the other set-up lines.
    assert "/board/" in proc.stderr and "demo-guard / " in proc.stderr


def test_demo_against_an_external_server(tmp_path: Path) -> None:
    db = str(tmp_path / "ext.db")
    assert run("server", "init-demo-data", "--database", db, "--people", "1000").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    bundle = tmp_path / "bundle.json"
    add = run(
        "provision", "add", "--database", db, "--serial", "SN-X", "--site", "s1",
        "--server-url", url, "--bundle", str(bundle),
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert json.loads(bundle.read_text())["private_key"] not in add.stdout + add.stderr
    server = subprocess.Popen(
        [*KIOSK, "server", "run", "--database", db, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        proc = run(
            "demo", "--taps", "4", "--json", "--server-url", url, "--bundle", str(bundle),
            "--people", "1000", "--workdir", str(tmp_path / "demo"),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        decisions = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"tap"')]
        assert len(decisions) == 4 and all(d["offline"] is False for d in decisions)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_device_run_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text("[voice]\nplayer = 'bogus'\n")
    proc = run("device", "run", "--config", str(cfg))
    assert proc.returncode == 2 and "voice.player" in proc.stderr and "Traceback" not in proc.stderr
    cfg.write_text(f"bundle = '{tmp_path / 'missing.json'}'\nstate_dir = '{tmp_path}'\n")
    proc = run("device", "run", "--config", str(cfg))
    assert proc.returncode == 2 and "missing.json" in proc.stderr and "Traceback" not in proc.stderr


def test_simulator_rejects_bad_control_values_and_files(tmp_path: Path) -> None:
    proc = run("reader", "simulate", "--cards", str(tmp_path / "nope.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run("reader", "simulate", stdin="slow -1\ntap 0 -1\nquit\n")
    assert proc.returncode == 0
    answers = proc.stdout.splitlines()[1:]
    assert all(a.startswith("error:") for a in answers), answers


def test_admin_verbs_keep_database_lines_for_verbose(tmp_path: Path) -> None:
    """The lines "database … open/closed" and "applied schema migration N" are a service's
    log: an admin's one-shot verb prints only its answer, unless `kiosk -v` asks for more."""
    db = str(tmp_path / "a.db")
    init = run("server", "init-demo-data", "--database", db, "--people", "10")
    assert init.returncode == 0 and "migration" not in init.stderr, init.stderr
    issue = ["server", "issue-pass", "110101199003070017", "--site", "s1", "--database", db]
    quiet = run(*issue)
    assert "1101**********0017" in quiet.stdout + quiet.stderr  # the verb's own answer
    assert "server.storage" not in quiet.stderr, quiet.stderr
    loud = run("-v", *issue)
    assert f"database {db} open" in loud.stderr and f"database {db} closed" in loud.stderr


def _closed_pipe_run(args: list[str], stdin: str, *, unbuffered: bool) -> tuple[int, str]:
    """Run ``kiosk ARGS`` with stdout a pipe whose reader is gone, as after ``| head -1``
    (closed before the verb writes, so the broken pipe is certain, not a race)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:  # a print that fails inside the verb, not at the final flush
        env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.run(
            [*KIOSK, *args], input=stdin, stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=120, env=env,
        )  # fmt: skip
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_every_verb_ends_quietly_when_its_reader_stops(tmp_path: Path, unbuffered: bool) -> None:
    """`kiosk … | head -1`: the reader stopped early is no error, for every verb alike."""
    db = str(tmp_path / "p.db")
    people = tmp_path / "people.csv"
    people.write_text("site,id_number\ns1,110101199003070011\n", encoding="utf-8")
    frame = "AA AA AA 96 69 00 04 00 00 80 84\n"
    verbs: list[tuple[list[str], str]] = [
        (["server", "init-demo-data", "--database", db, "--people", "10"], ""),
        (["server", "import", "site_people", str(people), "--database", db, "--create-sites"], ""),
        (["server", "user", "list", "--database", db], ""),
        (["reader", "decode"], frame * 50),
        (["provision", "site", "list", "--database", db], ""),
    ]
    for args, stdin in verbs:
        status, err = _closed_pipe_run(args, stdin, unbuffered=unbuffered)
        assert (status, err) == (0, ""), args


def test_import_and_prune_print_their_answer_only(tmp_path: Path) -> None:
    """The importer's "imported 4 of 4 rows" and retention's "audit pruned" are INFO lines
    of the server's log; the verbs print their own answer, and `-v` adds the log lines."""
    db = str(tmp_path / "q.db")
    people = tmp_path / "people.csv"
    people.write_text("site,id_number\ns1,110101199003070011\n", encoding="utf-8")
    imp = ["server", "import", "site_people", str(people), "--database", db, "--create-sites"]
    prune = ["server", "prune", "--before", "2000-01-01", "--database", db]
    for verb in (imp, prune):
        quiet = run(*verb)
        assert quiet.returncode == 0 and quiet.stdout, quiet.stderr
        assert "INFO" not in quiet.stderr, quiet.stderr
        assert " INFO server." in run("-v", *verb).stderr


def test_a_quiet_verb_gives_the_servers_log_level_back(tmp_path: Path) -> None:
    """main() run inside a process (tests, a wrapper script) must not leave the server's
    loggers silenced for whatever that process does next."""
    from siheyi import cli

    server_log = logging.getLogger("server")
    before = server_log.level
    db = str(tmp_path / "q.db")
    assert cli.main(["server", "init-demo-data", "--people", "2", "--database", db]) == 0
    assert server_log.level == before
