"""docs/grafana-dashboard.json only asks for what the server exports, and can be imported
anywhere (its data source and site are variables)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from server.config import ServerConfig

from .support import metrics_app

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_NAME = re.compile(r"\b((?:siheyi|process)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def _exported(text: str) -> set[str]:
    """Every sample name the scrape declares, with or without samples yet."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_expression_names_an_exported_metric(
    aiohttp_client: Any, config: ServerConfig
) -> None:
    client: TestClient = await aiohttp_client(metrics_app(config))
    resp = await client.get("/metrics")
    assert resp.status == 200
    exported = _exported(await resp.text())
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {
        name
        for panel in _panels(doc)
        for target in panel["targets"]
        for name in _NAME.findall(target["expr"])
    }
    assert len(used) >= 15
    assert used - exported == set()


def test_importable_anywhere() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "siheyi_kiosks" in variables["site"]["definition"]
    for panel in _panels(doc):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            if "siheyi_kiosk" in target["expr"]:
                assert "$site" in target["expr"], panel["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
