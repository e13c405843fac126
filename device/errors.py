"""The kiosk agent's one exceptions module.

Every error the agent raises on purpose derives from :class:`KioskError`, so the agent's
top level can tell "a device part failed and was reported" from a programming bug. Like
gpiozero's ``BadPinFactory(GPIOZeroError, ImportError)``, each subclass also inherits the
builtin it refines, so callers that only know the builtin still catch it.
"""

from __future__ import annotations


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
