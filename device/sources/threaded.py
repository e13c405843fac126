"""What every threaded credential source shares: its thread, its callbacks, its counters.

The card reader, the MCU link and the social-security card reader each run one blocking loop
on their own thread and talk to the agent only through two callbacks (a credential, a state
event). This base owns that plumbing so each source is only its protocol: subclasses
implement `_run()` and poll `self._stop`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from device.sources.credentials import Credential

log = logging.getLogger(__name__)

ReaderEvent = Callable[[str, dict[str, Any]], None]
"""Called from the source's thread on state changes: `<part>_ready`, `<part>_lost`,
`<part>_init_failed` (once per outage) and `card_unreadable`."""


class ThreadedSource:
    """Thread lifecycle, callbacks and error counters of a credential source."""

    thread_name = "source"

    def __init__(self, *, join_timeout_s: float) -> None:
        self._join_timeout = join_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_credential: Callable[[Credential], None] | None = None
        self._on_event: ReaderEvent | None = None
        self._lock = threading.Lock()
        self.errors: Counter[str] = Counter()

    def start(
        self, on_credential: Callable[[Credential], None], on_event: ReaderEvent | None = None
    ) -> None:
        """Run the source's loop on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._on_credential = on_credential
        self._on_event = on_event
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for it (a read in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._join_timeout)
            self._thread = None

    def _run(self) -> None:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    def _count(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def _event(self, what: str, **detail: Any) -> None:
        if self._on_event is not None:
            try:
                self._on_event(what, detail)
            except Exception:
                log.exception("%s event handler failed", self.thread_name)
