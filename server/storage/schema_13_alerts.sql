-- migration: 13
-- Guard alerts (issue 12, part 4; server/alerts, docs/alerts.md).
--
-- One row per alert, raised and cleared by the server. subject says what it is about: the
-- kiosk's device_id, or 'gate:<site>/<gate>' for an alert about a gate (repeated invalid
-- credentials; device_id is then NULL). The partial unique index allows one OPEN alert per
-- (subject, kind): several server processes raising the same alert make one row, the others'
-- INSERT … ON CONFLICT DO NOTHING changes nothing. detail is JSON text (masked facts only).
-- Times are ISO 8601 UTC text; updated_at is the last time the facts confirmed it.
CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    site        TEXT NOT NULL,
    device_id   TEXT,
    gate        TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '{}',
    raised_at   TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    cleared_at  TEXT,
    acked_by    TEXT,
    acked_at    TEXT,
    note        TEXT
);

CREATE UNIQUE INDEX alerts_one_open ON alerts (subject, kind) WHERE cleared_at IS NULL;

CREATE INDEX alerts_site_raised ON alerts (site, raised_at);

CREATE INDEX alerts_raised ON alerts (raised_at);

-- Every acknowledgement, with who and the note (the alert row keeps the latest).
-- n: 1, 2, … per alert (two acknowledgements in one second are both kept, in order); the
-- UPDATE of the alert row in the same transaction serialises acknowledgements of one alert.
CREATE TABLE alert_acks (
    alert_id  TEXT NOT NULL,
    n         INTEGER NOT NULL,
    acked_by  TEXT NOT NULL,
    acked_at  TEXT NOT NULL,
    note      TEXT NOT NULL,
    PRIMARY KEY (alert_id, n)
);

-- Webhook deliveries: one row per alert change ('raised', 'cleared') of a site with a
-- webhook, queued in the transaction that made the change. A process sends a row only after
-- claiming it (lease_until, unix seconds), so several processes never send one twice, and a
-- row marked 'sent' is never sent again after a restart. state: pending | sent | failed.
CREATE TABLE alert_deliveries (
    alert_id     TEXT NOT NULL,
    change       TEXT NOT NULL,
    site         TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      DOUBLE PRECISION NOT NULL,
    lease_until  DOUBLE PRECISION NOT NULL DEFAULT 0,
    sent_at      TEXT,
    last_error   TEXT,
    PRIMARY KEY (alert_id, change)
);

CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_at);

-- Invalid-credential taps per gate in 10-second buckets (unix seconds // 10): the window
-- count of the "repeated invalid credentials" rule is a sum over a few rows, written only
-- when an audit upload holds such taps.
CREATE TABLE alert_invalid_taps (
    site    TEXT NOT NULL,
    gate    TEXT NOT NULL,
    bucket  BIGINT NOT NULL,
    taps    INTEGER NOT NULL,
    PRIMARY KEY (site, gate, bucket)
);

CREATE INDEX alert_invalid_taps_bucket ON alert_invalid_taps (bucket);
