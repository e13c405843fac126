"""The ID-card reader: its serial port, and the SAM (or the MCU) behind it.

Doctor opens the port exclusively, sends the SAM one status command (or the MCU one ping) and
lets go. It never sends find, select or read: a card in the field stays unread. A port another
process holds is not opened at all: two readers of one serial line would each see half the
replies, so a running agent is reported (a warning naming its pid), not fought.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

from device.doctor.context import STOP_AGENT, DoctorContext, is_agent
from device.doctor.model import CheckResult, fail, ok, warn

#: How long the SAM or the MCU may take to answer (a real SAM answers status in ~10 ms).
REPLY_TIMEOUT_S = 1.0


def _is_local(url: str) -> bool:
    return "://" not in url


def check_serial_port(ctx: DoctorContext) -> CheckResult:
    """The reader's port exists, is not held by another process, and opens."""
    r = ctx.config.reader
    url = r.url
    if not _is_local(url):
        return ok("serial_port", f"{url} is a pyserial URL, not a device node (see reader)")
    if not os.path.exists(url):
        return fail(
            "serial_port",
            f"{url} does not exist",
            "plug in the reader; `ls -l /dev/serial/by-id/` shows what is attached; the udev "
            "rule names it /dev/siheyi-reader (set reader.url to that)",
        )
    holders = ctx.probes.holders(url)
    agents = [(pid, cmd) for pid, cmd in holders if is_agent(cmd)]
    if agents:
        ctx.port_busy = True
        pid, _ = agents[0]
        return warn(
            "serial_port",
            f"{url} is in use by the running kiosk agent (pid {pid}); not opened so the "
            "agent is not disturbed",
            f"to test the reader itself: {STOP_AGENT}",
        )
    if holders:
        ctx.port_busy = True
        pid, cmd = holders[0]
        return fail(
            "serial_port",
            f"{url} is held by another process: pid {pid} ({cmd[:80]})",
            f"stop that process (`kill {pid}`); ModemManager often grabs serial adapters: "
            "`sudo systemctl disable --now ModemManager`",
        )
    try:
        port = _open(url, r.baudrate)
    except Exception as exc:
        return _open_failed(ctx, url, exc)
    port.close()
    return ok("serial_port", f"{url} opens at {r.baudrate} baud")


def _open(url: str, baudrate: int) -> Any:
    import serial

    if _is_local(url):  # flock: a second doctor, or an agent that locks, is seen as busy
        return serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, exclusive=True)
    return serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)


def _open_failed(ctx: DoctorContext, url: str, exc: Exception) -> CheckResult:
    code = getattr(exc, "errno", None)
    text = f"{url} cannot be opened: {exc}"
    if code == errno.EACCES:
        user = ctx.probes.user().name
        group = _group_of(url) or "dialout"
        fix = (
            f"add user {user} to group {group}: usermod -aG {group} {user} (then restart the agent)"
        )
        return fail("serial_port", text, fix)
    if code == errno.EBUSY or "lock" in str(exc).lower():
        ctx.port_busy = True
        return fail("serial_port", f"{url} is busy (another program holds it): {exc}", STOP_AGENT)
    return fail("serial_port", text, "check the reader's cable and reader.url")


def _group_of(path: str) -> str:
    import grp

    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return ""


def check_reader(ctx: DoctorContext, serial_result: CheckResult) -> CheckResult:
    """The SAM answers a status command, or (MCU wiring) the MCU answers a ping."""
    r = ctx.config.reader
    what = "MCU" if r.wiring == "mcu" else "SAM"
    if ctx.port_busy:
        return warn("reader", f"{what} not asked: {r.url} is in use", STOP_AGENT)
    if serial_result.status == "fail":
        return warn("reader", f"{what} not asked: the serial port is unusable (see serial_port)")
    limit = min(REPLY_TIMEOUT_S, ctx.timeout_s)
    try:
        port = _open(r.url, r.baudrate)
    except Exception as exc:
        return fail("reader", f"{r.url} cannot be opened: {exc}", "see serial_port")
    try:
        if r.wiring == "mcu":
            return _ping_mcu(port, limit)
        return _sam_status(port, limit)
    finally:
        port.close()


def _sam_status(port: Any, limit: float) -> CheckResult:
    from firmware_bridge import sam
    from firmware_bridge.errors import ProtocolError

    parser = sam.ResponseParser()
    port.reset_input_buffer()
    port.write(sam.status_command())
    deadline = time.monotonic() + limit
    garbled = 0
    while time.monotonic() < deadline:
        chunk = port.read(max(1, port.in_waiting))
        for item in parser.feed(chunk) if chunk else []:
            if isinstance(item, ProtocolError):
                garbled += 1
                continue
            if item.sw3 == sam.SW3_OK:
                return ok("reader", f"SAM answers status: SW3 {item.sw3:02X} {item.status_text}")
            return fail(
                "reader",
                f"SAM answers status with SW3 {item.sw3:02X} ({item.status_text})",
                "power-cycle the reader; a SAM that keeps failing its self-test must be replaced",
            )
    if garbled:
        return fail(
            "reader",
            f"only garbled replies to a status command ({garbled} bad frames)",
            "set reader.baudrate to the SAM's speed (115200 by default) and check the cable",
        )
    return fail(
        "reader",
        f"the SAM did not answer a status command within {limit:.1f} s",
        "check the reader's power and USB cable, that reader.url is the reader "
        "(`ls -l /dev/serial/by-id/`) and reader.baudrate",
    )


def _ping_mcu(port: Any, limit: float) -> CheckResult:
    from firmware_bridge import bridge
    from firmware_bridge.errors import ProtocolError

    token = int.from_bytes(os.urandom(4), "big")
    decoder = bridge.Decoder()
    port.reset_input_buffer()
    port.write(bytes(bridge.encode(bridge.PING, 1, bridge.ping_payload(token))))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = port.read(max(1, port.in_waiting))
        for msg in decoder.feed(chunk) if chunk else []:
            if isinstance(msg, ProtocolError) or msg.type != bridge.PONG:
                continue  # cards, health and logs are the agent's business, not doctor's
            pong = bridge.parse_pong(msg.payload)
            if pong["token"] == token:
                version, uptime = pong["version"], pong["uptime_ms"] / 1000
                return ok("reader", f"MCU answers ping: firmware {version}, up {uptime:.0f} s")
    return fail(
        "reader",
        f"the MCU did not answer a ping within {limit:.1f} s",
        "check the MCU's power and cable, that it runs firmware_bridge (docs/bridge.md) "
        "and reader.baudrate",
    )
