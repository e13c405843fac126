"""Kiosk logs never carry a clear ID number: the redacting log filter."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from device.privacy import IdNumberRedactor

ID = "110101199003074514"
ID_X = "11010519491231002X"


@pytest.fixture
def redacted_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(IdNumberRedactor())
    logger = logging.getLogger("tests.device.privacy")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    handler.close()


def test_redactor_masks_message_and_args(
    redacted_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = redacted_log
    logger.info("card %s read", ID)
    logger.info("as number %d", int(ID))
    logger.warning(f"inline {ID_X}")
    logger.getChild("sub").info("child %s", ID)  # propagated records are filtered too
    out = stream.getvalue()
    assert ID not in out and ID_X not in out
    assert out.count("1101**********4514") == 3
    assert "1101**********002X" in out


def test_redactor_masks_tracebacks(redacted_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = redacted_log
    try:
        raise ValueError(f"unknown person {ID}")
    except ValueError:
        logger.exception("lookup failed")
    out = stream.getvalue()
    assert ID not in out
    assert "ValueError: unknown person 1101**********4514" in out


def test_redactor_leaves_clean_records_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "tap %s took %d ms", ("k1", 5), None)
    assert IdNumberRedactor().filter(record) is True
    assert record.msg == "tap %s took %d ms" and record.args == ("k1", 5)
    assert record.getMessage() == "tap k1 took 5 ms"
