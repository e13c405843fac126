"""Shared fixtures for the kiosk device tests: a mock pin factory and a prompt cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.acting.voice import PromptRenderer


@pytest.fixture
def pin_factory() -> Iterator[MockFactory]:
    """gpiozero's own mock backend; every pin records its state history."""
    factory = MockFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real espeak render cache for the session: synthesis is slow-ish, reuse it."""
    return tmp_path_factory.mktemp("prompt-cache")


@pytest.fixture
def shared_renderer(prompt_cache: Path) -> PromptRenderer:
    """A renderer on the session cache (tests that count renders make their own)."""
    return PromptRenderer(prompt_cache)
