"""Metrics tests' helpers: an app serving /metrics, and a parsed scrape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.config import ServerConfig
from server.metrics.settings import MetricsSettings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_app(config: ServerConfig, settings: MetricsSettings | None = None) -> web.Application:
    """The real app with ``[metrics]`` = ``settings``."""
    return create_app(replace(config, metrics=settings or MetricsSettings()))


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter not yet counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and want <= got)


def names(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in samples}
