"""The access log: one line per request on logger ``siheyi.access`` (``[server] access_log``).

aiohttp's own access logger parses its ``%``-format and formats every field (a time stamp
through ``strftime``, headers) for each request on the event loop, and writes there too.
Here the loop only puts the request's fields, as a tuple, on a queue (no
:class:`logging.LogRecord`, whose creation alone reads the clock, the thread, the process);
a writer thread wakes every :data:`DRAIN_EVERY_S`, turns everything queued into records of
``siheyi.access`` and hands them to that logger (so to the root logger's handlers, unless
configured otherwise).
Waking per batch instead of per request keeps the thread from taking the GIL from the loop
for every line, and a plain stream handler gets each batch in one write and one flush.
Measured with ``bench/verify_throughput.py --access-log on|off`` (server CPU per verify):
a stock QueueHandler/QueueListener cost +17-26 %, this +4 %.

A line reads ``<remote> <device or -> "<METHOD> <path>" <status> <bytes> <ms>ms``: never a
query string, a body or a header, so never an ID number or a token.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from server.appkeys import DEVICE
from server.http.proxies import CLIENT_ADDRESS

ACCESS_LOGGER = "siheyi.access"
#: Seconds between the writer thread's drains of the queue.
DRAIN_EVERY_S = 0.2
_FORMAT = '%s %s "%s %s" %d %d %.1fms'

Entry = tuple[float, str, str, str, str, int, int, float]


class AccessLog(AbstractAccessLogger):
    """Queues each request's fields for :class:`AccessLogWriter` (the ``logger`` given by
    aiohttp is ignored: the writer owns ``siheyi.access``)."""

    entries: queue.SimpleQueue[Entry] = queue.SimpleQueue()

    def log(self, request: BaseRequest, response: StreamResponse, time_s: float) -> None:
        device = request.get(DEVICE)
        self.entries.put(
            (
                time.time(),
                request.get(CLIENT_ADDRESS) or request.remote or "-",
                device.device_id if device is not None else "-",
                request.method,
                request.path,
                response.status,
                response.body_length,
                time_s * 1000,
            )
        )


class AccessLogWriter:
    """The thread that turns queued entries into ``siheyi.access`` records, in batches."""

    def __init__(self, entries: queue.SimpleQueue[Entry]) -> None:
        self.entries = entries
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="siheyi-access-log", daemon=True)

    def start(self) -> None:
        """Start; ``siheyi.access`` logs at INFO unless configured otherwise, through its own
        handlers and its ancestors' (the root logger's, as ``kiosk server run`` sets up)."""
        if self.logger.level == logging.NOTSET:
            self.logger.setLevel(logging.INFO)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued and stop."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(DRAIN_EVERY_S):
            self.drain()
        self.drain()

    def drain(self) -> int:
        """Log every queued entry; return how many.

        A plain stream handler gets the whole batch formatted and written at once (one
        write, one flush); any other handler gets each record as logging hands it.
        """
        records = []
        make = self.logger.makeRecord
        while True:
            try:
                entry = self.entries.get_nowait()
            except queue.Empty:
                break
            record = make(ACCESS_LOGGER, logging.INFO, __file__, 0, _FORMAT, entry[1:], None)
            record.created = entry[0]
            record.msecs = (entry[0] - int(entry[0])) * 1000
            records.append(record)
        if records and self.logger.isEnabledFor(logging.INFO):
            for handler in self._handlers():
                if handler.level > logging.INFO:
                    continue
                if type(handler) is logging.StreamHandler:
                    _write_batch(handler, records)
                else:
                    for record in records:
                        handler.handle(record)
        return len(records)

    def _handlers(self) -> list[logging.Handler]:
        """The handlers a record of ``siheyi.access`` reaches (its own, then its ancestors')."""
        found: list[logging.Handler] = []
        logger: logging.Logger | None = self.logger
        while logger is not None:
            found.extend(logger.handlers)
            logger = logger.parent if logger.propagate else None
        return found


def _write_batch(handler: logging.StreamHandler, records: list[logging.LogRecord]) -> None:  # type: ignore[type-arg]
    lines = [handler.format(r) + handler.terminator for r in records if handler.filter(r)]
    with handler.lock or contextlib.nullcontext():
        handler.stream.write("".join(lines))
        handler.flush()


def start_access_log() -> AccessLogWriter:
    """Start writing :class:`AccessLog`'s queue; stop the writer when serving ends."""
    writer = AccessLogWriter(AccessLog.entries)
    writer.start()
    return writer
