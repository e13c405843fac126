"""The kiosk agent's one exceptions module.

Every error the agent raises on purpose derives from :class:`KioskError`, so the agent's
top level can tell "a device part failed and was reported" from a programming bug. Like
gpiozero's ``BadPinFactory(GPIOZeroError, ImportError)``, each subclass also inherits the
builtin it refines, so callers that only know the builtin still catch it.
"""

from __future__ import annotations

from firmware_bridge import sam


class KioskError(Exception):
    """Base class of every error the kiosk agent raises deliberately."""


class VoiceError(KioskError, RuntimeError):
    """A prompt could not be rendered to audio or is not available to play."""


class PlayerError(VoiceError):
    """Audio playback could not be started (missing command or device, hung player)."""


class JournalError(KioskError, OSError):
    """The audit journal could not be opened, read or written."""


class JournalFull(JournalError):
    """The journal's storage is full; events are held in memory until space returns."""


class GateError(KioskError, RuntimeError):
    """The gate relay, lights or buzzer could not be set up or driven."""


class ConfigError(KioskError, ValueError):
    """The configuration file or the device bundle is invalid."""


class CacheError(KioskError, OSError):
    """The kiosk cache could not be read or written."""


class FactsError(ValueError):
    """Cached facts that cannot be turned into checks (corrupt or from an old format)."""


class SnapshotError(KioskError, ValueError):
    """A snapshot that must not be used (bad signature, wrong site, too old, malformed)."""


class ServerError(KioskError):
    """The server could not give an answer."""


class ServerUnavailable(ServerError, ConnectionError):
    """The server was unreachable, too slow, failing (5xx) or overloaded (429).

    ``retry_after``: seconds the server asked the kiosk to wait (None when it did not say).
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerRejected(ServerError, ValueError):
    """The server answered with a 4xx refusal."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(f"server refused ({status} {error}): {detail}")
        self.status = status
        self.error = error


class EnrolError(KioskError, PermissionError):
    """The server refused the enrolment; ``error`` is its code (``replay``, ``code_expired``…)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"enrolment refused ({error}): {detail}")
        self.error = error


class CameraError(KioskError, OSError):
    """The camera could not be opened."""


class CameraEnded(KioskError, EOFError):
    """A file source has delivered its last frame."""


class NoQrDecoder(KioskError, ImportError):
    """Neither zxing-cpp nor pyzbar (libzbar0) can be loaded: the camera cannot read codes."""


class ReaderError(KioskError, IOError):
    """The reader did not answer as the SAM protocol requires."""


class ReaderTimeout(ReaderError, TimeoutError):
    """No complete reply within the command's timeout."""


class ReaderStatus(ReaderError):
    """The SAM answered with a failure status word."""

    def __init__(self, what: str, sw3: int) -> None:
        super().__init__(f"{what}: SW3 {sw3:02X} ({sam.status_text(sw3)})")
        self.sw3 = sw3


class SsCardError(KioskError, IOError):
    """The social-security card or its reader did not behave as the card spec requires."""


class SsReaderLost(SsCardError, ConnectionError):
    """No usable PC/SC reader (unplugged, pcscd not running, pyscard not installed)."""


class CardRemoved(SsCardError):
    """The card left the reader (or stopped answering) in the middle of a read."""


class CardUnresponsive(SsCardError):
    """A card is in the slot but cannot be powered up or talked to (mute, upside down)."""


class CardStatusError(SsCardError):
    """The card answered a step with a status word other than 90 00."""

    def __init__(self, step: str, sw1: int, sw2: int, meaning: str) -> None:
        super().__init__(f"{step}: SW {sw1:02X} {sw2:02X} ({meaning})")
        self.step = step
        self.sw = (sw1, sw2)


class CardDataError(SsCardError, ValueError):
    """A response or record is malformed (wrong tag, short record, bytes that are not text)."""
