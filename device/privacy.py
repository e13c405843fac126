"""Keep full ID numbers out of everything the kiosk logs.

DESIGN.md "Privacy": an ID number exists in clear only in memory during a lookup. The rules
(masking, clear-ID detection, pseudonyms) are the shared ones of :mod:`core.idnumbers`; this
module installs them on logging, so that a careless ``log.info("read %s", id_number)``
anywhere in the agent still never writes one out.
"""

from __future__ import annotations

import logging

from core.idnumbers import contains_clear_id, redact

__all__ = ["IdNumberRedactor"]


class IdNumberRedactor(logging.Filter):
    """Logging filter that masks ID numbers in a record's message, arguments and traceback.

    Install it on every kiosk log *handler* (handler filters also see records propagated
    from child loggers, logger filters do not). The record is only rewritten when it
    contains an ID number: the message is then formatted with its arguments and stored
    already merged, because masking an argument in place could break a ``%d`` placeholder.
    Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A malformed format string: logging would report it anyway; still make sure
            # neither part carries an ID number in clear.
            message = f"{record.msg} {record.args!r}"
        if contains_clear_id(message):
            record.msg = redact(message)
            record.args = None
        if record.exc_text:
            if contains_clear_id(record.exc_text):
                record.exc_text = redact(record.exc_text)
        elif record.exc_info and record.exc_info[0] is not None:
            # Formatters reuse a pre-filled exc_text, so a redacted one replaces the
            # traceback they would otherwise render with the number in it.
            text = logging.Formatter().formatException(record.exc_info)
            if contains_clear_id(text):
                record.exc_text = redact(text)
        if record.stack_info and contains_clear_id(record.stack_info):
            record.stack_info = redact(record.stack_info)
        return True
