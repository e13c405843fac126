"""Errors raised or reported by the SAM frame protocol code.

One base class, ``ProtocolError``, which refines ``ValueError`` (a frame is a bad value); each
subclass carries a short machine-readable ``code`` that the decode tool prints as ``error``.
The streaming parsers return these as items instead of raising them, so a caller can keep
feeding bytes after a bad frame (see ``sam.ResponseParser.feed``).
"""


class ProtocolError(ValueError):
    """A frame or payload violates the SAM protocol."""

    code = "protocol"

    def __init__(self, message, raw=b""):
        super().__init__(message)
        # The offending bytes (at most one frame), kept for logs and tests.
        self.raw = bytes(raw)


class ChecksumError(ProtocolError):
    """The XOR checksum of a frame does not match its CHK byte."""

    code = "checksum"


class LengthError(ProtocolError):
    """A LEN field or an inner length field is too small, too large or inconsistent."""

    code = "length"


class TruncatedError(ProtocolError):
    """The input ended in the middle of a frame."""

    code = "truncated"


class SyncError(ProtocolError):
    """Bytes that do not start with the preamble were skipped while resynchronising."""

    code = "garbage"


class TextDecodeError(ProtocolError):
    """The 256-byte card text is not valid UCS-2 of the right size."""

    code = "text"
