"""A tiny JSON encoder whose output is byte-identical on MicroPython and CPython.

MicroPython's ``json.dumps`` has no ``sort_keys`` and formats differently, so the decode tool
uses this instead. Output equals CPython's
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``: keys sorted
by code point, compact separators, non-ASCII characters emitted raw (the caller encodes the
line as UTF-8), quote, backslash and control characters escaped.

Floats use ``repr()``, which can differ between the two interpreters in the last digits:
output meant to be compared across interpreters should carry no floats (the decode tool
emits none). NaN and infinities raise ``ValueError``, as JSON has no spelling for them.
"""

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_HEX = "0123456789abcdef"


def _string(s, out):
    out.append('"')
    start = 0
    i = 0
    for ch in s:
        if ch < " " or ch == '"' or ch == "\\":
            if start < i:
                out.append(s[start:i])
            esc = _ESCAPES.get(ch)
            if esc is None:
                c = ord(ch)  # control character: \u00XX, lowercase hex like CPython
                esc = "\\u00" + _HEX[c >> 4] + _HEX[c & 15]
            out.append(esc)
            start = i + 1
        i += 1
    # MicroPython indexes str by character too, so s[start:i] is the same slice there.
    if start < i:
        out.append(s[start:i])
    out.append('"')


def _encode(obj, out):
    # bool before int: on MicroPython True is not an instance of int.
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        _string(obj, out)
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError("JSON has no NaN or infinity")
        out.append(repr(obj))
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for key in sorted(obj):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {key!r}")
            if not first:
                out.append(",")
            first = False
            _string(key, out)
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        first = True
        for item in obj:
            if not first:
                out.append(",")
            first = False
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj):
    """Encode ``obj`` (None, bool, int, float, str, list, tuple, dict with str keys)."""
    out = []
    _encode(obj, out)
    return "".join(out)
