"""One small serial-port interface over three backends, chosen by feature test.

``open_uart(spec, baudrate=115200)`` returns a port with::

    read(n)          -> bytes, at most n, never blocks (b"" when nothing is waiting)
    write(data)      -> int, bytes written (0 when the port cannot take them now)
    any()            -> int, > 0 when bytes are waiting (the exact count where known)
    wait(timeout_ms) -> bool, True when readable within the timeout
    close()

A vanished device (USB unplugged, pty closed) raises ``PortGone`` (an ``OSError``) from
read / write / any / wait; the caller closes the port and opens ``spec`` again later.

Specs:
- ``"uart:ID[:tx=PIN][:rx=PIN]"`` -> ``machine.UART`` on a board (``"uart:0"``,
  ``"uart:1:tx=4:rx=5"``);
- ``"usb"`` -> the board's USB CDC console (``sys.stdin.buffer`` / ``sys.stdout.buffer``);
- anything else -> a tty / pty path on the unix MicroPython port (termios raw mode +
  ``select.poll``), or a pyserial URL on CPython (``/dev/ttyUSB0``, ``socket://h:p``,
  ``loop://``, a pty path).
"""

import sys

try:
    import machine

    _MACHINE_UART = getattr(machine, "UART", None)
except ImportError:
    machine = None
    _MACHINE_UART = None

_MICROPYTHON = sys.implementation.name == "micropython"

RX_BUFFER = 2560  # > 2321, the largest SAM reply: one whole reply fits while we poll


class PortGone(OSError):
    """The device behind a port vanished (unplugged, pty closed); reopen it later."""


def _gone(what, err=None):
    detail = what if err is None else what + ": " + str(err)
    return PortGone(5, detail)  # 5 = EIO


def parse_uart_spec(spec):
    """``"uart:1:tx=4:rx=5"`` -> (1, {"tx": 4, "rx": 5}); raises ValueError when malformed."""
    parts = spec.split(":")
    if len(parts) < 2 or parts[0] != "uart":
        raise ValueError(f"not a uart spec: {spec!r}")
    opts = {}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if not sep or key not in ("tx", "rx", "rxbuf", "timeout"):
            raise ValueError(f"bad uart option {part!r} in {spec!r}")
        opts[key] = int(value)
    return int(parts[1]), opts


class _PolledStream:
    """A stream readable through ``select.poll`` byte by byte (MicroPython file objects).

    MicroPython's ``read(n)`` on a blocking file waits for all n bytes, so bytes are read one
    at a time while poll reports them: never blocks, ~3 us a byte on the unix port.
    """

    def __init__(self, rfile, wfile):
        import select

        self._select = select
        self._r = rfile
        self._w = wfile
        self._pin = select.poll()
        self._pin.register(rfile, select.POLLIN)
        self._pout = select.poll()
        self._pout.register(wfile, select.POLLOUT)
        self._one = bytearray(1)
        self._closed = False

    def _events(self, timeout_ms):
        if self._closed:
            raise _gone("port closed")
        try:
            ev = self._pin.poll(timeout_ms)
        except OSError as err:
            raise _gone("poll", err) from None
        if not ev:
            return 0
        flags = ev[0][1]
        if flags & (self._select.POLLHUP | self._select.POLLERR):
            raise _gone("hang-up")
        return flags

    def any(self):
        return 1 if self._events(0) else 0

    def wait(self, timeout_ms):
        return bool(self._events(timeout_ms))

    def read(self, n):
        out = bytearray()
        one = self._one
        while len(out) < n and self._events(0):
            try:
                got = self._r.readinto(one)
            except OSError as err:
                raise _gone("read", err) from None
            if not got:
                raise _gone("end of file")
            out.append(one[0])
        return bytes(out)

    def write(self, data):
        if self._closed:
            raise _gone("port closed")
        try:
            ev = self._pout.poll(0)
            if ev and ev[0][1] & (self._select.POLLHUP | self._select.POLLERR):
                raise _gone("hang-up")
            if not ev:
                return 0  # the other side is not reading: drop rather than block the loop
            n = self._w.write(data)
            self._flush()
        except PortGone:
            raise
        except OSError as err:
            raise _gone("write", err) from None
        return len(data) if n is None else n

    def _flush(self):
        pass  # a tty file is unbuffered (and fsync on a tty is EINVAL)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for f in (self._r, self._w):
            try:  # noqa: SIM105 (no contextlib on MicroPython)
                self._pin.unregister(f)
            except Exception:
                pass
        self._close_files()

    def _close_files(self):
        pass


class PosixTty(_PolledStream):
    """A tty or pty path on the unix MicroPython port: raw mode, non-blocking through poll."""

    def __init__(self, path, baudrate=115200):
        f = open(path, "r+b")  # noqa: SIM115
        try:
            import termios

            termios.setraw(f.fileno())
            _set_speed(termios, f.fileno(), baudrate)
        except Exception:
            f.close()
            raise
        self.path = path
        self._f = f
        _PolledStream.__init__(self, f, f)

    def _close_files(self):
        try:  # noqa: SIM105 (no contextlib on MicroPython)
            self._f.close()
        except OSError:
            pass


def _set_speed(termios, fd, baudrate):
    # tcgetattr: [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]; a pty ignores the speed.
    code = getattr(termios, "B" + str(baudrate), None)
    if code is None:
        return
    attrs = termios.tcgetattr(fd)
    attrs[4] = code
    attrs[5] = code
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class UsbCdc(_PolledStream):
    """The board's USB CDC serial (the REPL's stdin/stdout) as a binary link to the Pi."""

    def __init__(self):
        try:
            import micropython

            micropython.kbd_intr(-1)  # 03 in a frame must not raise KeyboardInterrupt
        except (ImportError, AttributeError):
            pass
        _PolledStream.__init__(self, sys.stdin.buffer, sys.stdout.buffer)

    def _flush(self):
        flush = getattr(self._w, "flush", None)
        if flush is not None:
            flush()


class MachineUart:
    """``machine.UART`` on a board; its own receive buffer holds a whole SAM reply."""

    def __init__(self, uart_id, baudrate=115200, tx=None, rx=None, rxbuf=RX_BUFFER):
        kwargs = {"baudrate": baudrate, "timeout": 0}
        if tx is not None:
            kwargs["tx"] = machine.Pin(tx)
        if rx is not None:
            kwargs["rx"] = machine.Pin(rx)
        try:
            self._u = _MACHINE_UART(uart_id, rxbuf=rxbuf, **kwargs)
        except (TypeError, ValueError):
            self._u = _MACHINE_UART(uart_id, **kwargs)  # a port without rxbuf=
        self._poll = None
        try:
            import select

            p = select.poll()
            p.register(self._u, select.POLLIN)
            self._poll = p
        except (ImportError, OSError, TypeError):
            pass

    def any(self):
        return self._u.any()

    def read(self, n):
        data = self._u.read(min(n, max(1, self._u.any())))
        return data or b""

    def write(self, data):
        n = self._u.write(data)
        return 0 if n is None else n

    def wait(self, timeout_ms):
        if self._poll is not None:
            return bool(self._poll.poll(timeout_ms))
        import time

        start = time.ticks_ms()
        while not self._u.any():
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                return False
            time.sleep_ms(1)
        return True

    def close(self):
        deinit = getattr(self._u, "deinit", None)
        if deinit is not None:
            deinit()


class PySerialPort:
    """CPython: pyserial ``serial_for_url`` (device path, ``socket://``, ``loop://``, pty)."""

    def __init__(self, url, baudrate=115200):
        import serial

        self._serial_mod = serial
        try:
            self._s = serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=0.5)
        except serial.SerialException as err:
            raise _gone("open " + url, err) from None
        self.url = url
        fileno = getattr(self._s, "fileno", None)
        try:
            self._fd = fileno() if fileno is not None else None
        except Exception:
            self._fd = None  # loop:// and socket:// have no usable fileno()

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except PortGone:
            raise
        except (OSError, self._serial_mod.SerialException, TypeError, AttributeError) as err:
            # pyserial raises TypeError / AttributeError from a port closed under it
            raise _gone(self.url, err) from None

    def any(self):
        return self._call(lambda: self._s.in_waiting)

    def read(self, n):
        waiting = self.any()
        if not waiting:
            if self._fd is not None:
                self._poll_fd(0)  # a closed pty shows only as a hang-up: raise PortGone
            return b""
        return bytes(self._call(self._s.read, min(n, waiting)))

    def _poll_fd(self, timeout_ms):
        import select

        p = select.poll()
        p.register(self._fd, select.POLLIN)
        ev = self._call(p.poll, timeout_ms)
        if ev and ev[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            raise _gone(self.url + ": hang-up")
        return bool(ev)

    def write(self, data):
        n = self._call(self._s.write, bytes(data))
        return 0 if n is None else n

    def wait(self, timeout_ms):
        if self.any():
            return True
        if self._fd is not None:
            return self._poll_fd(timeout_ms)
        import time

        end = time.monotonic() + timeout_ms / 1000
        while not self.any():
            if time.monotonic() >= end:
                return False
            time.sleep(0.001)
        return True

    def close(self):
        try:  # noqa: SIM105 (no contextlib on MicroPython)
            self._s.close()
        except Exception:
            pass


def open_uart(spec, baudrate=115200):
    """Open ``spec`` with the backend this interpreter and board provide (see module doc)."""
    if spec == "usb":
        return UsbCdc()
    if spec[:5] == "uart:":
        if _MACHINE_UART is None:
            raise ValueError(f"{spec!r} needs machine.UART (a board)")
        uart_id, opts = parse_uart_spec(spec)
        return MachineUart(
            uart_id, baudrate, opts.get("tx"), opts.get("rx"), opts.get("rxbuf", RX_BUFFER)
        )
    if _MICROPYTHON:
        return PosixTty(spec, baudrate)
    return PySerialPort(spec, baudrate)
