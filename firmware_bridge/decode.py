"""``decode``: reply frames as hex in, one JSON object per frame out.

Runs unchanged under MicroPython and CPython, with byte-identical output (``jsonenc``; no
floats, no ``repr()``), so a captured serial trace can be checked on the Pi or on the MCU.

Input: hex digits, whitespace anywhere (even inside a byte: ``A A`` is AA), tokens may carry a
``0x`` prefix; one or more frames, concatenated. Output, one line per item in input order:

- a frame: ``{"length":15,"status":"9F","status_text":"find card success","sw1":"00",
  "sw2":"00","data_len":4,"data":"00000000"}`` (``data`` only when 1..128 bytes); a read-base
  reply (SW3 90 with the 30 01 or 30 10 layout) has ``card`` (the ``idcard.decode_text`` dict
  plus ``photo_bytes`` and, for 30 10, ``finger_bytes``: lengths only, never the contents)
  instead of ``data``;
- a problem: ``{"error":"<code>","detail":"..."}`` with code ``checksum``, ``length``,
  ``truncated``, ``garbage``, ``text`` (see ``errors``) or ``hex`` (non-hex token, odd digit
  count). The stream resynchronises and the following frames are still decoded.

Exit code: 0 when every item was a good frame, 1 when any error was printed.
"""

import sys

from .errors import LengthError, ProtocolError
from .idcard import decode_text
from .jsonenc import dumps
from .sam import SW3_OK, ResponseParser, parse_read_base, status_text

_WHITESPACE = " \t\n\r\v\f"  # explicit: str.isspace() differs between interpreters
_HEX_DIGITS = "0123456789abcdefABCDEF"
_MAX_DATA_HEX = 128


def _error(err):
    return {"error": err.code, "detail": str(err)}


def frame_object(frame):
    """The JSON-ready dict for one good reply frame (see the module docstring)."""
    obj = {
        "status": f"{frame.sw3:02X}",
        "status_text": status_text(frame.sw3),
        "sw1": f"{frame.sw1:02X}",
        "sw2": f"{frame.sw2:02X}",
        "length": len(frame.raw),
        "data_len": len(frame.data),
    }
    if frame.sw3 == SW3_OK:
        try:
            text, photo, finger = parse_read_base(frame)
        except LengthError:
            text = None
        if text is not None:
            card = decode_text(text)  # TextDecodeError is reported by the caller
            card["photo_bytes"] = len(photo)
            if finger is not None:
                card["finger_bytes"] = len(finger)
            obj["card"] = card
            return obj
    if 0 < len(frame.data) <= _MAX_DATA_HEX:
        obj["data"] = bytes(frame.data).hex().upper()
    return obj


def _printable(token):
    # Shown in details: ASCII printable only, bounded, identical on both interpreters.
    chars = []
    for ch in token[:16]:
        chars.append(ch if " " <= ch <= "~" else "?")
    if len(token) > 16:
        chars.append("...")
    return "".join(chars)


def _chunks(source):
    if isinstance(source, (str, bytes, bytearray)):
        yield source
    else:
        yield from source


def _as_text(chunk):
    # Bytes become ASCII text; any non-ASCII byte is shown as '?' (never valid hex anyway).
    if isinstance(chunk, str):
        return chunk
    out = []
    for b in chunk:
        out.append(chr(b) if b < 128 else "?")
    return "".join(out)


class _Decoder:
    """Hex tokens -> bytes -> ResponseParser -> JSON-ready dicts."""

    def __init__(self):
        self.parser = ResponseParser()
        self.nibble = -1  # pending high nibble, -1 when none
        self.offset = 0  # characters consumed so far
        self.out = bytearray()

    def items(self, parsed):
        result = []
        for item in parsed:
            if isinstance(item, ProtocolError):
                result.append(_error(item))
                continue
            try:
                result.append(frame_object(item))
            except ProtocolError as err:
                result.append(_error(err))
        return result

    def token(self, tok, start):
        """Consume one whitespace-delimited token; return the items it completed."""
        body = tok
        if len(body) >= 2 and body[0] == "0" and (body[1] == "x" or body[1] == "X"):
            body = body[2:]
        for ch in body:
            if ch not in _HEX_DIGITS:
                return self.bad_token(tok, start)
        out = self.out
        for ch in body:
            v = int(ch, 16)
            if self.nibble < 0:
                self.nibble = v
            else:
                out.append((self.nibble << 4) | v)
                self.nibble = -1
        if out:
            return self.flush()
        return []

    def flush(self):
        data = bytes(self.out)
        self.out = bytearray()
        return self.items(self.parser.feed(data))

    def bad_token(self, tok, start):
        result = self.flush()
        dropped = self.parser.pending + (1 if self.nibble >= 0 else 0)
        self.parser.reset()
        self.nibble = -1
        detail = f"non-hex input '{_printable(tok)}' at character {start}"
        if dropped:
            detail += f"; {dropped} buffered bytes dropped"
        result.append({"error": "hex", "detail": detail})
        return result

    def finish(self):
        result = self.flush()
        if self.nibble >= 0:
            result.append({"error": "hex", "detail": "odd number of hex digits at end of input"})
            self.nibble = -1
        result.extend(self.items(self.parser.close()))
        return result


def decode_stream(source):
    """Yield one JSON-ready dict per frame or error, in input order.

    ``source`` is a str or bytes, or an iterable of str / bytes chunks split anywhere (even
    inside a token). Never raises for bad input: problems are yielded as ``{"error": ...}``.
    """
    dec = _Decoder()
    tok = []
    tok_start = 0
    for chunk in _chunks(source):
        for ch in _as_text(chunk):
            if ch in _WHITESPACE:
                if tok:
                    yield from dec.token("".join(tok), tok_start)
                    tok = []
            else:
                if not tok:
                    tok_start = dec.offset
                tok.append(ch)
            dec.offset += 1
    if tok:
        yield from dec.token("".join(tok), tok_start)
    yield from dec.finish()


def _writer(stdout):
    # Write UTF-8 bytes whatever the locale: CPython's text stdout may not be UTF-8.
    buf = getattr(stdout, "buffer", None)
    if buf is None:
        return stdout.write, stdout
    return (lambda line: buf.write(line.encode("utf-8"))), buf


def main(stdin=None, stdout=None):
    """Decode hex frames from ``stdin`` to JSON lines on ``stdout``; return the exit code."""
    if stdin is None:
        stdin = sys.stdin
    if stdout is None:
        stdout = sys.stdout
    src = getattr(stdin, "buffer", stdin)
    data = src.read()
    write, target = _writer(stdout)
    code = 0
    for obj in decode_stream(data):
        if "error" in obj:
            code = 1
        write(dumps(obj) + "\n")
    flush = getattr(target, "flush", None)
    if flush is not None:
        flush()
    return code
