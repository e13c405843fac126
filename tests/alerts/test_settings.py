"""``[alerts]`` and ``[alerts.sites."<site>"]``: checked, inherited, errors naming the key."""

from __future__ import annotations

import pytest

from server.alerts.settings import MAX_RETRY_S, AlertSettings, settings_from
from server.errors import ConfigError


def test_a_site_inherits_what_it_does_not_set() -> None:
    s = settings_from(
        {
            "invalid_threshold": 8,
            "webhook": "https://ops.example/hook",
            "sites": {"east": {"invalid_threshold": 3, "webhook": ""}},
        }
    )
    east, west = s.for_site("east"), s.for_site("west")
    assert (east.invalid_threshold, east.webhook, east.invalid_window_s) == (3, "", 300.0)
    assert (west.invalid_threshold, west.webhook) == (8, "https://ops.example/hook")
    assert s.webhook_sites() and not AlertSettings().webhook_sites()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"invalid_threshold": 0}, r"\[alerts\] invalid_threshold"),
        ({"webhook": "ftp://x/y"}, r"webhook: must be an http"),
        ({"sites": {"east": {"webhook": "not a url"}}}, r"webhook: must be an http"),
        ({"sites": {"east": {"bogus": 1}}}, r"\[alerts.sites.east\] bogus: unknown key"),
        ({"webhook_timeout_s": 0}, r"webhook_timeout_s"),
    ],
)
def test_a_bad_key_is_refused_with_its_name(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from(doc, "siheyi.toml")


def test_retries_double_up_to_a_ceiling() -> None:
    s = AlertSettings(webhook_retry_s=5)
    assert [s.retry_after(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert s.retry_after(30) == MAX_RETRY_S
