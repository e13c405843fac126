-- migration: 16
-- Kiosk counters (issue 13, part 3; server/metrics/kiosks.py, docs/metrics.md).
--
-- A kiosk's counters (taps by outcome, offline decisions, reader errors, prompt latency)
-- start again at zero when its agent restarts (a new boot_id), yet the per-site totals
-- /metrics exports must only grow. So each kiosk's row keeps `current`, this boot's
-- counters as last reported, and `carried`, the sum of the last reports of its earlier
-- boots: its lifetime total is carried + current. Both are JSON objects of flat names
-- ("taps.pass", "latency.0", "latency_sum", …) to numbers. A heartbeat with counters
-- updates the row with one compare-and-set UPDATE (or one INSERT for a new kiosk), so
-- two server processes never carry the same boot twice. `backlog` is the kiosk's journal
-- backlog, a level, as last reported.
CREATE TABLE kiosk_counters (
    device_id   TEXT PRIMARY KEY,
    boot_id     TEXT NOT NULL,
    current     TEXT NOT NULL,
    carried     TEXT NOT NULL,
    backlog     BIGINT NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
);
