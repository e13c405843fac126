"""Serve the simulated SAM module on a pty or a serial URL, with a control interface (CPython).

This is the hardware edge of the test and demo setup: the kiosk agent opens the pty (or a
stable symlink to it) exactly as it would open `/dev/ttyUSB0`, so the agent's serial code runs
unchanged. The control interface places and removes cards and injects faults: corrupt frames,
slow replies, silence and unplugging (the pty disappears and comes back, as a USB reader does).

CPython only: it uses threads, ptys and pyserial. The protocol logic itself lives in the
MicroPython-compatible `firmware_bridge.samsim`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import select
import socket
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from firmware_bridge.samsim import (
    CARD_FIELDS,
    DECODED_ONLY,
    SIMULATOR_FIELDS,
    SimulatedSam,
    card_problems,
)

_PACE_CHUNK = 32  # bytes per paced burst: 2.8 ms at 115200

USAGE = (
    "place #N|…DIGITS|remove|tap #N|…DIGITS [seconds]|corrupt|fail-read|slow SECONDS|"
    "silent [off]|unplug|replug|cards|path"
)


class SimulatedReaderPort:
    """A simulated SAM reader behind a pty (default) or a pyserial URL."""

    def __init__(
        self,
        sam_module: SimulatedSam | None = None,
        *,
        url: str | None = None,
        link: str | os.PathLike[str] | None = None,
    ) -> None:
        self.sam = sam_module if sam_module is not None else SimulatedSam()
        self._url = url
        self._link = Path(link) if link is not None else None
        self._lock = threading.Lock()  # the port's file descriptors
        self._sam_lock = threading.Lock()  # the SAM's state: serve thread vs control
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._serial: Any = None
        self._pty_path = ""
        self.reply_delay_s = 0.0
        # Emulate a real line's speed (bits/s, 8N1) so timing matches hardware; 0 = instant.
        self.baud = 0
        self.silent = False

    # -- the port ----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """What the kiosk should open: the stable symlink if any, else the pty or URL."""
        if self._link is not None:
            return str(self._link)
        return self._pty_path or (self._url or "")

    def _open(self) -> None:
        if self._url is not None:
            import serial

            self._serial = serial.serial_for_url(self._url, baudrate=115200, timeout=0.05)
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._master, self._slave = master, slave
        self._pty_path = os.ttyname(slave)
        if self._link is not None:
            tmp = self._link.with_name(self._link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._pty_path)
            os.replace(tmp, self._link)

    def _close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        if self._link is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()

    def start(self) -> SimulatedReaderPort:
        self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="sam-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            self._close()

    def __enter__(self) -> SimulatedReaderPort:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """The reader vanishes: the pty closes and its path (or symlink) disappears."""
        with self._lock:
            self._close()

    def replug(self) -> None:
        """The reader comes back (a new pty; the symlink points at it again)."""
        with self._lock:
            if self._master is None and self._serial is None:
                self._open()

    # -- serving -----------------------------------------------------------------------------
    def _read(self) -> bytes:
        with self._lock:
            master, ser = self._master, self._serial
        if ser is not None:
            try:
                return bytes(ser.read(ser.in_waiting or 1))
            except Exception:
                return b""
        if master is None:
            time.sleep(0.02)
            return b""
        try:
            ready, _, _ = select.select([master], [], [], 0.05)
            return os.read(master, 4096) if ready else b""
        except OSError:
            time.sleep(0.02)
            return b""

    def _write(self, data: bytes) -> None:
        with self._lock:
            master, ser = self._master, self._serial
            try:
                if ser is not None:
                    ser.write(data)
                elif master is not None:
                    view = memoryview(data)
                    while view:
                        n = os.write(master, view)
                        view = view[n:]
            except OSError:
                pass  # unplugged while answering: the host will time out, as with real hardware

    def _serve(self) -> None:
        while not self._stop.is_set():
            chunk = self._read()
            if not chunk:
                continue
            if self.baud:
                time.sleep(len(chunk) * 10 / self.baud)  # the command's own wire time
            with self._sam_lock:
                reply = self.sam.feed(chunk)
            if not reply or self.silent:
                continue
            if self.reply_delay_s:
                time.sleep(self.reply_delay_s)
            if self.baud:
                self._write_paced(reply, self.baud)
            else:
                self._write(reply)

    def _write_paced(self, data: bytes, baud: int) -> None:
        """Write at the line rate of a real UART (8N1: 10 bits a byte), in small bursts."""
        start = time.monotonic()
        for offset in range(0, len(data), _PACE_CHUNK):
            due = start + (offset + _PACE_CHUNK) * 10 / baud
            self._write(data[offset : offset + _PACE_CHUNK])
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    # -- control -----------------------------------------------------------------------------
    def place(self, card: dict[str, Any] | str) -> None:
        """Put a card on the reader (thread-safe against a command being answered)."""
        with self._sam_lock:
            self.sam.place(card)

    def remove(self) -> None:
        """Take the card away (thread-safe)."""
        with self._sam_lock:
            self.sam.remove()

    def control(self, line: str, cards: list[dict[str, Any]]) -> str:
        """Apply one control command; returns a one-line answer for the operator."""
        words = line.split()
        if not words:
            return ""
        verb, args = words[0].lower(), words[1:]
        try:
            if verb == "place":
                card = pick_card(cards, args[0] if args else "#0")
                self.place(card)
                return "placed " + _label(card)
            if verb == "remove":
                self.remove()
                return "removed"
            if verb == "tap":
                card = pick_card(cards, args[0] if args else "#0")
                hold = _seconds(args[1]) if len(args) > 1 else 1.0
                self.place(card)
                time.sleep(hold)
                self.remove()
                return "tapped " + _label(card)
            if verb == "corrupt":
                self.sam.corrupt_next = True
                return "next reply corrupt"
            if verb == "fail-read":
                self.sam.fail_read_next = True
                return "next read fails"
            if verb == "slow":
                self.reply_delay_s = _seconds(args[0]) if args else 0.5
                return f"reply delay {self.reply_delay_s} s"
            if verb == "silent":
                self.silent = not args or args[0] not in ("off", "0", "false")
                return "silent" if self.silent else "answering"
            if verb == "unplug":
                self.unplug()
                return "unplugged"
            if verb == "replug":
                self.replug()
                return "replugged " + self.path
            if verb == "cards":
                return json.dumps([_label(c) for c in cards], ensure_ascii=False)
            if verb == "path":
                return self.path
        except (IndexError, ValueError, KeyError) as exc:
            return f"error: {exc}"
        return f"error: unknown command {verb!r} ({USAGE})"


def _label(card: dict[str, Any]) -> str:
    """A card's name as answers show it (an I card's is its Chinese, else English name)."""
    return str(card.get("name") or card.get("chinese_name") or card.get("english_name") or "")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 60:
        raise ValueError(f"seconds must be in [0, 60], got {text}")
    return value


#: How ``tap`` / ``place`` name the last digits of a card's number (``…1234`` or ``...1234``).
SUFFIX_MARKS = ("…", "...")


class CardChoiceError(ValueError):
    """A ``tap``/``place`` argument that names no card, or more than one."""


def pick_card(cards: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The card ``key`` names: ``#3`` the fourth card of the file (from ``#0``), ``…1234`` (or
    ``...1234``) the one card whose number ends in 1234. A bare ``3`` is either, and is
    taken only when both readings agree or just one names a card."""
    if key.startswith("#"):
        return cards[_index(cards, key[1:])]
    for mark in SUFFIX_MARKS:
        if key.startswith(mark):
            return cards[_by_suffix(cards, key[len(mark) :])]
    if not key.isdigit():
        raise CardChoiceError(f"no card {key!r}: say #N for the N-th card, …DIGITS for a number")
    index = int(key) if int(key) < len(cards) else None
    ends = _ending(cards, key)
    named = set(ends) | ({index} if index is not None else set())
    if not named:
        raise CardChoiceError(f"no card {key}: there is no #{key} and no number ends in {key}")
    if len(named) > 1:
        raise CardChoiceError(
            f"{key} is ambiguous ({_which(sorted(named))}): say #{key} for the card at that"
            f" index, or …{key} for the number that ends in it"
        )
    return cards[named.pop()]


def _index(cards: list[dict[str, Any]], text: str) -> int:
    if not text.isdigit():
        raise CardChoiceError(f"#{text}: expected #N, a card's index in the file")
    if int(text) >= len(cards):
        have = f"#0-#{len(cards) - 1}" if cards else "none: no --cards file"
        raise CardChoiceError(f"no card #{text} (cards: {have})")
    return int(text)


def _by_suffix(cards: list[dict[str, Any]], digits: str) -> int:
    if not digits:
        raise CardChoiceError("…: give the last digits of the number, e.g. …1234")
    ends = _ending(cards, digits)
    if not ends:
        raise CardChoiceError(f"no card's number ends in {digits}")
    if len(ends) > 1:
        raise CardChoiceError(f"…{digits} names {_which(ends)}: give more digits, or #N")
    return ends[0]


def _ending(cards: list[dict[str, Any]], digits: str) -> list[int]:
    """Indexes of the cards whose number (id_number, or an I card's permit_number) ends so."""
    return [
        i
        for i, card in enumerate(cards)
        if str(card.get("id_number") or card.get("permit_number") or "")
        .upper()
        .endswith(digits.upper())
    ]


def _which(indexes: list[int]) -> str:
    return "cards " + ", ".join(f"#{i}" for i in indexes)


def load_cards(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Cards from a JSON file: a list of card objects as `kiosk reader decode` prints them
    (or ``{"cards": [...]}``), each checked here: an unknown or misspelled field, a field the
    card type does not have, or a value that does not fit its field is a ``ValueError``
    naming the card (``#N``, from 0) and the field, before any card is served."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if isinstance(data, dict) and set(data) == {"cards"}:
        data = data["cards"]
    if not isinstance(data, list):
        raise ValueError(f'{path}: expected a JSON list of card objects (or {{"cards": [...]}})')
    problems = [
        _problem(path, index, card, field, reason)
        for index, card in enumerate(data)
        for field, reason in card_problems(card)
    ]
    if problems:
        raise ValueError("\n".join(problems))
    return data


def _problem(path: str | os.PathLike[str], index: int, card: Any, field: str, reason: str) -> str:
    """``cards.json: card #2 (张三): field 'nmae': unknown field (did you mean 'name'?)``."""
    name = card.get("name") or card.get("english_name") if isinstance(card, dict) else ""
    where = f"{path}: card #{index}" + (f" ({name})" if name else "")
    if not field:
        return f"{where}: {reason}"
    hint = ""
    if reason == "unknown field":
        kind = card.get("card_type", "resident")
        known = [*CARD_FIELDS.get(kind, ()), "card_type", *SIMULATOR_FIELDS, *DECODED_ONLY]
        close = difflib.get_close_matches(field, known, n=1)
        hint = (
            f" (did you mean {close[0]!r}?)"
            if close
            else f" (a {kind} card has: {', '.join(known)})"
        )
    return f"{where}: field {field!r}: {reason}{hint}"


def serve_control_lines(
    port: SimulatedReaderPort,
    cards: list[dict[str, Any]],
    lines: Iterable[str],
    out: Callable[[str], None],
) -> None:
    """Run control commands from an iterable of lines (stdin or a socket)."""
    for line in lines:
        line = line.strip()
        if line in ("quit", "exit"):
            return
        answer = port.control(line, cards)
        if answer:
            out(answer)


def serve_control_socket(
    port: SimulatedReaderPort, cards: list[dict[str, Any]], host: str, tcp_port: int
) -> socket.socket:
    """Listen for control connections (one line protocol, one thread per connection)."""
    server = socket.create_server((host, tcp_port))

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("rw", encoding="utf-8", errors="replace", newline="\n") as f:

            def out(text: str) -> None:
                f.write(text + "\n")
                f.flush()

            with contextlib.suppress(OSError):
                serve_control_lines(port, cards, f, out)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, name="sam-sim-control", daemon=True).start()
    return server


def main(
    cards_file: str | None,
    url: str | None,
    link: str | None,
    control: str | None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    """`kiosk reader simulate`: print the port path, then obey control lines."""
    try:
        cards = load_cards(cards_file) if cards_file else []
        port = SimulatedReaderPort(url=url, link=link).start()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def out(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    server = None
    try:
        out(port.path)
        if control and control != "stdin":
            host, _, tcp = control.rpartition(":")
            try:
                server = serve_control_socket(port, cards, host or "127.0.0.1", int(tcp))
            except (OSError, ValueError) as exc:
                print(f"error: control {control!r}: {exc}", file=sys.stderr)
                return 2
            out(f"control on {host or '127.0.0.1'}:{server.getsockname()[1]}")
            threading.Event().wait()
        else:
            serve_control_lines(port, cards, stdin, out)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()
        port.stop()
    return 0
